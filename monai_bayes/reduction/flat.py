"""The flat model of stochastic BMR (seed 002, eq. 15–16) on top of the partial-Bayes layers.

The seed writes every weight non-centred, ``w = γ₀ · ŵ`` with ``ŵ ~ N(0, 1)`` (``γ₀ = 0.1``), and a
fully factorised posterior ``q(ŵ) = N(μ, σ²)``. A :class:`~monai_bayes.layers.PartialBayesLayer`
stores the same posterior in weight units -- mean in ``weight``, ``σ_w = softplus(ρ)`` for its
Bayesian entries -- with the prior ``N(0, prior_sigma²)``. With ``prior_sigma = γ₀`` the two are the
same model (the KL is invariant to the common rescaling), and the flat-model quantities are
``μ̂ = μ_w / γ₀`` and ``σ̂ = σ_w / γ₀``. :func:`to_flat_bayes` builds the flat model,
:func:`flat_posteriors` reads ``(μ̂, σ̂)`` per layer for :mod:`monai_bayes.reduction.free_energy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_bayes.layers import PartialBayesLayer
from monai_bayes.networks import to_full_bayes

__all__ = [
    "DEFAULT_GAMMA0",
    "FlatPosterior",
    "LayerSpikeDeltaF",
    "flat_posteriors",
    "spike_delta_f_by_layer",
    "to_flat_bayes",
]

#: the seed's prior scale of the flat model (eq. 15)
DEFAULT_GAMMA0 = 0.1


@dataclass
class FlatPosterior:
    """The flat-model posterior of one layer's Bayesian entries (eq. 16), in ŵ units.

    Attributes
    ----------
    layer : str
        Qualified module name.
    params : tuple of str
        The layer's parameters with Bayesian entries (``"weight"``, ``"bias"``), in the order in
        which their entries are concatenated in ``mu`` / ``sigma``.
    sizes : tuple of int
        Number of Bayesian entries of each parameter in ``params``.
    mu, sigma : torch.Tensor
        Posterior mean and standard deviation of ŵ, shape ``(k,)`` with ``k = sum(sizes)``.
    gamma0 : float
        The layer's prior scale γ₀ (``w = γ₀ ŵ``).
    """

    layer: str
    params: tuple[str, ...]
    sizes: tuple[int, ...]
    mu: torch.Tensor
    sigma: torch.Tensor
    gamma0: float


def to_flat_bayes(
    model: nn.Module,
    gamma0: float = DEFAULT_GAMMA0,
    layer_gamma0: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Make ``model`` the seed's flat model: full mean-field Bayes with prior ``w ~ N(0, γ₀²)``.

    Parameters
    ----------
    model : torch.nn.Module
        A deterministic network (its weights become the posterior means).
    gamma0 : float
        Prior scale γ₀ > 0 of every layer (seed: 0.1).
    layer_gamma0 : mapping of str to float, optional
        Per-layer γ₀ by qualified module name, overriding ``gamma0``.
    **kwargs
        Further options of :func:`monai_bayes.networks.to_full_bayes` (``include``, ``exclude``,
        ``sigma_init``, ``inplace``, ...), except ``prior_mu`` / ``prior_sigma``.

    Returns
    -------
    torch.nn.Module
        The converted network.

    Raises
    ------
    ValueError
        If a γ₀ is not positive, ``prior_mu``/``prior_sigma`` is passed, or ``layer_gamma0`` names a
        module that is not a Bayesian layer of the converted network.
    """
    for forbidden in ("prior_mu", "prior_sigma"):
        if forbidden in kwargs:
            raise ValueError(f"to_flat_bayes sets the prior from gamma0; do not pass {forbidden!r}.")
    overrides = dict(layer_gamma0 or {})
    for name, value in {"gamma0": gamma0, **overrides}.items():
        if not float(value) > 0:
            raise ValueError(f"gamma0 must be > 0, got {value!r} for {name!r}.")
    model = to_full_bayes(model, prior_mu=0.0, prior_sigma=float(gamma0), **kwargs)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PartialBayesLayer)}
    unknown = sorted(set(overrides) - set(layers))
    if unknown:
        raise ValueError(
            f"layer_gamma0 names modules that are not Bayesian layers: {unknown}; known: {sorted(layers)}."
        )
    for name, value in overrides.items():
        layers[name].prior_sigma = float(value)
    return model


def flat_posteriors(model: nn.Module) -> list[FlatPosterior]:
    """The flat-model posterior ``(μ̂, σ̂)`` of every layer with Bayesian entries, in module order.

    Parameters
    ----------
    model : torch.nn.Module
        A network with partial / full-Bayes layers whose prior mean is 0.

    Returns
    -------
    list of FlatPosterior
        One entry per layer that still has Bayesian entries; tensors are detached, on the
        layer's device.

    Raises
    ------
    ValueError
        If a Bayesian layer's prior mean is not 0 (the flat model needs ``N(0, γ₀²)``).
    """
    out: list[FlatPosterior] = []
    for name, module in model.named_modules():
        if not isinstance(module, PartialBayesLayer) or not module.bayes_param_names:
            continue
        gamma0 = _check_flat_prior(name, module)
        params = tuple(module.bayes_param_names)
        with torch.no_grad():
            mus = [module.posterior_mean(p).detach().reshape(-1) for p in params]
            sigmas = [module.sigma(p).detach().reshape(-1) for p in params]
            mu = (mus[0] if len(mus) == 1 else torch.cat(mus)) / gamma0
            sigma = (sigmas[0] if len(sigmas) == 1 else torch.cat(sigmas)) / gamma0
        out.append(FlatPosterior(name, params, tuple(m.numel() for m in mus), mu, sigma, gamma0))
    return out


@dataclass
class LayerSpikeDeltaF:
    """``ΔF(λ = 0)`` of one layer's Bayesian entries (weight entries first, then bias).

    Attributes
    ----------
    layer : str
        Qualified module name.
    params : tuple of str
        Parameters with Bayesian entries, in the order of ``delta_f0``.
    sizes : tuple of int
        Number of Bayesian entries of each parameter.
    delta_f0 : torch.Tensor
        Spike limits in nats, shape ``(k,)``.
    """

    layer: str
    params: tuple[str, ...]
    sizes: tuple[int, ...]
    delta_f0: torch.Tensor


def _check_flat_prior(name: str, module: PartialBayesLayer) -> float:
    if module.prior_mu != 0.0:
        raise ValueError(f"layer {name!r} has prior mean {module.prior_mu}; the flat model needs N(0, gamma0^2).")
    return float(module.prior_sigma)


def spike_delta_f_by_layer(model: nn.Module) -> list[LayerSpikeDeltaF]:
    """The spike limit ``ΔF(λ = 0) = −½ (ln σ̂² + μ̂²/σ̂²)`` of every Bayesian entry, per layer.

    Computed from the stored (weight-unit) posterior without materialising μ̂ and σ̂: since
    ``μ̂/σ̂ = μ_w/σ_w`` and ``ln σ̂ = ln σ_w − ln γ₀``, ``ΔF(0) = ln γ₀ − ln σ_w − ½ (μ_w/σ_w)²``, written
    into one flat buffer for all layers (per-layer views) with in-place operations (a few passes over
    the weights; this is the bulk of a pruning pass). Equal to :func:`~monai_bayes.reduction.delta_f_spike` of
    :func:`flat_posteriors`.

    Parameters
    ----------
    model : torch.nn.Module
        A network with partial / full-Bayes layers whose prior mean is 0.

    Returns
    -------
    list of LayerSpikeDeltaF
        One entry per layer that still has Bayesian entries, in module order.

    Raises
    ------
    ValueError
        If a Bayesian layer's prior mean is not 0.
    """
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PartialBayesLayer) and module.bayes_param_names
    ]
    if not layers:
        return []
    sizes_by_layer = [tuple(getattr(m, f"{p}_rho").numel() for p in m.bayes_param_names) for _, m in layers]
    ref = getattr(layers[0][1], f"{layers[0][1].bayes_param_names[0]}_rho")
    # one flat buffer for every layer's ΔF(0) (one allocation); each layer's entry is a view of it
    flat = torch.empty(sum(sum(s) for s in sizes_by_layer), dtype=ref.dtype, device=ref.device)
    out: list[LayerSpikeDeltaF] = []
    offset = 0
    with torch.no_grad():
        for (name, module), sizes in zip(layers, sizes_by_layer):
            log_gamma0 = math.log(_check_flat_prior(name, module))
            params = tuple(module.bayes_param_names)
            start = offset
            for pname, size in zip(params, sizes):
                part = flat[offset : offset + size]
                sigma = F.softplus(getattr(module, f"{pname}_rho").detach())
                torch.div(module.posterior_mean(pname).detach(), sigma, out=part)
                part.square_().mul_(-0.5).sub_(sigma.log_()).add_(log_gamma0)
                offset += size
            out.append(LayerSpikeDeltaF(name, params, sizes, flat[start:offset]))
    return out
