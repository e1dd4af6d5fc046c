"""Shared-prefix Monte Carlo (issue 22): same samples as the stacked pass, prefix run once, MAC split."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet
from torch import nn

from monai_bayes import to_mc_dropout, to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import draw_noise, fixed_noise, mc_samples, sampling_mode, select_noise
from monai_bayes.layers.shared_prefix import MCCostSplit, mc_cost_split, shared_prefix_forward

_CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _network(name: str, dims: int) -> nn.Module:
    if name == "UNet":
        return UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    if name == "BasicUNet":
        return BasicUNet(dims, 1, 2, features=(4, 4, 8, 8, 16, 4))
    if name == "SegResNet":
        return SegResNet(dims, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1, 2), blocks_up=(1, 1))
    return DynUNet(dims, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2])


def _last_convs_bayesian(net: nn.Module, n: int) -> nn.Module:
    """Partial Bayes with every weight of the last ``n`` conv modules (in definition order) Bayesian."""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, _CONV_TYPES)][-n:]
    masks = {f"{name}.weight": torch.ones_like(m.weight, dtype=torch.bool) for name, m in convs}
    return to_partial_bayes(net, masks, sigma_init=0.05).eval()


NETWORKS = [(name, dims) for name in ("UNet", "BasicUNet", "SegResNet", "DynUNet") for dims in (2, 3)]


@pytest.mark.parametrize(("name", "dims"), NETWORKS)
@torch.no_grad()
def test_shared_prefix_equals_stacked_pass(name, dims):
    torch.manual_seed(0)
    net = _last_convs_bayesian(_network(name, dims).double().eval(), 3)
    size = (32 if name == "BasicUNet" else 16,) * dims  # BasicUNet halves 4 times: keep > 1 voxel
    x = torch.randn(2 if dims == 2 else 1, 1, *size, dtype=torch.float64)
    kw = {"seed": 5, "activation": None, "chunk_size": 3}
    stacked = MonteCarloInferer(5, shared_prefix=False, **kw)(x, net)
    shared = MonteCarloInferer(5, shared_prefix=True, **kw)(x, net)
    torch.testing.assert_close(shared, stacked, rtol=0, atol=1e-12)
    assert (stacked[:, 0] - stacked[:, 1]).abs().max() > 1e-3, "samples must differ"
    # and both equal S separate forward passes with the same noise
    noise = draw_noise(net, 5, torch.Generator().manual_seed(5))
    with fixed_noise(net, select_noise(noise, 4)):
        torch.testing.assert_close(shared[:, 4], net(x), rtol=0, atol=1e-12)
    split = mc_cost_split(net, x)
    assert split.prefix_macs > 0 and split.suffix_macs > 0, "the last 3 convs leave a non-empty prefix"


@pytest.mark.parametrize("name", ["UNet", "SegResNet"])
@torch.no_grad()
def test_shared_prefix_sliding_window_3d(name):
    torch.manual_seed(1)
    net = _last_convs_bayesian(_network(name, 3).double().eval(), 2)
    x = torch.randn(1, 1, 24, 20, 16, dtype=torch.float64)
    window = SlidingWindowInferer((16, 16, 16), sw_batch_size=2, overlap=0.25)
    kw = {"seed": 2, "activation": None, "inferer": window}
    stacked = MonteCarloInferer(4, chunk_size=4, shared_prefix=False, **kw)(x, net)
    shared = MonteCarloInferer(4, chunk_size=2, shared_prefix=True, **kw)(x, net)
    assert shared.shape == (1, 4, 2, 24, 20, 16)
    torch.testing.assert_close(shared, stacked, rtol=0, atol=1e-12)


@torch.no_grad()
def test_global_selection_and_mc_dropout_equal():
    torch.manual_seed(2)
    # every weight Bayesian: the first conv is stochastic, the prefix is empty
    full = to_partial_bayes(UNet(2, 1, 2, channels=(4, 8), strides=(2,)).double().eval(), "all")
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    a = MonteCarloInferer(4, seed=0, chunk_size=4, shared_prefix=False, activation=None)(x, full)
    b = MonteCarloInferer(4, seed=0, chunk_size=4, shared_prefix=True, activation=None)(x, full)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert mc_cost_split(full, x).prefix_macs == 0
    # MC dropout draws from the global RNG: same draw shapes and order, so seeded calls agree too
    drop = to_mc_dropout(UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval(), 0.3)
    x = torch.randn(2, 1, 16, 16)
    a = MonteCarloInferer(4, seed=7, chunk_size=2, shared_prefix=False)(x, drop)
    b = MonteCarloInferer(4, seed=7, chunk_size=2, shared_prefix=True)(x, drop)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 0], a[:, 1])


class _Counting(nn.Module):
    """conv -> (stochastic) conv, with a skip that adds the first activation to the output."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(1, 4, 3, padding=1)
        self.post = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        h = self.pre(x)
        return self.head(torch.relu(self.post(h)) + h)


@torch.no_grad()
def test_prefix_runs_once_and_mac_split_by_hand():
    torch.manual_seed(3)
    net = _Counting().eval()
    pb = to_partial_bayes(net, {"post.weight": torch.ones_like(net.post.weight, dtype=torch.bool)})
    x = torch.randn(2, 1, 8, 8)
    S = 3
    noise = draw_noise(pb, S, torch.Generator().manual_seed(0))
    with sampling_mode(pb, "sample"), mc_samples(pb, S), fixed_noise(pb, noise):
        shared = shared_prefix_forward(pb, x, S)
        assert pb.batches == [2], "the prefix saw the batch of 2, not 3 x 2"
        stacked = pb(torch.cat([x] * S))
    torch.testing.assert_close(shared, stacked)
    # MACs by hand, batch 2: pre 8·8·4 outputs × 1·9; post 8·8·4 × 4·9; head: 8·8·4 inputs × 2·2·2
    split = mc_cost_split(pb, x)
    assert split == MCCostSplit(prefix_macs=2 * 256 * 9, suffix_macs=2 * (256 * 36 + 256 * 8))
    expected = (split.prefix_macs + 8 * split.suffix_macs) / (8 * split.total_macs)
    assert split.predicted_cost(8) == pytest.approx(expected)
    assert split.predicted_cost(8, shared_prefix=False) == 1.0


class _MixesBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(1, 2, 1)
        self.post = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return self.post(h) + h.sum(0, keepdim=True)  # a batch reduction of a shared activation


@torch.no_grad()
def test_batch_mixing_network_is_refused():
    plain = _MixesBatch().eval()
    net = to_partial_bayes(plain, {"post.weight": torch.ones_like(plain.post.weight, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shared_prefix=False"):
        MonteCarloInferer(2, chunk_size=2, shared_prefix=True)(torch.randn(3, 1, 4, 4), net)
