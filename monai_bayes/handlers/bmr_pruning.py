"""Stochastic BMR (seed 002, §2.7) as an Ignite handler: prune with BMR every N epochs/iterations.

The seed trains the flat model to convergence, then alternates {BMR prune, optimise} for a number
of rounds (five). Attached to a trainer, :class:`BMRPruningHandler` runs
:func:`monai_bayes.reduction.bmr_prune` after ``first`` epochs (or iterations) and then every
``interval``, at most ``rounds`` times, on the trainer's optimizer, so pruned entries stay exactly 0
for the rest of the run. The library work lives in :mod:`monai_bayes.reduction`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_bayes.reduction import DEFAULT_K_MAX, BMRPruneResult, bmr_prune, enforce_prune_masks
from monai_bayes.utils.atomic import atomic_write_json

__all__ = ["BMRPruningHandler"]

logger = logging.getLogger(__name__)


class BMRPruningHandler:
    """Run a BMR pruning pass on ``network`` at regular points of a training run.

    Parameters
    ----------
    network : torch.nn.Module
        The flat mean-field network being trained (:func:`~monai_bayes.reduction.to_flat_bayes`).
    optimizer : torch.optim.Optimizer, optional
        Its optimizer; default: the engine's ``optimizer`` attribute (MONAI ``SupervisedTrainer``).
    first : int, optional
        Epochs (iterations) of training before the first pass; default ``interval``.
    interval : int
        Epochs (iterations) between passes, ≥ 1.
    rounds : int, optional
        Maximum number of passes (seed: 5); ``None``: no limit.
    epoch_level : bool
        Count epochs (default) or iterations.
    alpha0, beta0, k_max, threshold
        Options of :func:`~monai_bayes.reduction.bmr_masks`.
    report_path : str or os.PathLike, optional
        JSON file rewritten (atomically) after every pass: ``{"passes": [report after pass 1, ...]}``,
        each :meth:`~monai_bayes.reduction.PruneReport.as_dict` (fraction pruned per layer and total).

    Notes
    -----
    After each pass ``engine.state.metrics`` holds ``bmr_pruned_fraction`` (over the Bayesian
    layers' entries) for ``StatsHandler`` / TensorBoard; :attr:`history` keeps every pass's result.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        first: int | None = None,
        interval: int = 1,
        rounds: int | None = 5,
        epoch_level: bool = True,
        alpha0: float = 1.0,
        beta0: float = 1.0,
        k_max: int = DEFAULT_K_MAX,
        threshold: float = 0.5,
        report_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval!r}.")
        if first is not None and int(first) < 1:
            raise ValueError(f"first must be >= 1, got {first!r}.")
        if rounds is not None and int(rounds) < 1:
            raise ValueError(f"rounds must be >= 1 or None, got {rounds!r}.")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
        self.network = network
        self.optimizer = optimizer
        self.interval = int(interval)
        self.first = int(first) if first is not None else self.interval
        self.rounds = rounds
        self.epoch_level = epoch_level
        self.options: dict[str, Any] = {"alpha0": alpha0, "beta0": beta0, "k_max": k_max, "threshold": threshold}
        self.history: list[BMRPruneResult] = []
        self.report_path = report_path

    def attach(self, engine: Engine) -> None:
        """Register the pass on ``engine`` (``EPOCH_COMPLETED`` or ``ITERATION_COMPLETED``)."""
        engine.add_event_handler(Events.STARTED, self._started)
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event, self)

    def _optimizer(self, engine: Engine) -> torch.optim.Optimizer | None:
        return self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)

    def _started(self, engine: Engine) -> None:
        # a resumed run: masks loaded from the checkpoint must hold from the first step on
        enforce_prune_masks(self.network, self._optimizer(engine))

    def due(self, step: int) -> bool:
        """Whether a pass runs after epoch (iteration) ``step`` (1-based), given the passes done so far."""
        if self.rounds is not None and len(self.history) >= self.rounds:
            return False
        return step >= self.first and (step - self.first) % self.interval == 0

    def __call__(self, engine: Engine) -> None:
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        if not self.due(step):
            return
        result = bmr_prune(self.network, optimizer=self._optimizer(engine), **self.options)
        self.history.append(result)
        engine.state.metrics["bmr_pruned_fraction"] = result.report.fraction
        if self.report_path is not None:
            Path(self.report_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.report_path, {"passes": [r.report.as_dict() for r in self.history]})
        logger.info(
            "BMR pass %d at %s %d: %d of %d entries pruned (%.1f %%)",
            len(self.history),
            "epoch" if self.epoch_level else "iteration",
            step,
            result.report.pruned,
            result.report.entries,
            100 * result.report.fraction,
        )
