"""Soft-label Dice: Dice of the prediction against the rater-mean soft label of multi-rater data.

SD_c = 2 Σ_v p_c ȳ_c / (Σ_v p_c + Σ_v ȳ_c), with ȳ = (1/R) Σ_r y_r the rater mean and p either the hard
prediction (default; majority / argmax of the MC predictive mean) or the soft predictive mean p̄.

With a hard prediction this is exactly what :class:`monai.metrics.DiceMetric` computes when it is given the
soft label as a multi-channel (one-hot style) ``y``: MONAI binarises ``y_pred`` and keeps ``y`` as is; the
tests check that equality. (A *single-channel* ``y`` is read by MONAI as class indices, ``y == 1``, so a soft
label would silently become the "all raters agree" mask.) It is computed here in one vectorised expression
because MONAI's Dice casts ``y_pred`` to bool (so it cannot take a soft prediction) and loops over cases and
channels with one host synchronisation per channel.

Reference: Dice, "Measures of the amount of ecologic association between species", Ecology 26(3), 1945;
the products Σ p·ȳ generalise |A ∩ B| to fuzzy sets (the usual "soft Dice"). The threshold-averaged Dice of
the QUBIQ challenge is a different statistic and is not what this module computes.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import MetricReduction

from ._utils import (
    as_plain_tensor,
    check_categorical,
    check_probabilities,
    check_samples_and_raters,
    discretize_mean,
    resolve_likelihood,
    select_channels,
)
from .base import MultiQuantityMetric

__all__ = ["SoftDiceMetric", "compute_soft_dice"]


def compute_soft_dice(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    soft_prediction: bool = False,
    likelihood: str = "auto",
    threshold: float = 0.5,
    ignore_empty: bool = True,
) -> torch.Tensor:
    """Dice between the (hard or soft) predictive mean and the rater-mean soft label, per case and channel.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) probability (or binary) samples; S = 1 for a single prediction.
    y
        (B, R, C, *spatial) rater labels in [0, 1] (binary masks, one-hot for several classes).
    include_background
        Keep channel 0 when C > 1 (MONAI's ``DiceMetric`` default, True).
    soft_prediction
        False: p = hard prediction from the predictive mean (p̄ > ``threshold`` for Bernoulli, one-hot argmax
        for categorical); True: p = p̄ itself (continuous Dice).
    likelihood
        ``"auto"`` (Bernoulli for C = 1, categorical for C > 1), ``"bernoulli"`` or ``"categorical"``; only
        used for the hard prediction.
    threshold
        Bernoulli threshold of the hard prediction (strictly greater, as MONAI's ``AsDiscrete``).
    ignore_empty
        As MONAI: a channel with an empty soft label (Σ ȳ = 0) gives NaN (skipped by reductions); if False it
        gives 1 when the prediction is empty too and 0 otherwise.

    Returns
    -------
    torch.Tensor
        (B, K) float tensor on ``y_pred.device``, K = C or C − 1.
    """
    check_samples_and_raters(y_pred, y)
    y_pred, y = as_plain_tensor(y_pred), as_plain_tensor(y)
    check_probabilities(y_pred, "y_pred")
    check_probabilities(y, "y")
    likelihood = resolve_likelihood(likelihood, y_pred.shape[2])
    if likelihood == "categorical" and not soft_prediction:
        check_categorical(y_pred, "y_pred")
    dtype = y_pred.dtype if y_pred.is_floating_point() else torch.float32
    mean = y_pred.to(dtype).mean(dim=1)
    pred = mean if soft_prediction else discretize_mean(mean, likelihood, threshold)
    label = y.to(dtype).mean(dim=1)
    pred = select_channels(pred, include_background, channel_dim=1).flatten(start_dim=2)
    label = select_channels(label, include_background, channel_dim=1).flatten(start_dim=2)
    inter = (pred * label).sum(dim=-1)
    size_pred, size_label = pred.sum(dim=-1), label.sum(dim=-1)
    dice = 2.0 * inter / (size_pred + size_label).clamp(min=torch.finfo(dtype).tiny)
    empty_label = size_label <= 0
    if ignore_empty:
        fill = torch.full_like(dice, float("nan"))
    else:
        fill = (size_pred <= 0).to(dice.dtype)
    return torch.where(empty_label, fill, dice)


class SoftDiceMetric(MultiQuantityMetric):
    """Soft-label (rater-mean) Dice for multi-rater data, per case and channel (MONAI ``DiceMetric`` layout).

    Call with ``y_pred`` = (B, S, C, *spatial) probability samples and ``y`` = (B, R, C, *spatial) rater
    labels; buffers ``"soft_dice"`` (B, K). See :func:`compute_soft_dice`.

    Parameters
    ----------
    include_background, soft_prediction, likelihood, threshold, ignore_empty
        As in :func:`compute_soft_dice`.
    reduction, get_not_nans
        MONAI reduction of the per-case values and whether to return ``not_nans``.
    """

    quantities = ("soft_dice",)

    def __init__(
        self,
        include_background: bool = True,
        soft_prediction: bool = False,
        likelihood: str = "auto",
        threshold: float = 0.5,
        ignore_empty: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        resolve_likelihood(likelihood, 2)
        self.include_background = include_background
        self.soft_prediction = soft_prediction
        self.likelihood = likelihood
        self.threshold = threshold
        self.ignore_empty = ignore_empty

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        check_samples_and_raters(y_pred, y)
        assert y is not None
        return compute_soft_dice(
            y_pred,
            y,
            include_background=self.include_background,
            soft_prediction=self.soft_prediction,
            likelihood=self.likelihood,
            threshold=self.threshold,
            ignore_empty=self.ignore_empty,
        )
