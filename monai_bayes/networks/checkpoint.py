"""Checkpoints of stochastic networks: masks stored in a state dict, loading into a plain network, file I/O.

A partial/full-Bayes checkpoint holds the deterministic keys plus, per parameter with Bayesian
entries, ``<param>_bayes_index`` and ``<param>_rho``. :func:`load_stochastic_state_dict` rebuilds
that structure on a deterministic network (via :func:`~monai_bayes.networks.to_partial_bayes`)
before loading; :func:`load_checkpoint` / :func:`save_checkpoint` do the same for files, safely
(``weights_only=True``) and atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from monai_bayes.layers.horseshoe import HorseshoeBayesLayer
from monai_bayes.layers.partial import PartialBayesLayer
from monai_bayes.networks.convert import to_horseshoe_bayes, to_partial_bayes
from monai_bayes.utils.atomic import atomic_path

__all__ = [
    "PRUNE_MASK_SUFFIX",
    "bayes_masks_from_state_dict",
    "load_checkpoint",
    "load_stochastic_state_dict",
    "register_prune_masks",
    "save_checkpoint",
]

#: suffix of the boolean keep-mask buffers of a pruned parameter (``<param>_bmr_mask``, ``True`` = kept),
#: written by :mod:`monai_bayes.reduction`; any checkpoint loader here restores them
PRUNE_MASK_SUFFIX = "_bmr_mask"
_HORSESHOE_KEY = "hs_layer_loc"


def bayes_masks_from_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Boolean masks of the Bayesian entries stored in a partial-Bayes checkpoint.

    Parameters
    ----------
    model : nn.Module
        The network the checkpoint belongs to (deterministic or converted).
    state_dict : Mapping of str to torch.Tensor
        The checkpoint; ``<param>_bayes_index`` (empty for a fully Bayesian parameter) and
        ``<param>_rho`` mark the Bayesian entries.

    Returns
    -------
    dict of str to torch.Tensor
        ``{parameter name: bool mask shaped like the parameter}``; empty for a deterministic checkpoint.

    Raises
    ------
    ValueError
        If an index or ρ in the checkpoint does not fit the model's parameter (a checkpoint of another network).
    """
    params = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for key, index in state_dict.items():
        if not key.endswith("_bayes_index"):
            continue
        pname = key[: -len("_bayes_index")]
        rho = state_dict.get(f"{pname}_rho")
        if pname not in params or rho is None:
            raise ValueError(f"checkpoint key {key!r} has no matching parameter {pname!r} (and ρ) in the model.")
        param = params[pname]
        mask = torch.zeros(param.numel(), dtype=torch.bool)
        if index.numel() == 0:
            if rho.numel() != param.numel():
                raise ValueError(
                    f"checkpoint ρ for {pname!r} has {rho.numel()} entries, the model's parameter {param.numel()}."
                )
            mask[:] = True
        else:
            if index.numel() != rho.numel() or int(index.max()) >= param.numel() or int(index.min()) < 0:
                raise ValueError(
                    f"checkpoint index for {pname!r} does not fit the model's parameter of shape {tuple(param.shape)}."
                )
            mask[index.long().cpu()] = True
        masks[pname] = mask.view(param.shape)
    return masks


def register_prune_masks(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Give ``model`` the ``<param>_bmr_mask`` buffers a pruned checkpoint holds (all ``True`` until loaded).

    Parameters
    ----------
    model : nn.Module
        The network (modified in place).
    state_dict : Mapping of str to torch.Tensor
        The checkpoint.

    Returns
    -------
    list of str
        The parameters that got (or already had) a mask.

    Raises
    ------
    ValueError
        If a mask key names no parameter of ``model`` or has another shape.
    """
    params = dict(model.named_parameters())
    found = []
    for key, mask in state_dict.items():
        if not key.endswith(PRUNE_MASK_SUFFIX):
            continue
        pname = key[: -len(PRUNE_MASK_SUFFIX)]
        if pname not in params or tuple(params[pname].shape) != tuple(mask.shape):
            raise ValueError(f"checkpoint mask {key!r} fits no parameter of {type(model).__name__}.")
        module_name, _, attr = pname.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if not hasattr(module, attr + PRUNE_MASK_SUFFIX):
            module.register_buffer(attr + PRUNE_MASK_SUFFIX, torch.ones_like(params[pname], dtype=torch.bool))
        found.append(pname)
    return found


def load_stochastic_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a (partial/full-Bayes or deterministic) checkpoint into ``model``.

    If the checkpoint holds Bayesian entries and ``model`` is still deterministic, it is first converted
    (in place) to the same partial-Bayes structure; then the state is loaded strictly.

    Parameters
    ----------
    model : nn.Module
        The network (modified in place).
    state_dict : Mapping of str to torch.Tensor
        The checkpoint's state dict.

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    ValueError
        Naming the mismatching keys, if the checkpoint belongs to another network.
    """
    register_prune_masks(model, state_dict)
    masks = bayes_masks_from_state_dict(model, state_dict)
    if masks and not any(isinstance(m, PartialBayesLayer) for m in model.modules()):
        to_partial_bayes(model, masks, inplace=True)
    horseshoe = [k[: -len(_HORSESHOE_KEY)].rstrip(".") for k in state_dict if k.endswith(_HORSESHOE_KEY)]
    if horseshoe and not any(isinstance(m, HorseshoeBayesLayer) for m in model.modules()):
        to_horseshoe_bayes(model, include=horseshoe, inplace=True)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint does not match the network {type(model).__name__}: {err}") from err
    return model


def save_checkpoint(network: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``network.state_dict()`` atomically (temporary file, then rename).

    Parameters
    ----------
    network : nn.Module
        Any network (deterministic, partial/full-Bayes, MC dropout, nested).
    path : str or os.PathLike
        Target ``.pt`` file; its folder must exist.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        torch.save(network.state_dict(), tmp)
    return Path(path)


def load_checkpoint(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict saved by :func:`save_checkpoint` or MONAI's ``CheckpointSaver`` into ``network``.

    The file is read with ``torch.load(..., weights_only=True)``: no code from it runs. A
    partial/full-Bayes checkpoint converts a deterministic ``network`` to the same structure first.

    Parameters
    ----------
    network : nn.Module
        The network to load into (modified in place).
    path : str or os.PathLike
        A state-dict file, or a MONAI / Ignite checkpoint ``{"network" | "model" | "state_dict": state_dict}``.

    Returns
    -------
    nn.Module
        ``network`` with the checkpoint's state.

    Raises
    ------
    ValueError
        Naming the file, if it holds no state dict or one of another network.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}.")
    # MONAI CheckpointSaver / Ignite Checkpoint files: {"network": state_dict} (or "model", "state_dict")
    for key in ("state_dict", "network", "model"):
        if len(state) == 1 and isinstance(state.get(key), dict):
            state = state[key]
    try:
        return load_stochastic_state_dict(network, state)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
