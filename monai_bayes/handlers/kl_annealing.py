"""KL-weight (β) annealing for the ELBO, as a MONAI/Ignite handler.

Schedules, with ``i`` = completed epochs (or iterations) ``0, 1, …`` and ``T`` = ``total_steps``:

* ``"seed"`` -- the formula exactly as printed in seed 000 (SBN §3.1)::

      β_i = β_target − (β_target − β_init) · i / T

  With the seed's ``β_init = 0.2``, ``β_target = 0.01`` it *rises* from 0.01 to 0.2, although the
  seed's text says "annealed from 0.2 to 0.01" -- the paper contradicts itself. Both are available:
  this schedule reproduces the printed formula, ``"linear"`` with explicit ends does either.
* ``"linear"`` -- ``β_i = start + (end − start) · min(i / T, 1)`` (``start=0.2, end=0.01`` is the
  text's decreasing version; ``"seed"`` equals ``"linear"`` with ``start=β_target, end=β_init``).
* ``"constant"`` -- ``β_i = start``.
* ``"cyclical"`` -- Fu et al. (2019): in each cycle of ``cycle_length`` steps, β goes linearly from
  ``start`` to ``end`` over the first ``ramp_fraction`` of the cycle, then stays at ``end``.
"""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine, Events
from monai.handlers import ParamSchedulerHandler
from monai.utils import StrEnum

from monai_bayes.utils.options import look_up

__all__ = ["KLAnnealingHandler", "KLSchedule", "kl_beta"]


class KLSchedule(StrEnum):
    """β schedules of :func:`kl_beta` (module docstring)."""

    SEED = "seed"
    LINEAR = "linear"
    CONSTANT = "constant"
    CYCLICAL = "cyclical"


def kl_beta(
    step: int,
    schedule: KLSchedule | str,
    total_steps: int,
    start: float = 0.2,
    end: float = 0.01,
    cycle_length: int | None = None,
    ramp_fraction: float = 0.5,
) -> float:
    """β at step ``step`` (0-based) of a schedule (see module docstring).

    For ``"seed"``, ``start`` is ``β_init`` and ``end`` is ``β_target`` of the printed formula.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    schedule = look_up("schedule", schedule, KLSchedule)
    if schedule == "seed":
        return end - (end - start) * step / total_steps
    if schedule == "linear":
        return start + (end - start) * min(step / total_steps, 1.0)
    if schedule == "constant":
        return start
    length = cycle_length or total_steps  # cyclical
    ramp = max(1.0, ramp_fraction * length)
    return start + (end - start) * min((step % length) / ramp, 1.0)


class KLAnnealingHandler(ParamSchedulerHandler):
    """Set the ELBO's β at the start of every epoch (or iteration) and log it.

    Parameters
    ----------
    loss
        an object with ``set_beta(float)`` (e.g. :class:`~monai_bayes.losses.ELBOLoss`), or a setter callable.
    schedule
        ``"seed"``, ``"linear"``, ``"constant"`` or ``"cyclical"`` (module docstring).
    total_steps
        ``T``; default: the trainer's ``max_epochs`` (or its total iterations when
        ``epoch_level=False``), read when attached.
    start, end
        β values (for ``"seed"``: ``β_init`` and ``β_target``).
    epoch_level
        update per epoch (default) or per iteration.
    cycle_length, ramp_fraction
        for ``"cyclical"``.

    Notes
    -----
    β is also stored in ``engine.state.metrics["kl_beta"]`` so that ``StatsHandler`` and
    ``TensorBoardStatsHandler`` record it.
    """

    def __init__(
        self,
        loss: object | Callable[[float], None],
        schedule: KLSchedule | str = KLSchedule.LINEAR,
        total_steps: int | None = None,
        start: float = 0.2,
        end: float = 0.01,
        epoch_level: bool = True,
        cycle_length: int | None = None,
        ramp_fraction: float = 0.5,
        name: str | None = None,
    ) -> None:
        schedule = look_up("schedule", schedule, KLSchedule).value
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        setter = loss if callable(loss) and not hasattr(loss, "set_beta") else getattr(loss, "set_beta", None)
        if setter is None:
            raise ValueError("loss must have a set_beta(float) method or be a callable setter.")
        self.schedule, self.start, self.end = schedule, float(start), float(end)
        self.total_steps = total_steps
        self.current_beta: float | None = None
        super().__init__(
            parameter_setter=setter,
            value_calculator=self._value,
            vc_kwargs={},
            epoch_level=epoch_level,
            name=name,
            event=Events.EPOCH_STARTED if epoch_level else Events.ITERATION_STARTED,  # type: ignore[arg-type]  # MONAI annotates str but attaches it as an ignite event
        )
        self._cycle_length, self._ramp_fraction = cycle_length, ramp_fraction

    def _total(self, engine: Engine) -> int:
        """``T``: ``total_steps`` or, by default, the run's epochs (iterations) -- known once it runs."""
        if self.total_steps is not None:
            return self.total_steps
        max_epochs = engine.state.max_epochs or 1
        return max_epochs if self.epoch_level else max_epochs * (engine.state.epoch_length or 1)

    def _value(self, current_step: int, total: int) -> float:
        # ignite counts epochs/iterations from 1 at *_STARTED; the schedules count completed steps
        return kl_beta(
            current_step - 1,
            self.schedule,
            total,
            self.start,
            self.end,
            self._cycle_length,
            self._ramp_fraction,
        )

    def __call__(self, engine: Engine) -> None:
        self._vc_kwargs["total"] = self._total(engine)
        super().__call__(engine)
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        self.current_beta = self._value(step, self._vc_kwargs["total"])
        engine.state.metrics["kl_beta"] = self.current_beta
        self.logger.debug(
            "KL weight beta = %.6g at %s %d", self.current_beta, "epoch" if self.epoch_level else "iteration", step
        )
