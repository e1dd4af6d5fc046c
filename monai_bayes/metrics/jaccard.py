"""Thresholded Jaccard index: the ranking score of the ISIC 2018 lesion-segmentation challenge (task 1).

The ISIC 2018 scorer computes one Jaccard index J = |P ∩ G| / |P ∪ G| per image, replaces every value below
0.65 by 0, and ranks submissions by the mean of these per-image scores (Codella et al. 2019; the challenge's
open-source scorer, ``isic-challenge-scoring``, does exactly this). An image whose ground truth *and*
prediction are both empty scores 1; an empty ground truth with a non-empty prediction scores 0. That is
MONAI's :func:`monai.metrics.compute_iou` with ``ignore_empty=False``, so the Jaccard itself is MONAI's; this
module only applies the threshold.

References
----------
Codella et al., "Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the
International Skin Imaging Collaboration (ISIC)", arXiv:1902.03368, 2019.
"""

from __future__ import annotations

import torch
from monai.metrics import MeanIoU, compute_iou
from monai.utils import MetricReduction

__all__ = ["ISIC_JACCARD_THRESHOLD", "ThresholdedJaccardMetric", "compute_thresholded_jaccard", "threshold_scores"]

#: Per-image Jaccard values below this count as 0 in the ISIC 2018 task-1 score.
ISIC_JACCARD_THRESHOLD = 0.65


def _check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float if it lies in [0, 1], else raise a ``ValueError`` naming it."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}.")
    return float(threshold)


def threshold_scores(scores: torch.Tensor, threshold: float = ISIC_JACCARD_THRESHOLD) -> torch.Tensor:
    """Set every score below ``threshold`` to 0; scores at or above it, and NaN, are kept.

    Parameters
    ----------
    scores : torch.Tensor
        Per-image scores of any shape, e.g. ``(B, C)`` Jaccard values in [0, 1].
    threshold : float
        Scores ``< threshold`` become 0 (the ISIC scorer keeps ``J >= 0.65``).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``scores``.

    Raises
    ------
    ValueError
        If ``threshold`` is not a number in [0, 1].
    """
    threshold = _check_threshold(threshold)
    return scores.masked_fill(scores < threshold, 0.0)  # NaN < t is False: NaN stays NaN


def compute_thresholded_jaccard(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    threshold: float = ISIC_JACCARD_THRESHOLD,
    include_background: bool = True,
    ignore_empty: bool = False,
) -> torch.Tensor:
    """Per-image, per-channel thresholded Jaccard index (ISIC 2018 task-1 score before the mean over images).

    Parameters
    ----------
    y_pred : torch.Tensor
        ``(B, C, *spatial)`` binary prediction (one-hot or one channel per label).
    y : torch.Tensor
        ``(B, C, *spatial)`` binary ground truth, same shape.
    threshold : float
        Jaccard values below it count as 0 (default 0.65, the ISIC 2018 value).
    include_background : bool
        Whether channel 0 is scored (MONAI convention).
    ignore_empty : bool
        ``False`` (default, the ISIC scorer): an empty ground truth scores 1 if the prediction is empty too,
        else 0. ``True`` (MONAI's default): NaN, skipped by the reduction.

    Returns
    -------
    torch.Tensor
        ``(B, C)`` float scores in {0} ∪ [threshold, 1] (or NaN), on the device of ``y_pred``.

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than 3 dims, or ``threshold`` is not in [0, 1].
    """
    threshold = _check_threshold(threshold)
    if y_pred.ndim < 3 or y_pred.shape != y.shape:
        raise ValueError(
            "y_pred and y must both be (B, C, *spatial) binary masks of the same shape,"
            f" got y_pred {tuple(y_pred.shape)} and y {tuple(y.shape)}."
        )
    iou = compute_iou(y_pred, y, include_background=include_background, ignore_empty=ignore_empty)
    return threshold_scores(iou, threshold)


class ThresholdedJaccardMetric(MeanIoU):
    """MONAI ``MeanIoU`` whose per-image values below ``threshold`` count as 0 (ISIC 2018 task-1 score).

    ``aggregate()`` with the default ``reduction="mean"`` is the challenge's ranking score: the mean over
    images of the thresholded per-image Jaccard. On samples × raters data wrap it in
    :class:`~monai_bayes.metrics.MultiRaterMetric` (``prediction="discrete"``), or use the
    :class:`~monai_bayes.handlers.MultiRater` handler. See :func:`compute_thresholded_jaccard`.

    Parameters
    ----------
    threshold : float
        Per-image Jaccard values below it count as 0 (default 0.65).
    include_background : bool
        Whether channel 0 is scored.
    reduction : MetricReduction or str
        MONAI reduction of the ``(N, C)`` per-image values (NaN skipped).
    get_not_nans : bool
        Whether ``aggregate()`` also returns the count of non-NaN values.
    ignore_empty : bool
        ``False`` (default): empty ground truth scores 1 for an empty prediction, else 0, as the ISIC scorer
        does; ``True``: NaN and skipped, as MONAI's ``MeanIoU`` does by default.
    """

    def __init__(
        self,
        threshold: float = ISIC_JACCARD_THRESHOLD,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        ignore_empty: bool = False,
    ) -> None:
        super().__init__(
            include_background=include_background,
            reduction=reduction,
            get_not_nans=get_not_nans,
            ignore_empty=ignore_empty,
        )
        self.threshold = _check_threshold(threshold)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # as MONAI's MeanIoU
        """``(B, C)`` thresholded Jaccard of a ``(B, C, *spatial)`` batch (MONAI's IoU, then the threshold)."""
        return threshold_scores(super()._compute_tensor(y_pred, y), self.threshold)
