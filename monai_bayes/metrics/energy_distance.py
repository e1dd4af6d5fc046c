"""Generalised energy distance (GED) between prediction samples and rater masks, with d = 1 − IoU.

References
----------
Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018 (§4, performance measure);
Baumgartner et al., "PHiSeg: Capturing Uncertainty in Medical Image Segmentation", MICCAI 2019 (evaluation section,
where the E[d(S, S′)] term is reported as the sample diversity).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from monai.utils import MetricReduction

from ._utils import CLASS_REDUCTIONS, EMPTY_POLICIES, check_option, check_samples_and_raters
from .base import MultiQuantityMetric
from .hungarian import MAX_MATCHING_SIZE, check_hm_iou_options, hm_iou_from_pairwise_iou
from .overlap import PairwiseIoU, compute_pairwise_iou

__all__ = ["GEDResult", "GeneralizedEnergyDistanceMetric", "compute_ged", "ged_from_pairwise_iou"]


class GEDResult(NamedTuple):
    """Per-case GED and its terms, each (B, K) with K = 1 (class mean / union) or the number of classes.

    Attributes
    ----------
    ged
        D²_GED = 2·cross_distance − sample_diversity − rater_diversity (or its square root, see ``squared``).
    cross_distance
        E[d(S, Y)] over all S × R sample–rater pairs.
    sample_diversity
        E[d(S, S′)] over all S × S sample pairs (diagonal included).
    rater_diversity
        E[d(Y, Y′)] over all R × R rater pairs (diagonal included).
    """

    ged: torch.Tensor
    cross_distance: torch.Tensor
    sample_diversity: torch.Tensor
    rater_diversity: torch.Tensor


def _mean_distance(iou: torch.Tensor) -> torch.Tensor:
    """E[1 − IoU] over the last two (pair) dims of a (B, K, M, P) IoU, NaN entries left out."""
    return torch.nanmean((1.0 - iou).flatten(start_dim=-2), dim=-1)


def ged_from_pairwise_iou(pairwise: PairwiseIoU, squared: bool = True) -> GEDResult:
    """GED and its terms from the pairwise IoU of :func:`~monai_bayes.metrics.compute_pairwise_iou`.

    Parameters
    ----------
    pairwise
        Output of ``compute_pairwise_iou(..., within_sets=True)``.
    squared
        Return D²_GED (default) or sqrt(max(D²_GED, 0)).

    Returns
    -------
    GEDResult
        Four (B, K) tensors.
    """
    if pairwise.sample_sample is None or pairwise.rater_rater is None:
        raise ValueError("pairwise must hold the within-set IoU; call compute_pairwise_iou(..., within_sets=True).")
    cross = _mean_distance(pairwise.sample_rater)
    sample_div = _mean_distance(pairwise.sample_sample)
    rater_div = _mean_distance(pairwise.rater_rater)
    ged_sq = 2.0 * cross - sample_div - rater_div
    ged = ged_sq if squared else ged_sq.clamp(min=0.0).sqrt()
    return GEDResult(ged, cross, sample_div, rater_div)


def compute_ged(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = False,
    class_reduction: str = "mean",
    empty_policy: str = "match",
    squared: bool = True,
    binarize: float | str | None = None,
) -> GEDResult:
    """Generalised energy distance between S samples and R rater masks per case, d(a, b) = 1 − IoU(a, b).

    D²_GED = 2·E[d(S, Y)] − E[d(S, S′)] − E[d(Y, Y′)] (Kohl et al. 2018; Baumgartner et al.
    2019). Expectations are plain means over all pairs of the empirical sets, diagonal pairs (d = 0)
    included, as in the published evaluation code, so that a set compared with itself gives exactly 0.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) binary prediction samples (bool or 0/1), or probabilities with ``binarize``.
    y
        (B, R, C, *spatial) binary rater masks. R may differ from S.
    include_background
        Keep channel 0 when C > 1. With a single (sigmoid) channel it is always used.
    class_reduction
        How channels enter d: ``"mean"`` averages the per-class IoU of each pair over the kept channels
        (PHiSeg / Prob. U-Net multi-class convention; result (B, 1)); ``"none"`` gives one GED per kept
        channel (B, K); ``"union"`` merges the kept channels into one foreground mask (B, 1).
    empty_policy
        IoU of a (pair, class) whose two masks are both empty: ``"match"`` → IoU 1, d = 0 (PHiSeg, default);
        ``"mismatch"`` → IoU 0, d = 1; ``"ignore"`` → left out of the class mean and of the pair means
        (class-wise nanmean of the Prob. U-Net Cityscapes evaluation code); a term with no defined pair is
        NaN, and MONAI reductions skip NaN.
    squared
        Return D²_GED (the value tabulated by Kohl et al. 2018 and Baumgartner et al. 2019, default) or
        D_GED = sqrt(max(D²_GED, 0)).
    binarize
        ``None`` (``y_pred`` must be binary), a threshold ``t`` (``y_pred > t``) or ``"argmax"`` (one-hot).

    Returns
    -------
    GEDResult
        Four (B, K) float32 tensors on ``y_pred.device``: ged, cross_distance, sample_diversity,
        rater_diversity.

    Raises
    ------
    ValueError
        On shape mismatch between ``y_pred`` and ``y``, non-binary masks, NaN probabilities or bad options.
    """
    pairwise = compute_pairwise_iou(
        y_pred,
        y,
        include_background=include_background,
        class_reduction=class_reduction,
        empty_policy=empty_policy,
        binarize=binarize,
        within_sets=True,
    )
    return ged_from_pairwise_iou(pairwise, squared=squared)


class GeneralizedEnergyDistanceMetric(MultiQuantityMetric):
    """Generalised energy distance (GED, d = 1 − IoU) between prediction samples and all rater masks.

    Call with ``y_pred`` = (B, S, C, *spatial) binary samples and ``y`` = (B, R, C, *spatial) binary rater
    masks (a list of (S, C, *spatial) / (R, C, *spatial) tensors also works). Each call buffers four
    per-case quantities, see :class:`GEDResult`: ``"ged"`` (D²_GED by default), ``"cross_distance"``,
    ``"sample_diversity"`` (E[d(S, S′)], the PHiSeg sample diversity) and ``"rater_diversity"``; with
    ``with_hm_iou=True`` also ``"hm_iou"``, computed from the same sample–rater IoU matrix (no second pass
    over the masks). :meth:`aggregate` reduces ``"ged"`` (or ``quantity=...``); :meth:`aggregate_all`
    reduces all of them.

    See :func:`compute_ged` for the formula, the empty-mask policy and the class handling.

    Parameters
    ----------
    include_background, class_reduction, empty_policy, squared, binarize
        As in :func:`compute_ged`.
    with_hm_iou
        Also buffer the Hungarian-matched IoU (see :func:`~monai_bayes.metrics.compute_hm_iou`).
    max_matching_size
        Bound on lcm(S, R) for ``with_hm_iou``.
    reduction
        Default MONAI reduction of the (N, K) per-case values (NaN skipped), ``"mean"`` by default.
    get_not_nans
        Return ``(value, not_nans)`` from :meth:`aggregate`.

    Examples
    --------
    >>> metric = GeneralizedEnergyDistanceMetric(with_hm_iou=True)
    >>> samples = torch.randint(0, 2, (2, 16, 1, 32, 32))
    >>> raters = torch.randint(0, 2, (2, 4, 1, 32, 32))
    >>> per_case = metric(samples, raters)  # list of five (2, 1) tensors
    >>> ged, hm_iou = metric.aggregate(), metric.aggregate(quantity="hm_iou")
    """

    quantities: tuple[str, ...] = ("ged", "cross_distance", "sample_diversity", "rater_diversity")

    def __init__(
        self,
        include_background: bool = False,
        class_reduction: str = "mean",
        empty_policy: str = "match",
        squared: bool = True,
        binarize: float | str | None = None,
        with_hm_iou: bool = False,
        max_matching_size: int = MAX_MATCHING_SIZE,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        if with_hm_iou:
            check_hm_iou_options(class_reduction, empty_policy)
            self.quantities = (*type(self).quantities, "hm_iou")
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.include_background = include_background
        self.class_reduction = check_option(class_reduction, "class_reduction", CLASS_REDUCTIONS)
        self.empty_policy = check_option(empty_policy, "empty_policy", EMPTY_POLICIES)
        self.squared = squared
        self.binarize = binarize
        self.with_hm_iou = with_hm_iou
        self.max_matching_size = max_matching_size

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list[torch.Tensor]:
        """Per-case [ged, cross_distance, sample_diversity, rater_diversity(, hm_iou)], each (B, K)."""
        check_samples_and_raters(y_pred, y)
        assert y is not None
        pairwise = compute_pairwise_iou(
            y_pred,
            y,
            include_background=self.include_background,
            class_reduction=self.class_reduction,
            empty_policy=self.empty_policy,
            binarize=self.binarize,
            within_sets=True,
        )
        values = list(ged_from_pairwise_iou(pairwise, squared=self.squared))
        if self.with_hm_iou:
            values.append(hm_iou_from_pairwise_iou(pairwise.sample_rater, self.max_matching_size))
        return values
