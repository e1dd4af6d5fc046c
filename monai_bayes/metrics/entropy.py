"""Predictive-entropy and mutual-information statistics per case, including the uncertain volume in mm.

From S probability samples p_s (Monte Carlo estimate of the posterior predictive):

* predictive (total) entropy   H[p̄] with p̄ = (1/S) Σ_s p_s,
* expected (aleatoric) entropy E_s[H[p_s]],
* mutual information (epistemic) MI = H[p̄] − E_s[H[p_s]]   (Gal, Islam & Ghahramani, ICML 2017;
  Depeweg et al., ICML 2018).

H is the categorical entropy −Σ_c p_c log p_c (softmax outputs) or the per-channel Bernoulli entropy
−p log p − (1 − p) log(1 − p) (sigmoid / multi-label outputs), in nats.

The maps are computed by small private helpers; ``monai_bayes.uncertainty`` offers the same maps as
public functions, and :func:`compute_uncertainty_volume` accepts any precomputed (B, K, *spatial) map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import MetricReduction

from monai_bayes.uncertainty import uncertainty_maps

from ._utils import (
    as_plain_tensor,
    check_categorical,
    check_probabilities,
    check_tensor,
    has_values,
    one_hot_argmax,
    resolve_likelihood,
    shape_str,
    voxel_volume,
)
from .base import MultiQuantityMetric

__all__ = ["EntropyVolumeMetric", "compute_entropy_volume", "compute_uncertainty_volume"]

#: Default entropy threshold: half the maximum binary entropy, 0.5·ln 2 ≈ 0.347 nats (p̄ ∈ (0.11, 0.89)).
DEFAULT_ENTROPY_THRESHOLD = 0.5 * math.log(2.0)
#: Default mutual-information threshold: 0.1·ln 2 ≈ 0.069 nats.
DEFAULT_MI_THRESHOLD = 0.1 * math.log(2.0)

STAT_NAMES = ("volume", "voxels", "mean", "fg_mean")


_ACTIVATION = {"categorical": "softmax", "bernoulli": "sigmoid"}


def _entropy_maps(samples: torch.Tensor, likelihood: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predictive mean (B, C, *sp), predictive entropy (B, K, *sp), mutual information (B, K, *sp)),
    from :func:`monai_bayes.uncertainty.uncertainty_maps` (categorical = softmax, Bernoulli = sigmoid).
    """
    maps = uncertainty_maps(samples, _ACTIVATION[likelihood])
    return maps["mean"], maps["total"], maps["epistemic"]


def _foreground(mean: torch.Tensor, likelihood: str, threshold: float) -> torch.Tensor:
    """Predicted foreground, (B, K, *sp) bool: argmax ≠ 0 (categorical, K = 1) or p̄_c > threshold (Bernoulli)."""
    if likelihood == "categorical":
        return ~one_hot_argmax(mean, channel_dim=1)[:, :1]
    return mean > threshold


def compute_uncertainty_volume(
    uncertainty: torch.Tensor,
    threshold: float,
    foreground: torch.Tensor | None = None,
    voxel_volume_mm: torch.Tensor | float | None = None,
) -> dict[str, torch.Tensor]:
    """Summary statistics of a voxel-wise uncertainty map (entropy, mutual information, ...).

    Parameters
    ----------
    uncertainty
        (B, K, *spatial) uncertainty map, e.g. a predictive-entropy map from ``monai_bayes.uncertainty``.
    threshold
        A voxel is *uncertain* when its value is strictly greater than ``threshold``.
    foreground
        Optional (B, K, *spatial) (or (B, 1, *spatial)) boolean predicted-foreground mask for ``fg_mean``.
    voxel_volume_mm
        Volume of one voxel, a float or a (B,) tensor (mm³ for 3D, mm² for 2D); 1 if None.

    Returns
    -------
    dict of torch.Tensor
        ``volume`` (uncertain volume, mm^d), ``voxels`` (uncertain voxel count), ``mean`` (mean over the
        image) and ``fg_mean`` (mean over the foreground; NaN when it is empty or not given), each (B, K)
        float32 on ``uncertainty.device``.
    """
    check_tensor(uncertainty, "uncertainty", 2, "(B, K, *spatial)")
    if has_values(uncertainty) and bool(torch.isnan(uncertainty).any()):
        raise ValueError(f"uncertainty must not contain NaN, got shape {shape_str(uncertainty)}.")
    return _volume_stats(uncertainty, threshold, foreground, voxel_volume_mm)


def _volume_stats(
    uncertainty: torch.Tensor,
    threshold: float,
    foreground: torch.Tensor | None,
    voxel_volume_mm: torch.Tensor | float | None,
) -> dict[str, torch.Tensor]:
    """:func:`compute_uncertainty_volume` without the NaN check (maps from validated probabilities)."""
    u = as_plain_tensor(uncertainty).float().flatten(start_dim=2)
    batch = u.shape[0]
    if voxel_volume_mm is None:
        vol = torch.ones(batch, device=u.device)
    else:
        vol = torch.as_tensor(voxel_volume_mm, dtype=torch.float32, device=u.device).reshape(-1).expand(batch)
    voxels = (u > threshold).sum(dim=-1).float()
    stats = {"volume": voxels * vol.unsqueeze(1), "voxels": voxels, "mean": u.mean(dim=-1)}
    if foreground is None:
        stats["fg_mean"] = torch.full_like(stats["mean"], float("nan"))
    else:
        fg = as_plain_tensor(foreground).flatten(start_dim=2)
        if fg.shape[0] != batch or fg.shape[-1] != u.shape[-1] or fg.shape[1] not in (1, u.shape[1]):
            raise ValueError(
                f"foreground must have shape (B, 1 or K, *spatial) matching uncertainty {shape_str(uncertainty)},"
                f" got {shape_str(foreground)}."
            )
        fg = fg.bool().expand_as(u)
        count = fg.sum(dim=-1).float()
        total = torch.where(fg, u, torch.zeros_like(u)).sum(dim=-1)
        stats["fg_mean"] = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))
    return stats


def compute_entropy_volume(
    y_pred: torch.Tensor,
    likelihood: str = "auto",
    entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
    mi_threshold: float = DEFAULT_MI_THRESHOLD,
    foreground_threshold: float = 0.5,
    spacing: float | Sequence[float] | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Predictive-entropy and mutual-information statistics of S probability samples, per case.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) probabilities of S Monte Carlo samples (a MONAI ``MetaTensor`` provides its affine).
    likelihood
        ``"bernoulli"`` (per-channel entropies, K = C), ``"categorical"`` (K = 1) or ``"auto"``
        (Bernoulli for C = 1, categorical for C > 1).
    entropy_threshold, mi_threshold
        Uncertain-voxel thresholds in nats for H[p̄] and MI (strictly greater counts).
    foreground_threshold
        Bernoulli foreground is p̄_c > foreground_threshold; categorical foreground is argmax p̄ ≠ 0.
    spacing
        Voxel spacing in mm: a float, a sequence of len(spatial) values or a (B, len(spatial)) tensor. If None,
        the affine of a ``MetaTensor`` is used (|det| of its spatial block), else 1 mm.

    Returns
    -------
    dict of torch.Tensor
        ``entropy_volume``, ``entropy_voxels``, ``entropy_mean``, ``entropy_fg_mean`` and the same four for
        ``mi_``; each (B, K) float32 on ``y_pred.device``. Volumes are in mm^d (mm³ for 3D, mm² for 2D).
    """
    check_tensor(y_pred, "y_pred", 4, "(B, S, C, *spatial)")
    num_spatial = y_pred.ndim - 3
    vol = voxel_volume(y_pred, spacing, num_spatial)
    samples = as_plain_tensor(y_pred)
    likelihood = resolve_likelihood(likelihood, samples.shape[2])
    check_probabilities(samples, "y_pred")
    if likelihood == "categorical":
        check_categorical(samples, "y_pred")
    if entropy_threshold < 0 or mi_threshold < 0:
        raise ValueError(f"entropy_threshold and mi_threshold must be >= 0, got {entropy_threshold}, {mi_threshold}.")
    samples = samples if samples.is_floating_point() else samples.float()
    mean, total, mutual_info = _entropy_maps(samples, likelihood)
    fg = _foreground(mean, likelihood, foreground_threshold)
    out: dict[str, torch.Tensor] = {}
    for prefix, u_map, thr in (("entropy", total, entropy_threshold), ("mi", mutual_info, mi_threshold)):
        stats = _volume_stats(u_map, thr, foreground=fg, voxel_volume_mm=vol)
        out.update({f"{prefix}_{name}": stats[name] for name in STAT_NAMES})
    return out


class EntropyVolumeMetric(MultiQuantityMetric):
    """Predictive-entropy / mutual-information statistics and uncertain volume per case.

    Call with ``y_pred`` = (B, S, C, *spatial) probability samples; ``y`` is not used (pass None or the
    raters). Optional ``spacing=`` keyword per call (float, sequence, or (B, d) tensor) overrides the
    constructor's ``spacing`` and the MetaTensor affine. Buffers eight (B, K) quantities (see
    :func:`compute_entropy_volume`); :meth:`aggregate` reduces ``primary`` (default ``"entropy_volume"``).

    Parameters
    ----------
    likelihood, entropy_threshold, mi_threshold, foreground_threshold, spacing
        As in :func:`compute_entropy_volume`.
    primary
        Quantity returned by :meth:`aggregate` and reported by the Ignite handler under its own name.
    reduction, get_not_nans
        MONAI reduction of the per-case values and whether to return ``not_nans``.
    """

    quantities = tuple(f"{p}_{s}" for p in ("entropy", "mi") for s in STAT_NAMES)

    def __init__(
        self,
        likelihood: str = "auto",
        entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
        mi_threshold: float = DEFAULT_MI_THRESHOLD,
        foreground_threshold: float = 0.5,
        spacing: float | Sequence[float] | torch.Tensor | None = None,
        primary: str = "entropy_volume",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans, primary=primary)
        resolve_likelihood(likelihood, 2)
        self.likelihood = likelihood
        self.entropy_threshold = entropy_threshold
        self.mi_threshold = mi_threshold
        self.foreground_threshold = foreground_threshold
        self.spacing = spacing

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> list[torch.Tensor]:
        """Per-case statistics in ``quantities`` order, each (B, K)."""
        spacing = kwargs.get("spacing", self.spacing)
        stats = compute_entropy_volume(
            y_pred,
            likelihood=self.likelihood,
            entropy_threshold=self.entropy_threshold,
            mi_threshold=self.mi_threshold,
            foreground_threshold=self.foreground_threshold,
            spacing=spacing,
        )
        return [stats[q] for q in self.quantities]
