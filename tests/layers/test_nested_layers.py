"""Nested-dropout layers: modes, widths, eq. 14/19 sampling, batched MC, frozen noise, bad input."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import ParamSchedulerHandler
from torch import nn

from monai_bayes.layers import (
    NestedDropoutConv1d,
    NestedDropoutConv2d,
    NestedDropoutConv3d,
    NestedDropoutConvTranspose1d,
    NestedDropoutConvTranspose3d,
    NestedDropoutLinear,
    NestedTemperatureSetter,
    draw_noise,
    fixed_noise,
    kl_divergence,
    mc_samples,
    nested_width,
    sampling_mode,
    select_noise,
    set_nested_temperature,
    set_nested_width,
)
from monai_bayes.layers.nested import NestedDropoutOptions
from monai_bayes.layers.nested_math import group_boundaries


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: NestedDropoutConv1d(2, 6, 3, padding=1, nested_groups=3, always_kept=1), (4, 2, 9)),
        (lambda: NestedDropoutConv2d(2, 8, 3, padding=1, nested_groups=4, always_kept=1), (4, 2, 6, 6)),
        (lambda: NestedDropoutConv3d(2, 4, 3, padding=1, nested_groups=2, always_kept=1), (2, 2, 4, 4, 4)),
        (lambda: NestedDropoutConvTranspose1d(2, 6, 2, stride=2, nested_groups=3, always_kept=1), (4, 2, 5)),
        (lambda: NestedDropoutConvTranspose3d(2, 4, 2, stride=2, nested_groups=4, always_kept=2), (2, 2, 3, 3, 3)),
        (lambda: NestedDropoutLinear(5, 8, nested_groups=4, always_kept=1), (6, 5)),
    ],
)
def test_every_variant_runs_in_every_mode_and_width(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape)
    expected = layer._base_type.forward(layer, x)  # the plain torch layer's forward with θ
    for training in (True, False):
        layer.train(training)
        assert layer(x).shape == expected.shape
        with sampling_mode(layer, "mean"):
            layer.rescale = False
            assert torch.allclose(layer(x), expected, atol=1e-6)  # mean mode, full width = the plain layer
            layer.rescale = True
            keep = layer.channel_keep_probabilities()
            view = [1] * expected.dim()
            view[layer.channel_dim] = -1
            assert torch.allclose(layer(x), expected * keep.view(view), atol=1e-6)
        with nested_width(layer, 1):
            y = layer(x)
            kept = layer.group_bounds[1]
            dropped = y.narrow(layer.channel_dim % y.dim(), kept, y.shape[layer.channel_dim] - kept)
            assert torch.count_nonzero(dropped) == 0
    assert kl_divergence(layer).dim() == 0


def test_fixed_width_keeps_weight_noise_and_drops_the_tail_exactly():
    torch.manual_seed(1)
    layer = NestedDropoutConv2d(3, 8, 3, padding=1, nested_groups=4, always_kept=1, log_alpha_init=-2.0).eval()
    x = torch.randn(2, 3, 5, 5)
    with nested_width(layer, 2), mc_samples(layer, 3):
        y = layer(torch.cat([x] * 3)).view(3, 2, 8, 5, 5)
    assert torch.count_nonzero(y[:, :, 4:]) == 0
    assert (y[0, :, :4] - y[1, :, :4]).abs().max() > 1e-3  # samples differ: weight noise remains
    with nested_width(layer, 2), sampling_mode(layer, "mean"):
        a, b = layer(x), layer(x)
    assert torch.equal(a, b)
    assert layer.width is None  # context restored


def test_sample_mode_draws_one_ordering_per_sample_block():
    torch.manual_seed(2)
    layer = NestedDropoutConv2d(1, 16, 1, nested_groups=16, always_kept=1, order_init="uniform", temperature=1e-3)
    layer.weight.data.fill_(1.0)
    layer.bias.data.zero_()
    layer.eval().log_alpha.data.fill_(-10.0)
    S = 8
    with mc_samples(layer, S):
        y = layer(torch.ones(S * 2, 1, 1, 1)).view(S, 2, 16)
    kept = (y > 0.5).sum(-1)  # kept channels of each item
    assert torch.equal(kept[:, 0], kept[:, 1])  # one mask per sample block, shared by its items
    assert len(set(kept[:, 0].tolist())) > 1  # different blocks get different widths


def test_batched_samples_equal_one_at_a_time_with_frozen_noise():
    torch.manual_seed(3)
    layer = NestedDropoutConv2d(2, 8, 3, padding=1, nested_groups=4, always_kept=1, log_alpha_init=-2.0).eval()
    assert set(layer.noise_shapes()) == {"order", "weight"}
    x = torch.randn(2, 2, 6, 6)
    noise = draw_noise(layer, 4, torch.Generator().manual_seed(0))
    with mc_samples(layer, 4), fixed_noise(layer, noise):
        batched = layer(torch.cat([x] * 4))
    for s in range(4):
        with fixed_noise(layer, select_noise(noise, s)):
            single = layer(x)
        assert torch.allclose(batched[2 * s : 2 * s + 2], single, atol=1e-5)
    with mc_samples(layer, 3), fixed_noise(layer, noise), pytest.raises(ValueError, match="holds 4 samples"):
        layer(torch.cat([x] * 3))


def test_local_reparameterisation_matches_eq14_moments():
    """Eq. 19: outputs are N(γ, δ) with γ = hθ + b, δ = h² α θ²; eq. 14 weight samples give the same moments."""
    torch.manual_seed(4)
    layer = NestedDropoutLinear(6, 4, nested_groups=2, always_kept=2, log_alpha_init=-1.0).double()
    with torch.no_grad():
        layer.log_alpha.uniform_(-2.0, 0.0)
    h = torch.randn(1, 6, dtype=torch.float64)
    theta, alpha = layer.weight.detach(), layer.log_alpha.detach().exp()
    gamma = h @ theta.T + layer.bias.detach()
    delta = (h**2) @ (alpha * theta**2).T
    n = 20000
    for noise in ("local", "weight"):
        layer.weight_noise = noise
        with torch.no_grad():
            out = layer(h.expand(n, 6).contiguous()) if noise == "local" else _weight_samples(layer, h, n)
        assert torch.allclose(out.mean(0), gamma[0], atol=4 * float(delta.max().sqrt()) / n**0.5)
        assert torch.allclose(out.var(0), delta[0], rtol=0.06)
    assert set(NestedDropoutLinear(3, 2, nested_groups=1, always_kept=1, weight_noise="local").noise_shapes()) == {
        "order"
    }


def _weight_samples(layer: nn.Module, h: torch.Tensor, n: int) -> torch.Tensor:
    with mc_samples(layer, n):
        return layer(h.expand(n, h.shape[1]).contiguous())


def test_group_boundaries_and_remainders():
    assert group_boundaries(8, 4) == (0, 2, 4, 6, 8)
    assert group_boundaries(10, 4) == (0, 3, 6, 8, 10)  # the first C mod G groups get one more channel
    with pytest.raises(ValueError, match="does not divide the 10 output channels"):
        group_boundaries(10, 4, remainder="error")
    with pytest.raises(ValueError, match="exceeds the 3 output channels"):
        group_boundaries(3, 4)
    with pytest.raises(ValueError, match=r"(?s)remainder: .*'drop'(?=.*'spread')(?=.*'error')"):
        group_boundaries(8, 4, remainder="drop")
    layer = NestedDropoutConv2d(1, 10, 1, nested_groups=4, always_kept=1)
    assert [layer.channels_at_width(w) for w in (1, 2, 3, 4)] == [3, 6, 8, 10]


@pytest.mark.parametrize("width", [0, 5, 2.5, True, "2"])
def test_width_outside_range_is_rejected(width):
    layer = NestedDropoutConv2d(1, 8, 1, nested_groups=4, always_kept=1)
    net = nn.Sequential(layer)
    with pytest.raises(ValueError, match=r"must be an int in \[1, 4\]"):
        set_nested_width(net, width)
    with pytest.raises(ValueError, match=r"must be an int in \[1, 4\]"):
        layer.width = width
    assert layer.width is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"always_kept": 0}, "always_kept"),
        ({"always_kept": 5}, "always_kept"),
        ({"prior_keep": 1.0}, "prior_keep"),
        ({"prior_keep": [0.9, 0.9]}, "needs 3 values"),
        ({"order_init": 1.5}, "order_init"),
        ({"weight_noise": "flipout"}, "weight_noise"),
        ({"temperature": 0.0}, "temperature"),
        ({"kl_constant": "none"}, "kl_constant"),
        ({"nested_groups": 0}, "positive int"),
    ],
)
def test_bad_layer_arguments_name_the_argument(kwargs, match):
    args = {"nested_groups": 4, "always_kept": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        NestedDropoutConv2d(1, 8, 1, **args)


def test_model_level_controls_and_temperature_annealing():
    net = nn.Sequential(
        NestedDropoutConv2d(1, 4, 1, nested_groups=2, always_kept=1), NestedDropoutConv2d(4, 4, 1, nested_groups=2)
    )
    with pytest.raises(ValueError, match="no nested-dropout layer"):
        set_nested_width(nn.Sequential(nn.Conv2d(1, 1, 1)), 1)
    set_nested_temperature(net, 0.5)
    assert [m.temperature for m in net] == [0.5, 0.5]
    with pytest.raises(ValueError, match="temperature"):
        set_nested_temperature(net, -1)
    engine = Engine(lambda e, b: None)
    handler = ParamSchedulerHandler(
        parameter_setter=NestedTemperatureSetter(net, minimum=0.3),
        value_calculator="exponential",
        vc_kwargs={"initial_value": 2.0, "gamma": 0.5},
        epoch_level=True,
    )
    handler.attach(engine)
    seen = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(net[0].temperature))
    engine.run([0], max_epochs=4)
    assert seen == [1.0, 0.5, 0.3, 0.3]  # 2·0.5^epoch, floored at the minimum


def test_deterministic_module_folds_the_keep_probability():
    torch.manual_seed(5)
    layer = NestedDropoutConv2d(2, 6, 3, nested_groups=3, always_kept=1)
    x = torch.randn(1, 2, 5, 5)
    with sampling_mode(layer, "mean"):
        expected = layer(x)
    layer.width = 2
    with pytest.raises(ValueError, match="extract_width"):
        layer.deterministic_module()
    layer.width = None
    plain = layer.deterministic_module()
    assert type(plain) is nn.Conv2d
    assert torch.allclose(plain(x), expected, atol=1e-6)
    assert set(plain.state_dict()) == {"weight", "bias"}


def test_state_dict_round_trip():
    torch.manual_seed(6)
    a = NestedDropoutConv2d(2, 8, 3, nested_groups=4, always_kept=1)
    b = NestedDropoutConv2d(2, 8, 3, nested_groups=4, always_kept=1, prior_keep=0.5)
    assert set(a.state_dict()) == {"weight", "bias", "log_alpha", "order_logits", "prior_keep"}
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a.kl(), b.kl())


def test_options_object_and_keywords_build_the_same_layer():
    options = NestedDropoutOptions(groups=4, always_kept=1, prior_keep=0.8, order_init="prior", weight_noise="weight")
    torch.manual_seed(0)
    by_object = NestedDropoutConv2d(2, 8, 3, nested_options=options)
    torch.manual_seed(0)
    by_keywords = NestedDropoutConv2d(
        2, 8, 3, nested_groups=4, always_kept=1, prior_keep=0.8, order_init="prior", weight_noise="weight"
    )
    assert by_object.state_dict().keys() == by_keywords.state_dict().keys()
    assert all(torch.equal(v, by_keywords.state_dict()[k]) for k, v in by_object.state_dict().items())
    assert by_object.weight_noise == by_keywords.weight_noise == "weight" and by_object.nested_groups == 4
    overridden = NestedDropoutConv2d(2, 8, 3, nested_options=options, nested_groups=2)  # keywords win
    assert overridden.nested_groups == 2 and overridden.weight_noise == "weight"
    assert overridden.groups == 1  # the convolution's own groups is untouched


def test_options_are_validated_once_with_the_setting_named():
    with pytest.raises(ValueError, match=r"(?s)weight_noise: .*'flipout'"):
        NestedDropoutOptions(weight_noise="flipout")
    with pytest.raises(ValueError, match="needs 2 values"):  # K = 4 - 2 + 1 nodes: π_2, π_3
        NestedDropoutOptions(groups=4, always_kept=2, prior_keep=[0.9])
    with pytest.raises(TypeError, match=r"unknown nested-dropout option\(s\) \['groupz'\]"):
        NestedDropoutOptions.from_options(groupz=4)
