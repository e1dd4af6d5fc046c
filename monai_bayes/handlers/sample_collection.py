"""SG-MCMC sample collection as an Ignite handler (burn-in, thinning, cycle-end collection).

:class:`SampleCollectionHandler` calls :meth:`monai_bayes.mcmc.SampleCollector.step` after every
iteration (the 0-based index of the optimiser step just taken is ``engine.state.iteration - 1``),
steps the cyclical schedule if it was given one, and at the end of the run writes the samples with
:func:`monai_bayes.networks.save_samples` (atomically). The library work lives in :mod:`monai_bayes.mcmc`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ignite.engine import Engine, Events
from torch import nn

from monai_bayes.mcmc import CyclicalLR, SampleCollector
from monai_bayes.networks.samples import save_samples

__all__ = ["SampleCollectionHandler"]

logger = logging.getLogger(__name__)


class SampleCollectionHandler:
    """Collect posterior samples from a trainer whose optimiser is an SG-MCMC sampler.

    Parameters
    ----------
    network : nn.Module
        The network the trainer updates.
    output_path : str or os.PathLike, optional
        Where the samples are written when the run completes (``None``: keep them in memory only).
    scheduler : CyclicalLR, optional
        The cyclical schedule (cSGLD / cSGHMC): stepped after every iteration, and its cycle length and
        exploration fraction make the collection cycle-end collection. ``None``: constant step size.
    burn_in : int
        Optimiser steps discarded at the start.
    thinning : int
        Steps between two collected samples.
    samples_per_cycle : int
        Samples at the end of each cycle (cyclical schedule only).
    max_samples : int, optional
        Stop collecting after this many.
    """

    def __init__(
        self,
        network: nn.Module,
        output_path: str | os.PathLike | None = None,
        scheduler: CyclicalLR | None = None,
        burn_in: int = 0,
        thinning: int = 1,
        samples_per_cycle: int = 1,
        max_samples: int | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.collector = SampleCollector(
            network,
            burn_in=burn_in,
            thinning=thinning,
            cycle_length=scheduler.cycle_length if scheduler is not None else None,
            exploration_fraction=scheduler.exploration_fraction if scheduler is not None else 0.8,
            samples_per_cycle=samples_per_cycle,
            max_samples=max_samples,
        )
        self.output_path = Path(output_path) if output_path is not None else None

    def attach(self, engine: Engine) -> None:
        """Collect after every iteration and save when the run completes.

        Parameters
        ----------
        engine : Engine
            The trainer.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _iteration_completed(self, engine: Engine) -> None:
        if self.collector.step(engine.state.iteration - 1):
            logger.debug("collected posterior sample %d at step %d", len(self.collector.states), engine.state.iteration)
        if self.scheduler is not None:
            self.scheduler.step()

    def _completed(self, engine: Engine) -> None:
        if self.output_path is None:
            return
        samples = self.collector.samples()
        save_samples(samples, self.output_path)
        logger.info("saved %d posterior samples (steps %s) to %s", len(samples), self.collector.steps, self.output_path)
