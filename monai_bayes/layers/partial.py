"""Masked partial-Bayesian layers (seed 000, SBN §2.2): Dirac and Gaussian weights in one layer.

Every weight entry ``i`` of a partial-Bayesian layer is either deterministic, ``δ(μ_i)``, or
Bayesian, ``N(μ_i, σ_i²)`` with ``σ_i = softplus(ρ_i)``. Storage keeps the wrapped layer intact:

* the mean of *every* entry stays in the layer's own ``weight`` / ``bias`` parameter, so a
  deterministic checkpoint loads straight in and the posterior-mean network is the plain layer;
* for each parameter with Bayesian entries, a buffer ``<param>_bayes_index`` (int64, length k,
  flat indices into the parameter) and a parameter ``<param>_rho`` (length k). Parameters and
  checkpoint therefore grow by O(k), not O(N). When *every* entry is Bayesian (full mean-field
  Bayes) the index is stored empty and ``rho`` has the parameter's full length, so a full-Bayes
  checkpoint is exactly twice the deterministic one.

A posterior sample is ``W = weight + scatter(index, σ ⊙ ε)``, ``ε ~ N(0, I_k)`` (reparameterisation
trick, Kingma & Welling 2014). Only Bayesian entries contribute to :meth:`kl`, in closed form against
the prior ``N(prior_mu, prior_sigma²)`` (seed: ``N(0, 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from monai_bayes.layers.base import StochasticLayer
from monai_bayes.layers.functional import (
    SPARSE_DENSITY_THRESHOLD,
    BatchedStrategy,
    forward_with,
    forward_with_samples,
    forward_with_sparse_samples,
    forward_with_sparse_samples_shared,
    make_layer_variants,
    sparse_touched_channels,
    variant_for,
)

__all__ = [
    "PartialBayesConv1d",
    "PartialBayesConv2d",
    "PartialBayesConv3d",
    "PartialBayesConvTranspose1d",
    "PartialBayesConvTranspose2d",
    "PartialBayesConvTranspose3d",
    "PartialBayesLayer",
    "PartialBayesLinear",
    "gaussian_kl",
    "inverse_softplus",
    "partial_bayes_class",
]

BAYES_PARAM_NAMES: tuple[str, ...] = ("weight", "bias")
DEFAULT_SIGMA_RELATIVE_SCALE = 0.05
DEFAULT_SIGMA_FLOOR = 1e-3


def inverse_softplus(sigma: torch.Tensor) -> torch.Tensor:
    """ρ such that ``softplus(ρ) = σ`` (σ > 0), computed stably as ``σ + log(-expm1(-σ))``."""
    return sigma + torch.log(-torch.expm1(-sigma))


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, prior_mu: float, prior_sigma: float) -> torch.Tensor:
    """Sum of ``KL(N(μ, σ²) ‖ N(μ₀, σ₀²))`` over all entries, in nats (closed form).

    Per entry::

        log(σ₀/σ) + (σ² + (μ - μ₀)²) / (2 σ₀²) - 1/2
    """
    var_ratio = (sigma / prior_sigma) ** 2
    return (
        0.5 * (var_ratio + ((mu - prior_mu) / prior_sigma) ** 2 - 1.0) - torch.log(sigma) + math.log(prior_sigma)
    ).sum()


#: ``sigma_init`` names: the σ₀ rules of :func:`initial_sigma`
SIGMA_INIT_NAMES: tuple[str, ...] = ("relative", "rho_normal")
#: ρ ~ N(RHO_NORMAL_MEAN, RHO_NORMAL_STD²) for ``sigma_init="rho_normal"`` (the authors' ``posterior_rho_init``)
RHO_NORMAL_MEAN = -3.0
RHO_NORMAL_STD = 1.0


def initial_sigma(mu: torch.Tensor, sigma_init: float | str, relative_scale: float, floor: float) -> torch.Tensor:
    """Initial posterior σ for Bayesian entries with means ``mu``.

    * ``"relative"`` (default): ``σ = max(relative_scale·|μ|, floor)`` -- a sample starts within a few
      percent of the trained weight, so the converted net initially behaves like the deterministic one
      (SBN step 3 starts from the trained point estimates); the floor keeps near-zero weights stochastic
      and their ρ trainable.
    * ``"rho_normal"``: ``σ = softplus(ρ)`` with ``ρ ~ N(-3, 1)`` drawn from torch's global generator
      (seed it, e.g. ``monai.utils.set_determinism``), as the authors' code initialises every
      Bayesian entry (``models/bayeslayers.py``: ``rho_weight.data.normal_(mean=posterior_rho_init, std=1)``
      with ``posterior_rho: -3`` in ``configs/lidc.json`` / ``configs/isic.json``); median σ ≈ 0.049.
    * a float: a constant σ (e.g. ``softplus(-3) ≈ 0.0486``).

    Parameters
    ----------
    mu : torch.Tensor
        Means of the Bayesian entries, any shape.
    sigma_init : float or str
        The rule (above).
    relative_scale, floor : float
        Parameters of ``"relative"``.

    Returns
    -------
    torch.Tensor
        σ₀ shaped like ``mu``, > 0.

    Raises
    ------
    ValueError
        For an unknown name, a non-positive constant or non-positive ``relative_scale`` / ``floor``.
    """
    expected = f"one of {list(SIGMA_INIT_NAMES)} or a positive float"
    if isinstance(sigma_init, str):
        if sigma_init not in SIGMA_INIT_NAMES:
            raise ValueError(f"sigma_init must be {expected}, got {sigma_init!r}.")
        if sigma_init == "rho_normal":
            rho = torch.randn(mu.shape, dtype=torch.float64) * RHO_NORMAL_STD + RHO_NORMAL_MEAN
            return F.softplus(rho).to(device=mu.device, dtype=mu.dtype)
        if relative_scale <= 0 or floor <= 0:
            raise ValueError(f"sigma_relative_scale and sigma_floor must be > 0, got {relative_scale!r} and {floor!r}.")
        return torch.clamp(relative_scale * mu.abs(), min=floor)
    if not float(sigma_init) > 0:
        raise ValueError(f"sigma_init must be {expected}, got {sigma_init!r}.")
    return torch.full_like(mu, float(sigma_init))


def _tracing() -> bool:
    """Whether the forward runs under ``torch.export`` / ``torch.compile`` / ``torch.jit`` tracing."""
    return bool(torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing())


class PartialBayesLayer(StochasticLayer):
    """Mixin turning a conv / transposed conv / linear module into a partial-Bayesian one.

    Concrete classes are ``PartialBayes<Base>`` for each supported base type. They are normally
    made by :func:`monai_bayes.networks.to_partial_bayes`, which swaps the class of trained
    modules in place; constructing one directly makes every entry Bayesian unless ``bayes_masks``
    says otherwise. All the base layer's constructor options are kept.

    Parameters
    ----------
    bayes_masks
        ``"all"`` or ``{"weight": bool tensor, "bias": bool tensor}`` shaped like the
        parameters; ``True`` marks a Bayesian entry. A missing key means no Bayesian entry.
    sigma_init, sigma_relative_scale, sigma_floor
        initial σ, see :func:`initial_sigma`.
    prior_mu, prior_sigma
        Gaussian prior of the Bayesian entries (seed 000: ``N(0, 1)``).
    """

    if TYPE_CHECKING:
        # set by the nn.Module base type this mixin is combined with (see make_layer_variants)
        weight: torch.Tensor
        bias: torch.Tensor | None
        _base_type: type[nn.Module]
        in_channels: int
        out_channels: int
        # registered by _register_bayes_entries / _init_partial_bayes
        weight_bayes_index: torch.Tensor
        bayes_prior: torch.Tensor

    def __init__(
        self,
        *args: Any,
        bayes_masks: Mapping[str, torch.Tensor] | str = "all",
        sigma_init: float | str = "relative",
        sigma_relative_scale: float = DEFAULT_SIGMA_RELATIVE_SCALE,
        sigma_floor: float = DEFAULT_SIGMA_FLOOR,
        prior_mu: float = 0.0,
        prior_sigma: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_partial_bayes(
            bayes_masks,
            sigma_init=sigma_init,
            sigma_relative_scale=sigma_relative_scale,
            sigma_floor=sigma_floor,
            prior_mu=prior_mu,
            prior_sigma=prior_sigma,
        )

    # ------------------------------------------------------------------------------ set-up
    def _init_partial_bayes(
        self,
        bayes_masks: Mapping[str, torch.Tensor] | str,
        *,
        sigma_init: float | str = "relative",
        sigma_relative_scale: float = DEFAULT_SIGMA_RELATIVE_SCALE,
        sigma_floor: float = DEFAULT_SIGMA_FLOOR,
        prior_mu: float = 0.0,
        prior_sigma: float = 1.0,
    ) -> None:
        """Register index buffers and ρ parameters for the masked entries (μ = current weights)."""
        if not prior_sigma > 0:
            raise ValueError(f"prior_sigma must be > 0, got {prior_sigma!r}.")
        self._init_stochastic_state()
        # the prior is part of the state dict (buffer ``bayes_prior`` = [μ₀, σ₀]); the floats mirror it for kl()
        ref = self.weight
        self.register_buffer("bayes_prior", torch.zeros(2, dtype=torch.float64, device=ref.device))
        self.prior_mu = float(prior_mu)
        self.prior_sigma = float(prior_sigma)
        self.batched_strategy: BatchedStrategy = "auto"
        for pname in BAYES_PARAM_NAMES:
            param = getattr(self, pname, None)
            if param is None:
                continue
            mask: torch.Tensor | None
            if isinstance(bayes_masks, str):
                if bayes_masks != "all":
                    raise ValueError(f"bayes_masks must be 'all' or a mapping of bool masks, got {bayes_masks!r}.")
                mask = torch.ones_like(param, dtype=torch.bool)
            else:
                mask = bayes_masks.get(pname)
                if mask is None:
                    continue
            self._register_bayes_entries(pname, param, mask, sigma_init, sigma_relative_scale, sigma_floor)

    def _register_bayes_entries(
        self,
        pname: str,
        param: torch.Tensor,
        mask: torch.Tensor,
        sigma_init: float | str,
        relative_scale: float,
        floor: float,
    ) -> None:
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(
                f"bayes mask for {pname!r} of {type(self).__name__} must have shape {tuple(param.shape)}, "
                f"got {tuple(mask.shape)}."
            )
        flat = mask.reshape(-1).to(device=param.device, dtype=torch.bool)
        if not flat.any():
            return
        mu = param.detach().reshape(-1)
        if flat.all():
            index = torch.empty(0, dtype=torch.long, device=param.device)
        else:
            index = flat.nonzero().squeeze(1)
            mu = mu[index]
        rho = inverse_softplus(initial_sigma(mu, sigma_init, relative_scale, floor).to(param.dtype))
        self.register_buffer(f"{pname}_bayes_index", index)
        self.register_parameter(f"{pname}_rho", nn.Parameter(rho))

    # ------------------------------------------------------------------------------ prior
    @property
    def prior_mu(self) -> float:
        """Mean μ₀ of the Gaussian prior of the Bayesian entries (stored in the ``bayes_prior`` buffer)."""
        return self._prior_mu

    @prior_mu.setter
    def prior_mu(self, value: float) -> None:
        self._prior_mu = float(value)
        self.bayes_prior[0] = self._prior_mu

    @property
    def prior_sigma(self) -> float:
        """Standard deviation σ₀ > 0 of the Gaussian prior (stored in the ``bayes_prior`` buffer)."""
        return self._prior_sigma

    @prior_sigma.setter
    def prior_sigma(self, value: float) -> None:
        if not float(value) > 0:
            raise ValueError(f"prior_sigma must be > 0, got {value!r}.")
        self._prior_sigma = float(value)
        self.bayes_prior[1] = self._prior_sigma

    # ------------------------------------------------------------------------------ queries
    @property
    def bayes_param_names(self) -> list[str]:
        """Names of the parameters (``weight`` / ``bias``) that have Bayesian entries."""
        return [p for p in BAYES_PARAM_NAMES if getattr(self, f"{p}_rho", None) is not None]

    def bayes_index(self, pname: str) -> torch.Tensor:
        """Flat indices of the Bayesian entries of ``pname`` (all entries for a dense parameter)."""
        index = getattr(self, f"{pname}_bayes_index")
        if index.numel() == 0:
            return torch.arange(getattr(self, pname).numel(), device=index.device)
        return index

    def bayes_mask(self, pname: str) -> torch.Tensor:
        """Boolean mask shaped like ``pname``: ``True`` where the entry is Bayesian."""
        param = getattr(self, pname)
        mask = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
        if pname in self.bayes_param_names:
            mask[self.bayes_index(pname)] = True
        return mask.view_as(param)

    def num_bayes(self) -> int:
        """Number of Bayesian entries k in this layer."""
        return sum(getattr(self, f"{p}_rho").numel() for p in self.bayes_param_names)

    def sigma(self, pname: str) -> torch.Tensor:
        """Posterior standard deviations ``softplus(ρ)`` of the Bayesian entries of ``pname``, shape (k,)."""
        return F.softplus(getattr(self, f"{pname}_rho"))

    def posterior_mean(self, pname: str) -> torch.Tensor:
        """Posterior means μ of the Bayesian entries of ``pname``, shape (k,) (a view into the parameter)."""
        flat = getattr(self, pname).reshape(-1)
        index = getattr(self, f"{pname}_bayes_index")
        return flat if index.numel() == 0 else flat[index]

    def kl(self) -> torch.Tensor:
        """``Σ_i KL(N(μ_i, σ_i²) ‖ prior)`` over the Bayesian entries; deterministic entries add 0."""
        terms = [
            gaussian_kl(self.posterior_mean(p), self.sigma(p), self.prior_mu, self.prior_sigma)
            for p in self.bayes_param_names
        ]
        if not terms:
            return self.weight.new_zeros(())
        return torch.stack(terms).sum()

    def kl_mean(self) -> torch.Tensor:
        """Mean KL over the Bayesian entries of each parameter (weight, bias), summed over the parameters.

        The per-layer reduction of the authors' code (``models/bayeslayers.py``, ``kl_div(..., mask)``:
        ``kl[~mask].mean()`` for the weight plus the same for the bias); used by
        ``ELBOLoss(kl_reduction="layer_mean")``. A layer without Bayesian entries gives 0.

        Returns
        -------
        torch.Tensor
            Scalar, nats per entry.
        """
        terms = [
            gaussian_kl(self.posterior_mean(p), self.sigma(p), self.prior_mu, self.prior_sigma)
            / getattr(self, f"{p}_rho").numel()
            for p in self.bayes_param_names
        ]
        if not terms:
            return self.weight.new_zeros(())
        return torch.stack(terms).sum()

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p: (getattr(self, f"{p}_rho").numel(),) for p in self.bayes_param_names}

    # ------------------------------------------------------------------------------ sampling
    def parameter_delta(self, pname: str, num_samples: int = 1) -> torch.Tensor:
        """Perturbations ``σ ⊙ ε`` of the Bayesian entries of ``pname``, shape ``(S, k)``."""
        rho = getattr(self, f"{pname}_rho")
        return F.softplus(rho) * self._noise_for(pname, (rho.numel(),), num_samples, rho)

    def sample_parameter(self, pname: str, num_samples: int = 1) -> torch.Tensor:
        """``num_samples`` posterior samples of parameter ``pname``, shape ``(S, *param.shape)``."""
        param = getattr(self, pname)
        if pname not in self.bayes_param_names:
            return param.unsqueeze(0).expand(num_samples, *param.shape)
        delta = self.parameter_delta(pname, num_samples)
        index = getattr(self, f"{pname}_bayes_index")
        if index.numel() == 0:  # dense: every entry Bayesian
            return param.unsqueeze(0) + delta.view(num_samples, *param.shape)
        # a copy of the means per sample, then an in-place scatter of the k perturbations
        # (about 3x faster than an out-of-place index_add of a repeated tensor; autograd-safe)
        flat = param.reshape(1, -1).expand(num_samples, -1).clone()
        return flat.index_add_(1, index, delta).view(num_samples, *param.shape)

    def _use_sparse_strategy(self) -> bool:
        """Whether a batched pass should use :func:`forward_with_sparse_samples` (see ``batched_strategy``)."""
        density = self._sparse_density()
        if self.batched_strategy == "sparse":
            if density is None:
                raise ValueError(
                    "batched_strategy='sparse' needs a conv with groups=1 and a sparse Bayesian weight selection."
                )
            return True
        return self.batched_strategy == "auto" and density is not None and density <= SPARSE_DENSITY_THRESHOLD

    def _sparse_density(self) -> float | None:
        """Fraction of (output × input) channel pairs the sparse weight selection touches (None: not eligible).

        Under graph capture (``torch.export``, ONNX, ``torch.compile``) the layer is never eligible: the touched
        channels have a data-dependent count, which an exported graph cannot hold.
        """
        index = getattr(self, "weight_bayes_index", None)
        if _tracing():
            return None
        if not isinstance(self, _ConvNd) or self.groups != 1 or index is None or index.numel() == 0:
            return None
        out_idx, in_idx, _ = sparse_touched_channels(self, index)
        return len(out_idx) * len(in_idx) / (self.out_channels * self.in_channels)

    def takes_shared_input(self) -> bool:
        """True for a sampling conv whose sparse perturbation makes a shared input cheaper than ``S`` convs.

        Cost model of :func:`forward_with_sparse_samples_shared` in dense calls on ``B`` items:
        ``1 + S·density`` against ``S`` (density: touched channel pairs / all); the layer takes the shared
        input when the model predicts a gain. Whether the whole Monte-Carlo call is faster this way is
        measured by the inferer's plan probe (:mod:`monai_bayes.inferers.planning`).
        """
        S = self._num_samples
        if self._sampling_mode != "sample" or S < 2 or "weight" not in self.bayes_param_names:
            return False
        density = self._sparse_density()
        return density is not None and 1.0 + S * density < S

    def _forward_shared_input(self, x: torch.Tensor, output_size: list[int] | None) -> torch.Tensor:
        """``(S·B, ...)`` samples for an input ``x`` of ``B`` items shared by all samples (``takes_shared_input``)."""
        S = self._num_samples
        bias_delta = None
        if self.bias is not None and "bias" in self.bayes_param_names:
            bias_delta = self.sample_parameter("bias", S) - self.bias
        delta = self.parameter_delta("weight", S)
        return forward_with_sparse_samples_shared(
            self, x, self.weight, self.bias, self.weight_bayes_index, delta, bias_delta, output_size
        )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._sampling_mode == "mean" or not self.bayes_param_names:
            return super().forward(x, *args, **kwargs)
        if getattr(self, "_shared_input", False):
            return self._forward_shared_input(x, kwargs.get("output_size", args[0] if args else None))
        S = self._num_samples
        self._check_batch(x.shape[0])
        output_size = kwargs.get("output_size", args[0] if args else None)
        bias_is_bayes = self.bias is not None and "bias" in self.bayes_param_names
        if S > 1 and "weight" in self.bayes_param_names and self._use_sparse_strategy():
            bias_delta = None
            if bias_is_bayes:
                bias_delta = self.sample_parameter("bias", S) - cast(torch.Tensor, self.bias)  # bias_is_bayes
            delta = self.parameter_delta("weight", S)
            return forward_with_sparse_samples(
                self, x, self.weight, self.bias, self.weight_bayes_index, delta, bias_delta, output_size
            )
        weights = self.sample_parameter("weight", S)
        bias = self.sample_parameter("bias", S) if bias_is_bayes else self.bias
        if S == 1:
            return forward_with(
                self,
                x,
                weights[0],
                None if bias is None else bias.reshape(cast(torch.Tensor, self.bias).shape),
                output_size,
            )
        return forward_with_samples(self, x, weights, bias, self.batched_strategy, output_size)

    # ------------------------------------------------------------------------------ state dict
    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A checkpoint may hold a different number k of Bayesian entries (another selection):
        # resize the index buffer and ρ to the checkpoint's before the default copy.
        for pname in BAYES_PARAM_NAMES:
            idx_key, rho_key = f"{prefix}{pname}_bayes_index", f"{prefix}{pname}_rho"
            if idx_key not in state_dict or rho_key not in state_dict or getattr(self, pname, None) is None:
                continue
            ref = getattr(self, pname)
            index = torch.empty_like(state_dict[idx_key], device=ref.device, dtype=torch.long)
            rho = torch.empty_like(state_dict[rho_key], device=ref.device, dtype=ref.dtype)
            self.register_buffer(f"{pname}_bayes_index", index)
            self.register_parameter(f"{pname}_rho", nn.Parameter(rho))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        prior_key = f"{prefix}bayes_prior"
        if prior_key in state_dict:  # refresh the float mirrors of the loaded prior
            self._prior_mu, self._prior_sigma = (float(v) for v in self.bayes_prior.tolist())
        elif prior_key in missing_keys:  # a checkpoint from before the prior was stored: keep the layer's prior
            missing_keys.remove(prior_key)

    def deterministic_module(self) -> nn.Module:
        """Drop the Bayesian extras and return this module as its plain base type (posterior mean)."""
        delattr(self, "bayes_prior")
        for pname in self.bayes_param_names:
            delattr(self, f"{pname}_rho")
            delattr(self, f"{pname}_bayes_index")
        self.__class__ = self._base_type  # type: ignore[assignment]  # deliberate in-place swap to the plain base class
        return self

    def extra_repr(self) -> str:
        base = super().extra_repr()
        total = sum(getattr(self, p).numel() for p in BAYES_PARAM_NAMES if getattr(self, p, None) is not None)
        return f"{base}, bayes={self.num_bayes()}/{total}, mode={self._sampling_mode}"


_VARIANTS = make_layer_variants(PartialBayesLayer, "PartialBayes", __name__)
PartialBayesConv1d = _VARIANTS[nn.Conv1d]
PartialBayesConv2d = _VARIANTS[nn.Conv2d]
PartialBayesConv3d = _VARIANTS[nn.Conv3d]
PartialBayesConvTranspose1d = _VARIANTS[nn.ConvTranspose1d]
PartialBayesConvTranspose2d = _VARIANTS[nn.ConvTranspose2d]
PartialBayesConvTranspose3d = _VARIANTS[nn.ConvTranspose3d]
PartialBayesLinear = _VARIANTS[nn.Linear]


def partial_bayes_class(base: type[nn.Module]) -> type[nn.Module]:
    """The partial-Bayesian class for a supported base type (exact type match)."""
    return variant_for(_VARIANTS, base)
