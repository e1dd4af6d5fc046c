"""Variational nested (ordered) dropout layers: the Bayesian nested network BN3 (seed 001, Cui et al. 2021).

A nested layer is a conv / transposed conv / linear module whose *output channels* are split into ``G``
ordered groups. Ordering unit, prior, posterior and weight noise follow seed 001 §2–3:

* **nodes** -- the first ``always_kept`` groups form node 1, which is always kept (``π_1 = 1``, so
  ``z_1 = 1``); each later group is one node, so there are ``K = G - always_kept + 1`` nodes and
  ``K`` possible ordered masks ``v_1 … v_K`` (``v_j`` keeps nodes ``1…j``);
* **prior** -- the Bernoulli chain of eq. 1 with keep probabilities ``π = [1, π_2, …, π_K]`` (buffer
  ``prior_keep``); its marginals are eq. 2 and the probability of the ordered mask ``v_j`` is eq. 10,
  ``p(v_j) = (1 - π_{j+1}) Π_{k≤j} π_k`` with ``π_{K+1} = 0`` (:func:`chain_mask_probabilities`);
* **posterior of the ordering** -- the Downhill distribution (Definition 1) with learnable probabilities
  ``β = softmax(order_logits)`` over the tail index, sampled by Property 1: ``c ~ GumbelSoftmax(log β, τ)``,
  ``z_i = 1 - Σ_{j<i} c_j`` (:func:`downhill_sample`); ``τ`` is the attribute ``temperature``
  (anneal it with :class:`NestedTemperatureSetter` and MONAI's ``ParamSchedulerHandler``);
* **weights** -- multiplicative Gaussian noise ``w = θ (1 + √α ε)`` (eq. 14–15) with the mean ``θ`` in
  the layer's own ``weight`` (so trained weights are the means and deterministic checkpoints load
  straight in) and one ``log_alpha`` per weight entry. The bias stays deterministic and carries no KL;
* **KL** -- ``Φ1 + Φ2`` of eq. 18: ``Φ1 = β^T (log β - log p(v))`` (eq. 11) and
  ``Φ2 = e^T K¹ J_L^T β`` (eq. 12 with the spike component folded into the mask, §3.4), where
  ``K¹`` is the per-weight KL from the log-uniform-prior approximation eq. 17 and ``J_L^T β`` are
  the keep probabilities ``q(z_j = 1) = Σ_{k≥j} β_k``.

Where the mask goes
-------------------
Seed 001 multiplies the mask with the layer's output features (§3.4, eq. 19 ``f = b z``). In
MONAI blocks a conv is followed by normalisation and activation (``Convolution`` = conv → ADN); a
channel mask *before* an instance/batch norm is undone by the norm's per-channel standardisation and a
zeroed channel comes out of it as the norm's bias, so the mask would neither order the channels nor
drop them. :func:`monai_bayes.networks.to_nested` therefore inserts a :class:`NestedChannelMask` right
after the channel-wise tail (norm / dropout / activation) that follows the conv in its ``Sequential``;
the layer then hands its mask to that module. Without such a tail (``conv_only`` blocks, residual
projections, ``Linear``) the layer masks its own output, exactly as eq. 19. Either way a dropped channel
is exactly zero wherever it is consumed, which is what makes a width-``w`` sub-network a physically
smaller network (:func:`monai_bayes.networks.extract_width`).

Modes and randomness
--------------------
The sampling mode (``"sample"`` / ``"mean"``, :func:`~monai_bayes.layers.sampling_mode`) and the
width (``None`` or ``w`` groups, :func:`nested_width`) are independent settings, so that
:class:`~monai_bayes.inferers.MonteCarloInferer` (which sets ``"sample"``) can draw samples at a
fixed width:

=========  =========  =======================================================================
mode       width      output channels
=========  =========  =======================================================================
sample     ``None``   ``z ~ Downhill(β, τ)`` per MC sample; weights with noise
sample     ``w``      first ``w`` groups kept (0/1 mask, no ordering noise) and rescaled by their
                      keep probability; weights with noise -- the only randomness left
mean       ``None``   all groups, rescaled by their keep probability; weights ``θ``
mean       ``w``      first ``w`` groups, rescaled; weights ``θ`` (deterministic)
=========  =========  =======================================================================

Rescaling (seed 001 §5.1, "re-scale the node output by the probability that a node is kept") multiplies
output channel ``c`` by ``q(z_{node(c)} = 1)`` at the conv's output (foldable into its weights); turn it
off with ``rescale=False``, which makes the full-width mean network the deterministic network the
means came from.

Weight noise is drawn in one of two ways (``weight_noise``): ``"local"`` -- the local reparameterisation
of eq. 19 (``b ~ N(γ, δ)`` with ``γ = conv(h, θ)``, ``δ = conv(h², α θ²)``), fresh per activation and per
call, like MC-dropout masks it cannot be frozen; ``"weight"`` -- one weight sample ``θ (1 + √α ε)`` per
MC sample (eq. 14), spatially coherent and freezable through :meth:`noise_shapes` (needed for
sliding-window inference and for comparing batched with sequential samples); ``"auto"`` (default) --
``"local"`` in ``train()`` (the seed's training estimator), ``"weight"`` in ``eval()``. The Gumbel noise
of the ordering unit (one vector of ``K`` per MC sample) is always freezable: it is derived from the
protocol's standard-normal noise as ``g = -log(-log Φ(ε))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, cast

import torch
from monai.utils import StrEnum
from torch import nn
from torch.nn.modules.conv import _ConvTransposeNd

from monai_bayes.layers.base import StochasticLayer, stochastic_layers
from monai_bayes.layers.functional import (
    BatchedStrategy,
    forward_with,
    forward_with_samples,
    make_layer_variants,
    variant_for,
)
from monai_bayes.layers.latent import NestedLatentMask
from monai_bayes.layers.nested_math import (
    KLConstant,
    Remainder,
    chain_mask_probabilities,
    downhill_sample,
    group_boundaries,
    gumbel_from_normal,
    initial_order_logits,
    keep_probabilities,
    ordering_kl,
    prior_keep_vector,
    weight_kl,
)
from monai_bayes.utils.options import look_up

__all__ = [
    "NestedChannelMask",
    "NestedDropoutConv1d",
    "NestedDropoutConv2d",
    "NestedDropoutConv3d",
    "NestedDropoutConvTranspose1d",
    "NestedDropoutConvTranspose2d",
    "NestedDropoutConvTranspose3d",
    "NestedDropoutLayer",
    "NestedDropoutLinear",
    "NestedDropoutOptions",
    "NestedTemperatureSetter",
    "WeightNoise",
    "nested_dropout_class",
    "nested_layers",
    "nested_width",
    "set_nested_temperature",
    "set_nested_width",
    "width_layers",
]

#: log α is clamped to this range in sampling and KL (eq. 17 was fitted on [-5, 0.5])
LOG_ALPHA_RANGE: tuple[float, float] = (-10.0, 4.0)
#: added to the variance of eq. 19 before the square root (finite gradients where δ = 0, e.g. padding)
LOCAL_VARIANCE_EPS = 1e-8


class WeightNoise(StrEnum):
    """How weight noise is drawn (module docstring): per activation (``local``), per weight sample, or by mode."""

    AUTO = "auto"
    LOCAL = "local"
    WEIGHT = "weight"


class _NoPending:
    """Marker: the layer has not run since its mask site last consumed the mask."""

    def __repr__(self) -> str:
        return "<no pending mask>"


_NO_PENDING = _NoPending()


# ----------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class NestedDropoutOptions:
    """Settings of a nested-dropout layer, validated once on construction (seed 001 §2–3).

    The same settings reach a layer three ways -- the layer constructor (keywords, ``nested_groups`` for
    ``groups`` because convolutions have their own ``groups``), :func:`monai_bayes.networks.to_nested`
    and bundle configs (keywords) -- and all of them build one of these.

    Parameters
    ----------
    groups : int
        ``G`` ordered channel groups (seed 001 uses 32).
    always_kept : int
        Number of leading groups that are never dropped (they form node 1, ``π_1 = 1``).
    prior_keep : float or sequence of float
        ``π_2 … π_K`` of the Bernoulli-chain prior (eq. 1): one value or ``K - 1`` values in (0, 1).
    order_init : float or str
        Initial β: a keep probability ρ in (0, 1) (β = chain with constant ρ, default 0.95),
        ``"prior"`` (β = p(v), so Φ1 starts at 0) or ``"uniform"``.
    log_alpha_init : float
        Initial ``log α`` of every weight (-5: noise std 8 % of |θ|).
    temperature : float
        Downhill / Gumbel-softmax temperature τ > 0 (anneal with :class:`NestedTemperatureSetter`).
    straight_through : bool
        Hard one-hot tail sample in the forward pass, relaxed gradient.
    rescale : bool
        Multiply output channels by their keep probability in mean mode and at a fixed width.
    weight_noise : WeightNoise or str
        ``"auto"``, ``"local"`` or ``"weight"`` (module docstring).
    kl_constant : KLConstant, str or float
        The constant of eq. 17, see :func:`~monai_bayes.layers.nested_math.weight_kl`.
    remainder : Remainder or str
        ``"spread"`` or ``"error"`` when ``G`` does not divide the channels, see
        :func:`~monai_bayes.layers.nested_math.group_boundaries`.

    Raises
    ------
    ValueError
        Naming the setting, for any value outside its domain.
    """

    groups: int = 32
    always_kept: int = 2
    prior_keep: float | Sequence[float] = 0.9
    order_init: float | str = 0.95
    log_alpha_init: float = -5.0
    temperature: float = 1.0
    straight_through: bool = False
    rescale: bool = True
    weight_noise: WeightNoise | str = WeightNoise.AUTO
    kl_constant: KLConstant | str | float = KLConstant.NONNEGATIVE
    remainder: Remainder | str = Remainder.SPREAD

    def __post_init__(self) -> None:
        groups = self.groups
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}.")
        if not isinstance(self.always_kept, int) or not 1 <= self.always_kept <= groups:
            raise ValueError(f"always_kept must be an int in [1, groups={groups}], got {self.always_kept!r}.")
        object.__setattr__(self, "weight_noise", look_up("weight_noise", self.weight_noise, WeightNoise))
        weight_kl(torch.zeros(1), self.kl_constant)  # validates kl_constant
        object.__setattr__(self, "remainder", look_up("remainder", self.remainder, Remainder))
        object.__setattr__(self, "temperature", _check_temperature(self.temperature))
        initial_order_logits(self.order_init, prior_keep_vector(self.prior_keep, self.num_nodes))  # validates both

    @property
    def num_nodes(self) -> int:
        """``K = G - always_kept + 1``: the number of ordered masks ``v_1 … v_K``."""
        return self.groups - self.always_kept + 1

    @classmethod
    def from_options(cls, options: NestedDropoutOptions | None = None, **kwargs: Any) -> NestedDropoutOptions:
        """``options`` (or the defaults) with the keyword settings ``kwargs`` replacing its fields.

        Parameters
        ----------
        options : NestedDropoutOptions, optional
            Starting point (default: ``NestedDropoutOptions()``).
        **kwargs : Any
            Field values (``groups``, ``always_kept``, ...).

        Returns
        -------
        NestedDropoutOptions
            The validated settings.

        Raises
        ------
        TypeError
            If a keyword is not a setting.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown nested-dropout option(s) {unknown}; expected some of {sorted(names)}.")
        return replace(options, **kwargs) if options is not None else cls(**kwargs)

    @classmethod
    def pop_layer_keywords(cls, options: NestedDropoutOptions | None, kwargs: dict[str, Any]) -> NestedDropoutOptions:
        """Take the nested-dropout keywords out of a layer constructor's ``kwargs`` (in place).

        Parameters
        ----------
        options : NestedDropoutOptions, optional
            Settings passed as an object (keywords override its fields).
        kwargs : dict of str to Any
            The constructor's keyword arguments; ``nested_groups`` and the other settings are removed,
            the base layer's arguments stay.

        Returns
        -------
        NestedDropoutOptions
            The validated settings.
        """
        names = {f.name for f in fields(cls)} - {"groups"}
        taken = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        if "nested_groups" in kwargs:
            taken["groups"] = kwargs.pop("nested_groups")
        return cls.from_options(options, **taken)


# ----------------------------------------------------------------------------------------- layer
class NestedDropoutLayer(StochasticLayer):
    """Mixin: variational nested dropout on the output channels of a conv / transposed conv / linear module.

    Concrete classes are ``NestedDropout<Base>`` (e.g. :class:`NestedDropoutConv2d`); the converter
    :func:`monai_bayes.networks.to_nested` swaps the class of trained modules in place (``weight`` = θ
    keeps its name). Constructing one directly takes the base layer's arguments (``groups`` stays the
    convolution's own) plus the settings of :class:`NestedDropoutOptions`, either as an object or as
    keywords (``nested_groups`` for ``groups``).

    Parameters
    ----------
    *args : Any
        The base layer's positional arguments.
    nested_options : NestedDropoutOptions, optional
        The nested-dropout settings; keywords below override its fields.
    **kwargs : Any
        The base layer's keyword arguments, and the settings ``nested_groups``, ``always_kept``,
        ``prior_keep``, ``order_init``, ``log_alpha_init``, ``temperature``, ``straight_through``,
        ``rescale``, ``weight_noise``, ``kl_constant``, ``remainder`` (see :class:`NestedDropoutOptions`).
    """

    if TYPE_CHECKING:
        # set by the nn.Module base type this mixin is combined with (see make_layer_variants)
        weight: torch.Tensor
        bias: torch.Tensor | None
        _base_type: type[nn.Module]
        out_channels: int
        # registered by _init_nested
        _channel_node: torch.Tensor
        prior_keep: torch.Tensor
        order_logits: nn.Parameter
        log_alpha: nn.Parameter

    def __init__(self, *args: Any, nested_options: NestedDropoutOptions | None = None, **kwargs: Any) -> None:
        options = NestedDropoutOptions.pop_layer_keywords(nested_options, kwargs)
        super().__init__(*args, **kwargs)
        self._init_nested(options)

    # ------------------------------------------------------------------------------ set-up
    def _init_nested(self, options: NestedDropoutOptions) -> None:
        """Register ``order_logits``, ``log_alpha`` and ``prior_keep``; θ = the current ``weight``."""
        channels = self.out_features if isinstance(self, nn.Linear) else self.out_channels
        groups, always_kept = options.groups, options.always_kept
        bounds = group_boundaries(channels, groups, options.remainder)
        self._init_stochastic_state()
        self.nested_groups = groups
        self.always_kept = always_kept
        self.group_bounds = bounds
        self.remainder = str(cast(Remainder, options.remainder).value)  # an enum after __post_init__
        self.temperature = options.temperature
        self.straight_through = bool(options.straight_through)
        self.rescale = bool(options.rescale)
        self.weight_noise = str(cast(WeightNoise, options.weight_noise).value)
        self.kl_constant = options.kl_constant
        self.batched_strategy: BatchedStrategy = "auto"
        self._width: int | None = None
        self.has_mask_site = False
        self._pending_mask: torch.Tensor | _NoPending | None = _NO_PENDING
        nodes = options.num_nodes
        ref = self.weight
        group_of_channel = torch.repeat_interleave(torch.arange(groups), torch.tensor(bounds).diff())
        node_of_channel = (group_of_channel - always_kept + 1).clamp_min(0)
        self.register_buffer("_channel_node", node_of_channel.to(ref.device), persistent=False)
        prior = prior_keep_vector(options.prior_keep, nodes).to(device=ref.device, dtype=ref.dtype)
        self.register_buffer("prior_keep", prior)
        logits = initial_order_logits(options.order_init, prior)
        self.register_parameter("order_logits", nn.Parameter(logits))
        self.register_parameter("log_alpha", nn.Parameter(torch.full_like(ref.detach(), float(options.log_alpha_init))))

    # ------------------------------------------------------------------------------ structure
    @property
    def num_nodes(self) -> int:
        """``K = G - always_kept + 1``: the number of ordered masks ``v_1 … v_K``."""
        return self.nested_groups - self.always_kept + 1

    @property
    def channel_dim(self) -> int:
        """Dimension of the output that holds the channels (``-1`` for ``Linear``)."""
        return -1 if isinstance(self, nn.Linear) else 1

    @property
    def num_channels(self) -> int:
        return self.group_bounds[-1]

    def channels_at_width(self, width: int) -> int:
        """Number of leading output channels kept by the first ``width`` groups."""
        _check_width(width, self.nested_groups, type(self).__name__)
        return self.group_bounds[width]

    @property
    def width(self) -> int | None:
        """Fixed number of kept groups, or ``None`` (ordering sampled / full width)."""
        return self._width

    @width.setter
    def width(self, value: int | None) -> None:
        if value is not None:
            _check_width(value, self.nested_groups, type(self).__name__)
        self._width = value

    def num_bayes(self) -> int:
        """Number of weight entries with a learnt noise level α (used by ``ELBOLoss(kl_reduction="parameters")``)."""
        return self.log_alpha.numel()

    # ------------------------------------------------------------------------------ distributions
    def clamped_log_alpha(self) -> torch.Tensor:
        return self.log_alpha.clamp(*LOG_ALPHA_RANGE)

    def log_beta(self) -> torch.Tensor:
        """``log β``, ``(K,)``: log-probabilities of the tail index under the Downhill posterior."""
        return torch.log_softmax(self.order_logits, dim=0)

    def node_keep_probabilities(self) -> torch.Tensor:
        """``q(z_j = 1)``, ``(K,)`` (node 1 has probability 1)."""
        return keep_probabilities(self.log_beta().exp())

    def channel_keep_probabilities(self) -> torch.Tensor:
        """Keep probability of each output channel, ``(C,)``: the rescaling factors of seed 001 §5.1."""
        return self.node_keep_probabilities()[self._channel_node]

    def prior_mask_probabilities(self) -> torch.Tensor:
        """``p(v_j)``, eq. 10, ``(K,)``."""
        return chain_mask_probabilities(self.prior_keep)

    def kl_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Φ1, Φ2)`` of eq. 18 (eq. 11 and eq. 12 reduced by §3.4), scalars in nats."""
        log_beta = self.log_beta()
        phi1 = ordering_kl(log_beta, self.prior_mask_probabilities())
        per_channel = self._per_output_channel_sum(weight_kl(self.clamped_log_alpha(), self.kl_constant))
        per_node = per_channel.new_zeros(self.num_nodes).index_add(0, self._channel_node, per_channel)
        phi2 = (keep_probabilities(log_beta.exp()) * per_node).sum()
        return phi1, phi2

    def kl(self) -> torch.Tensor:
        """``KL[q(W, z) ‖ p(W, z)] = Φ1 + Φ2`` -- eq. 18."""
        phi1, phi2 = self.kl_terms()
        return phi1 + phi2

    def _per_output_channel_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of a weight-shaped tensor over everything but the output channel, ``(C,)``."""
        if isinstance(self, _ConvTransposeNd):  # weight (C_in, C_out / groups, *k)
            g = self.groups
            return t.reshape(g, t.shape[0] // g, t.shape[1], -1).sum(dim=(1, 3)).reshape(-1)
        return t.reshape(t.shape[0], -1).sum(dim=1)

    # ------------------------------------------------------------------------------ noise
    def effective_weight_noise(self) -> str:
        """``"local"`` or ``"weight"``: how weight noise is drawn now (``"auto"`` follows ``self.training``)."""
        if self.weight_noise == "auto":
            return "local" if self.training else "weight"
        return self.weight_noise

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """``"order"``: ``(K,)`` Gumbel noise of the ordering unit (as normal noise); ``"weight"``: ε of eq. 14.

        The weight noise is freezable only when weights are sampled directly (``effective_weight_noise()
        == "weight"``); the local reparameterisation's noise is per activation and drawn fresh.
        """
        shapes: dict[str, tuple[int, ...]] = {"order": (self.num_nodes,)}
        if self.effective_weight_noise() == "weight":
            shapes["weight"] = tuple(self.weight.shape)
        return shapes

    def active_noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """:meth:`noise_shapes` without ``"order"`` at a fixed width (ordering not sampled); none in mean mode."""
        if self._sampling_mode == "mean":
            return {}
        shapes = self.noise_shapes()
        if self._width is not None:
            shapes.pop("order")
        return shapes

    def internal_noise(self) -> bool:
        """``True`` while sampling with the local reparameterisation (per-activation noise, drawn fresh)."""
        return self._sampling_mode == "sample" and self.effective_weight_noise() == "local"

    def sample_order(self, num_samples: int = 1) -> torch.Tensor:
        """``num_samples`` Downhill masks over the nodes, ``(S, K)`` (frozen ordering noise if set)."""
        eps = self._noise_for("order", (self.num_nodes,), num_samples, self.order_logits)
        return downhill_sample(self.log_beta(), self.temperature, gumbel_from_normal(eps), self.straight_through)

    def sample_weights(self, num_samples: int = 1) -> torch.Tensor:
        """``θ (1 + √α ε)``, eq. 14: ``(S, *weight.shape)`` weight samples."""
        eps = self._noise_for("weight", tuple(self.weight.shape), num_samples, self.weight)
        return self.weight.unsqueeze(0) * (1.0 + torch.exp(0.5 * self.clamped_log_alpha()).unsqueeze(0) * eps)

    # ------------------------------------------------------------------------------ forward
    def _local_reparameterisation(self, x: torch.Tensor, output_size: list[int] | None) -> torch.Tensor:
        """``b ~ N(γ, δ)``, ``γ = h θ (+ bias)``, ``δ = h² α θ²`` -- eq. 19 (Appx. 8.1 for convolutions)."""
        gamma = forward_with(self, x, self.weight, self.bias, output_size)
        variance = self.clamped_log_alpha().exp() * self.weight**2
        delta = forward_with(self, x * x, variance, None, output_size)
        return gamma + torch.sqrt(delta + LOCAL_VARIANCE_EPS) * torch.randn_like(gamma)

    def _sampled_weights_forward(self, x: torch.Tensor, output_size: list[int] | None) -> torch.Tensor:
        """One weight sample (eq. 14) per sample-major block of the batch."""
        S = self._num_samples
        weights = self.sample_weights(S)
        if S == 1:
            return forward_with(self, x, weights[0], self.bias, output_size)
        return forward_with_samples(self, x, weights, self.bias, self.batched_strategy, output_size)

    def output_masks(self, num_samples: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(mask, scale)`` for the current mode and width.

        ``mask``: ``(S, C)`` Downhill masks (sample mode, no width), ``(1, C)`` 0/1 (fixed width) or
        ``None`` (all ones). ``scale``: ``(C,)`` keep probabilities (mean mode or fixed width, with
        ``rescale``) or ``None``.
        """
        scale = None
        if self.rescale and (self._width is not None or self._sampling_mode == "mean"):
            scale = self.channel_keep_probabilities()
        if self._width is not None:
            kept = self.group_bounds[self._width]
            if kept == self.num_channels:
                return None, scale
            mask = self.weight.new_zeros(1, self.num_channels)
            mask[:, :kept] = 1.0
            return mask, scale
        if self._sampling_mode == "mean":
            return None, scale
        z = self.sample_order(num_samples)
        return z[:, self._channel_node], None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_batch(x.shape[0])
        output_size = kwargs.get("output_size", args[0] if args else None)
        if self._sampling_mode == "mean":
            y = super().forward(x, *args, **kwargs)
        elif self.effective_weight_noise() == "local":
            y = self._local_reparameterisation(x, output_size)
        else:
            y = self._sampled_weights_forward(x, output_size)
        mask, scale = self.output_masks(self._num_samples)
        if scale is not None:
            y = apply_channel_factor(y, scale, self.channel_dim)
        if self.has_mask_site:
            self._pending_mask = mask
        elif mask is not None:
            y = apply_channel_factor(y, mask, self.channel_dim)
        return y

    def __getstate__(self) -> dict[str, Any]:
        # a pending mask may be a non-leaf tensor (not deep-copyable); it is only valid within one forward
        state = dict(super().__getstate__())
        state["_pending_mask"] = _NO_PENDING
        return state

    def take_pending_mask(self) -> torch.Tensor | None:
        """The mask of the last forward, for this layer's :class:`NestedChannelMask` (consumed once)."""
        mask = self._pending_mask
        if isinstance(mask, _NoPending):
            raise RuntimeError(
                f"the nested-dropout mask site of {type(self).__name__} ran before the layer itself; the mask "
                "module must follow its layer in the forward pass."
            )
        self._pending_mask = _NO_PENDING
        return mask

    # ------------------------------------------------------------------------------ conversion
    def fold_scale(self, scale: torch.Tensor) -> None:
        """Multiply output channel ``c`` of ``weight`` and ``bias`` by ``scale[c]`` in place (no grad)."""
        with torch.no_grad():
            if isinstance(self, _ConvTransposeNd):  # weight (C_in, C_out / g, *k), block b of C_in / g rows → group b
                g, kernel = self.groups, self.weight.shape[2:]
                w = self.weight.view(g, self.weight.shape[0] // g, self.weight.shape[1], *kernel)
                w.mul_(scale.view(g, 1, -1, *([1] * len(kernel))))
            else:
                self.weight.mul_(scale.view(-1, *([1] * (self.weight.dim() - 1))))
            if self.bias is not None:
                self.bias.mul_(scale)

    def deterministic_module(self) -> nn.Module:
        """The full-width posterior-mean layer as its plain base type (keep-probability scaling folded in)."""
        if self._width is not None:
            raise ValueError(
                f"{type(self).__name__} is set to width {self._width}; a plain layer cannot drop channels after "
                "its normalisation. Use monai_bayes.networks.extract_width(model, width) for a width-w network."
            )
        if self.rescale:
            self.fold_scale(self.channel_keep_probabilities().detach())
        for name in ("log_alpha", "order_logits"):
            delattr(self, name)
        for name in ("prior_keep", "_channel_node"):
            delattr(self, name)
        for attr in _NESTED_ATTRS:
            self.__dict__.pop(attr, None)
        self.__class__ = self._base_type  # type: ignore[assignment]  # deliberate in-place swap to the plain base class
        return self

    def extra_repr(self) -> str:
        width = "sampled" if self._width is None else f"{self._width}/{self.nested_groups}"
        return (
            f"{super().extra_repr()}, nested_groups={self.nested_groups}, always_kept={self.always_kept}, "
            f"width={width}, tau={self.temperature:g}, mode={self._sampling_mode}"
        )


_NESTED_ATTRS = (
    "_sampling_mode",
    "_num_samples",
    "_noise",
    "nested_groups",
    "always_kept",
    "group_bounds",
    "remainder",
    "temperature",
    "straight_through",
    "rescale",
    "weight_noise",
    "kl_constant",
    "batched_strategy",
    "_width",
    "has_mask_site",
    "_pending_mask",
)

_VARIANTS = make_layer_variants(NestedDropoutLayer, "NestedDropout", __name__)
NestedDropoutConv1d = _VARIANTS[nn.Conv1d]
NestedDropoutConv2d = _VARIANTS[nn.Conv2d]
NestedDropoutConv3d = _VARIANTS[nn.Conv3d]
NestedDropoutConvTranspose1d = _VARIANTS[nn.ConvTranspose1d]
NestedDropoutConvTranspose2d = _VARIANTS[nn.ConvTranspose2d]
NestedDropoutConvTranspose3d = _VARIANTS[nn.ConvTranspose3d]
NestedDropoutLinear = _VARIANTS[nn.Linear]


def nested_dropout_class(base: type[nn.Module]) -> type[nn.Module]:
    """The ``NestedDropout<Base>`` class for a supported base type (exact type match)."""
    return variant_for(_VARIANTS, base)


def apply_channel_factor(y: torch.Tensor, factor: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Multiply the channels of ``y`` by ``factor``: ``(C,)`` / ``(1, C)`` for all items, ``(S, C)`` per sample block.

    ``y`` is ``(S·B, C, *sp)`` (``channel_dim=1``) or ``(S·B, …, C)`` (``channel_dim=-1``), sample-major.
    """
    if factor.dim() == 1 or factor.shape[0] == 1:
        shape = [1] * y.dim()
        shape[channel_dim] = -1
        return y * factor.reshape(shape)
    S = factor.shape[0]
    blocks = y.reshape(S, y.shape[0] // S, *y.shape[1:])
    shape = [S] + [1] * y.dim()
    shape[channel_dim + 1 if channel_dim >= 0 else channel_dim] = -1
    return (blocks * factor.reshape(shape)).reshape(y.shape)


class NestedChannelMask(StochasticLayer, nn.Module):
    """Applies a nested layer's channel mask after the norm / activation that follow the layer.

    Inserted by :func:`monai_bayes.networks.to_nested` into the ``Sequential`` that holds the layer
    (e.g. as ``nested_mask`` after ``adn`` in a MONAI ``Convolution``); it has no parameters, so
    state-dict keys do not change. It is a :class:`StochasticLayer` only so that
    :func:`~monai_bayes.networks.to_deterministic` removes it (``kl() = 0``, no noise of its own).

    Parameters
    ----------
    layer
        the nested layer whose mask this module applies.
    layer_name
        the layer's qualified name, for ``repr``.
    """

    def __init__(self, layer: NestedDropoutLayer, layer_name: str = "") -> None:
        super().__init__()
        self._init_stochastic_state()
        self._layer = [layer]  # a list: keep the layer out of this module's children and state dict
        self.layer_name = layer_name
        layer.has_mask_site = True

    @property
    def layer(self) -> NestedDropoutLayer:
        return self._layer[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.layer.take_pending_mask()
        return x if mask is None else apply_channel_factor(x, mask, self.layer.channel_dim)

    def kl(self) -> torch.Tensor:
        return torch.zeros(())

    def internal_noise(self) -> bool:
        """``False``: the mask comes from the layer, this module draws nothing."""
        return False

    def deterministic_module(self) -> nn.Module:
        return nn.Identity()

    def extra_repr(self) -> str:
        return f"layer={self.layer_name!r}"


# ----------------------------------------------------------------------------------------- model level
def _check_width(width: int, groups: int, where: str) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= groups:
        raise ValueError(f"width of {where} must be an int in [1, {groups}] (number of kept groups), got {width!r}.")


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not float(temperature) > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
    return float(temperature)


def nested_layers(model: nn.Module) -> list[tuple[str, NestedDropoutLayer]]:
    """All nested-dropout layers of ``model`` as ``(qualified name, layer)``, in module order."""
    return [(name, m) for name, m in stochastic_layers(model) if isinstance(m, NestedDropoutLayer)]


def width_layers(model: nn.Module) -> list[tuple[str, NestedDropoutLayer | NestedLatentMask]]:
    """Every layer with a nested width: BN3 channel layers and nested latent masks (BN3 on a Prob. U-Net latent).

    Both have ``nested_groups``, ``width`` and ``temperature``; :func:`nested_width`,
    :func:`set_nested_temperature` and the samples × widths evaluation act on all of them.
    """
    return [(name, m) for name, m in stochastic_layers(model) if isinstance(m, (NestedDropoutLayer, NestedLatentMask))]


def _require_nested(model: nn.Module) -> list[tuple[str, NestedDropoutLayer | NestedLatentMask]]:
    layers = width_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nested-dropout layer; convert it with to_nested first.")
    return layers


def set_nested_width(model: nn.Module, width: int | None) -> dict[str, int | None]:
    """Fix every nested layer to its first ``width`` groups (``None``: back to sampled / full width).

    Validates against every layer before changing any; returns the previous widths by layer name.
    """
    layers = _require_nested(model)
    if width is not None:
        for name, layer in layers:
            _check_width(width, layer.nested_groups, f"layer {name!r}")
    previous = {}
    for name, layer in layers:
        previous[name] = layer.width
        layer.width = width
    return previous


@contextmanager
def nested_width(model: nn.Module, width: int | None) -> Iterator[nn.Module]:
    """Context manager: run ``model`` with its nested layers fixed to ``width`` groups.

    Combine with :func:`~monai_bayes.layers.sampling_mode` ``"mean"`` for the deterministic width-``w``
    network, or with :class:`~monai_bayes.inferers.MonteCarloInferer` for samples at that width
    (weight noise only).
    """
    previous = set_nested_width(model, width)
    try:
        yield model
    finally:
        layers = dict(width_layers(model))
        for name, old in previous.items():
            if name in layers:
                layers[name].width = old


def set_nested_temperature(model: nn.Module, temperature: float) -> None:
    """Set the Downhill temperature τ of every nested layer."""
    tau = _check_temperature(temperature)
    for _, layer in _require_nested(model):
        layer.temperature = tau


class NestedTemperatureSetter:
    """``setter(τ)`` for MONAI's :class:`~monai.handlers.ParamSchedulerHandler` (temperature annealing).

    Example (bundle config)::

        {"_target_": "ParamSchedulerHandler",
         "parameter_setter": {"_target_": "monai_bayes.layers.NestedTemperatureSetter", "model": "@network"},
         "value_calculator": "exponential", "vc_kwargs": {"initial_value": 2.0, "gamma": 0.97},
         "epoch_level": true}
    """

    def __init__(self, model: nn.Module, minimum: float = 0.0) -> None:
        _require_nested(model)
        self.model = model
        self.minimum = float(minimum)

    def __call__(self, temperature: float) -> None:
        set_nested_temperature(self.model, max(float(temperature), self.minimum))
