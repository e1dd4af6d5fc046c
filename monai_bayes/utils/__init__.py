"""Shared helpers: atomic writes, seeding and tensor utilities."""

from monai_bayes.utils.atomic import (
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    finished_cache,
    staging_dir,
)
from monai_bayes.utils.errors import errors_reported_by_caller, summarize_errors
from monai_bayes.utils.random import seeded_global_rng
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = [
    "as_plain_tensor",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "errors_reported_by_caller",
    "finished_cache",
    "seeded_global_rng",
    "staging_dir",
    "summarize_errors",
]
