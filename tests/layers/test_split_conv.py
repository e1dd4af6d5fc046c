"""Split convolution after a skip concatenation (issue 22): shared channels once, same outputs as the stacked pass."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from monai_bayes import to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.inferers.planning import MCPlan, plan_candidates
from monai_bayes.layers import draw_noise, fixed_noise, mc_samples, sampling_mode
from monai_bayes.layers import shared_prefix as sp
from monai_bayes.layers.shared_prefix import MCCostSplit, mc_cost_split, shared_prefix_forward

_CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@pytest.fixture
def modes(monkeypatch: pytest.MonkeyPatch) -> list[sp.SharedPrefixMode]:
    """Every :class:`SharedPrefixMode` created during the test (to read its counters)."""
    created: list[sp.SharedPrefixMode] = []
    init = sp.SharedPrefixMode.__init__

    def recording_init(self: sp.SharedPrefixMode, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        created.append(self)

    monkeypatch.setattr(sp.SharedPrefixMode, "__init__", recording_init)
    return created


def _middle_conv_bayesian(net: nn.Module) -> nn.Module:
    """Every weight of the conv in the middle of the definition order Bayesian: deterministic decoder convs
    after it read concatenations of shared skips and per-sample activations."""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, _CONV_TYPES)]
    name, conv = convs[len(convs) // 2]
    return to_partial_bayes(net, {f"{name}.weight": torch.ones_like(conv.weight, dtype=torch.bool)}, sigma_init=0.05)


def _network(name: str, dims: int) -> nn.Module:
    if name == "UNet":
        return UNet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    return BasicUNet(dims, 1, 2, features=(4, 4, 8, 8, 16, 4))


@pytest.mark.parametrize(("name", "dims"), [(n, d) for n in ("UNet", "BasicUNet") for d in (2, 3)])
@torch.no_grad()
def test_split_conv_equals_stacked_pass_and_is_taken(name, dims, modes):
    torch.manual_seed(0)
    net = _middle_conv_bayesian(_network(name, dims).double().eval()).eval()
    size = (32, 16, 16)[:dims] if name == "BasicUNet" else (16,) * dims  # BasicUNet halves 4 times
    x = torch.randn(2 if dims == 2 else 1, 1, *size, dtype=torch.float64)
    kw = {"seed": 4, "activation": None, "chunk_size": 3, "shared_prefix": True}
    split = MonteCarloInferer(3, split_conv=True, **kw)(x, net)
    assert sum(m.split_convs for m in modes) > 0 and all(m.materialised == 0 for m in modes)
    plain = MonteCarloInferer(3, split_conv=False, **kw)(x, net)
    stacked = MonteCarloInferer(3, **{**kw, "shared_prefix": False})(x, net)
    torch.testing.assert_close(split, stacked, rtol=0, atol=1e-12)
    torch.testing.assert_close(plain, stacked, rtol=0, atol=1e-12)
    assert (stacked[:, 0] - stacked[:, 1]).abs().max() > 1e-4, "samples must differ"
    # the MAC model moves the shared half of each split conv into the prefix
    with_split, without = mc_cost_split(net, x), mc_cost_split(net, x, split_conv=False)
    assert with_split.total_macs == without.total_macs
    assert with_split.prefix_macs > without.prefix_macs


@torch.no_grad()
def test_split_conv_with_sliding_windows(modes):
    torch.manual_seed(1)
    net = _middle_conv_bayesian(_network("UNet", 3).double().eval()).eval()
    x = torch.randn(1, 1, 24, 20, 16, dtype=torch.float64)
    kw = {"seed": 2, "activation": None, "inferer": SlidingWindowInferer((16, 16, 16), sw_batch_size=2, overlap=0.25)}
    stacked = MonteCarloInferer(4, chunk_size=4, shared_prefix=False, **kw)(x, net)
    split = MonteCarloInferer(4, chunk_size=2, shared_prefix=True, split_conv=True, **kw)(x, net)
    torch.testing.assert_close(split, stacked, rtol=0, atol=1e-12)
    assert sum(m.split_convs for m in modes) > 0


class _SkipNet(nn.Module):
    """pre -> stochastic mid; cat([pre, mid]) -> ``consumer``; every consumer must see the real concatenation."""

    def __init__(self, consumer: str) -> None:
        super().__init__()
        self.pre = nn.Conv2d(1, 3, 3, padding=1)
        self.mid = nn.Conv2d(3, 2, 3, padding=1)
        self.head = nn.Conv2d(5, 2, 3, padding=1)
        self.wide = nn.Conv2d(8, 2, 3, padding=1)
        self.up = nn.ConvTranspose2d(5, 2, 2, stride=2)
        self.grouped = nn.Conv2d(5, 5, 1, groups=5)
        self.consumer = consumer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        cat = torch.cat([h, self.mid(h)], dim=1)
        assert cat.shape[1] == 5 and cat.dim() == 4  # metadata queries do not materialise
        if self.consumer == "conv":
            return self.head(cat)
        if self.consumer == "transposed":
            return self.up(cat)
        if self.consumer == "grouped":  # groups > 1: materialised, not split
            return self.grouped(cat)
        if self.consumer == "twice":  # nested lazy concatenation (negative dim), then a conv
            return self.wide(torch.cat([h, cat], dim=-3))
        if self.consumer == "reuse":  # materialised by an activation, then concatenated again and convolved
            first = torch.relu(cat)[:, :2]
            return self.wide(torch.cat([h, cat], dim=1)) + first
        if self.consumer == "relu_sum":  # unexpected consumers: an activation and a channel slice
            return torch.relu(cat) * 2 + cat[:, 1:3].sum(1, keepdim=True)
        return torch.cat([cat, h], dim=1)  # the network ends with a (nested) lazy concatenation


@pytest.mark.parametrize(
    ("consumer", "splits", "materialised"),
    [
        ("conv", 1, 0),
        ("transposed", 1, 0),
        ("grouped", 0, 1),
        ("twice", 1, 0),
        ("reuse", 1, 1),
        ("relu_sum", 0, 1),
        ("end", 0, 1),
    ],
)
@torch.no_grad()
def test_every_consumer_of_a_lazy_concatenation_gets_the_right_values(consumer, splits, materialised, modes):
    torch.manual_seed(2)
    plain = _SkipNet(consumer).double().eval()
    net = to_partial_bayes(plain, {"mid.weight": torch.ones_like(plain.mid.weight, dtype=torch.bool)}).eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    S = 3
    noise = draw_noise(net, S, torch.Generator().manual_seed(0))
    with sampling_mode(net, "sample"), mc_samples(net, S), fixed_noise(net, noise):
        split = shared_prefix_forward(net, x, S, split_conv=True)
        stacked = net(torch.cat([x] * S))
    torch.testing.assert_close(split, stacked, rtol=0, atol=1e-12)
    assert modes[0].split_convs == splits
    assert modes[0].materialised == materialised


@torch.no_grad()
def test_sparse_stochastic_layer_reads_only_its_channels_of_a_lazy_concatenation(modes):
    torch.manual_seed(3)
    plain = _SkipNet("conv").double().eval()
    mask = {"mid.weight": torch.ones_like(plain.mid.weight, dtype=torch.bool)}
    head = torch.zeros_like(plain.head.weight, dtype=torch.bool)
    head[0, 4, 1, 1] = True  # one Bayesian entry: the sparse strategy touches 1 input channel of 5
    net = to_partial_bayes(plain, {**mask, "head.weight": head}).eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    kw = {"seed": 1, "activation": None, "chunk_size": 4}
    split = MonteCarloInferer(4, shared_prefix=True, split_conv=True, **kw)(x, net)
    stacked = MonteCarloInferer(4, shared_prefix=False, **kw)(x, net)
    torch.testing.assert_close(split, stacked, rtol=0, atol=1e-12)
    assert modes[0].split_convs == 1 and modes[0].materialised == 0


class _CatHead(nn.Module):
    """pre (1 -> 4) -> stochastic mid (4 -> 4); head reads cat([pre, mid]) (8 -> 2), all 3x3 on 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return self.head(torch.cat([h, self.mid(h)], dim=1))


@torch.no_grad()
def test_mac_split_of_a_split_conv_by_hand():
    plain = _CatHead().eval()
    net = to_partial_bayes(plain, {"mid.weight": torch.ones_like(plain.mid.weight, dtype=torch.bool)})
    x = torch.randn(2, 1, 8, 8)
    pre, mid, head = 64 * 4 * 9, 64 * 4 * 36, 64 * 2 * 72  # output elements x (C_in · k) per item
    assert mc_cost_split(net, x, split_conv=False) == MCCostSplit(2 * pre, 2 * (mid + head))
    # the head's 4 shared input channels of 8 run once
    assert mc_cost_split(net, x) == MCCostSplit(2 * (pre + head // 2), 2 * (mid + head // 2))


def test_plans_carry_the_split_conv_flag():
    plans = plan_candidates(4, "auto", "auto", can_share=True, can_sparse=True, split_conv=True)
    assert MCPlan(1, False) in plans, "the plain loop stays a candidate"
    assert all(p.split_conv == p.shared_prefix for p in plans)
    assert MCPlan(4, True, True, True).label() == "4/pass, shared, sparse input, split conv"
    with pytest.raises(ValueError, match="split_conv"):
        MonteCarloInferer(2, split_conv="yes")  # type: ignore[arg-type]
