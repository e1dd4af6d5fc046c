"""Pruning impact on long-tailed multi-label classifiers (seed 003, PruneCXR): global L1 pruning, sweeps,
forgettability curves, FCD, pruning-identified exemplars, and their link to uncertainty; the same forgettability
maths per structure-size bin of a segmentation network (``segmentation``).

This room (floor 3) imports ``layers``, ``metrics``, ``visualize`` and ``utils`` from below (and ``monai.metrics``);
``workflows`` and ``bundle`` import it.
See ``docs/pruning.md``.
"""

from monai_bayes.pruning.analysis import (
    FCD_TERMS,
    CorrelationResult,
    OLSResult,
    PairTable,
    WelchResult,
    auroc,
    average_precision,
    co_occurrence_iou,
    disease_count_distribution,
    fcd_matrix,
    fcd_pairs,
    fcd_regression,
    first_forgotten_k,
    first_significant_k,
    forgettability_curves,
    frequency_correlation,
    ols,
    per_image_spearman,
    pie_auroc,
    prevalence_ratio,
    select_pies,
    welch_mean_ap,
)
from monai_bayes.pruning.prune import global_l1_prune, prunable_parameters, pruned_copy, sparsity, weight_magnitudes
from monai_bayes.pruning.report import FIGURES, PruningTables, analyze_pruning, markdown_table, write_pruning_results
from monai_bayes.pruning.segmentation import (
    SegmentationPruningSweep,
    equivalent_diameter_mm,
    per_bin_mean,
    per_case_dice,
    predict_foreground,
    segmentation_pruning_sweep,
    size_bins,
)
from monai_bayes.pruning.sweep import DEFAULT_SPARSITIES, PruningSweep, predict_probabilities, pruning_sweep

__all__ = [
    "DEFAULT_SPARSITIES",
    "FCD_TERMS",
    "FIGURES",
    "CorrelationResult",
    "OLSResult",
    "PairTable",
    "PruningSweep",
    "PruningTables",
    "SegmentationPruningSweep",
    "WelchResult",
    "analyze_pruning",
    "auroc",
    "average_precision",
    "co_occurrence_iou",
    "disease_count_distribution",
    "equivalent_diameter_mm",
    "fcd_matrix",
    "fcd_pairs",
    "fcd_regression",
    "first_forgotten_k",
    "first_significant_k",
    "forgettability_curves",
    "frequency_correlation",
    "global_l1_prune",
    "markdown_table",
    "ols",
    "per_bin_mean",
    "per_case_dice",
    "per_image_spearman",
    "pie_auroc",
    "predict_foreground",
    "predict_probabilities",
    "prevalence_ratio",
    "prunable_parameters",
    "pruned_copy",
    "pruning_sweep",
    "segmentation_pruning_sweep",
    "select_pies",
    "size_bins",
    "sparsity",
    "weight_magnitudes",
    "welch_mean_ap",
    "write_pruning_results",
]
