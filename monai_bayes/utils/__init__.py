"""Shared helpers: atomic writes, seeding, tensors, progress bars, string options, optimizers, JSON files,
optional-extra checks.

The names are imported on first use (PEP 562), so a light module such as ``utils.optional`` can be used
(e.g. by the ``monai-bayes`` command's ``--help``) without importing torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: public name -> the module of this package that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("atomic_path", "atomic_save_npy", "atomic_write_json", "atomic_write_text", "finished_cache", "staging_dir"),
        "atomic",
    ),
    **dict.fromkeys(("errors_reported_by_caller", "summarize_errors"), "errors"),
    **dict.fromkeys(("lies_inside", "read_json_if_exists", "read_json_object"), "files"),
    "add_new_parameters": "optim",
    **dict.fromkeys(("MissingExtraError", "require_extra"), "optional"),
    "look_up": "options",
    **dict.fromkeys(("progress_bar", "show_progress", "stderr_is_terminal"), "progress"),
    "seeded_global_rng": "random",
    "as_plain_tensor": "tensors",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
