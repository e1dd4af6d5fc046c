"""Choosing which weights become Bayesian: saliency scores and Top-k masks (seed 000, step 2)."""

from monai_bayes.selection.topk import SelectionScope, check_r_bayes, num_selected, select_topk

__all__ = ["SelectionScope", "check_r_bayes", "num_selected", "select_topk"]
