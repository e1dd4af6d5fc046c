"""One-line error summaries before framework tracebacks."""

from __future__ import annotations

import pytest

from monai_bayes.utils.errors import errors_reported_by_caller, summarize_errors


@summarize_errors("step one")
def _fails() -> None:
    try:
        raise ValueError("bad input: x.dcm\nsecond line")
    except ValueError as err:
        raise RuntimeError("Failed to evaluate the expression") from err


def test_summary_names_the_innermost_cause_once(capsys):
    with pytest.raises(RuntimeError), summarize_errors("outer"):
        _fails()
    err = capsys.readouterr().err
    assert err == "monai_bayes: error: step one: ValueError: bad input: x.dcm\n"


def test_no_summary_when_the_caller_reports(capsys):
    with errors_reported_by_caller(), pytest.raises(RuntimeError):
        _fails()
    assert capsys.readouterr().err == ""
    with pytest.raises(KeyboardInterrupt), summarize_errors("x"):
        raise KeyboardInterrupt
    assert capsys.readouterr().err == ""
