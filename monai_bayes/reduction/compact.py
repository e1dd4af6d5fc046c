"""Compact storage of a pruned network: the survivors' values and flat indices instead of dense tensors.

A parameter with a prune mask is stored in the smaller of two layouts: ``"sparse"`` -- ``{"shape", "index"
(int32 flat indices of the kept entries), "values"}``, the mask being the set of stored indices -- or
``"masked"`` -- ``{"shape", "values" (dense), "mask_bits" (the keep-mask packed 8 entries per uint8 byte)}``.
Per parameter with ``n`` entries, ``k`` kept, values of ``b`` bytes: sparse costs ``k·(b + 4)`` bytes and
masked ``n·b + ⌈n/8⌉``, so for float32 the sparse layout wins when more than about 48 % of the entries are
pruned (``k/n < (b + 1/8)/(b + 4)``) and the masked one below that (a pruned network never costs more than
its dense state dict plus one bit per masked entry). A Bayesian index equal to the kept index (a pruned
full-Bayes layer) is stored as a reference. Every other tensor is stored as is. Files are written
atomically and read with ``torch.load(weights_only=True)`` -- no code from the file runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.reduction.prune import MASK_SUFFIX, load_pruned_state_dict
from monai_bayes.utils.atomic import atomic_path

__all__ = ["COMPACT_FORMAT", "CompactSize", "compact_state", "load_compact", "pack_mask", "save_compact", "unpack_mask"]

COMPACT_FORMAT = "monai_bayes.reduction.compact"
COMPACT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # version 1: "sparse" entries only
_BAYES_INDEX = "_bayes_index"


@dataclass
class CompactSize:
    """Tensor bytes of a network stored compactly vs densely.

    Attributes
    ----------
    compact_bytes : int
        Bytes of all tensors in the compact layout (values, int32 indices, other tensors).
    dense_bytes : int
        Bytes of the same state dict stored densely (``state_dict()`` without the masks).
    layouts : dict of str to str
        The layout chosen for each masked parameter (``"sparse"`` or ``"masked"``).
    """

    compact_bytes: int
    dense_bytes: int
    layouts: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``compact_bytes / dense_bytes``."""
        return self.compact_bytes / self.dense_bytes if self.dense_bytes else 0.0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel < 2**31 else torch.int64


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into bytes, 8 entries per ``uint8`` (entry ``j`` is bit ``j mod 8`` of byte ``j // 8``).

    Parameters
    ----------
    mask : torch.Tensor
        Bool, any shape (flattened in row-major order).

    Returns
    -------
    torch.Tensor
        ``uint8`` of length ``⌈mask.numel() / 8⌉``.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1 << j for j in range(8)], dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_mask(bits: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: the first ``numel`` entries as a flat bool tensor.

    Parameters
    ----------
    bits : torch.Tensor
        ``uint8`` bytes from :func:`pack_mask`.
    numel : int
        Number of entries packed.

    Returns
    -------
    torch.Tensor
        Bool, shape ``(numel,)``.

    Raises
    ------
    ValueError
        If ``bits`` is not ``uint8`` of length ``⌈numel / 8⌉``.
    """
    if bits.dtype != torch.uint8 or bits.numel() != math.ceil(numel / 8):
        raise ValueError(f"mask_bits: expected {math.ceil(numel / 8)} uint8 bytes, got {bits.numel()} {bits.dtype}.")
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.reshape(-1, 1) >> shifts) & 1).bool().reshape(-1)[:numel]


def compact_state(model: nn.Module) -> tuple[dict[str, Any], CompactSize]:
    """The compact payload of ``model``'s state dict and its size vs dense.

    Parameters
    ----------
    model : torch.nn.Module
        A network pruned with :mod:`monai_bayes.reduction` (an unpruned one is stored densely).

    Returns
    -------
    tuple
        ``(payload, size)``: the dictionary :func:`save_compact` writes and a :class:`CompactSize`.
    """
    state = model.state_dict()
    masks = {k[: -len(MASK_SUFFIX)]: v for k, v in state.items() if k.endswith(MASK_SUFFIX)}
    kept: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    compact = dense = 0
    layouts: dict[str, str] = {}
    for key, tensor in state.items():
        if key.endswith(MASK_SUFFIX):
            continue
        dense += _nbytes(tensor)
        if key in masks:
            index = masks[key].reshape(-1).nonzero().squeeze(1)
            kept[key] = index
            stored = index.to(_index_dtype(tensor.numel()))
            sparse_bytes = index.numel() * (stored.element_size() + tensor.element_size())
            bits = pack_mask(masks[key])
            if sparse_bytes <= _nbytes(tensor) + _nbytes(bits):
                values = tensor.detach().reshape(-1)[index].clone()
                entries[key] = {"kind": "sparse", "shape": list(tensor.shape), "index": stored, "values": values}
                compact += sparse_bytes
                layouts[key] = "sparse"
            else:
                values = tensor.detach().clone()
                entries[key] = {"kind": "masked", "shape": list(tensor.shape), "values": values, "mask_bits": bits}
                compact += _nbytes(values) + _nbytes(bits)
                layouts[key] = "masked"
            continue
        owner = key[: -len(_BAYES_INDEX)] if key.endswith(_BAYES_INDEX) else None
        if owner is not None and owner in kept and torch.equal(kept[owner], tensor.to(kept[owner].device)):
            entries[key] = {"kind": "kept_index", "of": owner}
            continue
        entries[key] = {"kind": "dense", "tensor": tensor.detach().clone()}
        compact += _nbytes(tensor)
    payload = {"format": COMPACT_FORMAT, "version": COMPACT_VERSION, "entries": entries}
    return payload, CompactSize(compact, dense, layouts)


def save_compact(model: nn.Module, path: str | os.PathLike[str]) -> CompactSize:
    """Write ``model`` (pruned) compactly to ``path`` (temporary file, then rename).

    Parameters
    ----------
    model : torch.nn.Module
        The pruned network.
    path : str or os.PathLike
        Target file (``.pt``).

    Returns
    -------
    CompactSize
        Tensor bytes compact vs dense.
    """
    payload, size = compact_state(model)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return size


def _expand(path: Path, payload: Any) -> dict[str, torch.Tensor]:
    """Rebuild the full state dict (with masks) from a compact payload; errors name ``path``."""
    if not isinstance(payload, dict) or payload.get("format") != COMPACT_FORMAT:
        raise ValueError(f"{path}: not a compact pruned-network file (expected format {COMPACT_FORMAT!r}).")
    if payload.get("version") not in _READABLE_VERSIONS:
        raise ValueError(
            f"{path}: compact format version {payload.get('version')!r}, expected one of {_READABLE_VERSIONS}."
        )
    entries = payload.get("entries")
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: field 'entries' must be a dict, got {type(entries).__name__}.")
    state: dict[str, torch.Tensor] = {}
    kept: dict[str, torch.Tensor] = {}
    for key, entry in entries.items():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "dense":
            state[key] = entry["tensor"]
        elif kind == "sparse":
            shape = tuple(int(s) for s in entry["shape"])
            numel = int(torch.Size(shape).numel())
            index, values = entry["index"].long(), entry["values"]
            if index.numel() != values.numel() or (index.numel() and (index.min() < 0 or index.max() >= numel)):
                raise ValueError(f"{path}: entry {key!r}: index does not fit shape {shape} or values.")
            flat = values.new_zeros(numel)
            flat[index] = values
            mask = torch.zeros(numel, dtype=torch.bool)
            mask[index] = True
            state[key] = flat.view(shape)
            state[key + MASK_SUFFIX] = mask.view(shape)
            kept[key] = index
        elif kind == "masked":
            shape = tuple(int(s) for s in entry["shape"])
            values = entry["values"]
            if tuple(values.shape) != shape:
                raise ValueError(f"{path}: entry {key!r}: values of shape {tuple(values.shape)}, expected {shape}.")
            try:
                mask = unpack_mask(entry["mask_bits"], values.numel())
            except ValueError as err:
                raise ValueError(f"{path}: entry {key!r}: {err}") from err
            state[key] = values
            state[key + MASK_SUFFIX] = mask.view(shape)
            kept[key] = mask.nonzero().squeeze(1)
        elif kind != "kept_index":
            raise ValueError(f"{path}: entry {key!r} has unknown kind {kind!r}.")
    for key, entry in entries.items():
        if entry.get("kind") == "kept_index":
            owner = entry.get("of")
            if owner not in kept:
                raise ValueError(f"{path}: entry {key!r} refers to {owner!r}, which is not a stored sparse entry.")
            state[key] = kept[owner].clone()
    return state


def load_compact(model: nn.Module, path: str | os.PathLike[str], gamma0: float | None = None) -> nn.Module:
    """Load a file written by :func:`save_compact` into a fresh deterministic ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The deterministic architecture of the saved network.
    path : str or os.PathLike
        The compact file.
    gamma0 : float, optional
        Prior scale γ₀ to set on the Bayesian layers (see :func:`load_pruned_state_dict`).

    Returns
    -------
    torch.nn.Module
        ``model`` with the saved structure, values and prune masks.

    Raises
    ------
    ValueError
        If the file is not a compact file of this format or does not fit ``model`` (message names the file).
    """
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = _expand(path, payload)
    try:
        return load_pruned_state_dict(model, state, gamma0=gamma0)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
