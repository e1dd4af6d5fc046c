"""MC-dropout and BN3 nested networks exported with their masks / ordering as noise inputs (issue 19)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.export import (
    ExportedNetwork,
    NoiseInputNetwork,
    export_onnx,
    export_program,
    load_program,
    run_onnx,
)
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import (
    MCDropout,
    NestedDropoutLinear,
    fixed_noise,
    mc_samples,
    set_nested_width,
)
from monai_bayes.networks import to_mc_dropout, to_nested


def _unet() -> nn.Module:
    torch.manual_seed(0)
    net = UNet(2, 1, 2, (4, 8, 16), (2, 2), num_res_units=1, norm="batch")
    net.train()(torch.randn(4, 1, 16, 16))  # non-trivial BN running statistics
    return net.eval()


def _one_at_a_time(wrapper: NoiseInputNetwork, x: torch.Tensor, noise: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Sample s alone: the S = 1 code path of the layers with slice s of every noise input."""
    outs = []
    for s in range(wrapper.num_samples):
        per_layer: dict[str, dict[str, torch.Tensor]] = {}
        for (layer, key, _), eps in zip(wrapper.noise_names, noise):
            per_layer.setdefault(layer, {})[key] = eps[s : s + 1]
        for layer, key, shape in wrapper._unused:
            per_layer.setdefault(layer, {})[key] = torch.zeros(1, *shape)
        with wrapper.sample_settings(), mc_samples(wrapper.network, 1), fixed_noise(wrapper.network, per_layer):
            outs.append(wrapper.network(x))
    return torch.stack(outs)


@pytest.mark.parametrize("kind", ["dropout", "channel_dropout", "nested", "nested_width"])
def test_batched_noise_input_pass_equals_samples_one_at_a_time(kind):
    x = torch.randn(2, 1, 16, 16)
    if "dropout" in kind:
        net = to_mc_dropout(_unet(), 0.3, channel_wise=kind == "channel_dropout")
    else:
        net = to_nested(_unet(), 4, always_kept=1)
    wrapper = NoiseInputNetwork(net, 3, example_image=x, width=2 if kind == "nested_width" else None)
    keys = {key for _, key, _ in wrapper.noise_names}
    assert keys == {"dropout": {"keep"}, "channel_dropout": {"keep"}, "nested": {"order", "weight"}}.get(
        kind, {"weight"}
    )
    noise = wrapper.draw_noise(torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = wrapper(x, *noise)
        torch.testing.assert_close(out, _one_at_a_time(wrapper, x, noise), atol=1e-5, rtol=1e-5)
        fresh = wrapper(x, *wrapper.draw_noise(torch.Generator().manual_seed(1)))
    assert out.shape == (3, 2, 2, 16, 16) and not torch.allclose(out[0], out[1]) and not torch.allclose(out, fresh)


def test_dropout_noise_gives_the_dropout_distribution_in_closed_form():
    """Linear -> MC dropout -> Linear: E[y] = mean-mode output, Var[y_j] = Σ_i W_ji² h_i² p / (1 - p)."""
    torch.manual_seed(0)
    p, S = 0.3, 4000
    net = nn.Sequential(nn.Linear(5, 6), MCDropout(p), nn.Linear(6, 2)).eval()
    x = torch.randn(1, 5)
    wrapper = NoiseInputNetwork(net, S, example_image=x)
    with torch.no_grad():
        y = wrapper(x, *wrapper.draw_noise(torch.Generator().manual_seed(0)))[:, 0]  # (S, 2)
        h = net[0](x)[0]
        mean = net[2](h)
        var = (net[2].weight ** 2 * h**2).sum(dim=1) * p / (1 - p)
    se = (var / S).sqrt()
    assert ((y.mean(0) - mean).abs() < 4 * se).all()
    torch.testing.assert_close(y.var(0), var, rtol=0.1, atol=0.0)


def test_dropout_needs_the_example_shape_and_nested_local_noise_is_refused():
    with pytest.raises(ValueError, match="example_image"):
        NoiseInputNetwork(to_mc_dropout(_unet(), 0.1), 2)
    with pytest.raises(ValueError, match="internally"):
        NoiseInputNetwork(to_nested(_unet(), 4, weight_noise="local"), 2)
    wrapper = NoiseInputNetwork(to_mc_dropout(_unet(), 0.1), 2, example_image=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="bound to activations"):
        wrapper(torch.zeros(1, 1, 32, 32), *wrapper.draw_noise())


def test_wrapping_leaves_the_dropout_network_usable_at_any_batch_size():
    """The masks are bound to the example's shape only inside the wrapper: the network it wraps keeps
    sampling (seeded MC inference, as a distillation teacher does) at other batch sizes afterwards."""
    net = to_mc_dropout(_unet(), 0.3)
    wrapper = NoiseInputNetwork(net, 2, example_image=torch.zeros(1, 1, 16, 16))
    with torch.no_grad():
        wrapper(torch.zeros(1, 1, 16, 16), *wrapper.draw_noise())
        samples = MonteCarloInferer(num_samples=3, output="samples", seed=0)(torch.randn(4, 1, 16, 16), net)
    assert samples.shape[:2] == (4, 3) and not torch.allclose(samples[:, 0], samples[:, 1])
    assert all(getattr(layer, "activation_shape", None) is None for layer in net.modules())


@pytest.mark.slow  # three ONNX exports (~10-20 s each on the shared VM)
@pytest.mark.parametrize("kind", ["dropout", "nested", "nested_width"])
def test_artefacts_reproduce_pytorch_for_the_same_noise_and_seed(kind, tmp_path):
    x = torch.randn(1, 1, 16, 16)
    net = to_mc_dropout(_unet(), 0.3) if kind == "dropout" else to_nested(_unet(), 4, always_kept=1)
    if kind == "nested_width":
        set_nested_width(net, 2)  # as a BN3 bundle publishes it: the ordering noise is declared but unused
    wrapper = NoiseInputNetwork(net, 4, example_image=x)
    path = export_onnx(wrapper, x, tmp_path / "m.onnx", optimize=False)  # the optimised graph: test_stochastic_export
    program = load_program(export_program(wrapper, x, tmp_path / "m.pt2"))
    for seed in (1, 2):
        noise = wrapper.draw_noise(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            reference = wrapper(x, *noise)
            assert (run_onnx(path, x, noise) - reference).abs().max() <= 1e-4
            assert (program(x, *noise) - reference).abs().max() <= 1e-4
    # the artefact as a network: a seeded MonteCarloInferer draws the source network's noise stream exactly
    # (the source's MC-dropout masks drawn as noise, i.e. bound to the example shape as inside the wrapper)
    inferer = MonteCarloInferer(4, chunk_size=None, shared_prefix=False, sparse_input=False, activation=None, seed=3)
    exported = ExportedNetwork(path, draw_order=wrapper.draw_order)
    with torch.no_grad():
        with wrapper.sample_settings():
            expected = inferer(x, net)
        torch.testing.assert_close(inferer(x, exported), expected, atol=1e-4, rtol=1e-4)


def test_bn3_ordering_noise_gives_the_downhill_keep_probabilities():
    """Straight-through BN3 layer: channel c is kept in a fraction Σ_{k ≥ c} β_k of the exported samples."""
    torch.manual_seed(0)
    S = 4000
    layer = NestedDropoutLinear(4, 8, nested_groups=8, always_kept=1, straight_through=True, order_init="uniform")
    with torch.no_grad():
        layer.order_logits.copy_(torch.linspace(-1.0, 1.0, 8))
    wrapper = NoiseInputNetwork(nn.Sequential(layer), S)
    x = torch.randn(1, 4)
    with torch.no_grad():
        kept = (wrapper(x, *wrapper.draw_noise(torch.Generator().manual_seed(0)))[:, 0] != 0).double()  # (S, 8)
    beta = torch.softmax(torch.linspace(-1.0, 1.0, 8, dtype=torch.float64), dim=0)
    expected = beta.flip(0).cumsum(0).flip(0)  # q(z_c = 1) = Σ_{k ≥ c} β_k
    se = (expected * (1 - expected) / S).sqrt()
    assert (kept.mean(0) - expected).abs().max() <= 4 * se.max() + 1e-12
