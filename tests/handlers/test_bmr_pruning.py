"""BMRPruningHandler: passes at the configured points, on the trainer's optimizer, zeros kept (issue 17)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn

from monai_bayes.handlers import BMRPruningHandler
from monai_bayes.layers import PartialBayesLayer
from monai_bayes.losses import ELBOLoss
from monai_bayes.reduction import MASK_SUFFIX, to_flat_bayes


def _trainer(net: nn.Module, epochs: int, handler: BMRPruningHandler) -> SupervisedTrainer:
    gen = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(2, 1, 8, 8, generator=gen)} for _ in range(3)]
    for item in data:
        item["label"] = (item["image"] > 0).long()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05)
    elbo = ELBOLoss(net, "ce", beta=1.0, kl_reduction=3e3)
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=elbo,
        train_handlers=[handler],
    )


def _flat_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)  # μ̂ = w / γ₀ of order 0.1–1.5 against σ̂ = 0.5: some weights are pruned, some kept
    return to_flat_bayes(net, sigma_init=0.05)


def test_passes_run_at_first_then_every_interval_up_to_rounds():
    handler = BMRPruningHandler(_flat_net(), first=2, interval=3, rounds=2)
    assert [s for s in range(1, 12) if handler.due(s)] == [2, 5, 8, 11]  # before any pass ran
    net = _flat_net()
    handler = BMRPruningHandler(net, first=2, interval=3, rounds=2)
    epochs_seen: list[int] = []
    trainer = _trainer(net, 9, handler)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs_seen.append(len(handler.history)))
    trainer.run()
    assert epochs_seen == [0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert trainer.state.metrics["bmr_pruned_fraction"] == handler.history[-1].report.fraction
    assert handler.history[-1].report.pruned >= handler.history[0].report.pruned > 0
    # pruned entries are exactly zero after all the later AdamW steps (weight decay included)
    for module in net.modules():
        if isinstance(module, PartialBayesLayer):
            for pname in ("weight", "bias"):
                mask = getattr(module, pname + MASK_SUFFIX)
                assert torch.count_nonzero(getattr(module, pname)[~mask]) == 0


def test_iteration_level_and_validation():
    net = _flat_net()
    handler = BMRPruningHandler(net, interval=2, rounds=None, epoch_level=False)
    _trainer(net, 2, handler).run()  # 6 iterations → passes after iterations 2, 4, 6
    assert len(handler.history) == 3
    for bad in ({"interval": 0}, {"first": 0}, {"rounds": 0}, {"threshold": 0.0}):
        with pytest.raises(ValueError):
            BMRPruningHandler(net, **bad)
