"""The width-``w`` sub-network of a BN3 network as a physically smaller plain network (seed 001 §5.1).

:func:`extract_width` keeps the first ``w`` groups of output channels of every nested conv
(keep-probability rescaling folded into its weights) and slices every consumer -- the next conv, norms,
PReLU, the decoder convs after a skip concatenation, residual additions -- to the channels that are
still there, following the channels with :mod:`monai_bayes.networks.channel_flow`. Its output equals
the masked full network in mean mode at width ``w``.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_bayes.layers.base import stochastic_layers
from monai_bayes.layers.nested import NestedChannelMask, NestedDropoutLayer, nested_layers
from monai_bayes.networks.channel_flow import (
    ZERO_PRESERVING,
    ChannelVisitor,
    ChannelWalker,
    in_channels,
    input_channels,
    is_channel_norm,
    out_channels,
)
from monai_bayes.networks.convert import _set_submodule

__all__ = ["extract_width"]

KEEP, ZERO, DIRTY = "keep", "zero", "dirty"  # a channel kept / dropped and exactly 0 / dropped but not 0


def _sliced_plain_module(
    module: nn.Module, in_idx: torch.Tensor, out_idx: torch.Tensor, scale: torch.Tensor | None
) -> nn.Module:
    """A plain conv / transposed conv / linear with the given input and output channels (scale folded in)."""
    base = getattr(module, "_base_type", type(module))
    full_in, full_out = len(in_idx) == in_channels(module), len(out_idx) == out_channels(module)
    if getattr(module, "groups", 1) != 1 and not (full_in and full_out):
        raise ValueError(f"cannot slice grouped convolution {type(module).__name__} (groups={module.groups}).")
    weight = cast(torch.Tensor, module.weight).detach()
    module_bias = cast("torch.Tensor | None", module.bias)
    bias = None if module_bias is None else module_bias.detach()[out_idx]
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        new = base(len(in_idx), len(out_idx), bias=bias is not None, **factory)
        w = weight[out_idx][:, in_idx]
        shape: tuple[int, ...] = (-1, 1)
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
        cast(torch.Tensor, new.weight).copy_(w)
        if bias is not None:
            cast(torch.Tensor, new.bias).copy_(bias)
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
    cast(_NormBase, module).num_features = len(idx)


class _ExtractVisitor(ChannelVisitor):
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
        device = cast(torch.Tensor, module.weight).device
        in_idx = torch.tensor([i for i, s in enumerate(flow) if s == KEEP], dtype=torch.long, device=device)
        channels = out_channels(module)
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
        if is_channel_norm(module) or isinstance(module, nn.PReLU):
            expected = module.num_parameters if isinstance(module, nn.PReLU) else module.num_features
            if expected not in (1, len(flow)) or (expected == 1 and is_channel_norm(module) and len(flow) != 1):
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
    if isinstance(module, ZERO_PRESERVING):
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
    model : nn.Module
        A network converted by :func:`~monai_bayes.networks.to_nested` (not modified; a deep copy is sliced).
    width : int
        Number of kept groups, in ``[1, G]``.

    Returns
    -------
    nn.Module
        A network of the same class with narrower modules and no monai_bayes layers. Its output equals
        ``model``'s in mean mode at ``width`` (:func:`~monai_bayes.layers.nested_width` +
        ``sampling_mode(model, "mean")``), batch norms included (their running statistics are sliced, so
        recalibrate them at that width first: :func:`~monai_bayes.networks.recalibrate_batch_norm`).
        Container attributes such as ``UNet.channels`` still describe the full network.

    Raises
    ------
    ValueError
        For a network without nested layers, a bad ``width``, or a network whose width-``w`` version is
        not a slice of the full one (group norm, a nested output layer, unreached nested layers).
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
    for name, stochastic in reversed(stochastic_layers(net)):
        if not isinstance(stochastic, (NestedDropoutLayer, NestedChannelMask)):
            net = _set_submodule(net, name, stochastic.deterministic_module())
    out = ChannelWalker(_ExtractVisitor(net, width)).walk(net, "", [KEEP] * input_channels(net))
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
