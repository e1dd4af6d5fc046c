"""Ignite / MONAI handlers (``attach(engine)``): glue around library functions that live in their own rooms."""

from monai_bayes.handlers.bmr_pruning import BMRPruningHandler
from monai_bayes.handlers.bn_recalibration import BNRecalibrationHandler
from monai_bayes.handlers.cost import TrainingCostHandler
from monai_bayes.handlers.kl_annealing import KLAnnealingHandler, kl_beta
from monai_bayes.handlers.lr_schedule import LRSchedule, LRScheduleHandler
from monai_bayes.handlers.metric_handlers import (
    BrierScore,
    EntropyVolume,
    GeneralizedEnergyDistance,
    HungarianMatchedIoU,
    MultiRater,
    NegativeLogLikelihood,
    PerCaseMetricsSaver,
    SoftDice,
)
from monai_bayes.handlers.progress import ProgressBarHandler, first_loss
from monai_bayes.handlers.report import EvaluationReportHandler
from monai_bayes.handlers.saliency_selection import SaliencySelectionHandler
from monai_bayes.handlers.sample_collection import SampleCollectionHandler

__all__ = [
    "BMRPruningHandler",
    "BNRecalibrationHandler",
    "BrierScore",
    "EntropyVolume",
    "EvaluationReportHandler",
    "GeneralizedEnergyDistance",
    "HungarianMatchedIoU",
    "KLAnnealingHandler",
    "LRSchedule",
    "LRScheduleHandler",
    "MultiRater",
    "NegativeLogLikelihood",
    "PerCaseMetricsSaver",
    "ProgressBarHandler",
    "SaliencySelectionHandler",
    "SampleCollectionHandler",
    "SoftDice",
    "TrainingCostHandler",
    "first_loss",
    "kl_beta",
]
