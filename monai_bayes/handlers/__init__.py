"""Ignite / MONAI handlers (``attach(engine)``)."""

from monai_bayes.handlers.bn_recalibration import BNRecalibrationHandler, recalibrate_batch_norm
from monai_bayes.handlers.cost import TrainingCostHandler
from monai_bayes.handlers.kl_annealing import KLAnnealingHandler, kl_beta
from monai_bayes.handlers.saliency_selection import SaliencySelectionHandler, add_new_parameters

__all__ = [
    "BNRecalibrationHandler",
    "KLAnnealingHandler",
    "SaliencySelectionHandler",
    "TrainingCostHandler",
    "add_new_parameters",
    "kl_beta",
    "recalibrate_batch_norm",
]
