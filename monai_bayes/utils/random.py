"""Seeding the global random state for one block of code without changing the caller's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["preserved_global_rng", "seeded_global_rng"]


@contextmanager
def preserved_global_rng(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block and restore the global RNG state afterwards (CPU and, for CUDA, ``device``'s generator).

    Parameters
    ----------
    device : torch.device or str
        The device whose generator the block may advance besides the CPU one.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else []):
        yield


@contextmanager
def seeded_global_rng(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with the global RNG seeded with ``seed``; restore the previous state afterwards.

    For randomness drawn inside layers from the global generator (``F.dropout`` masks of MC dropout,
    BN3's local-reparameterisation noise), which a ``torch.Generator`` argument cannot reach. The CPU
    generator and, for a CUDA ``device``, that device's generator are seeded and restored; other GPUs
    are left alone. ``seed=None`` runs the block unchanged.
    """
    if seed is None:
        yield
        return
    device = torch.device(device)
    with preserved_global_rng(device):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device.index if device.index is not None else torch.cuda.current_device()):
                torch.cuda.manual_seed(seed)
        yield
