"""Converters on MONAI networks, 2D and 3D (issue 2, points 1, 2 and 5)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet, DynUNet, ResNet, SegResNet, UNet
from torch import nn

from monai_bayes import to_deterministic, to_full_bayes, to_mc_dropout, to_partial_bayes
from monai_bayes.layers import (
    MCDropout,
    PartialBayesLayer,
    StochasticLayer,
    kl_divergence,
    mc_samples,
    sampling_mode,
    stochastic_layers,
)
from monai_bayes.networks import candidate_parameters, load_stochastic_state_dict
from monai_bayes.selection import select_topk


def _unet(nd: int) -> nn.Module:
    return UNet(nd, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=2)


def _basic_unet(nd: int) -> nn.Module:
    return BasicUNet(nd, 1, 2, features=(4, 4, 8, 8, 16, 4))


def _segresnet(nd: int) -> nn.Module:
    return SegResNet(nd, init_filters=8, in_channels=1, out_channels=2, blocks_down=(1, 1), blocks_up=(1,))


def _dynunet(nd: int) -> nn.Module:
    return DynUNet(nd, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16])


def _resnet(nd: int) -> nn.Module:
    return ResNet("basic", [1, 1, 1, 1], [4, 4, 8, 8], spatial_dims=nd, n_input_channels=1, num_classes=3)


NETWORKS = {"UNet": _unet, "BasicUNet": _basic_unet, "SegResNet": _segresnet, "DynUNet": _dynunet, "ResNet": _resnet}


def _input(nd: int, size: int = 16) -> torch.Tensor:
    return torch.randn((2, 1) + (size,) * nd)


@pytest.fixture(params=[(name, nd) for name in sorted(NETWORKS) for nd in (2, 3)], ids=lambda p: f"{p[0]}-{p[1]}d")
def trained_net(request):
    name, nd = request.param
    torch.manual_seed(0)
    net = NETWORKS[name](nd)
    size = 32 if name == "BasicUNet" else 16  # BasicUNet downsamples 4 times; instance norm needs > 1 voxel
    # stand-in for training: move the weights away from their initialisation
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net.eval(), _input(nd, size)


def _random_scores(net: nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {n: torch.rand(p.shape, generator=gen) for n, p in candidate_parameters(net).items()}


def test_partial_bayes_mean_mode_equals_deterministic(trained_net):
    net, x = trained_net
    ref = net(x)
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.05), inplace=False)
    assert stochastic_layers(pb), "some layer must have become Bayesian"
    with sampling_mode(pb, "mean"):
        torch.testing.assert_close(pb(x), ref, rtol=0, atol=1e-6)
    assert not torch.allclose(pb(x), ref), "sample mode must differ from the mean"
    n_bayes = sum(layer.num_bayes() for _, layer in stochastic_layers(pb))
    total = sum(p.numel() for p in candidate_parameters(net).values())
    assert n_bayes == int(0.05 * total + 0.5)


def test_full_bayes_mean_mode_and_checkpoint(trained_net):
    net, x = trained_net
    ref = net(x)
    fb = to_full_bayes(net, inplace=False)
    with sampling_mode(fb, "mean"):
        torch.testing.assert_close(fb(x), ref, rtol=0, atol=1e-6)
    fresh = to_full_bayes(_rebuild(net), inplace=True)
    result = fresh.load_state_dict(net.state_dict(), strict=False)
    extras = {k for k in fb.state_dict() if k.endswith(("_rho", "_bayes_index"))}
    assert set(result.missing_keys) == extras and not result.unexpected_keys
    with sampling_mode(fresh, "mean"):
        torch.testing.assert_close(fresh(x), ref, rtol=0, atol=1e-6)


def _rebuild(net: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(net)
    with torch.no_grad():
        for p in clone.parameters():
            p.normal_()
    return clone


def test_batched_mc_on_network_matches_sequential(trained_net):
    net, x = trained_net
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.1), inplace=False)
    from monai_bayes.layers import draw_noise, fixed_noise, select_noise

    noise = draw_noise(pb, 3, torch.Generator().manual_seed(0))
    with torch.no_grad(), mc_samples(pb, 3), fixed_noise(pb, noise):
        batched = pb(torch.cat([x] * 3))
    with torch.no_grad():
        seq = []
        for s in range(3):
            with fixed_noise(pb, select_noise(noise, s)):
                seq.append(pb(x))
    torch.testing.assert_close(batched, torch.cat(seq), rtol=1e-4, atol=1e-5)


def test_mc_dropout_mean_mode_and_sampling(trained_net):
    net, x = trained_net
    ref = net(x)
    md = to_mc_dropout(net, p=0.3, inplace=False)
    layers = stochastic_layers(md)
    assert layers
    with sampling_mode(md, "mean"):
        torch.testing.assert_close(md(x), ref, rtol=0, atol=1e-6)
    assert not torch.allclose(md(x), md(x)), "dropout must stay active in eval() while sampling"
    # state-dict keys are untouched, so deterministic checkpoints still load strictly
    assert set(md.state_dict()) == set(net.state_dict())


def test_to_deterministic_round_trip(trained_net):
    net, x = trained_net
    ref = net(x)
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.05), inplace=False)
    plain = to_deterministic(pb)
    assert not any(isinstance(m, StochasticLayer) for m in plain.modules())
    assert stochastic_layers(pb), "to_deterministic works on a copy by default"
    torch.testing.assert_close(plain(x), ref, rtol=0, atol=1e-6)
    assert set(plain.state_dict()) == set(net.state_dict())


def test_load_stochastic_state_dict_rebuilds_structure():
    torch.manual_seed(0)
    net = _unet(2).eval()
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.02), inplace=False)
    fresh = load_stochastic_state_dict(_unet(2).eval(), pb.state_dict())
    for (n1, a), (n2, b) in zip(stochastic_layers(pb), stochastic_layers(fresh)):
        assert n1 == n2 and torch.equal(a.bayes_mask("weight"), b.bayes_mask("weight"))
    x = _input(2)
    with sampling_mode(pb, "mean"), sampling_mode(fresh, "mean"):
        torch.testing.assert_close(fresh(x), pb(x))


def test_load_stochastic_state_dict_rejects_other_network():
    net = _unet(2)
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.02), inplace=False)
    other = UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=2)
    with pytest.raises(ValueError, match=r"does not match|does not fit|no matching"):
        load_stochastic_state_dict(other, pb.state_dict())


def test_include_exclude_by_name_and_type():
    net = _unet(2)
    names = list(candidate_parameters(net))
    only_t = candidate_parameters(net, include=[nn.ConvTranspose2d])
    assert only_t and all(".weight" in n or ".bias" in n for n in only_t)
    assert len(only_t) < len(names)
    first = names[0].rsplit(".", 1)[0]
    without_first = candidate_parameters(net, exclude=[first])
    assert not any(n.startswith(first + ".") for n in without_first)
    subtree = candidate_parameters(net, include=["model.0"])
    assert subtree and all(n.startswith("model.0.") for n in subtree)
    pb = to_partial_bayes(net, "all", include=["model.0.conv.unit0.conv"], inplace=False)
    assert [n for n, _ in stochastic_layers(pb)] == ["model.0.conv.unit0.conv"]
    assert isinstance(pb.model[0].conv.unit0.conv, PartialBayesLayer)


def test_kl_is_sum_of_layers_and_zero_for_mc_dropout():
    net = _unet(2)
    pb = to_partial_bayes(net, select_topk(_random_scores(net), 0.05), inplace=False)
    expected = sum(layer.kl() for _, layer in stochastic_layers(pb))
    torch.testing.assert_close(kl_divergence(pb), expected)
    md = to_mc_dropout(net, 0.1, inplace=False)
    assert all(isinstance(m, MCDropout) for _, m in stochastic_layers(md))
    assert float(kl_divergence(md)) == 0.0


# ------------------------------------------------------------------------------ bad input
def test_bad_mask_shape_names_parameter():
    net = _unet(2)
    name, param = next(iter(candidate_parameters(net).items()))
    with pytest.raises(ValueError, match=rf"selection\['{name}'\] must have shape \({param.shape[0]}"):
        to_partial_bayes(net, {name: torch.ones(3, dtype=torch.bool)}, inplace=False)


@pytest.mark.parametrize("r_bayes", [0.0, -0.1, 1.5])
def test_bad_r_bayes(r_bayes):
    net = _unet(2)
    with pytest.raises(ValueError, match=r"r_bayes must be a fraction in \(0, 1\]"):
        select_topk(_random_scores(net), r_bayes)


def test_unsupported_layer_named_in_include():
    net = ResNet("basic", [1, 1, 1, 1], [4, 4, 8, 8], spatial_dims=2, n_input_channels=1, num_classes=3)
    bn_name = next(n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match=rf"include names module '{bn_name}' of type BatchNorm2d.*supported"):
        to_partial_bayes(net, "all", include=[bn_name], inplace=False)
    with pytest.raises(ValueError, match="include names type BatchNorm2d"):
        to_partial_bayes(net, "all", include=[nn.BatchNorm2d], inplace=False)
    with pytest.raises(ValueError, match="matches no module"):
        to_partial_bayes(net, "all", include=["no.such.layer"], inplace=False)


def test_unknown_parameter_and_empty_selection():
    net = _unet(2)
    with pytest.raises(ValueError, match="not selectable"):
        to_partial_bayes(net, {"nope.weight": torch.ones(1, dtype=torch.bool)}, inplace=False)
    empty = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in candidate_parameters(net).items()}
    with pytest.raises(ValueError, match="marks no parameter"):
        to_partial_bayes(net, empty, inplace=False)
    with pytest.raises(ValueError, match=r"must hold boolean masks.*select_topk"):
        to_partial_bayes(net, _random_scores(net), inplace=False)
    with pytest.raises(ValueError, match="to_full_bayes selects every entry; do not pass 'scope'"):
        to_full_bayes(net, scope="layer")


def test_network_without_selectable_parameters():
    with pytest.raises(ValueError, match="no selectable parameters"):
        to_partial_bayes(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), "all")


def test_mc_dropout_bad_p_and_placement():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        to_mc_dropout(_unet(2), p=1.0)
    with pytest.raises(ValueError, match="no dropout module"):
        to_mc_dropout(_resnet(2), p=0.1, placement="existing")
    with pytest.raises(ValueError, match=r"(?s)placement: .*'before'(?=.*'existing')(?=.*'after')"):
        to_mc_dropout(_unet(2), p=0.1, placement="before")
