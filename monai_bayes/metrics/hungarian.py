"""Hungarian-matched IoU (HM-IoU) between prediction samples and rater masks.

Reference
---------
Kohl et al., "A Hierarchical Probabilistic U-Net for Modeling Multi-Scale Ambiguities", arXiv:1905.13077,
2019 (LIDC evaluation: the set of rater masks is repeated to the number of samples, samples and masks are matched
one-to-one by the Hungarian algorithm with IoU as similarity, and the matched IoUs are averaged).

Balanced rule for any S and R
-----------------------------
Both sets are repeated to L = lcm(S, R) elements (every sample L/S times, every rater L/R times) and the
L × L assignment maximising the total IoU is found with :func:`scipy.optimize.linear_sum_assignment`.
HM-IoU is the mean IoU over the L matched pairs. When R divides S (e.g. 16 samples, 4 raters) this is
exactly the published definition (raters repeated S/R times). When it does not, every sample and every rater
still carries the same total weight, so the result does not depend on the order of the raters (truncating
a tiled rater list would favour the first raters); the value equals the optimal transport plan with uniform
marginals between the two sets. ``L`` is capped by ``max_matching_size``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.utils import MetricReduction
from scipy.optimize import linear_sum_assignment

from ._utils import CLASS_REDUCTIONS, check_option, check_samples_and_raters, lcm
from .base import MultiQuantityMetric
from .overlap import compute_pairwise_iou

__all__ = ["HungarianMatchedIoUMetric", "compute_hm_iou", "hm_iou_from_pairwise_iou", "matching_size"]

#: Default cap on the repeated set size L = lcm(S, R) (the assignment costs O(L³) on the host).
MAX_MATCHING_SIZE = 2048


def matching_size(num_samples: int, num_raters: int) -> int:
    """Size L = lcm(S, R) of the balanced assignment problem (L = S when R divides S)."""
    return lcm(num_samples, num_raters)


def _assignment_indices(iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve one balanced assignment per (case, class) on the host.

    This is the only host transfer of HM-IoU: the (B, K, S, R) IoU matrix goes to the host, and the
    (B, K, L) matched sample / rater indices come back to ``iou.device``.

    Parameters
    ----------
    iou
        (B, K, S, R) IoU matrix without NaN.

    Returns
    -------
    tuple of torch.Tensor
        ``sample_index`` and ``rater_index``, each (B, K, L) int64 on ``iou.device``.
    """
    b, k, s, r = iou.shape
    size = matching_size(s, r)
    host = iou.detach().to(device="cpu", dtype=torch.float64).numpy()
    rows_per_sample, cols_per_rater = size // s, size // r
    sample_index = np.empty((b, k, size), dtype=np.int64)
    rater_index = np.empty((b, k, size), dtype=np.int64)
    for case in range(b):
        for cls in range(k):
            # repeat sample i as rows i*L/S ... and rater j as columns j*L/R ...
            expanded = np.repeat(np.repeat(host[case, cls], rows_per_sample, axis=0), cols_per_rater, axis=1)
            rows, cols = linear_sum_assignment(expanded, maximize=True)
            sample_index[case, cls] = rows // rows_per_sample
            rater_index[case, cls] = cols // cols_per_rater
    return (
        torch.from_numpy(sample_index).to(iou.device),
        torch.from_numpy(rater_index).to(iou.device),
    )


def check_hm_iou_options(class_reduction: str, empty_policy: str) -> None:
    """HM-IoU needs a defined IoU for every pair: ``empty_policy='ignore'`` only with the class mean."""
    check_option(class_reduction, "class_reduction", CLASS_REDUCTIONS)
    check_option(empty_policy, "empty_policy", ("match", "mismatch", "ignore"))
    if empty_policy == "ignore" and class_reduction != "mean":
        raise ValueError(
            "empty_policy='ignore' needs class_reduction='mean' for HM-IoU (the assignment needs a defined IoU"
            f" for every pair), got class_reduction={class_reduction!r}."
        )


def _check_matching_size(num_samples: int, num_raters: int, max_matching_size: int) -> None:
    size = matching_size(num_samples, num_raters)
    if size > max_matching_size:
        raise ValueError(
            f"HM-IoU repeats samples and raters to lcm(S, R) = {size} > max_matching_size={max_matching_size}"
            f" for S={num_samples} samples (y_pred dim 1) and R={num_raters} raters (y dim 1); use a sample"
            " count that is a multiple of R or raise max_matching_size."
        )


def hm_iou_from_pairwise_iou(sample_rater: torch.Tensor, max_matching_size: int = MAX_MATCHING_SIZE) -> torch.Tensor:
    """HM-IoU from a (B, K, S, R) sample–rater IoU (``compute_pairwise_iou(...).sample_rater``).

    NaN entries (a pair empty in every class under ``empty_policy="ignore"``) count as IoU 1: both masks are
    empty, hence identical. Only this matrix goes to the host (see the module docstring).

    Parameters
    ----------
    sample_rater
        (B, K, S, R) IoU.
    max_matching_size
        Upper bound on L = lcm(S, R); larger problems raise ``ValueError``.

    Returns
    -------
    torch.Tensor
        (B, K) float32 HM-IoU on the device of ``sample_rater``.
    """
    num_samples, num_raters = sample_rater.shape[-2], sample_rater.shape[-1]
    _check_matching_size(num_samples, num_raters, max_matching_size)
    iou = torch.nan_to_num(sample_rater, nan=1.0)
    sample_index, rater_index = _assignment_indices(iou)
    matched = torch.gather(iou.flatten(start_dim=-2), -1, sample_index * num_raters + rater_index)
    return matched.mean(dim=-1)


def compute_hm_iou(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = False,
    class_reduction: str = "mean",
    empty_policy: str = "match",
    binarize: float | str | None = None,
    max_matching_size: int = MAX_MATCHING_SIZE,
) -> torch.Tensor:
    """Hungarian-matched IoU between S samples and R rater masks per case (Kohl et al. 2019).

    IoU between every sample and every rater is computed on the input's device with one batched matrix
    product; only the (B, K, S, R) IoU matrix is copied to the host for
    :func:`scipy.optimize.linear_sum_assignment` (one problem per case and class, see the module docstring
    for the balanced L = lcm(S, R) rule), and the matched IoUs are gathered and averaged on the device.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) binary prediction samples, or probabilities with ``binarize``.
    y
        (B, R, C, *spatial) binary rater masks.
    include_background
        Keep channel 0 when C > 1 (a single channel is always used).
    class_reduction
        ``"mean"``: IoU of a pair averaged over kept channels, one matching per case (B, 1);
        ``"none"``: one matching and HM-IoU per channel (B, K); ``"union"``: IoU of merged foreground (B, 1).
    empty_policy
        IoU of a pair of empty masks: ``"match"`` → 1 (default) or ``"mismatch"`` → 0. ``"ignore"`` is only
        allowed with ``class_reduction="mean"`` (the class is left out of that pair's mean); a pair that is
        empty in every channel is identical and scores 1, since the assignment needs a finite score per pair.
    binarize
        ``None``, a threshold or ``"argmax"`` (see :func:`~monai_bayes.metrics.compute_ged`).
    max_matching_size
        Upper bound on L = lcm(S, R); larger problems raise ``ValueError``.

    Returns
    -------
    torch.Tensor
        (B, K) float32 HM-IoU on ``y_pred.device``; 1 for identical sets.
    """
    check_samples_and_raters(y_pred, y)
    check_hm_iou_options(class_reduction, empty_policy)
    _check_matching_size(y_pred.shape[1], y.shape[1], max_matching_size)  # fail before any computation
    pairwise = compute_pairwise_iou(
        y_pred,
        y,
        include_background=include_background,
        class_reduction=class_reduction,
        empty_policy=empty_policy,
        binarize=binarize,
        within_sets=False,
    )
    return hm_iou_from_pairwise_iou(pairwise.sample_rater, max_matching_size)


class HungarianMatchedIoUMetric(MultiQuantityMetric):
    """Hungarian-matched IoU (HM-IoU) between prediction samples and all rater masks (Kohl et al. 2019).

    Call with ``y_pred`` = (B, S, C, *spatial) binary samples and ``y`` = (B, R, C, *spatial) binary rater
    masks; buffers one (B, K) value per case, ``"hm_iou"``. See :func:`compute_hm_iou` (balanced rule when
    S is not a multiple of R, empty-mask policy, class handling, the single host transfer).

    Parameters
    ----------
    include_background, class_reduction, empty_policy, binarize, max_matching_size
        As in :func:`compute_hm_iou`.
    reduction, get_not_nans
        MONAI reduction of the per-case values and whether to return ``not_nans``.
    """

    quantities = ("hm_iou",)

    def __init__(
        self,
        include_background: bool = False,
        class_reduction: str = "mean",
        empty_policy: str = "match",
        binarize: float | str | None = None,
        max_matching_size: int = MAX_MATCHING_SIZE,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        check_hm_iou_options(class_reduction, empty_policy)
        self.include_background = include_background
        self.class_reduction = class_reduction
        self.empty_policy = empty_policy
        self.binarize = binarize
        self.max_matching_size = max_matching_size

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Per-case HM-IoU, (B, K)."""
        check_samples_and_raters(y_pred, y)
        assert y is not None
        return compute_hm_iou(
            y_pred,
            y,
            include_background=self.include_background,
            class_reduction=self.class_reduction,
            empty_policy=self.empty_policy,
            binarize=self.binarize,
            max_matching_size=self.max_matching_size,
        )
