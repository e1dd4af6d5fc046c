"""monai_bayes: cheap, calibrated uncertainty for MONAI segmentation and classification.

Sub-packages follow MONAI's layout: ``layers`` (stochastic layers and the sampling protocol),
``networks`` (converters), ``selection``, ``losses``, ``handlers``, ``inferers``, ``metrics``,
``data``, ``pacs``, ``workflows``; :mod:`monai_bayes.uncertainty` holds the uncertainty
decomposition. The converters and the training recipe are re-exported here; they are imported
on first use, so ``import monai_bayes`` (and the ``monai-bayes`` command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from monai_bayes._version import __version__

_LAZY = {
    "to_deterministic": "monai_bayes.networks",
    "to_full_bayes": "monai_bayes.networks",
    "to_mc_dropout": "monai_bayes.networks",
    "to_partial_bayes": "monai_bayes.networks",
    "train_sparse_bayes": "monai_bayes.workflows",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'monai_bayes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
