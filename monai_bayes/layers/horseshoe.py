"""Mean-field layers with the regularised horseshoe prior, non-centred (seed 002, eq. 14, 17–18, 25–26).

The seed's *Tiered-FF* baseline. For a layer ``l`` with output units ``i`` (rows of a linear weight,
output channels of a convolution; the bias of unit ``i`` shares its scale, the seed's
``j ∈ [1, K_{l-1} + 1]``)::

    ŵ_ij ~ N(0, 1),  w_ij = γ_i ŵ_ij                                             (eq. 17)
    γ_i² = c² v² τ_i² / (c² + v² τ_i²)                                           (eq. 14)
    τ_i = sqrt(a_i / b_i),  a_i, b_i ~ Γ(½, 1)        (τ_i ~ C⁺(0, 1), eq. 25–26)
    v   = τ₀ sqrt(â / b̂),   â, b̂ ~ Γ(½, 1)            (v ~ C⁺(0, τ₀))
    c⁻² ~ Γ(2, 6)  (shape 2, rate 6: E[c⁻²] = 1/3, Piironen & Vehtari's ν = 4, s² = 3)

with the fully factorised posterior of eq. 18: ``q(ŵ_ij) = N(μ, σ²)`` and log-normal ``q`` for
``a_i, b_i, â, b̂, c``. Every variable is sampled by reparameterisation (log-normals as ``exp`` of a
Gaussian). The KL is in closed form (:func:`lognormal_gamma_kl`); for ``c`` it is taken on
``c⁻² ~ LN(−2 m, (2 s)²)``, which equals the KL on ``c`` (KL is invariant under a bijection).

Storage: ``weight`` / ``bias`` hold the posterior means ``μ`` of ŵ (non-centred units, *not* the
network weights), ``<param>_rho`` their ``σ = softplus(ρ)``; ``hs_unit_loc`` / ``hs_unit_rho``
(shape ``(2, units)``: rows ``ln a``, ``ln b``) and ``hs_layer_loc`` / ``hs_layer_rho`` (shape
``(3,)``: ``ln â``, ``ln b̂``, ``ln c``) the log-normal parameters; ``hs_tau0`` (a buffer) the global
scale τ₀. The ``"mean"`` sampling mode and :meth:`deterministic_module` use ``w = γ̄ μ`` with ``γ̄``
from the posterior medians ``exp(loc)`` of the scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_bayes.layers.base import StochasticLayer
from monai_bayes.layers.functional import forward_with, forward_with_samples, make_layer_variants, variant_for
from monai_bayes.layers.partial import gaussian_kl, inverse_softplus

__all__ = [
    "C_PRIOR_RATE",
    "C_PRIOR_SHAPE",
    "DEFAULT_TAU0",
    "HorseshoeBayesConv1d",
    "HorseshoeBayesConv2d",
    "HorseshoeBayesConv3d",
    "HorseshoeBayesConvTranspose1d",
    "HorseshoeBayesConvTranspose2d",
    "HorseshoeBayesConvTranspose3d",
    "HorseshoeBayesLayer",
    "HorseshoeBayesLinear",
    "horseshoe_bayes_class",
    "horseshoe_median_state_dict",
    "horseshoe_scale",
    "lognormal_gamma_kl",
]

#: global scale τ₀ of v ~ C⁺(0, τ₀); with τ = 1 and c ≈ √3 it starts γ at ≈ 0.1, the flat model's γ₀
DEFAULT_TAU0 = 0.1
#: c⁻² ~ Γ(C_PRIOR_SHAPE, rate C_PRIOR_RATE) (eq. 14)
C_PRIOR_SHAPE = 2.0
C_PRIOR_RATE = 6.0
#: the half-Cauchy as a ratio of Γ(½, 1) variables (eq. 25–26)
HALF = 0.5
HS_PARAM_NAMES: tuple[str, ...] = ("weight", "bias")
_LOG_2PI = math.log(2.0 * math.pi)


def lognormal_gamma_kl(loc: torch.Tensor, scale: torch.Tensor, shape: float, rate: float) -> torch.Tensor:
    """``KL(LN(loc, scale²) ‖ Γ(shape, rate))`` per entry, in nats (closed form).

    With ``x ~ LN(m, s²)``: ``E[ln x] = m``, ``E[x] = exp(m + s²/2)``, ``H = m + ½ + ln s + ½ ln 2π``, so::

        KL = ln Γ(k) − k ln r − k m − ln s − ½ (1 + ln 2π) + r exp(m + s²/2)

    Parameters
    ----------
    loc, scale : torch.Tensor
        Location ``m`` and scale ``s > 0`` of the log-normal (of ``ln x``), broadcastable.
    shape, rate : float
        Shape ``k > 0`` and rate ``r > 0`` of the Gamma prior.

    Returns
    -------
    torch.Tensor
        The KL per entry, broadcast shape.
    """
    return (
        math.lgamma(shape)
        - shape * math.log(rate)
        - shape * loc
        - torch.log(scale)
        - 0.5 * (1.0 + _LOG_2PI)
        + rate * torch.exp(loc + 0.5 * scale.square())
    )


def horseshoe_scale(log_a: torch.Tensor, log_b: torch.Tensor, log_v: torch.Tensor, log_c: torch.Tensor) -> torch.Tensor:
    """Regularised-horseshoe scale ``γ = c v τ / sqrt(c² + v² τ²)`` with ``τ = sqrt(a/b)`` (eq. 14, 17).

    Computed in log space: ``ln γ = ln c + ln(vτ) − ½ ln(c² + (vτ)²)``.

    Parameters
    ----------
    log_a, log_b : torch.Tensor
        ``ln a_i``, ``ln b_i`` per unit, shape ``(..., units)``.
    log_v, log_c : torch.Tensor
        ``ln v`` and ``ln c``, broadcastable against ``log_a`` (e.g. ``(..., 1)``).

    Returns
    -------
    torch.Tensor
        ``γ_i``, broadcast shape.
    """
    log_vtau = log_v + 0.5 * (log_a - log_b)
    return torch.exp(log_c + log_vtau - 0.5 * torch.logaddexp(2.0 * log_c, 2.0 * log_vtau))


class HorseshoeBayesLayer(StochasticLayer):
    """Mixin: a conv / transposed conv / linear layer with the non-centred regularised horseshoe (Tiered-FF).

    Normally made by :func:`monai_bayes.networks.to_horseshoe_bayes` from a trained network (class
    swap in place, ``μ = w / γ̄``); constructing one directly initialises ``μ`` from the layer's own
    initial weights the same way.

    Parameters
    ----------
    tau0 : float
        Global scale τ₀ of ``v ~ C⁺(0, τ₀)`` (default 0.1).
    sigma_init : float
        Initial posterior σ of ``ln a, ln b, ln â, ln b̂, ln c`` (default 0.1).
    weight_sigma_relative : float
        Initial σ of ŵ is ``max(weight_sigma_relative · |μ|, weight_sigma_floor)`` (as the partial-Bayes
        layers' ``"relative"`` initialisation, in ŵ units).
    weight_sigma_floor : float
        See ``weight_sigma_relative``.
    """

    if TYPE_CHECKING:
        weight: torch.Tensor
        bias: torch.Tensor | None
        _base_type: type[nn.Module]
        hs_unit_loc: torch.Tensor
        hs_unit_rho: torch.Tensor
        hs_layer_loc: torch.Tensor
        hs_layer_rho: torch.Tensor
        hs_tau0: torch.Tensor

    def __init__(
        self,
        *args: Any,
        tau0: float = DEFAULT_TAU0,
        sigma_init: float = 0.1,
        weight_sigma_relative: float = 0.05,
        weight_sigma_floor: float = 1e-2,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_horseshoe(
            tau0=tau0,
            sigma_init=sigma_init,
            weight_sigma_relative=weight_sigma_relative,
            weight_sigma_floor=weight_sigma_floor,
        )

    # ------------------------------------------------------------------------------ set-up
    @property
    def unit_dim(self) -> int:
        """Dimension of ``weight`` that indexes the output units (1 for transposed convolutions)."""
        return 1 if getattr(self, "transposed", False) else 0

    @property
    def num_units(self) -> int:
        """Number of output units ``K_l`` (each with its own local scale τ_i)."""
        return int(self.weight.shape[self.unit_dim])

    def _init_horseshoe(
        self,
        *,
        tau0: float = DEFAULT_TAU0,
        sigma_init: float = 0.1,
        weight_sigma_relative: float = 0.05,
        weight_sigma_floor: float = 1e-2,
    ) -> None:
        """Register the variational parameters; ``μ`` of ŵ = current weights / initial ``γ̄``."""
        if not tau0 > 0:
            raise ValueError(f"tau0 must be > 0, got {tau0!r}.")
        if not (sigma_init > 0 and weight_sigma_relative > 0 and weight_sigma_floor > 0):
            raise ValueError(
                "sigma_init, weight_sigma_relative and weight_sigma_floor must be > 0, got "
                f"{sigma_init!r}, {weight_sigma_relative!r}, {weight_sigma_floor!r}."
            )
        if getattr(self, "transposed", False) and getattr(self, "groups", 1) != 1:
            raise ValueError("horseshoe layers support transposed convolutions with groups=1 only.")
        self._init_stochastic_state()
        ref = self.weight
        units = self.num_units
        unit_loc = torch.zeros(2, units, dtype=ref.dtype, device=ref.device)  # a = b = 1: τ = 1
        # â = b̂ = 1 (v = τ₀); c = √3 (c⁻² at its prior mean 1/3)
        layer_loc = torch.tensor([0.0, 0.0, 0.5 * math.log(3.0)], dtype=ref.dtype, device=ref.device)
        rho0 = float(inverse_softplus(torch.tensor(float(sigma_init))))
        self.register_buffer("hs_tau0", torch.tensor(float(tau0), dtype=ref.dtype, device=ref.device))
        # which weight dimension indexes the units, so a state dict alone gives the posterior-median weights
        self.register_buffer("hs_unit_dim", torch.tensor(self.unit_dim, dtype=torch.long, device=ref.device))
        self.register_parameter("hs_unit_loc", nn.Parameter(unit_loc))
        self.register_parameter("hs_unit_rho", nn.Parameter(torch.full_like(unit_loc, rho0)))
        self.register_parameter("hs_layer_loc", nn.Parameter(layer_loc))
        self.register_parameter("hs_layer_rho", nn.Parameter(torch.full_like(layer_loc, rho0)))
        gamma = self.median_scale().detach()
        with torch.no_grad():
            for pname in self.hs_param_names:
                param = getattr(self, pname)
                param.div_(self._unit_view(gamma, param))
                sigma = torch.clamp(weight_sigma_relative * param.abs(), min=weight_sigma_floor)
                self.register_parameter(f"{pname}_rho", nn.Parameter(inverse_softplus(sigma)))

    # ------------------------------------------------------------------------------ queries
    @property
    def hs_param_names(self) -> list[str]:
        """The parameters scaled by γ: ``weight`` and, if present, ``bias``."""
        return [p for p in HS_PARAM_NAMES if getattr(self, p, None) is not None]

    def _unit_view(self, gamma: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """``gamma`` (``(..., units)``) shaped to broadcast over ``param`` (``(..., *param.shape)``)."""
        lead = gamma.shape[:-1]
        if param.dim() == 1:  # bias
            return gamma
        shape = [1] * param.dim()
        shape[self.unit_dim] = self.num_units
        return gamma.reshape(*lead, *shape)

    def sigma(self, pname: str) -> torch.Tensor:
        """Posterior σ of ŵ for ``pname`` (``softplus(ρ)``), shaped like the parameter."""
        return F.softplus(getattr(self, f"{pname}_rho"))

    def median_scale(self) -> torch.Tensor:
        """``γ̄_i``: eq. 14 at the posterior medians ``exp(loc)`` of ``a, b, â, b̂, c``, shape ``(units,)``."""
        log_a, log_b = self.hs_unit_loc
        log_ha, log_hb, log_c = self.hs_layer_loc
        log_v = torch.log(self.hs_tau0) + 0.5 * (log_ha - log_hb)
        return horseshoe_scale(log_a, log_b, log_v, log_c)

    def sample_scale(self, num_samples: int = 1) -> torch.Tensor:
        """``S`` samples of ``γ_i`` (reparameterised log-normals, eq. 17–18), shape ``(S, units)``."""
        units = self.num_units
        eps_u = self._noise_for("unit", (2 * units,), num_samples, self.hs_unit_loc).view(num_samples, 2, units)
        eps_l = self._noise_for("layer", (3,), num_samples, self.hs_layer_loc)
        unit = self.hs_unit_loc + F.softplus(self.hs_unit_rho) * eps_u
        layer = self.hs_layer_loc + F.softplus(self.hs_layer_rho) * eps_l
        log_v = torch.log(self.hs_tau0) + 0.5 * (layer[:, 0:1] - layer[:, 1:2])
        return horseshoe_scale(unit[:, 0], unit[:, 1], log_v, layer[:, 2:3])

    def effective_mean(self, pname: str) -> torch.Tensor:
        """The posterior-median network's ``pname``: ``γ̄ ⊙ μ`` (weight units), shaped like the parameter."""
        param = getattr(self, pname)
        return self._unit_view(self.median_scale(), param) * param

    def num_bayes(self) -> int:
        """Number of ŵ entries (weights and biases) with a Gaussian posterior."""
        return sum(getattr(self, p).numel() for p in self.hs_param_names)

    def kl(self) -> torch.Tensor:
        """KL of eq. 18's posterior to the prior of eq. 14/17: ŵ, ``a, b`` per unit, ``â, b̂, c``."""
        terms = [gaussian_kl(getattr(self, p), self.sigma(p), 0.0, 1.0) for p in self.hs_param_names]
        unit_sigma, layer_sigma = F.softplus(self.hs_unit_rho), F.softplus(self.hs_layer_rho)
        terms.append(lognormal_gamma_kl(self.hs_unit_loc, unit_sigma, HALF, 1.0).sum())
        terms.append(lognormal_gamma_kl(self.hs_layer_loc[:2], layer_sigma[:2], HALF, 1.0).sum())
        # q(c) = LN(m, s²)  <=>  c⁻² ~ LN(−2m, (2s)²); prior c⁻² ~ Γ(2, 6)
        terms.append(lognormal_gamma_kl(-2.0 * self.hs_layer_loc[2], 2.0 * layer_sigma[2], C_PRIOR_SHAPE, C_PRIOR_RATE))
        return torch.stack([t.reshape(()) for t in terms]).sum()

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {p: (getattr(self, p).numel(),) for p in self.hs_param_names}
        shapes["unit"] = (2 * self.num_units,)
        shapes["layer"] = (3,)
        return shapes

    # ------------------------------------------------------------------------------ sampling
    def sample_parameter(self, pname: str, gamma: torch.Tensor) -> torch.Tensor:
        """Samples ``w = γ ŵ`` of ``pname`` for scale samples ``gamma`` ``(S, units)``, shape ``(S, *param.shape)``."""
        param = getattr(self, pname)
        num_samples = gamma.shape[0]
        eps = self._noise_for(pname, (param.numel(),), num_samples, param).view(num_samples, *param.shape)
        w_hat = param.unsqueeze(0) + self.sigma(pname).unsqueeze(0) * eps
        return self._unit_view(gamma, param) * w_hat

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        output_size = kwargs.get("output_size", args[0] if args else None)
        has_bias = self.bias is not None
        if self._sampling_mode == "mean":
            bias = self.effective_mean("bias") if has_bias else None
            return forward_with(self, x, self.effective_mean("weight"), bias, output_size)
        S = self._num_samples
        self._check_batch(x.shape[0])
        gamma = self.sample_scale(S)
        weights = self.sample_parameter("weight", gamma)
        biases = self.sample_parameter("bias", gamma) if has_bias else None
        if S == 1:
            return forward_with(self, x, weights[0], None if biases is None else biases[0], output_size)
        return forward_with_samples(self, x, weights, biases, "auto", output_size)

    # ------------------------------------------------------------------------------ state
    def deterministic_module(self) -> nn.Module:
        """The plain layer with the posterior-median weights ``γ̄ ⊙ μ`` (Tiered-FF point estimate)."""
        with torch.no_grad():
            means = {p: self.effective_mean(p).detach().clone() for p in self.hs_param_names}
            for pname, value in means.items():
                getattr(self, pname).copy_(value)
                delattr(self, f"{pname}_rho")
        for name in ("hs_unit_loc", "hs_unit_rho", "hs_layer_loc", "hs_layer_rho", "hs_tau0", "hs_unit_dim"):
            delattr(self, name)
        self.__class__ = self._base_type  # type: ignore[assignment]  # deliberate in-place swap to the plain base class
        return self

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"{base}, horseshoe(tau0={float(self.hs_tau0):g}), mode={self._sampling_mode}"


def horseshoe_median_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A horseshoe network's state dict with ``weight`` / ``bias`` replaced by the posterior-median ``γ̄ ⊙ μ``.

    Works on the state dict alone (e.g. to publish the deterministic weights without building the
    network); other entries are returned unchanged.

    Parameters
    ----------
    state : Mapping of str to torch.Tensor
        ``state_dict()`` of a network with :class:`HorseshoeBayesLayer` modules.

    Returns
    -------
    dict of str to torch.Tensor
        A new dict; the layers' ``weight`` / ``bias`` are in weight units.
    """
    out = dict(state)
    for key in state:
        if not key.endswith("hs_layer_loc"):
            continue
        prefix = key[: -len("hs_layer_loc")]
        unit_loc, layer_loc = state[prefix + "hs_unit_loc"], state[key]
        log_v = torch.log(state[prefix + "hs_tau0"]) + 0.5 * (layer_loc[0] - layer_loc[1])
        gamma = horseshoe_scale(unit_loc[0], unit_loc[1], log_v, layer_loc[2])
        unit_dim = int(state[prefix + "hs_unit_dim"])
        weight = state[prefix + "weight"]
        shape = [1] * weight.dim()
        shape[unit_dim] = gamma.numel()
        out[prefix + "weight"] = weight * gamma.reshape(shape)
        if prefix + "bias" in state:
            out[prefix + "bias"] = state[prefix + "bias"] * gamma
    return out


_VARIANTS = make_layer_variants(HorseshoeBayesLayer, "HorseshoeBayes", __name__)
HorseshoeBayesConv1d = _VARIANTS[nn.Conv1d]
HorseshoeBayesConv2d = _VARIANTS[nn.Conv2d]
HorseshoeBayesConv3d = _VARIANTS[nn.Conv3d]
HorseshoeBayesConvTranspose1d = _VARIANTS[nn.ConvTranspose1d]
HorseshoeBayesConvTranspose2d = _VARIANTS[nn.ConvTranspose2d]
HorseshoeBayesConvTranspose3d = _VARIANTS[nn.ConvTranspose3d]
HorseshoeBayesLinear = _VARIANTS[nn.Linear]


def horseshoe_bayes_class(base: type[nn.Module]) -> type[nn.Module]:
    """The horseshoe (Tiered-FF) class for a supported base type (exact type match)."""
    return variant_for(_VARIANTS, base)
