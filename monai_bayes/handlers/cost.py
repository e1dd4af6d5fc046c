"""Training-cost accounting as a handler: parameters, FLOPs per training step, wall time per epoch."""

from __future__ import annotations

import time
from typing import Any

from ignite.engine import Engine, Events
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monai_bayes.cost import count_parameters
from monai_bayes.utils.atomic import atomic_write_json

__all__ = ["TrainingCostHandler"]


class TrainingCostHandler:
    """Record what training cost: parameter counts, FLOPs of one real training step, epoch times.

    The FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` around one whole
    training iteration (``flops_iteration``, default the 2nd, after warm-up): forward over all MC
    samples, loss, backward; ``total_flops`` = that × iterations per epoch × epochs run. Results are
    in :attr:`summary` and ``engine.state.training_cost``,
    and written as JSON to ``output_path`` when training completes.
    """

    def __init__(
        self, network: nn.Module | None = None, flops_iteration: int = 2, output_path: str | None = None
    ) -> None:
        self.network = network
        self.flops_iteration = flops_iteration
        self.output_path = output_path
        self.summary: dict[str, Any] = {}
        self._counter: FlopCounterMode | None = None
        self._epoch_start = 0.0
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _net(self, engine: Engine) -> nn.Module:
        return self.network if self.network is not None else engine.network  # type: ignore[attr-defined]  # MONAI workflows set .network; a plain ignite Engine needs network=

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self.summary = {"parameters": count_parameters(self._net(engine)), "epoch_seconds": [], "flops_per_step": None}
        engine.state.training_cost = self.summary  # type: ignore[attr-defined]  # ignite State takes run-defined attributes

    def _iteration_started(self, engine: Engine) -> None:
        if engine.state.iteration == min(self.flops_iteration, engine.state.epoch_length or self.flops_iteration):
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def _iteration_completed(self, engine: Engine) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.summary["flops_per_step"] = int(self._counter.get_total_flops())
            self._counter = None

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()

    def _epoch_completed(self, engine: Engine) -> None:
        self.summary["epoch_seconds"].append(time.perf_counter() - self._epoch_start)

    def _completed(self, engine: Engine) -> None:
        self.summary["parameters"] = count_parameters(self._net(engine))  # after any conversion
        self.summary["wall_seconds"] = time.perf_counter() - self._start
        self.summary["iterations_per_epoch"] = engine.state.epoch_length
        epochs = len(self.summary["epoch_seconds"])
        flops = self.summary["flops_per_step"]
        self.summary["total_flops"] = None if flops is None else flops * (engine.state.epoch_length or 0) * epochs
        if self.output_path is not None:
            atomic_write_json(self.output_path, self.summary)
