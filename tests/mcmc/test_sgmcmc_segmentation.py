"""cSGHMC from a trained segmentation net keeps its accuracy when ``N`` counts voxels (issue 19).

A tiny MONAI UNet learns to segment noisy disks (Adam); cSGHMC then samples from it with the bundle's
defaults (lr 0.01, momentum 0.9, prior precision 1, T = 1). The reference is the deterministic start's
Dice on held-out images (computed directly from the thresholded softmax). With ``N`` = images × voxels
(the likelihood of a voxel-mean loss, ``terms_per_item=voxels_per_item(...)``) every collected sample and
the MC predictive keep that Dice; with ``N`` = images (the bug the LIDC bundle had: Dice 0.45 → 0.04) the
noise variance is 256× too large and the samples lose accuracy -- the second test shows this toy detects it.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from monai_bayes.mcmc import CyclicalLR, SampleCollector, build_sampler, voxels_per_item

SIDE, ITEMS, STEPS_PER_CYCLE, CYCLES = 16, 8, 40, 2


def _disks(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(SIDE * 1.0), torch.arange(SIDE * 1.0), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * 8 + 4
    radius = torch.rand(n, generator=g) * 2 + 2.5
    inside = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2 <= radius[:, None, None] ** 2
    return (inside.float() + 0.5 * torch.randn(n, SIDE, SIDE, generator=g))[:, None], inside.long()


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    train, test = _disks(ITEMS, g), _disks(32, g)
    net = UNet(2, 1, 2, (4, 8), (2,), num_res_units=0, norm="batch")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(train[0]), train[1]).backward()
        opt.step()
    return net, train, test, {k: v.clone() for k, v in net.state_dict().items()}


def _dice(net: torch.nn.Module, test: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, torch.Tensor]:
    net.eval()
    with torch.no_grad():
        prob = net(test[0]).softmax(1)[:, 1]
    net.train()
    return _dice_of(prob, test[1]), prob


def _dice_of(prob: torch.Tensor, target: torch.Tensor) -> float:
    pred, truth = prob >= 0.5, target.bool()
    return (2 * (pred & truth).sum() / (pred.sum() + truth.sum())).item()


def _csghmc_samples(trained, terms_per_item: int) -> tuple[float, list[float], float]:
    net, train, test, state = trained
    net.load_state_dict(state)
    sampler = build_sampler(
        net,
        "sghmc",
        lr=0.01,
        dataset_size=ITEMS,
        terms_per_item=terms_per_item,
        generator=torch.Generator().manual_seed(1),
    )
    schedule = CyclicalLR(sampler, cycle_length=STEPS_PER_CYCLE, exploration_fraction=0.5)
    collector = SampleCollector(net, cycle_length=STEPS_PER_CYCLE, exploration_fraction=0.5, samples_per_cycle=2)
    g = torch.Generator().manual_seed(2)
    for k in range(CYCLES * STEPS_PER_CYCLE):
        batch = torch.randint(0, ITEMS, (4,), generator=g)
        sampler.zero_grad()
        torch.nn.functional.cross_entropy(net(train[0][batch]), train[1][batch]).backward()
        sampler.step()
        collector.step(k)
        schedule.step()
    probs, dices = [], []
    for sample in collector.states:
        net.load_state_dict(sample)
        d, p = _dice(net, test)
        dices.append(d)
        probs.append(p)
    net.load_state_dict(state)
    return _dice(net, test)[0], dices, _dice_of(torch.stack(probs).mean(0), test[1])


def test_voxels_per_item_reads_the_label_shape():
    assert voxels_per_item([{"label": torch.zeros(3, 5, 7)}]) == 35
    with pytest.raises(ValueError, match="empty"):
        voxels_per_item([])
    with pytest.raises(ValueError, match="terms_per_item"):
        build_sampler(torch.nn.Linear(2, 2), lr=0.1, dataset_size=4, terms_per_item=0)


def test_voxel_likelihood_samples_keep_the_deterministic_dice(trained):
    terms = voxels_per_item([{"label": trained[1][1][:1]}])
    assert terms == SIDE * SIDE
    start, samples, predictive = _csghmc_samples(trained, terms)
    assert start > 0.85  # the deterministic start segments
    assert len(samples) == 2 * CYCLES
    assert min(samples) >= start - 0.03 and predictive >= start - 0.02


def test_image_count_likelihood_loses_accuracy(trained):
    """The pre-fix scaling (``N`` = images): the toy detects it."""
    start, samples, _ = _csghmc_samples(trained, 1)
    assert min(samples) < start - 0.05
