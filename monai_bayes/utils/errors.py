"""One-line error summaries ahead of framework tracebacks.

When a bundle step fails inside ``python -m monai.bundle run``, MONAI wraps the error of a config
expression in its own ("Failed to evaluate ..."), and Python prints both tracebacks, the project's
message buried between them. :func:`summarize_errors` writes the project's message as one line
*before* the exception propagates, so it is the first thing a user reads:

    monai_bayes: error: pacs run_pipeline: InvalidInputError: <file>: expected a DICOM UID ...

Front ends that print their own one-line message (the ``monai-bayes`` CLI) run under
:func:`errors_reported_by_caller`, which turns the summary off; each exception is summarised once
even when several wrapped layers see it.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterator
from typing import Any, Literal

__all__ = ["errors_reported_by_caller", "summarize_errors", "summary_line"]

_CALLER_REPORTS: contextvars.ContextVar[bool] = contextvars.ContextVar("monai_bayes_caller_reports", default=False)
_REPORTED_ATTR = "_monai_bayes_summarized"


def summary_line(context: str, err: BaseException) -> str:
    """The one-line summary of ``err`` raised in ``context``.

    Parameters
    ----------
    context : str
        What was running (e.g. ``"bundle step train"``).
    err : BaseException
        The error.

    Returns
    -------
    str
        ``"monai_bayes: error: <context>: <Type>: <first line of the message>"`` of the innermost
        cause (a framework's wrapper names ours as its ``__cause__``).
    """
    seen: set[int] = set()
    while err.__cause__ is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"monai_bayes: error: {context}: {type(err).__name__}: {message}".rstrip(": ")


@contextlib.contextmanager
def errors_reported_by_caller() -> Iterator[None]:
    """Within this block :func:`summarize_errors` prints nothing (the caller prints its own line)."""
    token = _CALLER_REPORTS.set(True)
    try:
        yield
    finally:
        _CALLER_REPORTS.reset(token)


class summarize_errors(contextlib.ContextDecorator):  # noqa: N801 - used like a function / decorator
    """Context manager and decorator: on an exception, print :func:`summary_line` to stderr, then re-raise.

    Parameters
    ----------
    context : str
        What is running, for the summary.
    """

    def __init__(self, context: str) -> None:
        self.context = context

    def __enter__(self) -> summarize_errors:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception) or _CALLER_REPORTS.get():
            return False
        if getattr(exc, _REPORTED_ATTR, False):
            return False
        print(summary_line(self.context, exc), file=sys.stderr, flush=True)
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _REPORTED_ATTR, True)
        return False
