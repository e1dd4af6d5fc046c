"""A set of ``S`` posterior samples of one network (SG-MCMC draws, ensemble members) on disk and in memory.

:class:`PosteriorSamples` holds the ``S`` state dicts of one architecture; :meth:`PosteriorSamples.state_dict`
rebuilds sample ``s`` on demand (lazily, from the stored layout), :func:`sample_ensemble` turns them into a
:class:`~monai_bayes.networks.DeepEnsemble` -- the same stochastic module deep ensembles use, so
``MonteCarloInferer(num_samples=S)`` returns each stored sample exactly once. Files are written atomically
and read with ``torch.load(weights_only=True)``; the storage layouts are described in ``docs/storage.md``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum
from torch import nn

from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.utils.atomic import atomic_path
from monai_bayes.utils.options import look_up

__all__ = [
    "SAMPLES_FORMAT",
    "LazySamples",
    "PosteriorSamples",
    "StorageLayout",
    "ValueCodec",
    "is_samples_file",
    "load_samples",
    "sample_ensemble",
    "save_samples",
]

#: marker of a posterior-samples file (``payload["format"]``)
SAMPLES_FORMAT = "monai_bayes.posterior_samples"
SAMPLES_VERSION = 1

StateDict = dict[str, torch.Tensor]


class _SampleSet:
    """What both sample sets share: ``len``, the keys of one sample, and sample ``index``'s state dict.

    A subclass holds one stored entry per state-dict key in ``self.entries`` and says how to decode
    sample ``index`` of one entry (:meth:`_decode`).
    """

    entries: Mapping[str, Any]

    def __len__(self) -> int:
        raise NotImplementedError

    def _decode(self, entry: Any, index: int) -> torch.Tensor:
        raise NotImplementedError

    def keys(self) -> list[str]:
        """State-dict keys of one sample.

        Returns
        -------
        list of str
        """
        return list(self.entries)

    def state_dict(self, index: int) -> StateDict:
        """Sample ``index``'s state dict.

        Parameters
        ----------
        index : int
            In ``[0, S)``.

        Returns
        -------
        dict of str to torch.Tensor

        Raises
        ------
        IndexError
            Outside ``[0, S)``.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} outside [0, {len(self)}).")
        return {k: self._decode(e, index) for k, e in self.entries.items()}


class PosteriorSamples(_SampleSet):
    """``S`` state dicts of one network, stored per key as one stacked ``(S, *shape)`` tensor.

    Parameters
    ----------
    states : sequence of Mapping of str to torch.Tensor
        The samples' state dicts (same keys and shapes); at least one.

    Raises
    ------
    ValueError
        If there are no samples, or two samples differ in keys or shapes (naming the first mismatch).
    """

    def __init__(self, states: Sequence[Mapping[str, torch.Tensor]]) -> None:
        if len(states) == 0:
            raise ValueError("PosteriorSamples needs at least one state dict, got none.")
        keys = list(states[0])
        for s, state in enumerate(states[1:], start=1):
            if list(state) != keys:
                extra = sorted(set(state) ^ set(keys))[:3]
                raise ValueError(f"sample {s} has other state-dict keys than sample 0 (e.g. {extra}).")
            for k in keys:
                if state[k].shape != states[0][k].shape:
                    raise ValueError(
                        f"sample {s}: {k!r} has shape {tuple(state[k].shape)}, sample 0 {tuple(states[0][k].shape)}."
                    )
        self.stacked: StateDict = {k: torch.stack([state[k].detach() for state in states]) for k in keys}

    @classmethod
    def from_stacked(cls, stacked: Mapping[str, torch.Tensor]) -> PosteriorSamples:
        """Samples from ``{key: (S, *shape) tensor}`` (the in-memory layout).

        Parameters
        ----------
        stacked : Mapping of str to torch.Tensor
            Every tensor with the same leading ``S``.

        Returns
        -------
        PosteriorSamples

        Raises
        ------
        ValueError
            If the leading dimensions differ.
        """
        sizes = {k: v.shape[0] if v.dim() else -1 for k, v in stacked.items()}
        if not sizes or len(set(sizes.values())) != 1 or -1 in sizes.values():
            raise ValueError(f"stacked samples need one common leading dimension S, got {sizes}.")
        obj = cls.__new__(cls)
        obj.stacked = dict(stacked)
        return obj

    @property
    def entries(self) -> StateDict:  # type: ignore[override]
        """The stacked ``(S, *shape)`` tensors, per state-dict key."""
        return self.stacked

    def __len__(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def _decode(self, entry: torch.Tensor, index: int) -> torch.Tensor:
        return entry[index]  # a view into the stacked tensor

    def mean(self) -> StateDict:
        """Per-entry mean over the samples (floating tensors; integer buffers from sample 0).

        Returns
        -------
        dict of str to torch.Tensor
        """
        return {k: v.mean(0) if v.is_floating_point() else v[0] for k, v in self.stacked.items()}


class StorageLayout(StrEnum):
    """How :func:`save_samples` stores the weight tensors of ``S`` samples (``docs/storage.md``).

    * ``dense``: every entry of every sample, ``S·K`` values;
    * ``shared_sparse``: one index set of ``N`` entries shared by all samples (indices once + ``S`` value
      vectors, ``N + N·S`` numbers; the survey's O(2N + NS) layout);
    * ``coo``: each sample sparsified on its own, in torch's COO convention on the ``(out, rest)`` matrix
      view (row and column indices, int64, + values: ``3·N·S`` numbers).
    """

    DENSE = "dense"
    SHARED_SPARSE = "shared_sparse"
    COO = "coo"


class ValueCodec(StrEnum):
    """Number format of the stored weight values: float32, float16 or symmetric int8 per output channel."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def _sparsifiable(stacked: torch.Tensor) -> bool:
    """Weight matrices / kernels (``(S, C_out, ...)`` with ≥ 2 dims per sample); biases, norms stay dense."""
    return stacked.is_floating_point() and stacked.dim() >= 3


def _keep_count(numel: int, sparsity: float) -> int:
    return max(1, round(numel * (1.0 - sparsity)))


def _encode_values(values: torch.Tensor, channel: torch.Tensor | None, codec: ValueCodec) -> dict[str, Any]:
    """``values`` (S, M) → stored form; ``channel`` (M,) or (S, M): output channel of each value (int8 scales)."""
    if codec is ValueCodec.FP16:
        return {"fp16": values.half()}
    if codec is ValueCodec.FP32 or channel is None:
        return {"fp32": values.float()}
    num_channels = int(channel.max().item()) + 1
    index = channel.expand_as(values) if channel.dim() == 1 else channel
    amax = torch.zeros(values.shape[0], num_channels, dtype=values.dtype).scatter_reduce(
        1, index, values.abs(), reduce="amax"
    )
    scale = (amax / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(values / scale.gather(1, index)).clamp(-127, 127).to(torch.int8)
    return {"int8": q, "scale": scale.float()}


def _decode_values(stored: Mapping[str, torch.Tensor], channel: torch.Tensor | None) -> torch.Tensor:
    if "fp32" in stored:
        return stored["fp32"]
    if "fp16" in stored:
        return stored["fp16"].float()
    assert channel is not None
    q, scale = stored["int8"], stored["scale"]
    index = channel.expand(q.shape[0], -1) if channel.dim() == 1 else channel
    return q.float() * scale.gather(1, index)


def _encode_entry(stacked: torch.Tensor, layout: StorageLayout, sparsity: float, codec: ValueCodec) -> dict[str, Any]:
    S, shape = stacked.shape[0], list(stacked.shape[1:])
    if not _sparsifiable(stacked):
        return {"kind": "raw", "values": stacked.contiguous()}
    flat = stacked.reshape(S, -1).float()
    row_size = flat.shape[1] // shape[0]
    if layout is StorageLayout.DENSE or sparsity == 0.0:
        channel = torch.arange(flat.shape[1]) // row_size
        return {"kind": "dense", "shape": shape, **_encode_values(flat, channel, codec)}
    n_keep = _keep_count(flat.shape[1], sparsity)
    if layout is StorageLayout.SHARED_SPARSE:
        index = flat.abs().mean(0).topk(n_keep).indices.sort().values  # one set: largest mean |w| over samples
        return {
            "kind": "shared",
            "shape": shape,
            "index": index.to(torch.int32),
            **_encode_values(flat[:, index], index // row_size, codec),
        }
    index = flat.abs().topk(n_keep, dim=1).indices.sort(dim=1).values  # (S, N): each sample its own set
    rows, cols = index // row_size, index % row_size
    return {
        "kind": "coo",
        "shape": shape,
        "indices": torch.stack([rows, cols], dim=1),  # (S, 2, N) int64, as Tensor.to_sparse() keeps them
        **_encode_values(flat.gather(1, index), rows, codec),
    }


def _decode_entry(entry: Mapping[str, Any], sample: int | None) -> torch.Tensor:
    """Tensor of one sample (``sample``) or of all, ``(S, *shape)`` (``sample=None``)."""
    kind = entry["kind"]
    if kind == "raw":
        return entry["values"] if sample is None else entry["values"][sample]
    shape = list(entry["shape"])
    numel = math.prod(shape)
    row_size = numel // shape[0]
    pick = slice(None) if sample is None else slice(sample, sample + 1)
    stored = {k: v[pick] for k, v in entry.items() if k in ("fp32", "fp16", "int8", "scale")}
    if kind == "dense":
        values = _decode_values(stored, torch.arange(numel) // row_size)
        out = values
    elif kind == "shared":
        index = entry["index"].long()
        values = _decode_values(stored, index // row_size)
        out = torch.zeros(values.shape[0], numel).index_copy_(1, index, values)
    elif kind == "coo":
        indices = entry["indices"][pick]
        values = _decode_values(stored, indices[:, 0])
        flat_index = indices[:, 0] * row_size + indices[:, 1]
        out = torch.zeros(values.shape[0], numel).scatter_(1, flat_index, values)
    else:
        raise ValueError(f"unknown stored entry kind {kind!r}.")
    out = out.reshape(out.shape[0], *shape)
    return out if sample is None else out[0]


def is_samples_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds posterior samples written by :func:`save_samples` (False for a plain checkpoint).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.pt`` file.

    Returns
    -------
    bool
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:  # memory-mapped: only the small "format" entry is read
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) torch.save files cannot be mapped
        payload = torch.load(path, map_location="cpu", weights_only=True)
    return isinstance(payload, dict) and payload.get("format") == SAMPLES_FORMAT


def save_samples(
    samples: PosteriorSamples | Sequence[Mapping[str, torch.Tensor]],
    path: str | os.PathLike,
    layout: StorageLayout | str = StorageLayout.DENSE,
    sparsity: float = 0.0,
    values: ValueCodec | str = ValueCodec.FP32,
) -> Path:
    """Write posterior samples to ``path`` atomically in one of the :class:`StorageLayout` s.

    Parameters
    ----------
    samples : PosteriorSamples or sequence of state dicts
        The samples.
    path : str or os.PathLike
        Output file (``.pt``).
    layout : {"dense", "shared_sparse", "coo"}
        Storage layout of the weight tensors (``(S, C_out, ...)``); biases, normalisation parameters and
        buffers are always stored as they are.
    sparsity : float
        Fraction in [0, 1) of each weight tensor's entries set to zero (sparse layouts): ``shared_sparse``
        keeps the entries with the largest mean ``|w|`` over the samples, ``coo`` each sample's largest ``|w|``.
    values : {"fp32", "fp16", "int8"}
        Number format of the stored weight values (int8: symmetric, one float32 scale per sample and
        output channel).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        For an unknown layout / codec or a sparsity outside [0, 1), or a sparse layout with sparsity 0.
    """
    samples = samples if isinstance(samples, PosteriorSamples) else PosteriorSamples(samples)
    layout = look_up("layout", layout, StorageLayout)
    codec = look_up("values", values, ValueCodec)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}.")
    if layout is not StorageLayout.DENSE and sparsity == 0.0:
        raise ValueError(f"layout {layout.value!r} needs a sparsity > 0 (use 'dense' for all entries).")
    payload: dict[str, Any] = {
        "format": SAMPLES_FORMAT,
        "version": SAMPLES_VERSION,
        "layout": layout.value,
        "sparsity": float(sparsity),
        "values": codec.value,
        "num_samples": len(samples),
        "entries": {k: _encode_entry(v.detach().cpu(), layout, sparsity, codec) for k, v in samples.stacked.items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"posterior samples file {str(path)!r} does not exist.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != SAMPLES_FORMAT:
        raise ValueError(f"{path}: not a posterior-samples file (expected format {SAMPLES_FORMAT!r}).")
    if payload.get("version") != SAMPLES_VERSION:
        raise ValueError(f"{path}: samples format version {payload.get('version')!r}, expected {SAMPLES_VERSION}.")
    if payload.get("layout") not in {m.value for m in StorageLayout}:
        raise ValueError(f"{path}: unknown samples layout {payload.get('layout')!r}.")
    return payload


class LazySamples(_SampleSet):
    """Samples decoded one at a time from their stored layout (the file's tensors stay compact in memory).

    Parameters
    ----------
    payload : Mapping
        A payload written by :func:`save_samples`.
    """

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.entries: dict[str, Any] = dict(payload["entries"])
        self.num_samples = int(payload["num_samples"])

    def __len__(self) -> int:
        return self.num_samples

    def _decode(self, entry: Any, index: int) -> torch.Tensor:
        return _decode_entry(entry, index)

    def materialize(self) -> PosteriorSamples:
        """All samples decoded to dense stacked tensors.

        Returns
        -------
        PosteriorSamples
        """
        return PosteriorSamples.from_stacked({k: _decode_entry(e, None) for k, e in self.entries.items()})


def load_samples(path: str | os.PathLike, lazy: bool = False) -> PosteriorSamples | LazySamples:
    """Read a file written by :func:`save_samples` (``weights_only=True``: no code from the file runs).

    Parameters
    ----------
    path : str or os.PathLike
        The samples file.
    lazy : bool
        Keep the stored (compact) layout in memory and decode one sample per
        :meth:`LazySamples.state_dict` call, instead of decoding all ``S`` at once.

    Returns
    -------
    PosteriorSamples or LazySamples

    Raises
    ------
    ValueError
        Naming the file: missing, not a samples file, another version or an unknown layout.
    """
    path = Path(path)
    stored = LazySamples(_payload(path))
    return stored if lazy else stored.materialize()


def sample_ensemble(network: nn.Module, samples: PosteriorSamples | LazySamples) -> DeepEnsemble:
    """A :class:`~monai_bayes.networks.DeepEnsemble` with one copy of ``network`` per stored sample.

    Parameters
    ----------
    network : nn.Module
        The architecture (its weights are not used); copied ``S`` times.
    samples : PosteriorSamples or LazySamples
        At least two samples.

    Returns
    -------
    DeepEnsemble
        Monte-Carlo sample ``s`` of a pass with ``S`` samples is stored sample ``s``.

    Raises
    ------
    ValueError
        If a sample does not load strictly into ``network`` (another architecture).
    """
    members = []
    for s in range(len(samples)):
        member = copy.deepcopy(network)
        try:
            member.load_state_dict(samples.state_dict(s))
        except RuntimeError as err:
            raise ValueError(f"posterior sample {s} does not fit the network: {err}") from None
        members.append(member)
    return DeepEnsemble(members)
