"""Monte-Carlo dropout (Gal & Ghahramani 2016) as stochastic layers of the common protocol.

Two forms, both driven by the model-level sampling controls:

* :class:`MCDropout` -- a stand-alone dropout module that stays active in ``eval()`` while the
  sampling mode is ``"sample"`` and is the identity in ``"mean"`` mode (inverted dropout, so the
  mean-mode network is the usual weight-scaled one);
* ``MCDropout<Base>`` (e.g. :class:`MCDropoutConv2d`) -- a conv / transposed conv / linear module
  whose *output* goes through MC dropout. Used to add dropout to networks without dropout slots
  (SegResNet, DynUNet, ResNet) while keeping their state-dict keys unchanged.

The KL term of MC dropout is taken as 0: the variational interpretation's KL reduces to L2 weight
decay, which the optimizer applies. Dropout masks depend on activation shapes, so by default this noise
is drawn fresh on every call from the global RNG and cannot be frozen (see
:meth:`StochasticLayer.noise_shapes`). For a fixed input shape, :func:`bind_dropout_noise` records each
layer's activation shape; the layer then has a freezable standard-normal noise ``"keep"`` of shape
``(B, C, *spatial)`` (element-wise) or ``(B, C)`` (channel-wise) per sample, and with frozen noise keeps an
activation where ``ε ≥ Φ⁻¹(p)`` (probability ``1 - p``, scaled by ``1 / (1 - p)``). This is how an exported
MC-dropout network takes its masks as graph inputs (:class:`~monai_bayes.export.NoiseInputNetwork`).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_bayes.layers.base import StochasticLayer, sampling_mode, stochastic_layers
from monai_bayes.layers.functional import make_layer_variants, variant_for

__all__ = [
    "MCDropout",
    "MCDropoutConv1d",
    "MCDropoutConv2d",
    "MCDropoutConv3d",
    "MCDropoutConvTranspose1d",
    "MCDropoutConvTranspose2d",
    "MCDropoutConvTranspose3d",
    "MCDropoutLayer",
    "MCDropoutLinear",
    "bind_dropout_noise",
    "mc_dropout",
    "mc_dropout_class",
]

_CHANNEL_DROPOUT = {3: F.dropout1d, 4: F.dropout2d, 5: F.dropout3d}


def _check_p(p: float) -> float:
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p!r}.")
    return float(p)


def mc_dropout(x: torch.Tensor, p: float, channel_wise: bool) -> torch.Tensor:
    """Dropout that is always on: element-wise, or whole channels of ``(B, C, *spatial)`` inputs."""
    if p == 0.0:
        return x
    if channel_wise and x.dim() in _CHANNEL_DROPOUT:
        return _CHANNEL_DROPOUT[x.dim()](x, p, training=True)
    return F.dropout(x, p, training=True)


class _MCDropoutState(StochasticLayer):
    """State shared by both MC-dropout forms: probability ``p`` and element/channel mode."""

    def _init_mc_dropout(self, p: float, channel_wise: bool) -> None:
        self._init_stochastic_state()
        self.p = _check_p(p)
        self.channel_wise = bool(channel_wise)
        #: per-sample activation shape ``(B, C, *spatial)`` set by :func:`bind_dropout_noise`, else ``None``
        self.activation_shape: tuple[int, ...] | None = None

    def kl(self) -> torch.Tensor:
        return torch.zeros(())

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"keep": (B, C, *spatial)}`` (channel-wise ``(B, C)``) once the activation shape is bound, else ``{}``."""
        shape = self.activation_shape
        if shape is None:
            return {}
        channel = self.channel_wise and len(shape) in _CHANNEL_DROPOUT
        return {"keep": shape[:2] if channel else shape}

    def _reference_tensor(self) -> torch.Tensor:
        return next(iter(self.parameters()), torch.zeros(()))

    def _apply_dropout(self, x: torch.Tensor) -> torch.Tensor:
        if self._sampling_mode == "mean":
            return x
        if self._noise is None:
            return mc_dropout(x, self.p, self.channel_wise)
        return x * self._frozen_mask(x)

    def _frozen_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``1[ε ≥ Φ⁻¹(p)] / (1 - p)`` from the frozen noise, broadcastable to ``x`` ``(S·B, C, *spatial)``."""
        shape = self.noise_shapes()["keep"]
        S = self._num_samples
        expected = (S * self.activation_shape[0], *self.activation_shape[1:])  # type: ignore[index]
        if tuple(x.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: frozen dropout noise was bound to activations of shape "
                f"{self.activation_shape} per sample, got {tuple(x.shape)} for {S} samples; bind it again "
                "(bind_dropout_noise) for this input shape."
            )
        eps = self._noise_for("keep", shape, S, x)
        threshold = NormalDist().inv_cdf(self.p) if self.p > 0.0 else float("-inf")
        mask = (eps >= threshold).to(x.dtype) / (1.0 - self.p)
        mask = mask.reshape(S * shape[0], *shape[1:])
        return mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))


class MCDropout(_MCDropoutState, nn.Module):
    """Dropout kept on at test time while the sampling mode is ``"sample"``.

    Parameters
    ----------
    p
        drop probability in [0, 1).
    channel_wise
        drop whole channels (``Dropout{1,2,3}d``) instead of single activations.
    """

    def __init__(self, p: float = 0.1, channel_wise: bool = False) -> None:
        super().__init__()
        self._init_mc_dropout(p, channel_wise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_dropout(x)

    def deterministic_module(self) -> nn.Module:
        return nn.Identity()

    def extra_repr(self) -> str:
        return f"p={self.p}, channel_wise={self.channel_wise}, mode={self._sampling_mode}"


class MCDropoutLayer(_MCDropoutState):
    """Mixin: MC dropout applied to the output of a conv / transposed conv / linear module."""

    if TYPE_CHECKING:
        _base_type: type[nn.Module]  # set by make_layer_variants

    def __init__(self, *args: Any, p: float = 0.1, channel_wise: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_mc_dropout(p, channel_wise)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._apply_dropout(super().forward(x, *args, **kwargs))

    def deterministic_module(self) -> nn.Module:
        """Return this module as its plain base type (mean mode: dropout off)."""
        for attr in ("p", "channel_wise", "activation_shape"):
            self.__dict__.pop(attr, None)
        self.__class__ = self._base_type  # type: ignore[assignment]  # deliberate in-place swap to the plain base class
        return self

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, channel_wise={self.channel_wise}, mode={self._sampling_mode}"


_VARIANTS = make_layer_variants(MCDropoutLayer, "MCDropout", __name__)
MCDropoutConv1d = _VARIANTS[nn.Conv1d]
MCDropoutConv2d = _VARIANTS[nn.Conv2d]
MCDropoutConv3d = _VARIANTS[nn.Conv3d]
MCDropoutConvTranspose1d = _VARIANTS[nn.ConvTranspose1d]
MCDropoutConvTranspose2d = _VARIANTS[nn.ConvTranspose2d]
MCDropoutConvTranspose3d = _VARIANTS[nn.ConvTranspose3d]
MCDropoutLinear = _VARIANTS[nn.Linear]


def mc_dropout_class(base: type[nn.Module]) -> type[nn.Module]:
    """The ``MCDropout<Base>`` class for a supported base type (exact type match)."""
    return variant_for(_VARIANTS, base)


def bind_dropout_noise(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Record every MC-dropout layer's activation shape for inputs shaped like ``example``.

    After this the layers have freezable noise (:meth:`~StochasticLayer.noise_shapes` ``{"keep": ...}``), so
    :func:`~monai_bayes.layers.draw_noise` / :func:`~monai_bayes.layers.fixed_noise` and exporters treat
    their masks like any other noise. Runs one posterior-mean forward pass (no randomness drawn).

    Parameters
    ----------
    model : nn.Module
        A network with MC-dropout layers (others are ignored).
    example : torch.Tensor
        ``(B, C_in, *spatial)``: the input shape the masks are bound to (one sample).

    Returns
    -------
    dict of str to tuple of int
        Per-sample activation shape ``(B, C, *spatial)`` by layer name.
    """
    layers = [(name, layer) for name, layer in stochastic_layers(model) if isinstance(layer, _MCDropoutState)]
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            shapes[name] = tuple(output.shape)

        return hook

    handles = [layer.register_forward_hook(recorder(name)) for name, layer in layers]
    try:
        with torch.no_grad(), sampling_mode(model, "mean"):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    for name, layer in layers:
        if name not in shapes:
            raise ValueError(f"MC-dropout layer {name!r} did not run on the example input; cannot bind its noise.")
        layer.activation_shape = shapes[name]
    return shapes
