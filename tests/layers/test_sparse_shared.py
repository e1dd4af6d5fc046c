"""Sparse perturbation of a layer whose input is shared by all samples (issue 22, item 4): exact in float64."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

import monai_bayes.layers.partial as partial_module
from monai_bayes import to_partial_bayes
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import mc_samples, sampling_mode
from monai_bayes.layers.functional import forward_with_sparse_samples_shared
from monai_bayes.layers.shared_prefix import shared_prefix_forward


def _sparse_index(weight: torch.Tensor, k: int, out_channels: int, gen: torch.Generator) -> torch.Tensor:
    """k distinct flat indices of ``weight`` within its first ``out_channels`` output channels (dim 0)."""
    per_out = weight[0].numel()
    return torch.randperm(out_channels * per_out, generator=gen)[:k].sort().values


LAYERS = [
    ("conv2d", lambda: nn.Conv2d(3, 6, 3, padding=1)),
    ("conv2d reflect stride", lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1, padding_mode="reflect")),
    ("conv3d", lambda: nn.Conv3d(2, 4, 3, padding=1)),
    ("convtranspose2d", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)),
]


@pytest.mark.parametrize(("name", "make"), LAYERS)
@torch.no_grad()
def test_shared_sparse_equals_dense_per_sample_convs(name, make):
    gen = torch.Generator().manual_seed(len(name))
    layer = make().double()
    S, B = 5, 2
    x = torch.randn(B, layer.in_channels, *([6] * (layer.weight.dim() - 2)), dtype=torch.float64, generator=gen)
    index = _sparse_index(layer.weight, 7, 2, gen)
    delta = torch.randn(S, 7, dtype=torch.float64, generator=gen)
    bias_delta = torch.randn(S, layer.out_channels, dtype=torch.float64, generator=gen)
    out = forward_with_sparse_samples_shared(layer, x, layer.weight, layer.bias, index, delta, bias_delta)
    for s in range(S):  # independent computation: the module's own forward with the sampled weights
        w = layer.weight.detach().clone().reshape(-1)
        w[index] += delta[s]
        dense = layer.double()
        ref = type(dense).forward(
            _with(dense, w.view_as(layer.weight), layer.bias + bias_delta[s]), x
        )  # plain nn.ConvNd forward
        torch.testing.assert_close(out[s * B : (s + 1) * B], ref, rtol=0, atol=1e-12)


def _with(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    clone = type(module).__new__(type(module))
    clone.__dict__.update(module.__dict__)
    clone._parameters = {"weight": nn.Parameter(weight), "bias": nn.Parameter(bias)}
    return clone


def _first_layer_sparse_unet() -> nn.Module:
    """A UNet whose Bayesian weights (1 %) sit in the very first conv, in one output channel, and deeper."""
    torch.manual_seed(0)
    det = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).double().eval()
    masks = {}
    for name, param in det.named_parameters():
        if name.endswith("weight") and param.dim() == 4:
            mask = torch.zeros_like(param, dtype=torch.bool)
            mask.view(-1)[:: max(1, param.numel() // max(1, param.numel() // 100))] = True
            masks[name] = mask
    first = next(n for n, p in det.named_parameters() if p.dim() == 4)
    masks[first] = torch.zeros_like(det.get_parameter(first), dtype=torch.bool)
    masks[first][0, 0, 1] = True  # three entries of output channel 0: density 1/4
    return to_partial_bayes(det, masks, sigma_init=0.1).eval()


@torch.no_grad()
def test_shared_prefix_with_sparse_first_layer_equals_stacked_pass(monkeypatch):
    net = _first_layer_sparse_unet()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    calls = []
    original = partial_module.forward_with_sparse_samples_shared
    monkeypatch.setattr(
        partial_module, "forward_with_sparse_samples_shared", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    kw = {"seed": 3, "activation": None, "chunk_size": 4, "shared_prefix": True}
    stacked = MonteCarloInferer(4, **{**kw, "shared_prefix": False})(x, net)
    sparse = MonteCarloInferer(4, sparse_input=True, **kw)(x, net)
    # the first unit's conv and its residual conv both read the (shared) input; deeper layers do not
    assert calls == [1, 1], "layers whose input is shared take the sparse shared path, once per pass"
    dense = MonteCarloInferer(4, sparse_input=False, **kw)(x, net)
    assert calls == [1, 1]
    torch.testing.assert_close(sparse, stacked, rtol=0, atol=1e-12)
    torch.testing.assert_close(dense, stacked, rtol=0, atol=1e-12)
    assert (stacked[:, 0] - stacked[:, 1]).abs().max() > 1e-4, "samples must differ"
    with mc_samples(net, 4), sampling_mode(net, "sample"):  # flags are cleared after the call
        shared_prefix_forward(net, x, 4, sparse_shared_input=True)
    assert not any(getattr(m, "_shared_input", False) for m in net.modules())


def test_takes_shared_input_follows_the_cost_model():
    conv = nn.Conv2d(1, 8, 3)
    one_channel = torch.zeros_like(conv.weight, dtype=torch.bool)
    one_channel[2, 0, 0, 0] = True
    every_channel = torch.zeros_like(conv.weight, dtype=torch.bool)
    every_channel[:, 0, 0, 0] = True
    narrow = to_partial_bayes(nn.Sequential(conv), {"0.weight": one_channel}, inplace=False)[0]
    wide = to_partial_bayes(nn.Sequential(conv), {"0.weight": every_channel}, inplace=False)[0]
    with mc_samples(narrow, 8), mc_samples(wide, 8):
        assert narrow.takes_shared_input(), "1 + 8 * 1/8 = 2 dense convs instead of 8"
        assert not wide.takes_shared_input(), "1 + 8 * 1 = 9 dense convs instead of 8"
    with mc_samples(narrow, 1):
        assert not narrow.takes_shared_input(), "one sample: nothing to share"
    with mc_samples(narrow, 8), sampling_mode(narrow, "mean"):
        assert not narrow.takes_shared_input()
