"""Bayesian nested networks (seed 001, BN3): conversion of MONAI networks.

:func:`to_nested` turns the conv / transposed-conv / linear modules of a (trained) network into
nested-dropout layers in place (θ = the trained weights, state-dict keys unchanged) and inserts a
:class:`~monai_bayes.layers.NestedChannelMask` after each layer's norm / activation tail. It follows the
channels with the interpreter of :mod:`monai_bayes.networks.channel_flow`; the width-``w`` sub-network
is built by :func:`monai_bayes.networks.extract_width` (:mod:`monai_bayes.networks.extract`).

Which layers are nested
-----------------------
Every candidate conv / transposed conv / linear module except

* the **output layers** -- the layers that produce the network's output channels without another conv
  in between (MONAI ``UNet``: the top up-sampling transposed conv and, with residual units, the last
  residual unit's conv; ``BasicUNet``: ``final_conv``). Their channels are the classes;
* layers **tied by a residual addition** to a layer that is not nested (or to the network input): the
  summands of ``cx + res`` must drop the same channels, so ties are nested together or not at all.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from monai_bayes.layers.candidates import ModulePattern, candidate_modules
from monai_bayes.layers.nested import (
    NestedChannelMask,
    NestedDropoutLayer,
    NestedDropoutOptions,
    nested_dropout_class,
    nested_layers,
)
from monai_bayes.layers.nested_math import group_boundaries
from monai_bayes.networks.channel_flow import analyse_channel_flow, is_plain_sequential, is_tail, out_channels

__all__ = ["to_nested"]


def _load_pretrained(model: nn.Module, pretrained: Mapping[str, torch.Tensor] | str | os.PathLike) -> None:
    where = "pretrained state dict"
    if isinstance(pretrained, (str, os.PathLike)):
        where = f"checkpoint {os.fspath(pretrained)!r}"
        if not os.path.isfile(pretrained):
            raise ValueError(f"pretrained checkpoint {os.fspath(pretrained)!r} does not exist.")
        pretrained = torch.load(pretrained, map_location="cpu", weights_only=True)
    if not isinstance(pretrained, Mapping):
        raise ValueError(f"pretrained must be a state dict or a checkpoint path, got {type(pretrained).__name__}.")
    state: Mapping[str, Any] = pretrained  # a checkpoint may nest the state dict one level down
    for key in ("state_dict", "network", "model"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    try:
        model.load_state_dict(state, strict=True)
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
    if not is_plain_sequential(parent):
        return
    items = list(parent._modules.items())
    position = [key for key, _ in items].index(child) + 1
    end = position
    while end < len(items) and (item := items[end][1]) is not None and is_tail(item):
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
    groups: int | None = None,
    *,
    options: NestedDropoutOptions | None = None,
    include: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude: ModulePattern | Sequence[ModulePattern] | None = None,
    exclude_output_layers: bool = True,
    pretrained: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
    inplace: bool = True,
    **settings: Any,
) -> nn.Module:
    """Bayesian nested network (BN3, seed 001) from a (trained) MONAI ``UNet`` / ``BasicUNet`` or any supported net.

    Parameters
    ----------
    model : nn.Module
        The network; its conv / transposed conv / linear weights become the means θ.
    groups : int, optional
        ``G`` ordered channel groups per layer (default 32, seed 001). Every converted layer needs at
        least ``G`` output channels.
    options : NestedDropoutOptions, optional
        All layer settings as one object; ``groups`` and keyword ``settings`` override its fields.
    include, exclude : ModulePattern or sequence of ModulePattern, optional
        Restrict the converted modules by name pattern or type (as in ``to_partial_bayes``).
    exclude_output_layers : bool
        Leave the output layers plain and keep residual ties consistent (module docstring). Needs a
        network the channel interpreter understands; with ``False`` only ``include`` / ``exclude``
        decide (and :func:`~monai_bayes.networks.extract_width` may later refuse the network).
    pretrained : Mapping or str or os.PathLike, optional
        A state dict or checkpoint path (a plain state dict, or one under ``"state_dict"`` /
        ``"network"`` / ``"model"``) loaded strictly into ``model`` before conversion: θ from trained weights.
    inplace : bool
        Convert ``model`` itself (default) or a deep copy.
    **settings : Any
        Fields of :class:`~monai_bayes.layers.NestedDropoutOptions` (``always_kept``, ``prior_keep``,
        ``order_init``, ``log_alpha_init``, ``temperature``, ``straight_through``, ``rescale``,
        ``weight_noise``, ``kl_constant``, ``remainder``), as bundle configs pass them.

    Returns
    -------
    nn.Module
        The converted network. Its new parameters are ``<layer>.log_alpha`` (shape of the weight) and
        ``<layer>.order_logits`` (``K``), its new buffer ``<layer>.prior_keep``; all old keys are unchanged.

    Raises
    ------
    ValueError
        For invalid settings (before anything changes), a network that is already nested, a
        pretrained state of another network, or a layer with fewer channels than groups.
    TypeError
        For an unknown setting.
    """
    if groups is not None:
        settings["groups"] = groups
    options = NestedDropoutOptions.from_options(options, **settings)
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
            group_boundaries(out_channels(module), options.groups, options.remainder)
        except ValueError as err:
            raise ValueError(f"layer {name!r}: {err}") from None
    for name, module in targets.items():
        module.__class__ = nested_dropout_class(type(module))
        layer = cast(NestedDropoutLayer, module)
        layer._init_nested(options)
        _insert_mask_site(model, name, layer)
    return model
