"""to_nested / extract_width on MONAI UNet and BasicUNet (2D, 3D), MC inference and ELBO training (issue 7, point 5)."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import (
    NestedChannelMask,
    NestedDropoutLayer,
    NestedDropoutOptions,
    StochasticLayer,
    draw_noise,
    fixed_noise,
    kl_divergence,
    nested_layers,
    nested_width,
    sampling_mode,
    select_noise,
)
from monai_bayes.losses import ELBOLoss
from monai_bayes.networks import analyse_channel_flow, extract_width, to_deterministic, to_nested

TOL = 1e-5


def _randomise_norms(net: nn.Module, per_channel_prelu: bool = False) -> nn.Module:
    """Non-trivial BN statistics / affine parameters (and optionally per-channel PReLU) so slicing errors show."""
    gen = torch.Generator().manual_seed(0)
    for module in list(net.modules()):
        norm, act = getattr(module, "N", None), getattr(module, "A", None)
        if isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
            with torch.no_grad():
                norm.running_mean.copy_(torch.randn(norm.num_features, generator=gen))
                norm.running_var.copy_(torch.rand(norm.num_features, generator=gen) + 0.5)
                norm.weight.copy_(torch.randn(norm.num_features, generator=gen))
                norm.bias.copy_(torch.randn(norm.num_features, generator=gen))
        if per_channel_prelu and isinstance(act, nn.PReLU) and norm is not None:
            module.A = nn.PReLU(norm.num_features)
            with torch.no_grad():
                module.A.weight.copy_(torch.rand(norm.num_features, generator=gen) * 0.5)
    return net


def _unet_2d_res_bn() -> nn.Module:
    net = UNet(2, 1, 2, channels=(8, 16, 16), strides=(2, 2), num_res_units=2, norm="batch")
    return _randomise_norms(net, per_channel_prelu=True)


def _unet_3d_instance() -> nn.Module:
    return UNet(3, 1, 3, channels=(8, 16), strides=(2,), num_res_units=0)


def _basic_unet_2d_bn() -> nn.Module:
    return _randomise_norms(BasicUNet(2, 1, 2, features=(8, 8, 16, 16, 16, 8), norm="batch"))


NETS = [
    pytest.param(_unet_2d_res_bn, (2, 1, 16, 16), id="unet2d-res-batchnorm-prelu"),
    pytest.param(_unet_3d_instance, (1, 1, 8, 8, 8), id="unet3d-instancenorm"),
    pytest.param(_basic_unet_2d_bn, (2, 1, 16, 16), id="basicunet2d-batchnorm"),
]


def _mean_at(net: nn.Module, x: torch.Tensor, width: int | None) -> torch.Tensor:
    with torch.no_grad(), sampling_mode(net, "mean"), nested_width(net, width):
        return net(x)


@pytest.mark.parametrize(("make", "shape"), NETS)
def test_conversion_keeps_keys_and_full_width_mean_reproduces_the_trained_network(make, shape):
    torch.manual_seed(0)
    det = make().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = det(x)
    net = to_nested(det, groups=4, always_kept=1, rescale=False, inplace=False).eval()
    assert set(det.state_dict()) <= set(net.state_dict())
    extra = set(net.state_dict()) - set(det.state_dict())
    assert extra and all(k.rsplit(".", 1)[1] in ("log_alpha", "order_logits", "prior_keep") for k in extra)
    assert (_mean_at(net, x, None) - expected).abs().max() <= TOL
    assert (_mean_at(net, x, 4) - expected).abs().max() <= TOL
    assert (_mean_at(net, x, 1) - expected).abs().max() > 1e-3  # the width matters
    for name in analyse_channel_flow(det).output_layers:  # the class channels are never dropped
        assert not isinstance(net.get_submodule(name), NestedDropoutLayer)
    assert float(kl_divergence(net)) > 0


def test_output_layers_and_residual_ties_of_monai_unets():
    unet = UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1)
    report = analyse_channel_flow(unet)
    assert report.output_layers == {"model.2.0.conv", "model.2.1.conv.unit0.conv"}
    assert {"model.0.conv.unit0.conv", "model.0.residual"} in report.ties
    assert analyse_channel_flow(BasicUNet(2, 1, 2, features=(4, 4, 4, 4, 4, 4))).output_layers == {"final_conv"}
    plain = analyse_channel_flow(UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=0))
    assert plain.output_layers == {"model.2.conv"} and not plain.ties


@pytest.mark.parametrize(("make", "shape"), NETS)
def test_extracted_width_network_is_smaller_and_equals_the_masked_network(make, shape):
    torch.manual_seed(1)
    net = to_nested(make(), groups=4, always_kept=1).eval()
    with torch.no_grad():  # learnt-looking orderings: the keep-probability rescaling must be folded
        for _, layer in nested_layers(net):
            layer.order_logits.normal_()
    x = torch.randn(shape)
    sizes = []
    for width in (1, 2, 3, 4):
        sub = extract_width(net, width).eval()
        assert not any(isinstance(m, StochasticLayer) for m in sub.modules())
        with torch.no_grad():
            out = sub(x)
        assert (out - _mean_at(net, x, width)).abs().max() <= TOL
        sizes.append(sum(p.numel() for p in sub.parameters()))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert net.training is False and all(layer.width is None for _, layer in nested_layers(net))


def test_extraction_slices_skip_concatenations_transposed_convs_and_norms():
    net = to_nested(_unet_2d_res_bn(), groups=4, always_kept=1)
    sub = extract_width(net, 2)  # half of the channels of every nested layer
    top_down = sub.model[0]
    assert top_down.conv.unit0.conv.weight.shape == (4, 1, 3, 3)
    assert top_down.conv.unit0.adn.N.running_mean.shape == (4,)
    assert top_down.conv.unit0.adn.A.weight.shape == (4,)
    up = sub.model[1].submodule[2][0].conv  # decoder transposed conv reading cat(skip, upsampled)
    assert isinstance(up, nn.ConvTranspose2d) and up.weight.shape[:2] == (16, 4)  # (8 + 8) kept of (16 + 16) in
    head = sub.model[2][0].conv  # output transposed conv: inputs sliced, the 2 class channels kept
    assert head.weight.shape[:2] == (8, 2)


def test_extraction_refuses_groupnorm_and_bad_widths():
    net = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,), norm=("group", {"num_groups": 2})), groups=4)
    with pytest.raises(ValueError, match="GroupNorm"):
        extract_width(net, 2)
    nested = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), groups=4, always_kept=1)
    for width in (0, 5, 1.5):
        with pytest.raises(ValueError, match=r"width must be an int in \[1, 4\]"):
            extract_width(nested, width)
    with pytest.raises(ValueError, match="no nested-dropout layer"):
        extract_width(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), 1)


def test_to_nested_bad_input():
    with pytest.raises(ValueError, match=r"layer 'model.0.conv': groups=32 exceeds the 8 output channels"):
        to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)))
    with pytest.raises(ValueError, match="does not divide the 12 output channels"):
        to_nested(UNet(2, 1, 2, channels=(12, 16), strides=(2,)), groups=8, remainder="error")
    spread = to_nested(UNet(2, 1, 2, channels=(12, 16), strides=(2,)), groups=8)
    assert spread.model[0].conv.group_bounds == (0, 2, 4, 6, 8, 9, 10, 11, 12)
    with pytest.raises(ValueError, match="already has nested-dropout layers"):
        to_nested(spread, groups=8)
    with pytest.raises(ValueError, match="does not match the network"):
        to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), groups=4, pretrained={"bogus": torch.zeros(1)})
    untouched = UNet(2, 1, 2, channels=(8, 16), strides=(2,))
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        to_nested(untouched, groups=4, temperature=0.0, pretrained={"bogus": torch.zeros(1)})  # before loading
    with pytest.raises(TypeError, match="unknown nested-dropout option"):
        to_nested(untouched, groups=4, prior=0.9)
    assert not nested_layers(untouched)


def test_to_nested_takes_an_options_object_or_keywords():
    options = NestedDropoutOptions(groups=4, always_kept=1, kl_constant="zero_at_infinity")
    torch.manual_seed(0)
    a = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), options=options)
    torch.manual_seed(0)
    b = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), 4, always_kept=1, kl_constant="zero_at_infinity")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert {layer.kl_constant for _, layer in nested_layers(a)} == {"zero_at_infinity"}
    c = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), 2, options=options)  # groups overrides
    assert {layer.nested_groups for _, layer in nested_layers(c)} == {2}


def test_pretrained_state_dict_gives_the_means(tmp_path):
    trained = UNet(2, 1, 2, channels=(8, 16), strides=(2,))
    path = tmp_path / "deterministic.pt"
    torch.save({"network": trained.state_dict()}, path)
    net = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), groups=4, pretrained=path)
    assert torch.equal(net.model[0].conv.weight, trained.model[0].conv.weight)


def test_mask_sites_sit_after_the_norm_and_activation_and_disappear_in_to_deterministic():
    net = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1), groups=4, always_kept=1)
    unit = net.model[0].conv.unit0
    assert list(unit._modules) == ["conv", "adn", "nested_mask"]
    assert isinstance(unit.nested_mask, NestedChannelMask) and unit.nested_mask.layer is unit.conv
    assert unit.conv.has_mask_site is True
    assert net.model[0].residual.has_mask_site is False  # no tail: the layer masks its own output
    x = torch.randn(1, 1, 8, 8)
    det = to_deterministic(net).eval()
    assert not any(isinstance(m, StochasticLayer) for m in det.modules())
    assert (det(x) - _mean_at(net.eval(), x, None)).abs().max() <= TOL


def test_monte_carlo_inferer_batched_chunked_and_sliding_windows_agree():
    torch.manual_seed(2)
    net = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1, norm="batch"), groups=4)
    net.eval()
    x = torch.randn(2, 1, 24, 24)
    batched = MonteCarloInferer(4, activation=None, seed=3)(x, net)
    chunked = MonteCarloInferer(4, activation=None, seed=3, chunk_size=1)(x, net)
    assert batched.shape == (2, 4, 2, 24, 24)
    assert (batched - chunked).abs().max() <= TOL
    assert (batched[:, 0] - batched[:, 1]).abs().max() > 1e-3
    window = SlidingWindowInferer(roi_size=(16, 16), sw_batch_size=3, overlap=0.5)
    windowed = MonteCarloInferer(4, activation=None, seed=3, inferer=window)(x, net)
    noise = draw_noise(net, 4, torch.Generator().manual_seed(3))
    for s in range(4):  # sample s uses the same ordering and weights in every window
        with torch.no_grad(), fixed_noise(net, select_noise(noise, s)):
            reference = window(x, net)
        assert (windowed[:, s] - reference).abs().max() <= TOL
    with nested_width(net, 2):
        fixed = MonteCarloInferer(3, activation=None, seed=0)(x, net)
    assert (fixed[:, 0] - fixed[:, 1]).abs().max() > 1e-4  # weight noise remains at a fixed width


def test_elbo_training_step_updates_ordering_and_noise_levels():
    torch.manual_seed(4)
    net = to_nested(BasicUNet(2, 1, 2, features=(4, 4, 8, 8, 8, 4), norm="batch"), groups=4, always_kept=1)
    loss_fn = ELBOLoss(net, "ce", kl_reduction="dataset", dataset_size=100 * 16 * 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = copy.deepcopy(net.state_dict())
    x, y = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 1, 16, 16))
    net.train()
    loss = loss_fn(net(x), y)
    assert torch.isfinite(loss) and float(loss_fn.last_kl) > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("order_logits") for k in changed) and any(k.endswith("log_alpha") for k in changed)
    assert loss_fn.kl_divisor(2) == 100 * 16 * 16
    assert ELBOLoss(net, "ce", kl_reduction="parameters").kl_divisor(2) == sum(
        layer.log_alpha.numel() for _, layer in nested_layers(net)
    )


class _TwoBranch(nn.Module):
    """A block the interpreter does not know: ``head(x) + shortcut(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.shortcut = nn.Conv2d(1, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) + self.shortcut(x)


def test_a_registered_container_walker_teaches_the_interpreter_a_new_block():
    from monai_bayes.networks import register_container_walker
    from monai_bayes.networks.channel_flow import CONTAINER_WALKERS, join_name

    net = nn.Sequential(_TwoBranch(), nn.Conv2d(8, 2, 1))
    with pytest.raises(ValueError, match="cannot follow channels through module '0' of type _TwoBranch"):
        analyse_channel_flow(net)

    @register_container_walker(_TwoBranch)
    def _walk(walker, module, name, flow):
        head = walker.walk(module.head, join_name(name, "head"), flow)
        shortcut = walker.walk(module.shortcut, join_name(name, "shortcut"), flow)
        return walker.visitor.combine(name, head, shortcut)

    try:
        report = analyse_channel_flow(net)
        assert report.output_layers == {"1"}
        assert {"0.head.0", "0.shortcut"} in report.ties  # the addition ties both convs
        nested = to_nested(net, groups=4, always_kept=1, inplace=False)
        assert {name for name, _ in nested_layers(nested)} == {"0.head.0", "0.shortcut"}
        x = torch.randn(2, 1, 6, 6)
        with torch.no_grad(), nested_width(nested, 2), sampling_mode(nested, "mean"):
            masked = nested(x)
        small = extract_width(nested, 2)
        assert small[0].shortcut.out_channels == 4 and small[1].in_channels == 4
        with torch.no_grad():
            assert torch.allclose(small(x), masked, atol=TOL)
    finally:
        CONTAINER_WALKERS.pop(_TwoBranch)
