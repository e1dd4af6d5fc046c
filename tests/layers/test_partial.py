"""Partial-Bayesian layers: mean mode, sampling, KL, batched MC, state dicts (issue 2, points 1-3)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from monai_bayes.layers import (
    PartialBayesConv2d,
    PartialBayesLayer,
    draw_noise,
    fixed_noise,
    mc_samples,
    sampling_mode,
    select_noise,
)
from monai_bayes.layers.partial import inverse_softplus
from monai_bayes.networks import to_partial_bayes

# (factory of the deterministic layer, input shape) covering every supported type and its options
LAYER_CASES = {
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=1), (2, 3, 11)),
    "conv2d_groups_reflect": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="reflect"), (2, 4, 9, 8)),
    "conv2d_circular_dilated": (
        lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2, padding_mode="circular"),
        (2, 3, 8, 8),
    ),
    "conv2d_same_nobias": (lambda: nn.Conv2d(3, 5, 3, padding="same", bias=False), (2, 3, 7, 7)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, stride=(1, 2, 2), padding=1), (2, 2, 5, 6, 6)),
    "convt1d": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1), (2, 3, 7)),
    "convt2d_outpad_groups": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1),
        (2, 4, 5, 6),
    ),
    "convt3d": (lambda: nn.ConvTranspose3d(2, 3, 2, stride=2), (2, 2, 3, 4, 4)),
    "linear": (lambda: nn.Linear(7, 5), (2, 7)),
    "linear_3d_input": (lambda: nn.Linear(7, 5), (2, 3, 7)),
}


def _convert(layer: nn.Module, fraction: float = 0.3, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=gen) < fraction for n, p in layer.named_parameters()}
    for m in masks.values():
        m.view(-1)[0] = True  # at least one Bayesian entry per parameter
    return to_partial_bayes(layer, masks, inplace=False)


@pytest.fixture(params=sorted(LAYER_CASES))
def case(request):
    torch.manual_seed(0)
    make, shape = LAYER_CASES[request.param]
    layer = make()
    return layer, _convert(layer), torch.randn(shape)


def test_mean_mode_equals_deterministic(case):
    det, pb, x = case
    with sampling_mode(pb, "mean"):
        torch.testing.assert_close(pb(x), det(x), rtol=0, atol=1e-6)


def test_converted_class_keeps_constructor_options(case):
    det, pb, _ = case
    assert isinstance(pb, PartialBayesLayer) and isinstance(pb, type(det))
    for attr in ("stride", "padding", "output_padding", "dilation", "groups", "padding_mode", "in_features"):
        assert getattr(pb, attr, None) == getattr(det, attr, None)


def test_sampling_varies_only_selected_entries(case):
    _, pb, _ = case
    for pname in pb.bayes_param_names:
        mask = pb.bayes_mask(pname)
        samples = pb.sample_parameter(pname, 4)
        param = getattr(pb, pname)
        changed = (samples != param.unsqueeze(0)).any(dim=0)
        assert torch.equal(samples[:, ~mask], param[~mask].expand(4, -1)), "deterministic entries must not move"
        assert changed[mask].all(), "every Bayesian entry must vary"


def test_rho_gradient_and_only_selected(case):
    _, pb, x = case
    out = pb(x)
    (out.square().sum() + pb.kl()).backward()
    for pname in pb.bayes_param_names:
        rho = getattr(pb, f"{pname}_rho")
        k = int(pb.bayes_mask(pname).sum())
        assert rho.numel() == k, "ρ is stored for the selected entries only"
        assert rho.grad is not None and torch.isfinite(rho.grad).all() and (rho.grad != 0).any()
    assert pb.weight.grad is not None and (pb.weight.grad != 0).any()


def test_kl_matches_torch_distributions(case):
    _, pb, _ = case
    expected = torch.zeros(())
    for pname in pb.bayes_param_names:
        param = getattr(pb, pname).detach().reshape(-1)
        mask = pb.bayes_mask(pname).reshape(-1)
        sigma = torch.nn.functional.softplus(getattr(pb, f"{pname}_rho")).detach()
        expected = expected + kl_divergence(Normal(param[mask], sigma), Normal(0.0, 1.0)).sum()
    torch.testing.assert_close(pb.kl().detach(), expected, rtol=1e-5, atol=1e-5)


def test_kl_custom_prior():
    torch.manual_seed(0)
    pb = PartialBayesConv2d(2, 3, 3, prior_mu=0.5, prior_sigma=0.3, sigma_init=0.1)
    sigma = torch.nn.functional.softplus(pb.weight_rho).detach()
    expected = kl_divergence(Normal(pb.weight.detach().reshape(-1), sigma), Normal(0.5, 0.3)).sum()
    sigma_b = torch.nn.functional.softplus(pb.bias_rho).detach()
    expected = expected + kl_divergence(Normal(pb.bias.detach(), sigma_b), Normal(0.5, 0.3)).sum()
    torch.testing.assert_close(pb.kl().detach(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["loop", "grouped", "sparse", "auto"])
def test_batched_samples_equal_sequential_samples(case, strategy):
    _, pb, x = case
    pb.batched_strategy = strategy
    S = 3
    sparse_ok = isinstance(pb, nn.modules.conv._ConvNd) and pb.groups == 1 and pb.weight_bayes_index.numel() > 0
    if strategy == "sparse" and not sparse_ok:
        with mc_samples(pb, S), pytest.raises(ValueError, match="'sparse' needs a conv with groups=1"):
            pb(torch.cat([x] * S))
        return
    noise = draw_noise(pb, S, torch.Generator().manual_seed(1))
    with mc_samples(pb, S), fixed_noise(pb, noise):
        batched = pb(torch.cat([x] * S))
    sequential = []
    for s in range(S):
        with fixed_noise(pb, select_noise(noise, s)):
            sequential.append(pb(x))
    torch.testing.assert_close(batched, torch.cat(sequential), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(sequential[0], sequential[1]), "different noise must give different samples"


def test_batched_rejects_batch_not_multiple_of_samples():
    pb = PartialBayesConv2d(1, 2, 3)
    with mc_samples(pb, 3), pytest.raises(ValueError, match="multiple of 3"):
        pb(torch.randn(4, 1, 5, 5))


def test_sigma_initialisation_relative_and_constant():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3)
    rel = to_partial_bayes(conv, "all", inplace=False)
    expected = torch.clamp(0.05 * conv.weight.detach().abs().reshape(-1), min=1e-3)
    torch.testing.assert_close(rel.sigma("weight").detach(), expected, rtol=1e-5, atol=1e-7)
    const = to_partial_bayes(conv, "all", sigma_init=0.0486, inplace=False)
    torch.testing.assert_close(const.sigma("weight").detach(), torch.full((36,), 0.0486), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(inverse_softplus(torch.tensor(0.0486)), torch.tensor(-3.0), rtol=0, atol=2e-3)


def test_deterministic_checkpoint_loads_with_only_bayes_extras_missing():
    torch.manual_seed(0)
    det = nn.Conv2d(2, 3, 3)
    pb = _convert(nn.Conv2d(2, 3, 3), seed=3)
    result = pb.load_state_dict(det.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["bias_bayes_index", "bias_rho", "weight_bayes_index", "weight_rho"]
    assert result.unexpected_keys == []
    torch.testing.assert_close(pb.weight, det.weight)


def test_partial_checkpoint_with_other_k_loads_and_resizes():
    torch.manual_seed(0)
    a = _convert(nn.Conv2d(2, 3, 3), fraction=0.2, seed=1)
    b = _convert(nn.Conv2d(2, 3, 3), fraction=0.6, seed=2)
    assert a.num_bayes() != b.num_bayes()
    b.load_state_dict(a.state_dict())
    assert b.num_bayes() == a.num_bayes()
    assert torch.equal(b.bayes_mask("weight"), a.bayes_mask("weight"))
    torch.testing.assert_close(b.weight_rho, a.weight_rho)


def _nbytes(module: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def test_storage_grows_by_k_and_full_bayes_is_dense():
    torch.manual_seed(0)
    det = nn.Conv2d(64, 64, 3)
    n = det.weight.numel() + det.bias.numel()
    partial = to_partial_bayes(det, {"weight": torch.rand(det.weight.shape) < 0.01}, inplace=False)
    k = partial.num_bayes()
    assert partial.weight_rho.numel() == k and partial.weight_bayes_index.numel() == k
    assert sum(p.numel() for p in partial.parameters()) == n + k
    full = to_partial_bayes(det, "all", inplace=False)
    assert full.weight_bayes_index.numel() == 0, "full Bayes stores no index"
    assert sum(p.numel() for p in full.parameters()) == 2 * n
    assert _nbytes(partial) / _nbytes(det) < 1.05
    assert 1.95 < _nbytes(full) / _nbytes(det) < 2.05


@pytest.mark.parametrize("transposed", [False, True])
def test_auto_strategy_uses_sparse_path_for_concentrated_selection(transposed, monkeypatch):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 5, 3, stride=2, padding=1, output_padding=1) if transposed else nn.Conv2d(6, 5, 3)
    mask = torch.zeros_like(layer.weight, dtype=torch.bool)
    mask[1, 2] = True  # one (first-dim, second-dim) channel pair: density 1/30
    pb = to_partial_bayes(
        layer, {"weight": mask, "bias": torch.tensor([False, True, False, False, True])}, inplace=False
    )
    import monai_bayes.layers.partial as partial_module

    calls = []
    original = partial_module.forward_with_sparse_samples
    monkeypatch.setattr(
        partial_module, "forward_with_sparse_samples", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    x = torch.randn(2, 6, 6, 6)
    S = 4
    noise = draw_noise(pb, S, torch.Generator().manual_seed(0))
    with mc_samples(pb, S), fixed_noise(pb, noise):
        batched = pb(torch.cat([x] * S))
    assert calls, "auto must pick the sparse strategy for a concentrated selection"
    for s in range(S):
        with fixed_noise(pb, select_noise(noise, s)):
            torch.testing.assert_close(batched[s * 2 : (s + 1) * 2], pb(x), rtol=1e-5, atol=1e-6)
    batched.sum().backward()
    assert (pb.weight_rho.grad != 0).all() and (pb.bias_rho.grad != 0).all()
