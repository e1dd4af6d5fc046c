"""Bayesian nested networks (seed 001, BN3): conversion of MONAI networks and width-w sub-network extraction.

* :func:`to_nested` turns the conv / transposed-conv / linear modules of a (trained) network into
  nested-dropout layers in place (θ = the trained weights, state-dict keys unchanged) and inserts a
  :class:`~monai_bayes.layers.NestedChannelMask` after each layer's norm / activation tail.
* :func:`extract_width` builds the width-``w`` sub-network as a *physically smaller* plain network:
  every nested conv keeps its first ``w`` groups of output channels (keep-probability rescaling folded
  into its weights), and every consumer -- the next conv, norms, PReLU, the decoder convs after a skip
  concatenation, residual additions -- is sliced to the channels that are still there. Its output equals
  the masked full network in mean mode at width ``w``.

Both follow the channels through the network with a small interpreter that knows ``nn.Sequential``
(hence MONAI ``Convolution``, ``ADN``, ``TwoConv``, ``Down``, ``UpSample`` with ``deconv`` or
``nontrainable``), MONAI ``ResidualUnit``, ``SkipConnection``, ``UNet``, ``BasicUNet`` / ``UpCat``,
normalisation (batch / instance; group norm only where no channel is dropped), PReLU and parameter-free
channel-wise modules (activations, dropout, pooling, upsampling). Anything else raises a ``ValueError``
naming the module.

Which layers are nested (``to_nested``)
---------------------------------------
Every candidate conv / transposed conv / linear module except

* the **output layers** -- the layers that produce the network's output channels without another conv
  in between (MONAI ``UNet``: the top up-sampling transposed conv and, with residual units, the last
  residual unit's conv; ``BasicUNet``: ``final_conv``). Their channels are the classes;
* layers **tied by a residual addition** to a layer that is not nested (or to the network input): the
  summands of ``cx + res`` must drop the same channels, so ties are nested together or not at all.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_bayes.layers.base import stochastic_layers
from monai_bayes.layers.dropout import MCDropout
from monai_bayes.layers.functional import SUPPORTED_TYPES
from monai_bayes.layers.nested import (
    NestedChannelMask,
    NestedDropoutLayer,
    WeightNoise,
    group_boundaries,
    nested_dropout_class,
    nested_layers,
)
from monai_bayes.networks.convert import ModulePattern, _set_submodule, candidate_modules

__all__ = ["ChannelFlowReport", "analyse_channel_flow", "extract_width", "to_nested"]

logger = logging.getLogger(__name__)

INPUT = "<input>"

# ----------------------------------------------------------------------------------------- module kinds
#: parameter-free modules that mix channels (never passed through)
_MIXING_TYPES: tuple[type[nn.Module], ...] = (
    nn.Softmax,
    nn.Softmin,
    nn.LogSoftmax,
    nn.Softmax2d,
    nn.GLU,
    nn.ChannelShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Flatten,
    nn.Unflatten,
)
#: channel-wise modules that map a channel that is all zeros to zeros
_ZERO_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.Identity,
    _DropoutNd,
    MCDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.Upsample,
)
_PASSTHROUGH_MODULES = ("torch.nn.modules.activation", "torch.nn.modules.pooling", "monai.networks.blocks.activation")


def _is_conv_like(module: nn.Module) -> bool:
    return isinstance(module, SUPPORTED_TYPES)


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _is_channel_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, _InstanceNorm))


def _is_mixing_norm(module: nn.Module) -> bool:
    """A normalisation whose statistics span several channels (group / layer norm, local response norm)."""
    return isinstance(module, (nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d))


def _is_passthrough(module: nn.Module) -> bool:
    """A parameter-free module acting on each channel separately (activation, dropout, pooling, upsampling)."""
    if isinstance(module, _MIXING_TYPES) or type(module).__name__ in ("GEGLU",):
        return False
    if list(module.parameters()) or list(module.children()):
        return False
    if isinstance(module, (nn.Identity, _DropoutNd, MCDropout, nn.Upsample)):
        return True
    return type(module).__module__ in _PASSTHROUGH_MODULES


def _is_tail(module: nn.Module) -> bool:
    """Part of the norm / dropout / activation run after a conv (e.g. MONAI ``ADN``)."""
    if _is_channel_norm(module) or isinstance(module, nn.PReLU):
        return True
    if _is_plain_sequential(module):
        return len(module) > 0 and all(_is_tail(m) for m in module)
    return _is_passthrough(module) and "pooling" not in type(module).__module__ and not isinstance(module, nn.Upsample)


def _in_channels(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ----------------------------------------------------------------------------------------- interpreter
class _Visitor:
    """What the channel interpreter does at each kind of node; a flow is a list with one item per channel."""

    def conv(self, name: str, module: nn.Module, flow: list) -> list:
        raise NotImplementedError

    def elementwise(self, name: str, module: nn.Module, flow: list) -> list:
        return flow

    def mask_site(self, name: str, module: NestedChannelMask, flow: list) -> list:
        return flow

    def mixing_norm(self, name: str, module: nn.Module, flow: list) -> list:
        raise NotImplementedError

    def combine(self, where: str, a: list, b: list) -> list:
        raise NotImplementedError


class _ChannelWalker:
    """Follows the channels of a tensor through a network's forward, structurally (no forward pass)."""

    def __init__(self, visitor: _Visitor) -> None:
        self.visitor = visitor
        self._visited: set[int] = set()

    def walk(self, module: nn.Module, name: str, flow: list) -> list:
        if isinstance(module, NestedChannelMask):
            return self.visitor.mask_site(name, module, flow)
        if _is_conv_like(module):
            self._visit_once(module, name)
            if _in_channels(module) != len(flow):
                raise ValueError(
                    f"channel flow mismatch at {name!r}: the module expects {_in_channels(module)} input channels "
                    f"but {len(flow)} arrive; the network's forward is not what the interpreter assumes."
                )
            return self.visitor.conv(name, module, flow)
        if _is_channel_norm(module) or isinstance(module, nn.PReLU) or _is_passthrough(module):
            if list(module.parameters()):
                self._visit_once(module, name)
            return self.visitor.elementwise(name, module, flow)
        if _is_mixing_norm(module):
            if list(module.parameters()):
                self._visit_once(module, name)
            return self.visitor.mixing_norm(name, module, flow)
        handler = self._container_handler(module)
        if handler is None:
            raise ValueError(
                f"cannot follow channels through module {name or '<root>'!r} of type {type(module).__name__}; "
                "supported: nn.Sequential, MONAI UNet / BasicUNet blocks (Convolution, ResidualUnit, SkipConnection, "
                "UpCat), conv / linear layers, batch / instance norm, PReLU and channel-wise activations, dropout, "
                "pooling and upsampling."
            )
        return handler(module, name, flow)

    def _visit_once(self, module: nn.Module, name: str) -> None:
        if id(module) in self._visited:
            raise ValueError(f"module {name!r} is used twice in the forward pass; shared layers are not supported.")
        self._visited.add(id(module))

    def _container_handler(self, module: nn.Module) -> Any:
        from monai.networks.blocks.convolutions import ResidualUnit
        from monai.networks.layers.simplelayers import SkipConnection
        from monai.networks.nets.basic_unet import BasicUNet, UpCat
        from monai.networks.nets.unet import UNet

        if _is_plain_sequential(module):
            return self._sequential
        if type(module) is ResidualUnit:
            return self._residual_unit
        if type(module) is SkipConnection:
            return self._skip_connection
        if type(module) is UpCat:
            return lambda m, n, f: self._upcat(m, n, f, None)
        if type(module) is BasicUNet:
            return self._basic_unet
        if type(module) is UNet:
            return lambda m, n, f: self.walk(m.model, _join(n, "model"), f)
        return None

    def _sequential(self, module: nn.Sequential, name: str, flow: list) -> list:
        for child_name, child in list(module.named_children()):
            flow = self.walk(child, _join(name, child_name), flow)
        return flow

    def _residual_unit(self, module: nn.Module, name: str, flow: list) -> list:
        res = self.walk(module.residual, _join(name, "residual"), flow)
        cx = self.walk(module.conv, _join(name, "conv"), flow)
        return self.visitor.combine(name, cx, res)

    def _skip_connection(self, module: nn.Module, name: str, flow: list) -> list:
        if module.dim != 1:
            raise ValueError(f"SkipConnection {name!r} joins along dim {module.dim}; only channel joins (dim=1).")
        y = self.walk(module.submodule, _join(name, "submodule"), flow)
        if module.mode == "cat":
            return flow + y
        return self.visitor.combine(name, flow, y)

    def _upcat(self, module: nn.Module, name: str, flow: list, skip: list | None) -> list:
        x0 = self.walk(module.upsample, _join(name, "upsample"), flow)
        if skip is not None:
            x0 = skip + x0
        return self.walk(module.convs, _join(name, "convs"), x0)

    def _basic_unet(self, module: nn.Module, name: str, flow: list) -> list:
        x0 = self.walk(module.conv_0, _join(name, "conv_0"), flow)
        x1 = self.walk(module.down_1, _join(name, "down_1"), x0)
        x2 = self.walk(module.down_2, _join(name, "down_2"), x1)
        x3 = self.walk(module.down_3, _join(name, "down_3"), x2)
        x4 = self.walk(module.down_4, _join(name, "down_4"), x3)
        u4 = self._upcat(module.upcat_4, _join(name, "upcat_4"), x4, x3)
        u3 = self._upcat(module.upcat_3, _join(name, "upcat_3"), u4, x2)
        u2 = self._upcat(module.upcat_2, _join(name, "upcat_2"), u3, x1)
        u1 = self._upcat(module.upcat_1, _join(name, "upcat_1"), u2, x0)
        return self.walk(module.final_conv, _join(name, "final_conv"), u1)


def _input_channels(model: nn.Module) -> int:
    """Input channels of the network: those of its first conv / linear module in module order."""
    for module in model.modules():
        if _is_conv_like(module):
            return _in_channels(module)
    raise ValueError(f"{type(model).__name__} has no conv / linear module.")


# ----------------------------------------------------------------------------------------- analysis
@dataclass
class ChannelFlowReport:
    """Result of :func:`analyse_channel_flow`.

    Attributes
    ----------
    output_layers: names of the conv / linear modules whose channels reach the network output without
        another conv in between (``"<input>"`` if input channels do).
    ties: groups of module names whose outputs are added (residual units, ``SkipConnection`` add/mul);
        ``"<input>"`` stands for the network input.
    """

    output_layers: set[str] = field(default_factory=set)
    ties: list[set[str]] = field(default_factory=list)


class _ProvenanceVisitor(_Visitor):
    """Items: frozensets of the conv names that produced the channel (after norms and activations)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def _find(self, a: str) -> str:
        while self.parent.setdefault(a, a) != a:
            a = self.parent[a]
        return a

    def _union(self, names: frozenset) -> None:
        roots = [self._find(n) for n in names]
        for r in roots[1:]:
            self.parent[r] = roots[0]

    def conv(self, name: str, module: nn.Module, flow: list) -> list:
        return [frozenset({name})] * _out_channels(module)

    def mixing_norm(self, name: str, module: nn.Module, flow: list) -> list:
        return [frozenset().union(*flow)] * len(flow)  # conservative: every channel may depend on every other

    def combine(self, where: str, a: list, b: list) -> list:
        if len(a) != len(b):
            raise ValueError(f"{where!r} adds tensors with {len(a)} and {len(b)} channels.")
        out = [x | y for x, y in zip(a, b)]
        for producers in out:
            self._union(producers)
        return out

    def ties(self) -> list[set[str]]:
        groups: dict[str, set[str]] = {}
        for name in list(self.parent):
            groups.setdefault(self._find(name), set()).add(name)
        return [g for g in groups.values() if len(g) > 1]


def analyse_channel_flow(model: nn.Module) -> ChannelFlowReport:
    """Output layers and residual ties of ``model`` (see :class:`ChannelFlowReport`); no forward pass is run.

    Raises ``ValueError`` for modules the interpreter does not know (module docstring).
    """
    visitor = _ProvenanceVisitor()
    out = _ChannelWalker(visitor).walk(model, "", [frozenset({INPUT})] * _input_channels(model))
    return ChannelFlowReport(output_layers=set().union(*out), ties=visitor.ties())


# ----------------------------------------------------------------------------------------- conversion
def _load_pretrained(model: nn.Module, pretrained: Mapping[str, torch.Tensor] | str | os.PathLike) -> None:
    where = "pretrained state dict"
    if isinstance(pretrained, (str, os.PathLike)):
        where = f"checkpoint {os.fspath(pretrained)!r}"
        if not os.path.isfile(pretrained):
            raise ValueError(f"pretrained checkpoint {os.fspath(pretrained)!r} does not exist.")
        pretrained = torch.load(pretrained, map_location="cpu", weights_only=True)
    if not isinstance(pretrained, Mapping):
        raise ValueError(f"pretrained must be a state dict or a checkpoint path, got {type(pretrained).__name__}.")
    for key in ("state_dict", "network", "model"):
        if isinstance(pretrained.get(key), Mapping):
            pretrained = pretrained[key]
            break
    try:
        model.load_state_dict(pretrained, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{where} does not match the network {type(model).__name__}: {err}") from err


def _exclude_by_flow(model: nn.Module, targets: dict[str, nn.Module]) -> None:
    """Drop output layers and layers tied (by residual additions) to a layer that is not converted."""
    report = analyse_channel_flow(model)
    for name in report.output_layers:
        targets.pop(name, None)
    for group in report.ties:
        if any(member not in targets for member in group):
            for member in group:
                targets.pop(member, None)


def _insert_mask_site(model: nn.Module, name: str, layer: NestedDropoutLayer) -> None:
    """Put a :class:`NestedChannelMask` after the norm / activation tail that follows ``name`` in its Sequential."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not _is_plain_sequential(parent):
        return
    items = list(parent._modules.items())
    position = [key for key, _ in items].index(child) + 1
    end = position
    while end < len(items) and items[end][1] is not None and _is_tail(items[end][1]):
        end += 1
    if end == position:  # no tail: the layer masks its own output (eq. 19)
        return
    site_name = "nested_mask"
    while site_name in parent._modules:
        site_name += "_"
    items.insert(end, (site_name, NestedChannelMask(layer, name)))
    parent._modules.clear()
    parent._modules.update(items)


def to_nested(
    model: nn.Module,
    groups: int = 32,
    *,
    always_kept: int = 2,
    prior_keep: float | Sequence[float] = 0.9,
    order_init: float | str = 0.95,
    log_alpha_init: float = -5.0,
    temperature: float = 1.0,
    straight_through: bool = False,
    rescale: bool = True,
    weight_noise: WeightNoise = "auto",
    kl_constant: str | float = "nonnegative",
    remainder: str = "spread",
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude_output_layers: bool = True,
    pretrained: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
    inplace: bool = True,
) -> nn.Module:
    """Bayesian nested network (BN3, seed 001) from a (trained) MONAI ``UNet`` / ``BasicUNet`` or any supported net.

    Parameters
    ----------
    model: the network; its conv / transposed conv / linear weights become the means θ.
    groups: ``G`` ordered channel groups per layer (seed 001: 32). Every converted layer needs at least
        ``G`` output channels.
    always_kept, prior_keep, order_init, log_alpha_init, temperature, straight_through, rescale,
        weight_noise, kl_constant, remainder: see :class:`~monai_bayes.layers.NestedDropoutLayer`.
    include, exclude: restrict the converted modules by name pattern or type (as in ``to_partial_bayes``).
    exclude_output_layers: leave the output layers plain and keep residual ties consistent (module
        docstring). Needs a network the channel interpreter understands; with ``False`` only
        ``include`` / ``exclude`` decide (and :func:`extract_width` may later refuse the network).
    pretrained: a state dict or checkpoint path (a plain state dict, or one under ``"state_dict"`` /
        ``"network"`` / ``"model"``) loaded strictly into ``model`` before conversion: θ from trained weights.
    inplace: convert ``model`` itself (default) or a deep copy.

    Returns
    -------
    The converted network. Its new parameters are ``<layer>.log_alpha`` (shape of the weight) and
    ``<layer>.order_logits`` (``K``), its new buffer ``<layer>.prior_keep``; all old keys are unchanged.
    """
    if not inplace:
        model = copy.deepcopy(model)
    if nested_layers(model):
        raise ValueError(f"{type(model).__name__} already has nested-dropout layers.")
    if pretrained is not None:
        _load_pretrained(model, pretrained)
    targets = candidate_modules(model, include, exclude, what="nested")
    if exclude_output_layers:
        _exclude_by_flow(model, targets)
    if not targets:
        raise ValueError("no conv / linear module is left to make nested (check include / exclude).")
    for name, module in targets.items():  # validate every layer before changing any
        try:
            group_boundaries(_out_channels(module), groups, remainder)
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None
    for name, module in targets.items():
        module.__class__ = nested_dropout_class(type(module))
        module._init_nested(
            groups=groups,
            always_kept=always_kept,
            prior_keep=prior_keep,
            order_init=order_init,
            log_alpha_init=log_alpha_init,
            temperature=temperature,
            straight_through=straight_through,
            rescale=rescale,
            weight_noise=weight_noise,
            kl_constant=kl_constant,
            remainder=remainder,
        )
        _insert_mask_site(model, name, module)
    return model


# ----------------------------------------------------------------------------------------- extraction
KEEP, ZERO, DIRTY = "keep", "zero", "dirty"  # a channel kept / dropped and exactly 0 / dropped but not 0


def _sliced_plain_module(
    module: nn.Module, in_idx: torch.Tensor, out_idx: torch.Tensor, scale: torch.Tensor | None
) -> nn.Module:
    """A plain conv / transposed conv / linear with the given input and output channels (scale folded in)."""
    base = getattr(module, "_base_type", type(module))
    full_in, full_out = len(in_idx) == _in_channels(module), len(out_idx) == _out_channels(module)
    if getattr(module, "groups", 1) != 1 and not (full_in and full_out):
        raise ValueError(f"cannot slice grouped convolution {type(module).__name__} (groups={module.groups}).")
    weight = module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()[out_idx]
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        new = base(len(in_idx), len(out_idx), bias=bias is not None, **factory)
        w = weight[out_idx][:, in_idx]
        shape = (-1, 1)
    elif isinstance(module, _ConvTransposeNd):
        new = base(
            len(in_idx), len(out_idx), module.kernel_size, module.stride, module.padding, module.output_padding,
            module.groups, bias is not None, module.dilation, module.padding_mode, **factory,
        )  # fmt: skip
        w = weight[in_idx][:, out_idx]
        shape = (1, -1) + (1,) * (weight.dim() - 2)
    else:
        new = base(
            len(in_idx), len(out_idx), module.kernel_size, module.stride, module.padding, module.dilation,
            module.groups, bias is not None, module.padding_mode, **factory,
        )  # fmt: skip
        w = weight[out_idx][:, in_idx]
        shape = (-1,) + (1,) * (weight.dim() - 1)
    if scale is not None:
        w = w * scale.view(shape)
        bias = None if bias is None else bias * scale
    with torch.no_grad():
        new.weight.copy_(w)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(module.training)
    return new


def _slice_channelwise(module: nn.Module, idx: torch.Tensor) -> None:
    """Slice a batch / instance norm or per-channel PReLU to the channels ``idx`` in place."""
    if isinstance(module, nn.PReLU):
        if module.num_parameters > 1:
            module.weight = nn.Parameter(module.weight.detach()[idx].clone())
            module.num_parameters = len(idx)
        return
    for pname in ("weight", "bias"):
        p = getattr(module, pname, None)
        if isinstance(p, nn.Parameter):
            setattr(module, pname, nn.Parameter(p.detach()[idx].clone(), requires_grad=p.requires_grad))
    for bname in ("running_mean", "running_var"):
        b = getattr(module, bname, None)
        if isinstance(b, torch.Tensor):
            setattr(module, bname, b[idx].clone())
    module.num_features = len(idx)


class _ExtractVisitor(_Visitor):
    """Items: KEEP / ZERO / DIRTY. Replaces nested convs by sliced plain ones and slices norms in ``net``."""

    def __init__(self, net: nn.Module, width: int) -> None:
        self.net = net
        self.width = width

    def conv(self, name: str, module: nn.Module, flow: list) -> list:
        dirty = [i for i, s in enumerate(flow) if s == DIRTY]
        if dirty:
            raise ValueError(
                f"input channels {dirty[:8]} of {name!r} are dropped at width {self.width} but not zero where they "
                "arrive (a normalisation or non-zero-preserving activation sits between their mask and this layer); "
                "the width-w network would not be a slice of the full one."
            )
        device = module.weight.device
        in_idx = torch.tensor([i for i, s in enumerate(flow) if s == KEEP], dtype=torch.long, device=device)
        channels = _out_channels(module)
        scale = None
        if isinstance(module, NestedDropoutLayer):
            kept = module.group_bounds[self.width]
            if module.rescale:
                scale = module.channel_keep_probabilities().detach()[:kept]
            dropped = ZERO if not module.has_mask_site else DIRTY
            out_flow = [KEEP] * kept + [dropped] * (channels - kept)
        else:
            kept, out_flow = channels, [KEEP] * channels
        out_idx = torch.arange(kept, device=device)
        if (
            len(in_idx) == len(flow)
            and kept == channels
            and scale is None
            and not isinstance(module, NestedDropoutLayer)
        ):
            return out_flow
        _set_submodule(self.net, name, _sliced_plain_module(module, in_idx, out_idx, scale))
        return out_flow

    def elementwise(self, name: str, module: nn.Module, flow: list) -> list:
        kept = [i for i, s in enumerate(flow) if s == KEEP]
        if _is_channel_norm(module) or isinstance(module, nn.PReLU):
            expected = module.num_parameters if isinstance(module, nn.PReLU) else module.num_features
            if expected not in (1, len(flow)) or (expected == 1 and _is_channel_norm(module) and len(flow) != 1):
                raise ValueError(f"{name!r} has {expected} channels but {len(flow)} arrive.")
            if len(kept) < len(flow):
                _slice_channelwise(module, torch.tensor(kept, dtype=torch.long))
        if _keeps_zero(module):
            return list(flow)
        return [DIRTY if s == ZERO else s for s in flow]

    def mask_site(self, name: str, module: NestedChannelMask, flow: list) -> list:
        return [ZERO if s == DIRTY else s for s in flow]

    def mixing_norm(self, name: str, module: nn.Module, flow: list) -> list:
        if all(s == KEEP for s in flow):
            return flow
        raise ValueError(
            f"{name!r} ({type(module).__name__}) normalises across channels, so dropping channels changes the kept "
            "ones and a width-w network is not a slice of the full network; use batch or instance norm."
        )

    def combine(self, where: str, a: list, b: list) -> list:
        if [s == KEEP for s in a] != [s == KEEP for s in b]:
            raise ValueError(
                f"{where!r} adds two tensors that keep different channels at width {self.width}; the layers that "
                "produce them must be nested with the same groups (to_nested ties them)."
            )
        return [KEEP if x == KEEP else (ZERO if x == ZERO and y == ZERO else DIRTY) for x, y in zip(a, b)]


def _keeps_zero(module: nn.Module) -> bool:
    """Whether an all-zero channel stays all-zero through ``module``."""
    if isinstance(module, _InstanceNorm):
        return not module.affine and not module.track_running_stats
    if isinstance(module, _BatchNorm):
        return False
    if isinstance(module, _ZERO_PRESERVING):
        return True
    return "pooling" in type(module).__module__ or type(module).__name__ in ("Swish", "MemoryEfficientSwish", "Mish")


def extract_width(model: nn.Module, width: int) -> nn.Module:
    """The width-``w`` sub-network of a nested network as a physically smaller plain (deterministic) network.

    Every nested layer keeps the output channels of its first ``width`` groups, with the keep-probability
    rescaling folded into its weights (if the layer rescales); norms, per-channel PReLU and all consumers
    are sliced to match, including the decoder convs that read skip concatenations and the summands of
    residual units. Other stochastic layers become their posterior mean; mask sites disappear.

    Parameters
    ----------
    model: a network converted by :func:`to_nested` (not modified; a deep copy is sliced).
    width: number of kept groups, an int in ``[1, G]``.

    Returns
    -------
    A network of the same class with narrower modules and no monai_bayes layers. Its output equals
    ``model``'s in mean mode at ``width`` (:func:`~monai_bayes.layers.nested_width` +
    ``sampling_mode(model, "mean")``), batch norms included (their running statistics are sliced, so
    recalibrate them at that width first: :func:`~monai_bayes.handlers.recalibrate_batch_norm`).
    Container attributes such as ``UNet.channels`` still describe the full network.
    """
    layers = nested_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nested-dropout layer; convert it with to_nested first.")
    for name, layer in layers:
        if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= layer.nested_groups:
            raise ValueError(
                f"width must be an int in [1, {layer.nested_groups}] (groups of layer {name!r}), got {width!r}."
            )
    net = copy.deepcopy(model)
    for name, layer in reversed(stochastic_layers(net)):
        if not isinstance(layer, (NestedDropoutLayer, NestedChannelMask)):
            net = _set_submodule(net, name, layer.deterministic_module())
    out = _ChannelWalker(_ExtractVisitor(net, width)).walk(net, "", [KEEP] * _input_channels(net))
    if any(s != KEEP for s in out):
        raise ValueError("the network output would lose channels at this width: a nested layer produces the output.")
    _remove_mask_sites(net)
    left = [name for name, _ in nested_layers(net)]
    if left:
        raise ValueError(f"nested layers {left} are not reached by the network's forward; cannot extract.")
    return net


def _remove_mask_sites(net: nn.Module) -> None:
    for name, module in list(net.named_modules()):
        if isinstance(module, NestedChannelMask):
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            if isinstance(parent, nn.Sequential):
                del parent._modules[child]
            else:
                _set_submodule(net, name, nn.Identity())
