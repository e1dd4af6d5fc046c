"""Proper scoring rules of the predictive distribution: Brier score and negative log-likelihood.

The predictive distribution is the sample mean p̄ = (1/S) Σ_s p_s of the S probability samples (the Monte
Carlo estimate of the Bayesian model average). Multi-rater targets: the score is averaged over the raters
(``rater_mode="each"``, the expected score for a randomly drawn rater) or computed against the rater-mean
soft label (``"soft"``) or the majority vote (``"majority"``).

References
----------
Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather Review 78(1), 1950;
Gneiting & Raftery, "Strictly proper scoring rules, prediction, and estimation", JASA 102(477), 2007.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import MetricReduction

from ._utils import (
    RATER_MODES,
    as_plain_tensor,
    check_categorical,
    check_option,
    check_probabilities,
    check_samples_and_raters,
    reduce_raters,
    resolve_likelihood,
)
from .base import MultiQuantityMetric

__all__ = ["BrierScoreMetric", "NegativeLogLikelihoodMetric", "compute_brier_score", "compute_nll"]


def _prepare(y_pred: torch.Tensor, y: torch.Tensor, likelihood: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Validate inputs and return (predictive mean (B, C, *spatial), raters (B, R, C, *spatial), likelihood)."""
    check_samples_and_raters(y_pred, y)
    y_pred, y = as_plain_tensor(y_pred), as_plain_tensor(y)
    likelihood = resolve_likelihood(likelihood, y_pred.shape[2])
    check_probabilities(y_pred, "y_pred")
    check_probabilities(y, "y")
    if likelihood == "categorical":
        check_categorical(y_pred, "y_pred")
    dtype = y_pred.dtype if y_pred.is_floating_point() else torch.float32
    return y_pred.to(dtype).mean(dim=1), y.to(dtype), likelihood


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over all dims after (B, C); a (B, C) input is returned unchanged."""
    return x.flatten(start_dim=2).mean(dim=-1) if x.ndim > 2 else x


def compute_brier_score(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    likelihood: str = "auto",
    rater_mode: str = "each",
    class_mean: bool = True,
) -> torch.Tensor:
    """Brier score of the predictive mean against rater labels, averaged over voxels, per case.

    Bernoulli (sigmoid, multi-label): BS_c = mean_v (p̄_c − y_c)² per channel, (B, C).
    Categorical (softmax), ``class_mean=True`` (default): BS = mean_v (1/C) Σ_c (p̄_c − y_c)², range [0, 2/C] --
    the definition of seed 000 and of the authors' code (``utils.py`` ``compute_brier_score``:
    ``torch.sum((probs - targets)**2, dim=class_dim) / num_classes``); for C = 2 it equals the Bernoulli score
    of the foreground channel. ``class_mean=False``: Brier's (1950) sum over classes, range [0, 2] (2× for C = 2).

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) probabilities of S samples (S = 1 for a deterministic model). No spatial dims
        (B, S, C) means multi-label / multi-class classification.
    y
        (B, R, C, *spatial) rater labels in [0, 1] (one-hot for categorical).
    likelihood
        ``"bernoulli"``, ``"categorical"`` or ``"auto"`` (Bernoulli for C = 1, categorical for C > 1).
    rater_mode
        ``"each"``: mean over raters of the score against each rater (= score against the soft label plus the
        rater variance); ``"soft"``: against the rater mean; ``"majority"``: against the majority vote.
    class_mean
        Categorical only: divide the sum over classes by C (default, the seed's) or not (Brier 1950).

    Returns
    -------
    torch.Tensor
        (B, C) or (B, 1) float tensor on ``y_pred.device``.
    """
    check_option(rater_mode, "rater_mode", RATER_MODES)
    mean, raters, likelihood = _prepare(y_pred, y, likelihood)
    if rater_mode == "each":
        squared = (mean.unsqueeze(1) - raters).square().mean(dim=1)
    else:
        squared = (mean - reduce_raters(raters, rater_mode, likelihood).to(mean.dtype)).square()
    if likelihood == "categorical":
        squared = squared.mean(dim=1, keepdim=True) if class_mean else squared.sum(dim=1, keepdim=True)
    return _spatial_mean(squared)


def compute_nll(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    likelihood: str = "auto",
    rater_mode: str = "each",
    eps: float = 1e-7,
) -> torch.Tensor:
    """Negative log-likelihood (nats) of rater labels under the predictive mean, averaged over voxels.

    Bernoulli: NLL_c = −mean_v [y_c log p̄_c + (1 − y_c) log(1 − p̄_c)], (B, C).
    Categorical: NLL = −mean_v Σ_c y_c log p̄_c, (B, 1). Probabilities are clamped to ``[eps, 1]`` inside
    the logarithms. The NLL is linear in y, so ``rater_mode="each"`` and ``"soft"`` give the same value.

    Parameters
    ----------
    y_pred, y, likelihood, rater_mode
        As in :func:`compute_brier_score`.
    eps
        Lower clamp of the probabilities inside ``log``.

    Returns
    -------
    torch.Tensor
        (B, C) or (B, 1) float tensor on ``y_pred.device``.
    """
    check_option(rater_mode, "rater_mode", RATER_MODES)
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
    mean, raters, likelihood = _prepare(y_pred, y, likelihood)
    target = raters.mean(dim=1) if rater_mode == "each" else reduce_raters(raters, rater_mode, likelihood)
    target = target.to(mean.dtype)
    log_p = mean.clamp(min=eps).log()
    if likelihood == "categorical":
        nll = -(target * log_p).sum(dim=1, keepdim=True)
    else:
        log_q = (1.0 - mean).clamp(min=eps).log()
        nll = -(target * log_p + (1.0 - target) * log_q)
    return _spatial_mean(nll)


class _ScoreMetric(MultiQuantityMetric):
    """Shared constructor / compute for the per-case scoring-rule metrics."""

    def __init__(
        self,
        likelihood: str = "auto",
        rater_mode: str = "each",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.likelihood = likelihood
        self.rater_mode = check_option(rater_mode, "rater_mode", RATER_MODES)
        resolve_likelihood(likelihood, 2)  # validates the option early

    def _score(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        check_samples_and_raters(y_pred, y)
        assert y is not None
        return self._score(y_pred, y)


class BrierScoreMetric(_ScoreMetric):
    """Brier score of the MC predictive mean against (all) rater labels, per case (lower is better).

    Call with ``y_pred`` = (B, S, C, *spatial) probability samples and ``y`` = (B, R, C, *spatial) labels;
    buffers ``"brier"`` of shape (B, C) (Bernoulli) or (B, 1) (categorical). See :func:`compute_brier_score`.

    Parameters
    ----------
    likelihood, rater_mode, class_mean
        As in :func:`compute_brier_score` (``class_mean=True``: the seed's 1/C factor).
    reduction, get_not_nans
        MONAI reduction of the per-case values and whether to return ``not_nans``.
    """

    quantities = ("brier",)

    def __init__(
        self,
        likelihood: str = "auto",
        rater_mode: str = "each",
        class_mean: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(likelihood=likelihood, rater_mode=rater_mode, reduction=reduction, get_not_nans=get_not_nans)
        self.class_mean = bool(class_mean)

    def _score(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return compute_brier_score(
            y_pred, y, likelihood=self.likelihood, rater_mode=self.rater_mode, class_mean=self.class_mean
        )


class NegativeLogLikelihoodMetric(_ScoreMetric):
    """Voxel-averaged negative log-likelihood (nats) of the rater labels under the MC predictive mean.

    Call with ``y_pred`` = (B, S, C, *spatial) probability samples and ``y`` = (B, R, C, *spatial) labels;
    buffers ``"nll"`` of shape (B, C) (Bernoulli) or (B, 1) (categorical). See :func:`compute_nll`.

    Parameters
    ----------
    likelihood, rater_mode, eps
        As in :func:`compute_nll`.
    reduction, get_not_nans
        MONAI reduction of the per-case values and whether to return ``not_nans``.
    """

    quantities = ("nll",)

    def __init__(
        self,
        likelihood: str = "auto",
        rater_mode: str = "each",
        eps: float = 1e-7,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(likelihood=likelihood, rater_mode=rater_mode, reduction=reduction, get_not_nans=get_not_nans)
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}.")
        self.eps = eps

    def _score(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return compute_nll(y_pred, y, likelihood=self.likelihood, rater_mode=self.rater_mode, eps=self.eps)
