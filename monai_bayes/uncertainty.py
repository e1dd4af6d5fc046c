"""Predictive uncertainty from Monte-Carlo probability samples, on whatever device they live.

Given ``S`` samples of class probabilities ``p_s`` for each voxel (layout ``(B, S, C, *spatial)``):

* predictive mean            ``p̄ = (1/S) Σ_s p_s``
* total uncertainty          ``H[p̄]``            (entropy of the expectation, seed 000 "EoE")
* aleatoric (expected) part  ``E_s[H[p_s]]``
* epistemic part             ``MI = H[p̄] − E_s[H[p_s]]`` (mutual information between the
  prediction and the weights; Depeweg et al. 2018, Smith & Gal 2018), ≥ 0 by Jensen.

So ``total = aleatoric + epistemic`` exactly. Entropies are in nats (natural log), ``0·log 0 = 0``.

Two output conventions (``activation``):

* ``"softmax"`` -- channels are the classes of one categorical distribution; entropies sum over
  channels and keep a singleton channel: ``(B, 1, *spatial)``;
* ``"sigmoid"`` -- each channel is an independent Bernoulli (binary or multi-label); entropies are
  per channel: ``(B, C, *spatial)``.
"""

from __future__ import annotations

import torch
from monai.utils import StrEnum

from monai_bayes.utils.options import look_up

__all__ = [
    "Activation",
    "entropy",
    "expected_entropy",
    "mutual_information",
    "predictive_entropy",
    "predictive_mean",
    "uncertainty_maps",
]


class Activation(StrEnum):
    """How the network's channels turn into probabilities (module docstring)."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


def _check(probs: torch.Tensor, activation: Activation | str) -> None:
    look_up("activation", activation, Activation)
    if probs.dim() < 3:
        raise ValueError(f"probs must have shape (B, S, C, *spatial), got {tuple(probs.shape)}.")


def predictive_mean(probs: torch.Tensor) -> torch.Tensor:
    """``p̄``: mean over the sample dim. ``(B, S, C, *sp)`` → ``(B, C, *sp)``."""
    return probs.mean(dim=1)


def entropy(p: torch.Tensor, activation: Activation | str = Activation.SOFTMAX, channel_dim: int = 1) -> torch.Tensor:
    """Entropy in nats of categorical (``softmax``, summed over ``channel_dim``, kept as size 1) or
    per-channel Bernoulli (``sigmoid``) probabilities ``p``.
    """
    activation = look_up("activation", activation, Activation)
    if activation == "softmax":
        return -torch.special.xlogy(p, p).sum(dim=channel_dim, keepdim=True)
    q = 1.0 - p  # sigmoid
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(q, q))


def predictive_entropy(probs: torch.Tensor, activation: Activation | str = Activation.SOFTMAX) -> torch.Tensor:
    """Total uncertainty ``H[p̄]``. ``probs``: ``(B, S, C, *sp)`` → ``(B, 1 or C, *sp)``."""
    _check(probs, activation)
    return entropy(predictive_mean(probs), activation, channel_dim=1)


def expected_entropy(probs: torch.Tensor, activation: Activation | str = Activation.SOFTMAX) -> torch.Tensor:
    """Aleatoric uncertainty ``E_s[H[p_s]]``. ``probs``: ``(B, S, C, *sp)`` → ``(B, 1 or C, *sp)``."""
    _check(probs, activation)
    return entropy(probs, activation, channel_dim=2).mean(dim=1)


def mutual_information(probs: torch.Tensor, activation: Activation | str = Activation.SOFTMAX) -> torch.Tensor:
    """Epistemic uncertainty ``H[p̄] − E_s[H[p_s]]``, clamped at 0 against round-off.

    ``probs``: ``(B, S, C, *sp)`` → ``(B, 1 or C, *sp)``.
    """
    return uncertainty_maps(probs, activation)["epistemic"]


def uncertainty_maps(probs: torch.Tensor, activation: Activation | str = Activation.SOFTMAX) -> dict[str, torch.Tensor]:
    """All four summaries at once (each entropy computed once).

    Parameters
    ----------
    probs
        ``(B, S, C, *spatial)`` probabilities of ``S`` Monte-Carlo samples.
    activation
        ``"softmax"`` (categorical over C) or ``"sigmoid"`` (independent channels).

    Returns
    -------
    ``{"mean": (B, C, *sp), "total": ..., "aleatoric": ..., "epistemic": ...}``, the last three
    ``(B, 1, *sp)`` for softmax or ``(B, C, *sp)`` for sigmoid, in nats.
    """
    _check(probs, activation)
    mean = predictive_mean(probs)
    total = entropy(mean, activation, channel_dim=1)
    aleatoric = entropy(probs, activation, channel_dim=2).mean(dim=1)
    return {"mean": mean, "total": total, "aleatoric": aleatoric, "epistemic": (total - aleatoric).clamp_min(0.0)}
