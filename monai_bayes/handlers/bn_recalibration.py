"""Ignite glue for batch-norm recalibration at a nested width (seed 001 §5.1).

:class:`BNRecalibrationHandler` runs :func:`monai_bayes.networks.recalibrate_batch_norm` from an
Ignite / MONAI engine (by default when an evaluator starts), so a bundle can evaluate a width
without code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ignite.engine import Engine, Events
from monai.engines.utils import default_prepare_batch
from torch import nn

from monai_bayes.layers.base import SAMPLING_MODES
from monai_bayes.layers.nested import set_nested_width
from monai_bayes.networks.batch_norm import recalibrate_batch_norm

__all__ = ["BNRecalibrationHandler"]


class BNRecalibrationHandler:
    """Recalibrate batch-norm statistics for a nested width when an engine event fires.

    Attach it to the evaluator that scores width ``w``: on ``Events.STARTED`` (default) it fixes the
    nested layers of ``network`` to ``width`` (if given; the width stays set, the statistics are only
    valid for it) and calls :func:`recalibrate_batch_norm` with the training ``data``.

    Parameters
    ----------
    data
        training batches (e.g. the train ``DataLoader`` of the bundle).
    width
        number of kept groups, or ``None`` to keep the network's current width.
    num_batches
        batches per recalibration (default: one pass over ``data``).
    mode
        ``"sample"`` or ``"mean"``, see :func:`recalibrate_batch_norm`.
    network
        defaults to ``engine.network``.
    event
        name of the Ignite event to run on (``"STARTED"``, ``"EPOCH_STARTED"``, ...).
    prepare_batch
        defaults to the engine's ``prepare_batch`` or MONAI's default.
    """

    def __init__(
        self,
        data: Iterable[Any],
        width: int | None = None,
        num_batches: int | None = None,
        mode: str = "sample",
        network: nn.Module | None = None,
        event: str = "STARTED",
        prepare_batch: Callable[..., Any] | None = None,
    ) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}.")
        if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
            raise ValueError(f"num_batches must be a positive int or None, got {num_batches!r}.")
        try:
            self.event = Events[event.upper()]
        except KeyError:
            raise ValueError(f"event must name an Ignite event such as 'STARTED', got {event!r}.") from None
        self.data = data
        self.width = width
        self.num_batches = num_batches
        self.mode = mode
        self.network = network
        self.prepare_batch = prepare_batch
        self.batches_used = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        network = self.network if self.network is not None else engine.network  # type: ignore[attr-defined]  # MONAI workflows set .network; a plain ignite Engine needs network=
        prepare = self.prepare_batch or getattr(engine, "prepare_batch", None) or default_prepare_batch
        if self.width is not None:
            set_nested_width(network, self.width)
        device = getattr(engine.state, "device", None)
        self.batches_used = recalibrate_batch_norm(
            network,
            self.data,
            num_batches=self.num_batches,
            mode=self.mode,
            device=device,
            prepare_batch=prepare,
        )
