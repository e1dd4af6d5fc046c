"""Learning-rate schedule of a bundle training step, as a MONAI/Ignite handler.

The bundles' ``lr_schedule`` setting:

* ``"constant"`` -- every parameter group keeps its learning rate (seed 000 §3.1: "a fixed learning rate").
* ``"cosine"`` -- each group's rate decays from its initial value to 0 over the run,
  ``lr_e = lr_0 · (1 + cos(π e / E)) / 2`` after ``e`` of ``E`` epochs
  (:class:`torch.optim.lr_scheduler.CosineAnnealingLR` stepped once per epoch by MONAI's
  :class:`~monai.handlers.LrScheduleHandler`). The bundles save the last epoch's weights; with a constant rate
  those sit wherever the last steps left them, and at the bundles' short CPU budgets the validation Dice of
  consecutive epochs can differ by tenths (docs/fast_mc.md, "Training noise").
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.handlers import LrScheduleHandler
from monai.utils import StrEnum

from monai_bayes.utils.options import look_up

__all__ = ["LRSchedule", "LRScheduleHandler"]


class LRSchedule(StrEnum):
    """Learning-rate schedules of :class:`LRScheduleHandler` (module docstring)."""

    CONSTANT = "constant"
    COSINE = "cosine"


class LRScheduleHandler:
    """Apply an :class:`LRSchedule` to ``optimizer`` over the whole run of the engine it is attached to.

    The cosine period is the engine's ``state.max_epochs`` when the handler is attached (MONAI trainers set it
    before attaching their handlers), so a step config names only the schedule, not its epoch count.

    Parameters
    ----------
    schedule : str or LRSchedule
        ``"constant"`` (attaches nothing) or ``"cosine"``.
    optimizer : torch.optim.Optimizer
        The optimizer the trainer steps (all its parameter groups follow the schedule).

    Raises
    ------
    ValueError
        For an unknown ``schedule`` (naming the setting and the options).
    """

    def __init__(self, schedule: str | LRSchedule, optimizer: torch.optim.Optimizer) -> None:
        self.schedule = look_up("lr_schedule", schedule, LRSchedule)
        self.optimizer = optimizer
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine`` (a no-op for ``"constant"``).

        Parameters
        ----------
        engine : ignite.engine.Engine
            The trainer; its ``state.max_epochs`` is the cosine period.

        Raises
        ------
        ValueError
            When the engine has no positive ``max_epochs``.
        """
        if self.schedule == LRSchedule.CONSTANT:
            return
        epochs = engine.state.max_epochs
        if not epochs or epochs < 1:
            raise ValueError(f"lr_schedule {self.schedule.value!r} needs a trainer with max_epochs >= 1, got {epochs}.")
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=int(epochs))
        # MONAI's annotation names the pre-2.0 base class; CosineAnnealingLR is a (subclass of) LRScheduler
        LrScheduleHandler(self.scheduler, print_lr=False, epoch_level=True).attach(engine)  # type: ignore[arg-type]
