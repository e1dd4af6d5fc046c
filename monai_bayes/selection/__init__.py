"""Choosing which weights become Bayesian: scores, Top-k masks and the selection step (seed 000, step 2)."""

from monai_bayes.selection.report import LayerSelection, format_selection_report, selection_report
from monai_bayes.selection.saliency import (
    SaliencyBatchNorm,
    SaliencyCriterion,
    ScoreMethod,
    compute_scores,
    magnitude_scores,
    random_scores,
    saliency_scores,
)
from monai_bayes.selection.scopes import (
    SELECTION_REGIONS,
    ScopeName,
    call_order,
    cat_readers,
    region_modules,
    restrict_scores,
    scope_modules,
)
from monai_bayes.selection.select import SelectionSettings, select_bayesian_weights
from monai_bayes.selection.topk import SelectionScope, check_r_bayes, num_selected, select_topk

__all__ = [
    "SELECTION_REGIONS",
    "LayerSelection",
    "SaliencyBatchNorm",
    "SaliencyCriterion",
    "ScopeName",
    "ScoreMethod",
    "SelectionScope",
    "SelectionSettings",
    "call_order",
    "cat_readers",
    "check_r_bayes",
    "compute_scores",
    "format_selection_report",
    "magnitude_scores",
    "num_selected",
    "random_scores",
    "region_modules",
    "restrict_scores",
    "saliency_scores",
    "scope_modules",
    "select_bayesian_weights",
    "select_topk",
    "selection_report",
]
