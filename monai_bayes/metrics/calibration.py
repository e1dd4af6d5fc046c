"""Expected calibration error (ECE) pooled over every pixel of a data set.

Two ECE conventions are in use for segmentation, and they give different numbers:

* **mean of per-image ECEs** — MONAI's :class:`monai.metrics.CalibrationErrorMetric`: bins and ECE per image
  and channel, then the mean over images. Use it directly (through
  :class:`~monai_bayes.metrics.MultiRaterMetric` on samples × raters data); it is not re-implemented here.
* **pooled** — torchmetrics' ``BinaryCalibrationError(n_bins, norm="l1")`` convention: one set of bins filled
  with every pixel of every image, ECE = Σ_k (n_k / N) |acc_k − conf_k|, where conf_k is the mean predicted
  foreground probability and acc_k the fraction of foreground labels in bin k. Large, confident background
  regions weigh in proportion to their pixel count, so the pooled ECE of a segmentation model is usually
  smaller than the mean of per-image ECEs. :class:`PooledCalibrationErrorMetric` computes it; it keeps only
  per-image bin sums, ``(3, num_bins + 1)`` numbers per image and channel.

Binning follows torchmetrics: boundaries ``linspace(0, 1, num_bins + 1)`` in the input's dtype, a probability
p goes to bin ``bucketize(p, boundaries, right=True) − 1``, i.e. bins ``[k/K, (k+1)/K)``, and p = 1 exactly
gets an extra bin of its own (MONAI's binning puts it into the last bin instead). Sums are accumulated in
float64.

References
----------
Naeini, Cooper, Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning", AAAI 2015;
Guo, Pleiss, Sun, Weinberger, "On calibration of modern neural networks", ICML 2017.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import ignore_background

from ._utils import check_option, check_probabilities, shape_str

__all__ = [
    "ECE_REDUCTIONS",
    "PooledCalibrationErrorMetric",
    "calibration_bin_sums",
    "calibration_error_from_bin_sums",
    "compute_pooled_calibration_error",
]

#: Channel reductions of :class:`PooledCalibrationErrorMetric`.
ECE_REDUCTIONS = ("mean", "none")


def _check_num_bins(num_bins: int) -> int:
    """Return ``num_bins`` if it is an int >= 1, else raise a ``ValueError`` naming it."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be an int >= 1, got {num_bins!r}.")
    return num_bins


def calibration_bin_sums(y_pred: torch.Tensor, y: torch.Tensor, num_bins: int = 15) -> torch.Tensor:
    """Per image, channel and confidence bin: pixel count, Σ predicted probability, Σ label.

    Parameters
    ----------
    y_pred : torch.Tensor
        ``(B, C, *spatial)`` foreground probabilities in [0, 1] (``(B, C)`` for classification).
    y : torch.Tensor
        ``(B, C, *spatial)`` labels in [0, 1], same shape (binary, or a soft label).
    num_bins : int
        K equal-width bins on [0, 1]; the result has K + 1 bins, the last one holding p = 1 exactly.

    Returns
    -------
    torch.Tensor
        ``(B, C, 3, K + 1)`` float64 on ``y_pred.device``: ``[..., 0, k]`` count, ``[..., 1, k]`` Σ p,
        ``[..., 2, k]`` Σ y over the pixels of bin k.

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than 2 dims, values are not finite probabilities, or
        ``num_bins`` is not an int >= 1.
    """
    num_bins = _check_num_bins(num_bins)
    if y_pred.ndim < 2 or y_pred.shape != y.shape:
        raise ValueError(
            f"y_pred and y must both be (B, C, *spatial) of the same shape, got y_pred {shape_str(y_pred)}"
            f" and y {shape_str(y)}."
        )
    check_probabilities(y_pred, "y_pred")
    check_probabilities(y, "y")
    prob = (y_pred.flatten(start_dim=2) if y_pred.ndim > 2 else y_pred.unsqueeze(-1)).contiguous()
    if not prob.is_floating_point():
        prob = prob.float()
    label = (y.flatten(start_dim=2) if y.ndim > 2 else y.unsqueeze(-1)).to(torch.float64)
    boundaries = torch.linspace(0, 1, num_bins + 1, dtype=prob.dtype, device=prob.device)
    index = torch.bucketize(prob, boundaries, right=True) - 1  # [k/K, (k+1)/K) -> k; p == 1 -> K
    sums = torch.zeros(*prob.shape[:2], 3, num_bins + 1, dtype=torch.float64, device=prob.device)
    sums[:, :, 0].scatter_add_(-1, index, torch.ones_like(label))
    sums[:, :, 1].scatter_add_(-1, index, prob.to(torch.float64))
    sums[:, :, 2].scatter_add_(-1, index, label)
    return sums


def calibration_error_from_bin_sums(bin_sums: torch.Tensor) -> torch.Tensor:
    """ECE from bin sums: Σ_k (n_k / N) |acc_k − conf_k| = Σ_k |Σ_k y − Σ_k p| / N.

    Parameters
    ----------
    bin_sums : torch.Tensor
        ``(..., 3, K + 1)`` counts, Σ p and Σ y per bin (from :func:`calibration_bin_sums`, summed over
        whatever is to be pooled).

    Returns
    -------
    torch.Tensor
        ``(...)`` float64 ECE in [0, 1]; NaN where there is no pixel (N = 0).

    Raises
    ------
    ValueError
        If dim -2 does not have size 3.
    """
    if bin_sums.ndim < 2 or bin_sums.shape[-2] != 3:
        raise ValueError(f"bin_sums must be (..., 3, K + 1) (count, sum p, sum y), got {shape_str(bin_sums)}.")
    count, sum_p, sum_y = bin_sums.unbind(dim=-2)
    total = count.sum(dim=-1)
    gap = (sum_y - sum_p).abs().sum(dim=-1)
    return torch.where(total > 0, gap / total.clamp(min=1), torch.full_like(total, float("nan")))


def compute_pooled_calibration_error(
    y_pred: torch.Tensor, y: torch.Tensor, num_bins: int = 15, include_background: bool = True
) -> torch.Tensor:
    """ECE per channel with every pixel of every image of the batch in one set of bins (torchmetrics' convention).

    For one channel this equals ``torchmetrics.functional.classification.binary_calibration_error(
    y_pred.flatten(), y.flatten(), n_bins=num_bins, norm="l1")``.

    Parameters
    ----------
    y_pred : torch.Tensor
        ``(B, C, *spatial)`` foreground probabilities in [0, 1].
    y : torch.Tensor
        ``(B, C, *spatial)`` labels in [0, 1].
    num_bins : int
        Number of equal-width bins (plus the bin of p = 1).
    include_background : bool
        Whether channel 0 is scored (MONAI convention; ignored for one channel).

    Returns
    -------
    torch.Tensor
        ``(C,)`` float64 pooled ECE (``C − 1`` values without background), on ``y_pred.device``.
    """
    if not include_background:
        y_pred, y = ignore_background(y_pred, y)
    return calibration_error_from_bin_sums(calibration_bin_sums(y_pred, y, num_bins).sum(dim=0))


class PooledCalibrationErrorMetric(CumulativeIterationMetric):
    """ECE over all pixels of all images seen so far (torchmetrics' binary ECE, per channel).

    Each call buffers per-image bin sums (:func:`calibration_bin_sums`); :meth:`aggregate` adds them over the
    images and computes one ECE per channel (:func:`calibration_error_from_bin_sums`), so the result does not
    depend on how the data are batched. The mean of per-image ECEs is MONAI's
    :class:`monai.metrics.CalibrationErrorMetric`; report which of the two you show. On samples × raters data
    wrap it in :class:`~monai_bayes.metrics.MultiRaterMetric` (``prediction="mean"``) and, in an Ignite
    engine, use :class:`~monai_bayes.handlers.MultiRater` with ``save_details=False`` (the buffers are bin
    sums, not per-case values).

    Parameters
    ----------
    num_bins : int
        Number of equal-width bins on [0, 1] (plus the bin of p = 1), like torchmetrics' ``n_bins``.
    include_background : bool
        Whether channel 0 is scored.
    reduction : str
        ``"mean"``: mean over channels (a scalar; for one channel the channel's ECE), ``"none"``: ``(C,)``.
    """

    def __init__(self, num_bins: int = 15, include_background: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        self.num_bins = _check_num_bins(num_bins)
        self.include_background = include_background
        self.reduction = check_option(reduction, "reduction", ECE_REDUCTIONS)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``(B, C, 3, K + 1)`` per-image bin sums of a ``(B, C, *spatial)`` batch."""
        if y is None:
            raise ValueError("y (labels, (B, C, *spatial)) is required, got None.")
        if not self.include_background:
            y_pred, y = ignore_background(y_pred, y)
        return calibration_bin_sums(y_pred, y, self.num_bins)

    def bin_sums(self) -> torch.Tensor:
        """``(C, 3, K + 1)`` bin sums over every image buffered so far (e.g. for a reliability diagram).

        Raises
        ------
        ValueError
            If nothing has been buffered yet.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError(f"{type(self).__name__} has no accumulated values; call it on a batch first.")
        return data.sum(dim=0)

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        """Pooled ECE: a scalar (``reduction="mean"``, mean over channels) or ``(C,)`` (``"none"``), float64."""
        reduction = check_option(reduction or self.reduction, "reduction", ECE_REDUCTIONS)
        ece = calibration_error_from_bin_sums(self.bin_sums())
        return ece.nanmean() if reduction == "mean" else ece
