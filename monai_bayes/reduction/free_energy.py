"""Bayesian model reduction of a fully factorised Gaussian posterior (seed 002, §2.3, §2.7).

All quantities are in the units of the *non-centred* flat model (eq. 15–16): a weight is
``w = γ₀ · ŵ`` with prior ``ŵ ~ N(0, 1)`` and posterior ``q(ŵ) = N(μ, σ²)``.

Sign convention. ``ΔF`` is the *gain* in log evidence when the prior ``N(0, 1)`` of one weight is
replaced by ``N(0, θ²)`` (the seed, after eq. 9: "for ΔF > 0 the reduced model has a better
variational free energy")::

    ΔF(θ) = ln E_q[ p̃(ŵ) / p(ŵ) ]                                  (eq. 8–9)
          = −½ ln ρ² − ½ (μ²/σ²) (1 − θ²/ρ²),   ρ² = θ² + σ² − θ²σ²   (eq. 19)

The integral exists when ``1/σ² + 1/θ² − 1 > 0`` (always true for ``σ < 1`` or ``θ < 1``), i.e.
``ρ² > 0``. The spike limit ``θ → 0`` is ``ΔF(0) = −½ (ln σ² + μ²/σ²)`` (below eq. 22).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["SpikeAndSlabPosterior", "delta_f", "delta_f_spike", "spike_and_slab_posterior"]

#: the seed's cap on the fixed-point iterations of eq. 22
DEFAULT_K_MAX = 4


def _check_positive(name: str, value: torch.Tensor) -> None:
    if not bool((value > 0).all()):
        raise ValueError(f"{name} must be > 0 everywhere, got a minimum of {float(value.min())}.")


def delta_f(mu: torch.Tensor, sigma: torch.Tensor, theta: torch.Tensor | float) -> torch.Tensor:
    """Change ``ΔF(θ)`` of the log evidence when the prior ``N(0, 1)`` becomes ``N(0, θ²)`` (eq. 19).

    Parameters
    ----------
    mu : torch.Tensor
        Posterior means μ of ŵ (flat-model units), any shape.
    sigma : torch.Tensor
        Posterior standard deviations σ > 0, broadcastable with ``mu``.
    theta : torch.Tensor or float
        Reduced prior scale θ ≥ 0, broadcastable; ``θ = 1`` gives 0, ``θ = 0`` the spike limit.

    Returns
    -------
    torch.Tensor
        ``ΔF`` per weight (nats, broadcast shape); positive where the reduced prior is better.

    Raises
    ------
    ValueError
        If σ ≤ 0, θ < 0, or ``ρ² = θ² + σ² − θ²σ² ≤ 0`` (the expectation does not exist).
    """
    theta_t = torch.as_tensor(theta, dtype=mu.dtype, device=mu.device)
    _check_positive("sigma", sigma)
    if bool((theta_t < 0).any()):
        raise ValueError(f"theta must be >= 0, got a minimum of {float(theta_t.min())}.")
    var, theta2 = sigma.square(), theta_t.square()
    rho2 = theta2 + var - theta2 * var
    if bool((rho2 <= 0).any()):
        raise ValueError("rho^2 = theta^2 + sigma^2 - theta^2 sigma^2 must be > 0 (eq. 19): reduce theta or sigma.")
    return -0.5 * torch.log(rho2) - 0.5 * mu.square() / var * (1.0 - theta2 / rho2)


def delta_f_spike(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Spike limit ``ΔF(λ = 0) = −½ (ln σ² + μ²/σ²)`` of eq. 19 (θ → 0), per weight, in nats.

    Parameters
    ----------
    mu : torch.Tensor
        Posterior means μ of ŵ, any shape.
    sigma : torch.Tensor
        Posterior standard deviations σ > 0, same shape as ``mu``.

    Returns
    -------
    torch.Tensor
        ``ΔF(0)``, same shape; computed in place-free, vectorised form on ``mu``'s device.
    """
    var = sigma.square()
    return -0.5 * (torch.log(var) + mu.square() / var)


@dataclass
class SpikeAndSlabPosterior:
    """Result of the spike-and-slab fixed point (eq. 21–22).

    Attributes
    ----------
    q : list of torch.Tensor
        Per group (layer), the posterior slab probabilities ``q_ijl = q(λ_ijl = 1)``, each shaped
        like the group's ``ΔF(0)`` input.
    alpha, beta : torch.Tensor
        Per group, the parameters of ``q(π_l) = Beta(α_l, β_l)``, shape ``(L,)``.
    iterations : int
        Fixed-point iterations run (≤ ``k_max``).
    """

    q: list[torch.Tensor]
    alpha: torch.Tensor
    beta: torch.Tensor
    iterations: int


def spike_and_slab_posterior(
    delta_f0: Sequence[torch.Tensor],
    alpha0: float = 1.0,
    beta0: float = 1.0,
    k_max: int = DEFAULT_K_MAX,
    tol: float = 0.0,
) -> SpikeAndSlabPosterior:
    """Mean-field posterior of the spike-and-slab hierarchy (eq. 13, 20–22) by its fixed point.

    Iterates, from ``α_l⁰ = α₀, β_l⁰ = β₀`` (eq. 22)::

        ζ_l   = ψ(α_l) − ψ(β_l)
        q_ijl = sigmoid(ζ_l − ΔF_ijl(λ = 0))
        α_l   = α₀ + Σ_ij q_ijl,   β_l = β₀ + Σ_ij (1 − q_ijl)

    Parameters
    ----------
    delta_f0 : sequence of torch.Tensor
        One tensor per layer ``l`` (any shape): the spike limits ``ΔF(λ = 0)`` of its weights
        (:func:`delta_f_spike`), in nats.
    alpha0, beta0 : float
        Parameters of the Beta prior on the layer's slab probability π_l (> 0).
    k_max : int
        Maximum number of iterations (seed: 4); at least 1.
    tol : float
        Stop early when no ``q`` changes by more than ``tol`` (0: always run ``k_max``).

    Returns
    -------
    SpikeAndSlabPosterior
        ``q`` per layer and the Beta parameters ``α, β`` of shape ``(L,)``.

    Raises
    ------
    ValueError
        For an empty input, ``α₀`` or ``β₀`` ≤ 0, or ``k_max`` < 1.
    """
    if not delta_f0:
        raise ValueError("delta_f0 must hold at least one layer's ΔF(0) tensor, got an empty sequence.")
    if not (alpha0 > 0 and beta0 > 0):
        raise ValueError(f"alpha0 and beta0 must be > 0, got {alpha0!r} and {beta0!r}.")
    if int(k_max) < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max!r}.")
    ref = delta_f0[0]
    sizes = [d.numel() for d in delta_f0]
    counts = torch.tensor([float(n) for n in sizes], dtype=ref.dtype, device=ref.device)
    alpha = torch.full((len(delta_f0),), float(alpha0), dtype=ref.dtype, device=ref.device)
    beta = torch.full_like(alpha, float(beta0))
    # one flat buffer for every layer's q, rewritten in place each iteration (no allocation per
    # iteration); a copy of the previous iterate only when an early stop is asked for
    flat_q = torch.empty(sum(sizes), dtype=ref.dtype, device=ref.device)
    q = [view.view_as(d) for view, d in zip(torch.split(flat_q, sizes), delta_f0)]
    previous = torch.full_like(flat_q, 0.5) if tol > 0 else None
    iterations = 0
    for _ in range(int(k_max)):
        iterations += 1
        # ψ on the L per-layer scalars only; one fused pass per layer for q, one reduction for Σq
        zeta = (torch.special.digamma(alpha) - torch.special.digamma(beta)).tolist()
        sums = []
        for z, d, qi in zip(zeta, delta_f0, q):
            torch.sub(z, d, out=qi).sigmoid_()  # q = sigmoid(ζ_l − ΔF(0))
            sums.append(qi.sum())
        total = torch.stack(sums)
        alpha, beta = alpha0 + total, beta0 + (counts - total)
        if previous is not None:
            converged = flat_q.numel() == 0 or float((flat_q - previous).abs().max()) <= tol
            previous.copy_(flat_q)
            if converged:
                break
    return SpikeAndSlabPosterior(q=q, alpha=alpha, beta=beta, iterations=iterations)
