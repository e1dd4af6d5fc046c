"""LRScheduleHandler: the bundles' lr_schedule setting against the closed-form cosine decay."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from monai_bayes.bundle.overrides import SETTING_RULES
from monai_bayes.handlers import LRScheduleHandler


def _trainer(optimizer: torch.optim.Optimizer, network: torch.nn.Module, epochs: int, handler: LRScheduleHandler):
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(2)]
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        train_handlers=[handler],
    )


def _rates_after_each_epoch(schedule: str, epochs: int) -> list[list[float]]:
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 1)
    groups = [{"params": [network.weight]}, {"params": [network.bias], "lr": 0.5}]  # two groups, two base rates
    optimizer = torch.optim.SGD(groups, lr=0.1)
    trainer = _trainer(optimizer, network, epochs, LRScheduleHandler(schedule, optimizer))
    rates: list[list[float]] = []
    # registered after the schedule's own handler, so it sees the rate set for the next epoch
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: rates.append([g["lr"] for g in optimizer.param_groups]))
    trainer.run()
    return rates


def test_cosine_follows_the_closed_form_in_every_group():
    epochs = 5
    rates = _rates_after_each_epoch("cosine", epochs)
    for e, (weight_lr, bias_lr) in enumerate(rates, start=1):
        factor = (1 + math.cos(math.pi * e / epochs)) / 2
        assert weight_lr == pytest.approx(0.1 * factor, abs=1e-12)
        assert bias_lr == pytest.approx(0.5 * factor, abs=1e-12)
    assert rates[-1] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_constant_keeps_the_rates():
    assert _rates_after_each_epoch("constant", 3) == [[0.1, 0.5]] * 3


def test_unknown_schedule_names_the_setting():
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr_schedule"):
        LRScheduleHandler("cosin", optimizer)
    assert SETTING_RULES["lr_schedule"]("cosine") is None
    assert "constant" in SETTING_RULES["lr_schedule"]("linear")
