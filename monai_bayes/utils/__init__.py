"""Shared helpers: atomic writes, seeding, tensors, progress bars, string options, optimizers, JSON files,
optional-extra checks.
"""

from monai_bayes.utils.atomic import (
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    finished_cache,
    staging_dir,
)
from monai_bayes.utils.errors import errors_reported_by_caller, summarize_errors
from monai_bayes.utils.files import lies_inside, read_json_if_exists, read_json_object
from monai_bayes.utils.optim import add_new_parameters
from monai_bayes.utils.optional import MissingExtraError, require_extra
from monai_bayes.utils.options import look_up
from monai_bayes.utils.progress import progress_bar, show_progress, stderr_is_terminal
from monai_bayes.utils.random import seeded_global_rng
from monai_bayes.utils.tensors import as_plain_tensor

__all__ = [
    "MissingExtraError",
    "add_new_parameters",
    "as_plain_tensor",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "errors_reported_by_caller",
    "finished_cache",
    "lies_inside",
    "look_up",
    "progress_bar",
    "read_json_if_exists",
    "read_json_object",
    "require_extra",
    "seeded_global_rng",
    "show_progress",
    "staging_dir",
    "stderr_is_terminal",
    "summarize_errors",
]
