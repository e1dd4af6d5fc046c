"""Monte-Carlo dropout (Gal & Ghahramani 2016) as stochastic layers of the common protocol.

Two forms, both driven by the model-level sampling controls:

* :class:`MCDropout` -- a stand-alone dropout module that stays active in ``eval()`` while the
  sampling mode is ``"sample"`` and is the identity in ``"mean"`` mode (inverted dropout, so the
  mean-mode network is the usual weight-scaled one);
* ``MCDropout<Base>`` (e.g. :class:`MCDropoutConv2d`) -- a conv / transposed conv / linear module
  whose *output* goes through MC dropout. Used to add dropout to networks without dropout slots
  (SegResNet, DynUNet, ResNet) while keeping their state-dict keys unchanged.

The KL term of MC dropout is taken as 0: the variational interpretation's KL reduces to L2 weight
decay, which the optimizer applies. Dropout masks depend on activation shapes, so this noise is
drawn fresh on every call and cannot be frozen (see :meth:`StochasticLayer.noise_shapes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_bayes.layers.base import StochasticLayer
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

    def kl(self) -> torch.Tensor:
        return torch.zeros(())

    def _apply_dropout(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._sampling_mode == "mean" else mc_dropout(x, self.p, self.channel_wise)


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
        for attr in ("p", "channel_wise"):
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
