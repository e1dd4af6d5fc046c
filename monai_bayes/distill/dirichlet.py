"""Dirichlet maths of Ensemble Distribution Distillation (EnD², Malinin et al. 2020), per voxel.

A student predicts concentrations ``α = exp(z / T)`` (``(B, C, *spatial)``, ``α_c > 0``) of a Dirichlet
``Dir(π | α)`` over the class probabilities ``π`` of each voxel; ``α_0 = Σ_c α_c`` is its precision.

* negative log-likelihood of a probability vector ``π``
  ``−log Dir(π | α) = −lnΓ(α_0) + Σ_c lnΓ(α_c) − Σ_c (α_c − 1) ln π_c``;
* total uncertainty, the entropy of the expected categorical ``p̂ = α / α_0``:  ``H[p̂] = −Σ_c p̂_c ln p̂_c``;
* aleatoric (expected data) uncertainty, in closed form (Malinin et al. 2020, eq. 9):
  ``E_{π∼Dir(α)}[H[π]] = −Σ_c (α_c / α_0) (ψ(α_c + 1) − ψ(α_0 + 1))`` (ψ = digamma);
* epistemic (knowledge) uncertainty, the mutual information ``H[p̂] − E[H[π]]`` ≥ 0.

All in nats, one forward pass, no sampling. The same quantities for ``S`` Monte-Carlo samples are
:func:`monai_bayes.uncertainty.uncertainty_maps`; a test checks the two agree for samples drawn from
:class:`torch.distributions.Dirichlet`.
"""

from __future__ import annotations

import torch

from monai_bayes.uncertainty import entropy
from monai_bayes.utils.random import seeded_global_rng

__all__ = [
    "concentrations",
    "dirichlet_nll",
    "dirichlet_uncertainty",
    "heat_probabilities",
    "sample_dirichlet_probabilities",
    "smooth_probabilities",
]

#: bound on ``|z / T|`` before the exponential, so ``α`` stays in ``[e^-20, e^20]`` (finite lnΓ and ψ)
MAX_LOG_CONCENTRATION = 20.0


def concentrations(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Dirichlet concentrations ``α = exp(clamp(z / T))`` of a student's outputs.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, C, *spatial)`` student outputs ``z``.
    temperature : float
        ``T ≥ 1`` of the annealing schedule (1 after annealing).

    Returns
    -------
    torch.Tensor
        ``(B, C, *spatial)`` positive concentrations.
    """
    return torch.exp((logits / temperature).clamp(-MAX_LOG_CONCENTRATION, MAX_LOG_CONCENTRATION))


def dirichlet_nll(alpha: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``−log Dir(π_s | α)`` of each of ``S`` probability vectors per voxel.

    Parameters
    ----------
    alpha : torch.Tensor
        ``(B, C, *spatial)`` concentrations, all positive.
    probs : torch.Tensor
        ``(B, S, C, *spatial)`` probability vectors ``π_s`` in the open simplex (smooth them first,
        :func:`smooth_probabilities`: ``ln 0`` is ``−∞``).

    Returns
    -------
    torch.Tensor
        ``(B, S, *spatial)`` negative log-densities (nats; densities can exceed 1, so values can be negative).

    Raises
    ------
    ValueError
        If the shapes do not fit ``(B, C, *sp)`` / ``(B, S, C, *sp)``.
    """
    if probs.dim() != alpha.dim() + 1 or probs.shape[:1] + probs.shape[2:] != alpha.shape:
        raise ValueError(
            f"probs must be (B, S, C, *spatial) for alpha (B, C, *spatial) = {tuple(alpha.shape)}, "
            f"got {tuple(probs.shape)}."
        )
    alpha = alpha.unsqueeze(1)
    alpha0 = alpha.sum(dim=2)
    log_norm = torch.lgamma(alpha0) - torch.lgamma(alpha).sum(dim=2)
    return -(log_norm + ((alpha - 1.0) * torch.log(probs)).sum(dim=2))


def dirichlet_uncertainty(alpha: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean and the three uncertainty maps of per-voxel Dirichlets, in closed form (module docstring).

    Parameters
    ----------
    alpha : torch.Tensor
        ``(B, C, *spatial)`` positive concentrations.

    Returns
    -------
    dict of str to torch.Tensor
        ``{"mean": (B, C, *sp), "total": (B, 1, *sp), "aleatoric": ..., "epistemic": ...}`` in nats, the
        layout of :func:`monai_bayes.uncertainty.uncertainty_maps` for softmax outputs.
    """
    alpha0 = alpha.sum(dim=1, keepdim=True)
    mean = alpha / alpha0
    total = entropy(mean, "softmax", channel_dim=1)
    aleatoric = -(mean * (torch.digamma(alpha + 1.0) - torch.digamma(alpha0 + 1.0))).sum(dim=1, keepdim=True)
    return {"mean": mean, "total": total, "aleatoric": aleatoric, "epistemic": (total - aleatoric).clamp_min(0.0)}


def smooth_probabilities(probs: torch.Tensor, epsilon: float = 1e-3, channel_dim: int = 2) -> torch.Tensor:
    """Central smoothing ``π ← (1 − ε) π + ε / C`` that keeps probability vectors off the simplex's faces.

    Malinin et al.'s EnD² code smooths the teacher's probabilities this way (``ε = 1e-3``) so that
    ``ln π`` in :func:`dirichlet_nll` stays finite.

    Parameters
    ----------
    probs : torch.Tensor
        Probabilities, classes along ``channel_dim``.
    epsilon : float
        Weight of the uniform distribution, in ``[0, 1)``.
    channel_dim : int
        The class dimension.

    Returns
    -------
    torch.Tensor
        Smoothed probabilities, same shape.

    Raises
    ------
    ValueError
        If ``epsilon`` is outside ``[0, 1)``.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}.")
    return (1.0 - epsilon) * probs + epsilon / probs.shape[channel_dim]


def heat_probabilities(probs: torch.Tensor, temperature: float, channel_dim: int = 2) -> torch.Tensor:
    """Temperature-scaled probabilities ``softmax(ln π / T)`` (``T > 1`` flattens them).

    EnD²'s temperature annealing: early in training the teacher's samples are heated by ``T > 1`` (and the
    student's ``α = exp(z / T)``), which moves the samples towards the centre of the simplex where the
    Dirichlet NLL is well conditioned; ``T`` is annealed to 1.

    Parameters
    ----------
    probs : torch.Tensor
        Probabilities (strictly positive), classes along ``channel_dim``.
    temperature : float
        ``T > 0``.

    channel_dim : int
        The class dimension.

    Returns
    -------
    torch.Tensor
        Heated probabilities, same shape.

    Raises
    ------
    ValueError
        If ``temperature`` is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if temperature == 1.0:
        return probs
    return torch.softmax(torch.log(probs) / temperature, dim=channel_dim)


def sample_dirichlet_probabilities(alpha: torch.Tensor, num_samples: int, seed: int | None = None) -> torch.Tensor:
    """Draw ``S`` probability maps ``π_s ∼ Dir(α)`` per voxel, in the layout of the multi-rater metrics.

    Parameters
    ----------
    alpha : torch.Tensor
        ``(B, C, *spatial)`` positive concentrations.
    num_samples : int
        ``S``.
    seed : int, optional
        Draw under the global RNG seeded with it (restored afterwards; :func:`torch.distributions.Dirichlet`
        samples normalised Gamma variates and takes no generator).

    Returns
    -------
    torch.Tensor
        ``(B, S, C, *spatial)`` probabilities.
    """
    with seeded_global_rng(seed, alpha.device):
        draws = torch.distributions.Dirichlet(alpha.movedim(1, -1)).sample((num_samples,))
    return draws.movedim(0, 1).movedim(-1, 2)  # (S, B, *sp, C) → (B, S, C, *sp)
