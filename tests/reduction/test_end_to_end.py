"""Stochastic BMR end to end on tiny synthetic 2D segmentation data: sparsity and Dice (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.synthetic import create_test_image_2d
from monai.metrics import DiceMetric
from monai.networks.nets import UNet

from monai_bayes.layers import sampling_mode
from monai_bayes.reduction import MASK_SUFFIX, prune_report
from monai_bayes.workflows import OptimizerSettings, train_bmr, train_deterministic


def _items(n: int, seed: int, size: int = 32) -> list[dict[str, torch.Tensor]]:
    """MONAI's synthetic test images: noisy circles and their masks."""
    items = []
    for i in range(n):
        image, label = create_test_image_2d(
            size,
            size,
            num_objs=2,
            rad_max=6,
            rad_min=3,
            noise_max=0.3,
            random_state=np.random.RandomState(seed * 1000 + i),
        )
        items.append({"image": torch.as_tensor(image)[None].float(), "label": torch.as_tensor(label > 0)[None].long()})
    return items


def _dice(net: torch.nn.Module, items: list[dict[str, torch.Tensor]]) -> float:
    metric = DiceMetric(include_background=False)
    net.eval()
    with torch.no_grad(), sampling_mode(net, "mean"):
        for item in items:
            pred = net(item["image"][None]).argmax(1, keepdim=True)
            label = item["label"][None]
            metric(torch.cat([1 - pred, pred], 1), torch.cat([1 - label, label], 1))
    return float(metric.aggregate())


@pytest.mark.slow
def test_stochastic_bmr_prunes_most_weights_and_keeps_dice():
    torch.manual_seed(0)
    train, test = _items(48, seed=0), _items(16, seed=1)
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)
    net = UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    opt = OptimizerSettings(name="adam", lr=5e-3, weight_decay=0.0)
    train_deterministic(net, loader, max_epochs=15, optimizer=opt, progress=False, device="cpu")
    det_dice = _dice(net, test)
    assert det_dice > 0.7, f"the deterministic start must learn the task (Dice {det_dice:.3f})"
    result = train_bmr(
        net,
        loader,
        flat_epochs=4,
        rounds=3,
        epochs_per_round=2,
        dataset_size=len(train) * 32 * 32,  # the CE is a mean over voxels: one likelihood term per voxel
        optimizer=OptimizerSettings(name="adam", lr=2e-3, weight_decay=0.0, rho_lr=0.05),
        progress=False,
        device="cpu",
    )
    assert len(result.passes) == 3
    fractions = [r.fraction for r in result.passes]
    assert fractions == sorted(fractions), "passes only add pruned entries"
    assert result.report.fraction >= 0.5, f"BMR pruned only {result.report.fraction:.3f}"
    bmr_dice = _dice(result.network, test)
    assert bmr_dice >= det_dice - 0.05, f"Dice fell from {det_dice:.3f} to {bmr_dice:.3f}"
    for name, buf in result.network.named_buffers():
        if name.endswith(MASK_SUFFIX):
            param = result.network.get_parameter(name[: -len(MASK_SUFFIX)])
            assert torch.count_nonzero(param[~buf]) == 0
    assert prune_report(result.network).pruned == result.report.pruned
