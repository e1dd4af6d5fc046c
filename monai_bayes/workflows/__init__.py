"""Training recipes built from MONAI trainers and monai_bayes handlers."""

from monai_bayes.workflows.sparse_bayes import (
    METHODS,
    OptimizerSettings,
    RecipeResult,
    train_bayesian,
    train_deterministic,
    train_sparse_bayes,
)

__all__ = [
    "METHODS",
    "OptimizerSettings",
    "RecipeResult",
    "train_bayesian",
    "train_deterministic",
    "train_sparse_bayes",
]
