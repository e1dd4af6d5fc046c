"""ProgressBarHandler: drawn on a terminal, silent in log files unless asked for."""

from __future__ import annotations

import io

import pytest
from ignite.engine import Engine

from monai_bayes.handlers import ProgressBarHandler, first_loss


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _run_with_bar(monkeypatch: pytest.MonkeyPatch, tty: bool, enabled: bool | None) -> str:
    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    engine = Engine(lambda engine, batch: {"loss": float(batch)})
    ProgressBarHandler(output_transform=first_loss, desc="demo", enabled=enabled).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=1)
    return stream.getvalue()


@pytest.mark.parametrize(
    ("tty", "enabled", "drawn"),
    [(True, None, True), (False, None, False), (False, True, True), (True, False, False)],
)
def test_bar_drawn_only_when_wanted(monkeypatch: pytest.MonkeyPatch, tty: bool, enabled: bool | None, drawn: bool):
    out = _run_with_bar(monkeypatch, tty, enabled)
    assert ("demo" in out) is drawn
    if drawn:
        assert "loss=3" in out


def test_first_loss_reads_monai_trainer_outputs():
    assert first_loss([{"loss": 0.5}, {"loss": 0.7}]) == {"loss": 0.5}
    assert first_loss({"loss": 2}) == {"loss": 2.0}
    assert first_loss(1.5) == {"loss": 1.5}
