"""Training recipes built from MONAI trainers and monai_bayes handlers."""

from monai_bayes.workflows.bmr import BMRTrainingResult, train_bmr
from monai_bayes.workflows.sparse_bayes import (
    METHODS,
    OptimizerSettings,
    RecipeResult,
    load_checkpoint,
    save_checkpoint,
    train_bayesian,
    train_deterministic,
    train_sparse_bayes,
)

__all__ = [
    "METHODS",
    "BMRTrainingResult",
    "OptimizerSettings",
    "RecipeResult",
    "load_checkpoint",
    "save_checkpoint",
    "train_bayesian",
    "train_bmr",
    "train_deterministic",
    "train_sparse_bayes",
]
