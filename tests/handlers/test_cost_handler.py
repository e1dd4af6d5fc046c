"""TrainingCostHandler: parameters, FLOPs of one real training step, epoch times, JSON output."""

from __future__ import annotations

import json

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_bayes.handlers import TrainingCostHandler
from monai_bayes.networks import to_full_bayes

BATCH, IN, OUT = 5, 6, 3


def _trainer(net: nn.Linear) -> Engine:
    x = torch.randn(BATCH, IN)

    def step(engine: Engine, batch: int) -> float:
        loss = net(x).square().sum()
        loss.backward()
        return float(loss.detach())

    engine = Engine(step)
    engine.network = net
    return engine


def test_flops_parameters_and_times(tmp_path):
    net = nn.Linear(IN, OUT)
    trainer = _trainer(net)
    handler = TrainingCostHandler(flops_iteration=2, output_path=str(tmp_path / "cost.json"))
    handler.attach(trainer)
    trainer.run(range(3), max_epochs=2)
    summary = trainer.state.training_cost
    # forward x @ Wᵀ: 2·B·IN·OUT; backward, weight gradient only (x needs no gradient): 2·B·IN·OUT
    assert summary["flops_per_step"] == 4 * BATCH * IN * OUT
    assert summary["total_flops"] == 4 * BATCH * IN * OUT * 3 * 2
    assert summary["iterations_per_epoch"] == 3
    assert summary["parameters"] == {"total": IN * OUT + OUT, "bayesian": 0, "deterministic": IN * OUT + OUT}
    assert len(summary["epoch_seconds"]) == 2 and all(t >= 0 for t in summary["epoch_seconds"])
    assert summary["wall_seconds"] >= sum(summary["epoch_seconds"])
    assert json.loads((tmp_path / "cost.json").read_text()) == json.loads(json.dumps(summary))


def test_parameters_are_recounted_after_a_conversion_during_training():
    net = nn.Linear(IN, OUT)
    trainer = _trainer(net)
    handler = TrainingCostHandler(network=net, flops_iteration=99)  # beyond the epoch: the last iteration
    handler.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda engine: to_full_bayes(net))
    trainer.run(range(2), max_epochs=1)
    n = IN * OUT + OUT
    assert trainer.state.training_cost["parameters"] == {"total": 2 * n, "bayesian": n, "deterministic": 0}
    assert trainer.state.training_cost["flops_per_step"] is not None  # counted on iteration 2 of 2
