"""SampleCollectionHandler: cycle-end collection on an Ignite engine, the schedule stepped, samples written."""

from __future__ import annotations

import math

import torch
from ignite.engine import Engine
from torch import nn

from monai_bayes.handlers import SampleCollectionHandler
from monai_bayes.mcmc import SGHMC, CyclicalLR
from monai_bayes.networks import load_samples


def test_handler_collects_at_cycle_ends_and_saves(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = SGHMC(net.parameters(), lr=0.1, dataset_size=20)
    schedule = CyclicalLR(opt, cycle_length=5, exploration_fraction=0.4)
    handler = SampleCollectionHandler(net, tmp_path / "samples.pt", scheduler=schedule, samples_per_cycle=2)
    seen: list[tuple[float, bool, torch.Tensor]] = []

    def step(engine, batch):
        group = opt.param_groups[0]
        opt.zero_grad()
        net(batch).pow(2).mean().backward()
        opt.step()
        seen.append((group["lr"], group["add_noise"], net.weight.detach().clone()))

    engine = Engine(step)
    handler.attach(engine)
    engine.run([torch.randn(4, 3)] * 5, max_epochs=3)  # 15 steps = 3 cycles
    assert handler.collector.steps == [3, 4, 8, 9, 13, 14]  # the last 2 steps of each 5-step cycle
    assert [lr for lr, _, _ in seen] == [0.1 / 2 * (math.cos(math.pi * (k % 5) / 5) + 1) for k in range(15)]
    assert [noise for _, noise, _ in seen] == [(k % 5) >= 2 for k in range(15)]
    samples = load_samples(tmp_path / "samples.pt")
    assert len(samples) == 6
    for i, k in enumerate(handler.collector.steps):
        assert torch.equal(samples.state_dict(i)["weight"], seen[k][2])
