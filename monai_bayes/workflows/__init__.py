"""Training recipes built from MONAI trainers and monai_bayes handlers."""

from monai_bayes.workflows.bmr import BMRTrainingResult, train_bmr
from monai_bayes.workflows.methods import METHOD_REGISTRY, METHODS, MethodSpec, check_method, method_spec
from monai_bayes.workflows.sparse_bayes import (
    OptimizerSettings,
    RecipeResult,
    train_bayesian,
    train_deterministic,
    train_sparse_bayes,
)

__all__ = [
    "METHODS",
    "METHOD_REGISTRY",
    "BMRTrainingResult",
    "MethodSpec",
    "OptimizerSettings",
    "RecipeResult",
    "check_method",
    "method_spec",
    "train_bayesian",
    "train_bmr",
    "train_deterministic",
    "train_sparse_bayes",
]
