"""Use MONAI's own metrics (Dice, MeanIoU, ECE, ROC AUC, AP, ...) on samples × raters data.

:class:`MultiRaterMetric` turns the (B, S, C, *spatial) samples / (B, R, C, *spatial) raters layout into the
(B, C, *spatial) prediction / label pair MONAI metrics expect, then hands it to the wrapped MONAI metric,
which keeps its own buffers and reduction. Nothing is re-implemented:

* prediction: the MC predictive mean p̄ = (1/S) Σ_s p_s (``prediction="mean"``, for calibration, ROC AUC,
  AP) or its hard version (``"discrete"``: p̄ > threshold for Bernoulli, one-hot argmax for categorical,
  for Dice and IoU);
* label: the rater mean (``rater_mode="soft"``), the majority vote (``"majority"``) or every rater as its
  own row (``"each"``: p̄ is repeated for each of the R raters, the wrapped metric sees B·R rows ordered
  case-major, row b·R + r).

Caveat: MONAI's ``DiceMetric`` reads a single-channel ``y`` as class indices (``y == 1``), so a soft
(rater-mean) single-channel label is refused for it; use :class:`~monai_bayes.metrics.SoftDiceMetric`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, DiceMetric

from ._utils import (
    RATER_MODES,
    as_plain_tensor,
    check_option,
    check_probabilities,
    check_samples_and_raters,
    discretize_mean,
    reduce_raters,
    resolve_likelihood,
)

__all__ = ["MultiRaterMetric", "reduce_samples_and_raters"]

PREDICTIONS = ("mean", "discrete")


def reduce_samples_and_raters(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    prediction: str = "mean",
    rater_mode: str = "soft",
    likelihood: str = "auto",
    threshold: float = 0.5,
    majority_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map (B, S, C, *spatial) samples and (B, R, C, *spatial) raters to MONAI's (N, C, *spatial) pair.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) probabilities (no spatial dims for classification).
    y
        (B, R, C, *spatial) labels in [0, 1].
    prediction
        ``"mean"`` (predictive mean p̄) or ``"discrete"`` (p̄ > ``threshold`` / one-hot argmax).
    rater_mode
        ``"soft"`` (rater mean), ``"majority"`` (rater mean >= ``majority_threshold``; one-hot argmax of the
        rater mean for categorical labels) or ``"each"`` (N = B·R rows, p̄ repeated per rater).
    likelihood
        ``"auto"``, ``"bernoulli"`` or ``"categorical"``: decides thresholding vs. argmax.
    threshold, majority_threshold
        Thresholds of the discrete prediction (strict) and of the majority vote (inclusive).

    Returns
    -------
    tuple of torch.Tensor
        ``(prediction, label)``, each (N, C, *spatial) float on ``y_pred.device``; N = B, or B·R for "each".
    """
    check_samples_and_raters(y_pred, y)
    check_option(prediction, "prediction", PREDICTIONS)
    check_option(rater_mode, "rater_mode", RATER_MODES)
    y_pred, y = as_plain_tensor(y_pred), as_plain_tensor(y)
    check_probabilities(y_pred, "y_pred")
    check_probabilities(y, "y")
    likelihood = resolve_likelihood(likelihood, y_pred.shape[2])
    mean = y_pred.float().mean(dim=1)
    if prediction == "discrete":
        mean = discretize_mean(mean, likelihood, threshold)
    if rater_mode == "each":
        num_raters = y.shape[1]
        return mean.repeat_interleave(num_raters, dim=0), y.float().flatten(end_dim=1)
    return mean, reduce_raters(y, rater_mode, likelihood, majority_threshold)


class MultiRaterMetric(CumulativeIterationMetric):
    """Apply a MONAI metric to MC samples and multi-rater labels (see the module docstring).

    The wrapped metric keeps the buffers: :meth:`aggregate`, :meth:`get_buffer` and :meth:`reset` are
    forwarded to it, so e.g. ``MultiRaterMetric(CalibrationErrorMetric()).aggregate()`` is MONAI's ECE.

    Parameters
    ----------
    metric
        A MONAI cumulative metric taking ``(y_pred, y)`` as (N, C, *spatial) tensors, e.g.
        ``DiceMetric``, ``MeanIoU``, ``CalibrationErrorMetric``, ``ROCAUCMetric``, ``AveragePrecisionMetric``.
    prediction, rater_mode, likelihood, threshold, majority_threshold
        As in :func:`reduce_samples_and_raters`.

    Examples
    --------
    >>> from monai.metrics import CalibrationErrorMetric, DiceMetric
    >>> ece = MultiRaterMetric(CalibrationErrorMetric(num_bins=15), prediction="mean", rater_mode="soft")
    >>> dice = MultiRaterMetric(DiceMetric(), prediction="discrete", rater_mode="each")
    """

    def __init__(
        self,
        metric: CumulativeIterationMetric,
        prediction: str = "mean",
        rater_mode: str = "soft",
        likelihood: str = "auto",
        threshold: float = 0.5,
        majority_threshold: float = 0.5,
    ) -> None:
        if not isinstance(metric, CumulativeIterationMetric):
            raise ValueError(f"metric must be a monai CumulativeIterationMetric, got {type(metric).__name__}.")
        self.metric = metric
        super().__init__()
        self.prediction = check_option(prediction, "prediction", PREDICTIONS)
        self.rater_mode = check_option(rater_mode, "rater_mode", RATER_MODES)
        resolve_likelihood(likelihood, 2)
        self.likelihood = likelihood
        self.threshold = threshold
        self.majority_threshold = majority_threshold

    def _reduce(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return reduce_samples_and_raters(
            y_pred,
            y,
            prediction=self.prediction,
            rater_mode=self.rater_mode,
            likelihood=self.likelihood,
            threshold=self.threshold,
            majority_threshold=self.majority_threshold,
        )

    def __call__(
        self,
        y_pred: torch.Tensor | Sequence[torch.Tensor],
        y: torch.Tensor | Sequence[torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Reduce samples / raters and feed the wrapped metric, which buffers the result.

        Lists of per-case (S, C, *spatial) / (R, C, *spatial) tensors are stacked into a batch first.
        """
        if isinstance(y_pred, (list, tuple)):
            y_pred = torch.stack(list(y_pred))
        if isinstance(y, (list, tuple)):
            y = torch.stack(list(y))
        check_samples_and_raters(y_pred, y)  # type: ignore[arg-type]  # lists / tuples stacked above
        self._check_single_channel_dice(y_pred)  # type: ignore[arg-type]  # lists / tuples stacked above
        pred, label = self._reduce(y_pred.detach(), y.detach())  # type: ignore[union-attr]  # tensors: stacked above, None refused by the check
        return self.metric(pred, label, **kwargs)

    def _check_single_channel_dice(self, y_pred: torch.Tensor) -> None:
        """MONAI's Dice reads a single-channel ``y`` as class indices (``y == 1``): refuse soft labels there."""
        if self.rater_mode == "soft" and y_pred.shape[2] == 1 and isinstance(self.metric, DiceMetric):
            raise ValueError(
                "rater_mode='soft' with DiceMetric and a single channel (C=1) would be read by MONAI as class"
                f" indices (y == 1), got y_pred {tuple(y_pred.shape)}; use monai_bayes.metrics.SoftDiceMetric,"
                " rater_mode='majority' / 'each', or two-channel one-hot inputs."
            )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Unbuffered computation through the wrapped metric's ``_compute_tensor``."""
        check_samples_and_raters(y_pred, y)
        assert y is not None
        pred, label = self._reduce(y_pred, y)
        return self.metric._compute_tensor(pred, label, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        """Forwarded to the wrapped metric's ``aggregate``."""
        return self.metric.aggregate(*args, **kwargs)

    def get_buffer(self) -> Any:
        """Forwarded to the wrapped metric's ``get_buffer``."""
        return self.metric.get_buffer()

    def reset(self) -> None:
        """Reset the wrapped metric's buffers."""
        super().reset()
        if hasattr(self, "metric"):
            self.metric.reset()

    def __len__(self) -> int:
        return len(self.metric)

    def __str__(self) -> str:
        return f"MultiRater({self.metric})"
