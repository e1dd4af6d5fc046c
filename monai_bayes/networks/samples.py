"""A set of ``S`` posterior samples of one network (SG-MCMC draws, ensemble members) on disk and in memory.

:class:`PosteriorSamples` holds the ``S`` state dicts of one architecture; :meth:`PosteriorSamples.state_dict`
rebuilds sample ``s`` on demand (lazily, from the stored layout), :func:`sample_ensemble` turns them into a
:class:`~monai_bayes.networks.DeepEnsemble` -- the same stochastic module deep ensembles use, so
``MonteCarloInferer(num_samples=S)`` returns each stored sample exactly once. Files are written atomically
and read with ``torch.load(weights_only=True)``; the storage layouts are described in ``docs/storage.md``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.networks.ensemble import DeepEnsemble
from monai_bayes.utils.atomic import atomic_path

__all__ = [
    "SAMPLES_FORMAT",
    "PosteriorSamples",
    "is_samples_file",
    "load_samples",
    "sample_ensemble",
    "save_samples",
]

#: marker of a posterior-samples file (``payload["format"]``)
SAMPLES_FORMAT = "monai_bayes.posterior_samples"
SAMPLES_VERSION = 1

StateDict = dict[str, torch.Tensor]


class PosteriorSamples:
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

    def __len__(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def keys(self) -> list[str]:
        """State-dict keys of one sample.

        Returns
        -------
        list of str
        """
        return list(self.stacked)

    def state_dict(self, index: int) -> StateDict:
        """Sample ``index``'s state dict (views into the stacked tensors).

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
        return {k: v[index] for k, v in self.stacked.items()}

    def mean(self) -> StateDict:
        """Per-entry mean over the samples (floating tensors; integer buffers from sample 0).

        Returns
        -------
        dict of str to torch.Tensor
        """
        return {k: v.mean(0) if v.is_floating_point() else v[0] for k, v in self.stacked.items()}


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
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return isinstance(payload, dict) and payload.get("format") == SAMPLES_FORMAT


def save_samples(samples: PosteriorSamples | Sequence[Mapping[str, torch.Tensor]], path: str | os.PathLike) -> Path:
    """Write posterior samples to ``path`` atomically (dense layout: one ``(S, *shape)`` tensor per key).

    Parameters
    ----------
    samples : PosteriorSamples or sequence of state dicts
        The samples.
    path : str or os.PathLike
        Output file (``.pt``).

    Returns
    -------
    Path
        ``path``.
    """
    samples = samples if isinstance(samples, PosteriorSamples) else PosteriorSamples(samples)
    payload: dict[str, Any] = {
        "format": SAMPLES_FORMAT,
        "version": SAMPLES_VERSION,
        "layout": "dense",
        "num_samples": len(samples),
        "dense": {k: v.contiguous().cpu() for k, v in samples.stacked.items()},
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
    return payload


def load_samples(path: str | os.PathLike) -> PosteriorSamples:
    """Read a file written by :func:`save_samples` (``weights_only=True``: no code from the file runs).

    Parameters
    ----------
    path : str or os.PathLike
        The samples file.

    Returns
    -------
    PosteriorSamples

    Raises
    ------
    ValueError
        Naming the file: missing, not a samples file, another version or an unknown layout.
    """
    path = Path(path)
    payload = _payload(path)
    layout = payload.get("layout")
    if layout != "dense":
        raise ValueError(f"{path}: unknown samples layout {layout!r}; expected 'dense'.")
    return PosteriorSamples.from_stacked(payload["dense"])


def sample_ensemble(network: nn.Module, samples: PosteriorSamples) -> DeepEnsemble:
    """A :class:`~monai_bayes.networks.DeepEnsemble` with one copy of ``network`` per stored sample.

    Parameters
    ----------
    network : nn.Module
        The architecture (its weights are not used); copied ``S`` times.
    samples : PosteriorSamples
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
