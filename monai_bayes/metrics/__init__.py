"""Metrics for probabilistic, multi-rater segmentation and multi-label classification (MONAI style).

Layouts: prediction samples ``y_pred`` are (B, S, C, *spatial), rater labels ``y`` are (B, R, C, *spatial).
All computation runs on the device of the inputs; see ``docs/metrics.md`` for formulas and conventions.
"""

from __future__ import annotations

from .base import MultiQuantityMetric
from .calibration import (
    PooledCalibrationErrorMetric,
    calibration_bin_sums,
    calibration_error_from_bin_sums,
    compute_pooled_calibration_error,
)
from .classification import auroc, average_precision, image_uncertainty, multilabel_metrics
from .energy_distance import GEDResult, GeneralizedEnergyDistanceMetric, compute_ged, ged_from_pairwise_iou
from .entropy import EntropyVolumeMetric, compute_entropy_volume, compute_uncertainty_volume
from .hungarian import HungarianMatchedIoUMetric, compute_hm_iou, hm_iou_from_pairwise_iou, matching_size
from .jaccard import ISIC_JACCARD_THRESHOLD, ThresholdedJaccardMetric, compute_thresholded_jaccard, threshold_scores
from .multi_rater import MultiRaterMetric, reduce_samples_and_raters
from .overlap import PairwiseIoU, compute_pairwise_iou, pairwise_counts, pairwise_iou
from .saver import per_case_table, write_per_case_report
from .scoring import BrierScoreMetric, NegativeLogLikelihoodMetric, compute_brier_score, compute_nll
from .soft_dice import SoftDiceMetric, compute_soft_dice

__all__ = [
    "ISIC_JACCARD_THRESHOLD",
    "BrierScoreMetric",
    "EntropyVolumeMetric",
    "GEDResult",
    "GeneralizedEnergyDistanceMetric",
    "HungarianMatchedIoUMetric",
    "MultiQuantityMetric",
    "MultiRaterMetric",
    "NegativeLogLikelihoodMetric",
    "PairwiseIoU",
    "PooledCalibrationErrorMetric",
    "SoftDiceMetric",
    "ThresholdedJaccardMetric",
    "auroc",
    "average_precision",
    "calibration_bin_sums",
    "calibration_error_from_bin_sums",
    "compute_brier_score",
    "compute_entropy_volume",
    "compute_ged",
    "compute_hm_iou",
    "compute_nll",
    "compute_pairwise_iou",
    "compute_pooled_calibration_error",
    "compute_soft_dice",
    "compute_thresholded_jaccard",
    "compute_uncertainty_volume",
    "ged_from_pairwise_iou",
    "hm_iou_from_pairwise_iou",
    "image_uncertainty",
    "matching_size",
    "multilabel_metrics",
    "pairwise_counts",
    "pairwise_iou",
    "per_case_table",
    "reduce_samples_and_raters",
    "threshold_scores",
    "write_per_case_report",
]
