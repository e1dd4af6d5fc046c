"""Random test data for the metrics tests (seeded, tiny, with forced empty masks)."""

from __future__ import annotations

import torch


def random_binary_masks(
    generator: torch.Generator,
    batch: int,
    count: int,
    channels: int,
    spatial: tuple[int, ...],
    empty_fraction: float = 0.3,
    one_hot: bool = False,
) -> torch.Tensor:
    """(batch, count, channels, *spatial) binary float masks; about ``empty_fraction`` of the masks are empty.

    With ``one_hot`` the channels are a one-hot encoding of random labels (channel 0 = background) and an
    "empty" mask is all background.
    """
    shape = (batch, count, channels, *spatial)
    if one_hot:
        labels = torch.randint(0, channels, (batch, count, *spatial), generator=generator)
        empty = torch.rand(batch, count, generator=generator) < empty_fraction
        labels[empty] = 0
        return torch.nn.functional.one_hot(labels, channels).movedim(-1, 2).float()
    density = torch.rand(batch, count, channels, *([1] * len(spatial)), generator=generator)
    masks = (torch.rand(shape, generator=generator) < density).float()
    empty = torch.rand(batch, count, channels, generator=generator) < empty_fraction
    masks[empty] = 0.0
    return masks


def random_probabilities(
    generator: torch.Generator, batch: int, count: int, channels: int, spatial: tuple[int, ...], categorical: bool
) -> torch.Tensor:
    """(batch, count, channels, *spatial) probabilities: softmax over channels or independent sigmoids."""
    logits = 3.0 * torch.randn(batch, count, channels, *spatial, generator=generator, dtype=torch.float64)
    probs = logits.softmax(dim=2) if categorical else logits.sigmoid()
    return probs.float()
