"""One progress-bar policy for the whole package: bars on a terminal, silence in log files.

A tqdm bar redraws with carriage returns on every step, which piles up into one very long line in
log files (CI, ``nohup``, Slurm). :func:`progress_bar` (loops in library code) and
:class:`~monai_bayes.handlers.ProgressBarHandler` (Ignite engines) therefore draw only when
standard error is a terminal, unless asked explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress_bar", "show_progress", "stderr_is_terminal"]

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` (where tqdm draws) is an interactive terminal.

    Returns
    -------
    bool
        ``True`` for a terminal, ``False`` for files, pipes and streams without ``isatty``.
    """
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def show_progress(enabled: bool | None) -> bool:
    """Whether a bar is drawn: ``True`` always, ``False`` never, ``None`` only on a terminal.

    Parameters
    ----------
    enabled : bool, optional
        The caller's wish.

    Returns
    -------
    bool
        The decision under the terminal-only policy.
    """
    return stderr_is_terminal() if enabled is None else bool(enabled)


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    enabled: bool | None = None,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) under the terminal-only policy.

    Parameters
    ----------
    iterable : Iterable, optional
        What to iterate over; ``None`` for a bar updated by hand (``bar.update(n)``).
    enabled : bool, optional
        ``True`` always draws, ``False`` never, ``None`` (default) only when standard error is a terminal.
    desc : str, optional
        Text in front of the bar.
    total : int, optional
        Expected number of steps (default: ``len(iterable)`` when it has one).
    unit : str
        Unit of a step (``"case"``, ``"file"``, ...).
    leave : bool
        Keep the finished bar on screen.
    **kwargs : Any
        Further ``tqdm`` options (e.g. ``dynamic_ncols``).

    Returns
    -------
    tqdm
        The bar (iterable, and usable as a context manager); a disabled bar draws nothing.
    """
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=not show_progress(enabled), **kwargs)
