"""Shared helpers: atomic writes, seeding, tensor utilities and optional-extra checks."""

from monai_bayes.utils.atomic import (
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    finished_cache,
    staging_dir,
)
from monai_bayes.utils.optional import MissingExtraError, require_extra
from monai_bayes.utils.random import seeded_global_rng
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = [
    "MissingExtraError",
    "as_plain_tensor",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "finished_cache",
    "require_extra",
    "seeded_global_rng",
    "staging_dir",
]
