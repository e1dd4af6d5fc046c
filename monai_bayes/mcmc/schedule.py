r"""The cyclical step-size schedule of cSGLD / cSGHMC (Zhang et al. 2020, eq. 1; seed 004 ref. [34]).

Step ``k = 0, 1, …`` of a run with cycles of ``L`` steps sits at the relative position
``r(k) = (k mod L) / L`` of its cycle and uses the cosine step size

.. math::  \mathrm{lr}(k) = \frac{\mathrm{lr}_0}{2}\,\bigl[\cos(\pi\, r(k)) + 1\bigr].

Steps with ``r(k) < β`` (``exploration_fraction``) are the *exploration* stage -- large steps, no
noise, the sampler behaves as (momentum) SGD and moves to a new mode --; steps with ``r(k) ≥ β`` are the
*sampling* stage, where the noise is switched on and samples are collected (Zhang et al.'s Algorithm 1;
their ``L = ⌈K/M⌉`` for ``K`` steps in ``M`` cycles).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CyclicalLR", "cyclical_lr_factor", "in_sampling_stage"]


def _check_cycle(cycle_length: int, exploration_fraction: float) -> None:
    if not isinstance(cycle_length, int) or isinstance(cycle_length, bool) or cycle_length < 1:
        raise ValueError(f"cycle_length must be a positive int (steps per cycle), got {cycle_length!r}.")
    if not 0.0 <= exploration_fraction < 1.0:
        raise ValueError(f"exploration_fraction must be in [0, 1), got {exploration_fraction!r}.")


def cyclical_lr_factor(step: int, cycle_length: int) -> float:
    """``lr(k) / lr₀ = [cos(π r(k)) + 1] / 2`` with ``r(k) = (k mod L)/L`` (Zhang et al. 2020, eq. 1).

    Parameters
    ----------
    step : int
        ``k`` ≥ 0, counted from the first step of the run.
    cycle_length : int
        ``L``, steps per cycle.

    Returns
    -------
    float
        The factor in (0, 1].
    """
    _check_cycle(cycle_length, 0.0)
    r = (step % cycle_length) / cycle_length
    return 0.5 * (math.cos(math.pi * r) + 1.0)


def in_sampling_stage(step: int, cycle_length: int, exploration_fraction: float) -> bool:
    """Whether step ``k`` is in its cycle's sampling stage (``r(k) ≥ β``).

    Parameters
    ----------
    step : int
        ``k`` ≥ 0.
    cycle_length : int
        ``L``, steps per cycle.
    exploration_fraction : float
        ``β`` in [0, 1).

    Returns
    -------
    bool
        True for a sampling step (noise on).
    """
    _check_cycle(cycle_length, exploration_fraction)
    return (step % cycle_length) / cycle_length >= exploration_fraction


class CyclicalLR(LRScheduler):
    """Cosine step size per cycle, with the sampler's noise switched off in the exploration stage.

    Step it once per optimiser step (e.g. MONAI's ``LrScheduleHandler(..., epoch_level=False)``). After
    each ``step()``, every parameter group holds ``lr = lr₀·cyclical_lr_factor(k, L)`` and
    ``add_noise = in_sampling_stage(k, L, β)`` (read by :class:`~monai_bayes.mcmc.SGLD` /
    :class:`~monai_bayes.mcmc.SGHMC`), ``k`` being the index of the next optimiser step.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Usually :class:`~monai_bayes.mcmc.SGHMC` (cSGHMC) or :class:`~monai_bayes.mcmc.SGLD` (cSGLD).
    cycle_length : int
        ``L``, optimiser steps per cycle (e.g. epochs per cycle × iterations per epoch).
    exploration_fraction : float
        ``β`` in [0, 1): the share of each cycle without noise.
    last_epoch : int
        Index of the last step taken (-1: a fresh run), as for every torch scheduler.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cycle_length: int,
        exploration_fraction: float = 0.8,
        last_epoch: int = -1,
    ) -> None:
        _check_cycle(cycle_length, exploration_fraction)
        self.cycle_length = cycle_length
        self.exploration_fraction = exploration_fraction
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """Learning rates of step ``last_epoch``.

        Returns
        -------
        list of float
            One per parameter group.
        """
        factor = cyclical_lr_factor(max(self.last_epoch, 0), self.cycle_length)
        return [float(base) * factor for base in self.base_lrs]

    def step(self, epoch: Any = None) -> None:
        """Advance one optimiser step: new learning rates and the noise switch of the next step."""
        super().step(epoch)
        sampling = in_sampling_stage(max(self.last_epoch, 0), self.cycle_length, self.exploration_fraction)
        for group in self.optimizer.param_groups:
            group["add_noise"] = sampling

    def is_cycle_end(self, step: int) -> bool:
        """Whether step ``k`` is the last one of its cycle.

        Parameters
        ----------
        step : int
            ``k`` ≥ 0.

        Returns
        -------
        bool
            ``(k + 1) mod L == 0``.
        """
        return (step + 1) % self.cycle_length == 0
