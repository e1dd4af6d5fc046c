"""Exported stochastic networks take the noise as inputs and reproduce PyTorch's samples (ONNX, torch.export)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_bayes.export import NoiseInputNetwork, export_onnx, export_program, load_program, run_onnx
from monai_bayes.layers import fixed_noise, mc_samples
from monai_bayes.networks import to_mc_dropout, to_partial_bayes
from monai_bayes.selection import select_topk


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.ConvTranspose2d(6, 4, 2, stride=2),
        nn.Conv2d(4, 2, 1),
    )
    net.train()(torch.randn(4, 1, 8, 8))  # non-trivial BN running statistics
    scores = {n: torch.rand_like(p) for n, p in net.named_parameters() if not n.startswith("1.")}
    return to_partial_bayes(net, select_topk(scores, 0.3)).eval()


@pytest.fixture(scope="module")
def wrapper() -> NoiseInputNetwork:
    return NoiseInputNetwork(_net(), num_samples=3)


def _one_at_a_time(wrapper: NoiseInputNetwork, x: torch.Tensor, noise: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Sample s alone: S = 1 pass (unbatched code path) with noise slice s of every layer."""
    outs = []
    for s in range(wrapper.num_samples):
        per_layer: dict[str, dict[str, torch.Tensor]] = {}
        for (layer, key, _), eps in zip(wrapper.noise_names, noise):
            per_layer.setdefault(layer, {})[key] = eps[s : s + 1]
        with mc_samples(wrapper.network, 1), fixed_noise(wrapper.network, per_layer):
            outs.append(wrapper.network(x))
    return torch.stack(outs)


def test_batched_noise_input_pass_equals_samples_one_at_a_time(wrapper):
    x = torch.randn(2, 1, 8, 8)
    noise = wrapper.draw_noise(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = wrapper(x, *noise)
        torch.testing.assert_close(out, _one_at_a_time(wrapper, x, noise), atol=1e-5, rtol=1e-5)
    assert out.shape == (3, 2, 2, 16, 16) and not torch.allclose(out[0], out[1])


@pytest.mark.slow  # the dynamo ONNX exporter alone takes ~20-90 s here, even for this 5-layer net
def test_onnx_and_torch_export_reproduce_pytorch_for_the_same_noise(wrapper, tmp_path):
    x = torch.randn(2, 1, 8, 8)
    onnx_path = export_onnx(wrapper, x, tmp_path / "m.onnx")
    program = load_program(export_program(wrapper, x, tmp_path / "m.pt2"))
    for seed in (1, 2):  # fresh noise gives fresh samples, still equal to PyTorch's
        noise = wrapper.draw_noise(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            reference = wrapper(x, *noise)
            assert (run_onnx(onnx_path, x, noise) - reference).abs().max() <= 1e-4
            assert (program(x, *noise) - reference).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="does not exist"):
        load_program(tmp_path / "missing.pt2")


def test_layers_with_internal_randomness_and_bad_inputs_are_named():
    with pytest.raises(ValueError, match="draw their randomness internally"):
        NoiseInputNetwork(to_mc_dropout(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)), 0.1), 2)
    with pytest.raises(ValueError, match="num_samples"):
        NoiseInputNetwork(_net(), 0)
    wrapper = NoiseInputNetwork(_net(), 2)
    with pytest.raises(ValueError, match="noise inputs"):
        wrapper(torch.randn(1, 1, 8, 8))
