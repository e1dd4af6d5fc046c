"""Optimizer helpers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["add_new_parameters"]


def add_new_parameters(
    optimizer: torch.optim.Optimizer, network: nn.Module, lr: float | None = None, weight_decay: float = 0.0
) -> list[nn.Parameter]:
    """Add the trainable parameters of ``network`` the optimizer does not hold yet (e.g. new ρ) as a group.

    ρ gets ``weight_decay=0`` by default: decaying ρ towards 0 would pull σ towards softplus(0) ≈ 0.69,
    which is not a meaningful regulariser; the KL term is the prior on σ.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer to extend (modified in place).
    network : nn.Module
        The network whose parameters it should hold.
    lr : float, optional
        Learning rate of the new group (default: the optimizer's).
    weight_decay : float
        Weight decay of the new group.

    Returns
    -------
    list of nn.Parameter
        The parameters added (empty if there were none).
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    new = [p for p in network.parameters() if id(p) not in held and p.requires_grad]
    if new:
        group: dict[str, Any] = {"params": new, "weight_decay": weight_decay}
        if lr is not None:
            group["lr"] = lr
        optimizer.add_param_group(group)
    return new
