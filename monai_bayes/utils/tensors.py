"""Small tensor helpers shared across the package."""

from __future__ import annotations

import torch
from monai.data import MetaTensor

__all__ = ["as_plain_tensor"]


def as_plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` without MONAI meta information (a plain ``torch.Tensor`` view), so that arithmetic,
    slicing and autograd do not track or collate metadata.
    """
    return x.as_tensor() if isinstance(x, MetaTensor) else x
