"""KL annealing schedules (issue 3, point 3)."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from monai_bayes.handlers import KLAnnealingHandler, kl_beta


class _Recorder:
    def __init__(self) -> None:
        self.beta = None

    def set_beta(self, beta: float) -> None:
        self.beta = beta


def _run(handler: KLAnnealingHandler, loss: _Recorder, epochs: int, epoch_length: int = 3) -> list[float]:
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    seen: list[float] = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(loss.beta))
    engine.run(range(epoch_length), max_epochs=epochs)
    return seen


def test_seed_formula_exactly_as_printed():
    loss = _Recorder()
    epochs = 10
    seen = _run(KLAnnealingHandler(loss, schedule="seed", start=0.2, end=0.01), loss, epochs)
    beta_init, beta_target = 0.2, 0.01
    for epoch_i in range(epochs):  # every iteration of epoch i uses β_i
        expected = beta_target - (beta_target - beta_init) * (epoch_i / epochs)
        assert seen[3 * epoch_i : 3 * epoch_i + 3] == [pytest.approx(expected, abs=1e-15)] * 3
    assert seen[0] == pytest.approx(0.01) and seen[-1] > seen[0], "as printed, the formula rises from 0.01"


def test_linear_decreasing_matches_the_text():
    loss = _Recorder()
    seen = _run(KLAnnealingHandler(loss, schedule="linear", start=0.2, end=0.01), loss, 5, epoch_length=1)
    assert seen == pytest.approx([0.2 + (0.01 - 0.2) * i / 5 for i in range(5)])
    assert seen == sorted(seen, reverse=True)


def test_constant_cyclical_and_iteration_level():
    loss = _Recorder()
    assert _run(KLAnnealingHandler(loss, schedule="constant", start=0.01), loss, 3, 1) == [0.01] * 3
    cyc = [kl_beta(i, "cyclical", 100, start=0.0, end=1.0, cycle_length=4, ramp_fraction=0.5) for i in range(8)]
    assert cyc == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0])
    loss = _Recorder()
    handler = KLAnnealingHandler(loss, schedule="linear", start=1.0, end=0.0, epoch_level=False, total_steps=4)
    assert _run(handler, loss, 2, epoch_length=2) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_beta_is_logged_in_metrics():
    loss = _Recorder()
    engine = Engine(lambda e, b: None)
    KLAnnealingHandler(loss, schedule="constant", start=0.3).attach(engine)
    engine.run([0], max_epochs=1)
    assert engine.state.metrics["kl_beta"] == 0.3


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"(?s)schedule: .*'cosine'(?=.*'cyclical')"):
        KLAnnealingHandler(_Recorder(), schedule="cosine")
    with pytest.raises(ValueError, match="set_beta"):
        KLAnnealingHandler(object())
