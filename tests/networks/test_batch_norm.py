"""BN recalibration for a chosen width: statistics = batch averages, nothing else changes; handler on an engine."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Engine
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.handlers import BNRecalibrationHandler
from monai_bayes.layers import NestedDropoutConv2d, nested_layers, sampling_mode
from monai_bayes.networks import extract_width, recalibrate_batch_norm, to_nested


def _batches(n: int, shape=(4, 1, 16, 16), seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(shape, generator=gen) * 2 + 1, "label": torch.zeros(shape)} for _ in range(n)]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1, norm="batch"), groups=4)


def test_running_mean_is_the_average_of_the_batch_means_at_that_width():
    torch.manual_seed(1)
    conv = NestedDropoutConv2d(1, 8, 3, padding=1, nested_groups=4, always_kept=1)
    net = nn.Sequential(conv, nn.BatchNorm2d(8)).train()
    data = _batches(3)
    recalibrate_batch_norm(net, data, width=2, mode="mean")
    with torch.no_grad(), sampling_mode(net, "mean"):
        conv.width = 2
        means = torch.stack([conv(b["image"]).mean(dim=(0, 2, 3)) for b in data])
        conv.width = None
    assert torch.allclose(net[1].running_mean, means.mean(0), atol=1e-5)
    assert int(net[1].num_batches_tracked) == 3
    assert net.training and net[1].momentum == 0.1 and conv.width is None and conv.sampling_mode == "sample"


def test_recalibration_changes_running_statistics_only():
    net = _net().train()
    params = {k: v.clone() for k, v in net.named_parameters()}
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    used = recalibrate_batch_norm(net, _batches(5), num_batches=2, width=2)
    assert used == 2
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
    changed = {k for k, v in net.named_buffers() if not torch.equal(v, buffers[k])}
    assert changed and all(
        k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for k in changed
    )
    assert all(layer.width is None and layer.training for _, layer in nested_layers(net))


def test_recalibrated_width_network_can_be_extracted():
    net = _net()
    recalibrate_batch_norm(net, _batches(2), width=1, mode="mean")
    net.eval()
    x = torch.randn(2, 1, 16, 16)
    sub = extract_width(net, 1).eval()
    with torch.no_grad(), sampling_mode(net, "mean"):
        for _, layer in nested_layers(net):
            layer.width = 1
        assert (sub(x) - net(x)).abs().max() <= 1e-5


def test_handler_sets_the_width_and_recalibrates_when_the_evaluator_starts():
    net = _net()
    before = net.model[0].conv.unit0.adn.N.running_mean.clone()
    handler = BNRecalibrationHandler(_batches(3), width=3, num_batches=2, network=net)
    evaluator = Engine(lambda engine, batch: None)
    handler.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert handler.batches_used == 2
    assert all(layer.width == 3 for _, layer in nested_layers(net))
    assert not torch.equal(before, net.model[0].conv.unit0.adn.N.running_mean)


def test_bad_input():
    net = _net()
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batch_norm(net, _batches(1), num_batches=0)
    with pytest.raises(ValueError, match="mode"):
        recalibrate_batch_norm(net, _batches(1), mode="width")
    with pytest.raises(ValueError, match=r"must be an int in \[1, 4\]"):
        recalibrate_batch_norm(net, _batches(1), width=9)
    with pytest.raises(ValueError, match="needs a nested network"):
        recalibrate_batch_norm(UNet(2, 1, 2, channels=(4, 8), strides=(2,), norm="batch"), _batches(1), width=1)
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_batch_norm(net, [])
    with pytest.raises(ValueError, match="event"):
        BNRecalibrationHandler(_batches(1), event="NOT_AN_EVENT")
    assert recalibrate_batch_norm(nn.Sequential(nn.Conv2d(1, 1, 1)), _batches(1)) == 0


def test_differs_from_torch_update_bn_only_where_documented():
    """Same statistics as torch.optim.swa_utils.update_bn without dropout; with dropout ours stays in eval."""
    from torch.optim.swa_utils import update_bn

    data = _batches(3, shape=(4, 2, 8, 8))
    images = [b["image"] for b in data]
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).eval()
    ours, theirs = copy.deepcopy(plain), copy.deepcopy(plain)
    recalibrate_batch_norm(ours, data)
    update_bn(images, theirs)
    assert torch.allclose(ours[1].running_mean, theirs[1].running_mean, atol=1e-6)
    assert torch.allclose(ours[1].running_var, theirs[1].running_var, atol=1e-6)
    with_dropout = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)).eval()
    ours, theirs = copy.deepcopy(with_dropout), copy.deepcopy(with_dropout)
    recalibrate_batch_norm(ours, data)
    torch.manual_seed(0)
    update_bn(images, theirs)
    with torch.no_grad():  # the statistics of the network as evaluated: dropout off
        expected = torch.stack([with_dropout[1](x).mean(dim=(0, 2, 3)) for x in images]).mean(0)
    assert torch.allclose(ours[2].running_mean, expected, atol=1e-5)
    assert not torch.allclose(theirs[2].running_mean, expected, atol=1e-3)  # update_bn ran with dropout on
    assert not theirs.training and not ours.training
