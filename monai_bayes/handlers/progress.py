"""A progress bar handler that MONAI engines can attach from a config (``attach(engine)`` only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine

from monai_bayes.utils.progress import show_progress

__all__ = ["ProgressBarHandler", "first_loss"]


def first_loss(output: Any) -> dict[str, float]:
    """``{"loss": value}`` from a MONAI trainer's output (a list of per-item dicts or one dict)."""
    item = output[0] if isinstance(output, list) else output
    value = item["loss"] if isinstance(item, dict) else item
    return {"loss": float(value)}


class ProgressBarHandler:
    """Ignite's tqdm :class:`~ignite.contrib.handlers.ProgressBar` with the options fixed at construction.

    Parameters
    ----------
    output_transform
        maps ``engine.state.output`` to a number or dict to display (e.g. :func:`first_loss`
        for trainers; ``None`` for evaluators).
    desc
        text in front of the bar.
    persist
        keep finished bars on screen.
    enabled
        ``True`` always shows the bar, ``False`` never; ``None`` (default) shows it only when standard
        error is a terminal. A bar redraws with carriage returns on every iteration, which piles up into
        one very long line in log files (CI, ``nohup``, Slurm); there the engines' own
        ``Epoch[n] Complete`` log lines report progress instead.
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] | None = None,
        desc: str | None = None,
        persist: bool = False,
        enabled: bool | None = None,
    ) -> None:
        self.output_transform = output_transform
        self.enabled = show_progress(enabled)
        self.bar = ProgressBar(persist=persist, desc=desc or "")

    def attach(self, engine: Engine) -> None:
        """Attach the bar to ``engine`` (nothing happens when the bar is disabled)."""
        if self.enabled:
            self.bar.attach(engine, output_transform=self.output_transform)
