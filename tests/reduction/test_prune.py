"""BMR pruning: masks from eq. 22–23, exact zeros through training / checkpoint / resume, baselines, compact files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import special
from torch import nn

from monai_bayes.layers import PartialBayesLayer, gaussian_kl, kl_divergence
from monai_bayes.networks import to_deterministic, to_partial_bayes
from monai_bayes.reduction import (
    MASK_SUFFIX,
    apply_prune_masks,
    baseline_masks,
    bmr_masks,
    bmr_prune,
    compact_state,
    delta_f_spike,
    enforce_prune_masks,
    flat_posteriors,
    load_compact,
    load_pruned_state_dict,
    prune_report,
    save_compact,
    spike_delta_f_by_layer,
    strip_prune_masks,
    to_flat_bayes,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 3, padding=1))


def _flat(seed: int = 0, gamma0: float = 0.1) -> nn.Module:
    net = to_flat_bayes(_net(seed), gamma0=gamma0, sigma_init=0.02)
    # a spread of posteriors: some weights well determined, many near zero with a wide posterior
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, PartialBayesLayer):
            for p in m.bayes_param_names:
                rho = getattr(m, f"{p}_rho")
                with torch.no_grad():
                    getattr(m, p).mul_(0.2)
                    rho.copy_(torch.empty_like(rho).uniform_(-6.0, -2.0, generator=gen))
    return net


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 8, 8, generator=gen)
    return x, (x > 0).long().squeeze(1)


def _reference_q(df0_layers: list[np.ndarray], a0: float, b0: float, k_max: int) -> list[np.ndarray]:
    """Eq. 22 in numpy/scipy, written from the seed independently of the torch implementation."""
    a = np.full(len(df0_layers), a0)
    b = np.full(len(df0_layers), b0)
    q = [np.full_like(d, 0.5) for d in df0_layers]
    for _ in range(k_max):
        q = [special.expit(special.digamma(a[i]) - special.digamma(b[i]) - d) for i, d in enumerate(df0_layers)]
        a = np.array([a0 + qi.sum() for qi in q])
        b = np.array([b0 + (1 - qi).sum() for qi in q])
    return q


def test_flat_model_units_and_per_layer_gamma():
    net = to_flat_bayes(_net(), gamma0=0.1, layer_gamma0={"2": 0.05})
    assert net[0].prior_sigma == 0.1 and net[2].prior_sigma == 0.05 and net[0].prior_mu == 0.0
    posts = {p.layer: p for p in flat_posteriors(net)}
    torch.testing.assert_close(posts["2"].mu[: net[2].weight.numel()], net[2].weight.detach().reshape(-1) / 0.05)
    torch.testing.assert_close(posts["0"].sigma[-6:], net[0].sigma("bias").detach() / 0.1)
    assert posts["0"].sizes == (54, 6)
    with pytest.raises(ValueError, match="not Bayesian layers"):
        to_flat_bayes(_net(), layer_gamma0={"1": 0.1})
    with pytest.raises(ValueError, match="prior_sigma"):
        to_flat_bayes(_net(), prior_sigma=0.2)


def test_spike_delta_f_by_layer_equals_eq_19_spike_limit_in_flat_units():
    net = _flat(gamma0=0.05)
    fast = spike_delta_f_by_layer(net)
    for post, layer in zip(flat_posteriors(net), fast):
        assert (post.layer, post.params, post.sizes) == (layer.layer, layer.params, layer.sizes)
        torch.testing.assert_close(layer.delta_f0, delta_f_spike(post.mu, post.sigma), rtol=1e-5, atol=1e-4)


def test_bmr_masks_follow_eq_22_and_23():
    net = _flat()
    masks, posterior, layers = bmr_masks(net, alpha0=2.0, beta0=1.0, k_max=4)
    assert layers == ["0", "2"]
    df0 = []
    for name in layers:
        m = net.get_submodule(name)
        mu = torch.cat([m.weight.detach().reshape(-1), m.bias.detach()]).double().numpy() / 0.1
        sd = torch.cat([m.sigma("weight").detach(), m.sigma("bias").detach()]).double().numpy() / 0.1
        df0.append(-0.5 * (np.log(sd**2) + mu**2 / sd**2))
    q_ref = _reference_q(df0, 2.0, 1.0, 4)
    for name, q, ref in zip(layers, posterior.q, q_ref):
        np.testing.assert_allclose(q.double().numpy(), ref, rtol=1e-4, atol=1e-6)
        m = net.get_submodule(name)
        keep = torch.cat([masks[f"{name}.weight"].reshape(-1), masks[f"{name}.bias"]]).numpy()
        np.testing.assert_array_equal(keep, ref >= 0.5)
    frac = 1 - np.concatenate(q_ref).__ge__(0.5).mean()
    assert 0.05 < frac < 0.95, "the fixture should prune some but not all weights"


def test_pruned_entries_stay_zero_through_training():
    for opt_name in ("adamw", "sgd"):
        net = _flat()
        params = list(net.parameters())
        opt = (
            torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
            if opt_name == "adamw"
            else torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=1e-3)
        )
        x, y = _data()
        # a few steps before pruning, so momentum / Adam moments are non-zero everywhere
        for _ in range(3):
            opt.zero_grad()
            (nn.functional.cross_entropy(net(x), y) + kl_divergence(net) / 1000).backward()
            opt.step()
        result = bmr_prune(net, optimizer=opt)
        assert 0 < result.report.pruned < result.report.entries
        pruned = {k: ~v for k, v in result.masks.items()}
        for _ in range(5):
            opt.zero_grad()
            (nn.functional.cross_entropy(net(x), y) + kl_divergence(net) / 1000).backward()
            opt.step()
        state = net.state_dict()
        for name, p in pruned.items():
            assert torch.count_nonzero(state[name][p]) == 0, (opt_name, name)
            layer, pname = name.rsplit(".", 1)
            module = net.get_submodule(layer)
            samples = module.sample_parameter(pname, 3)
            assert torch.count_nonzero(samples[:, p]) == 0, "a posterior sample moved a pruned weight"
            assert module.bayes_mask(pname)[p].sum() == 0, "a pruned entry is still Bayesian"
        # the KL only counts surviving entries
        expected_kl = sum(
            gaussian_kl(m.posterior_mean(p), m.sigma(p), 0.0, 0.1)
            for m in net.modules()
            if isinstance(m, PartialBayesLayer)
            for p in m.bayes_param_names
        )
        torch.testing.assert_close(kl_divergence(net), expected_kl)


def test_checkpoint_and_resume_keep_zeros(tmp_path):
    net = _flat()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = _data()
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    bmr_prune(net, optimizer=opt)
    torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")

    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    fresh = load_pruned_state_dict(_net(seed=5), ckpt["net"], gamma0=0.1)
    assert all(m.prior_sigma == 0.1 for m in fresh.modules() if isinstance(m, PartialBayesLayer))
    for key, value in net.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)
    assert prune_report(fresh).as_dict() == prune_report(net).as_dict()
    net.eval(), fresh.eval()
    from monai_bayes.layers import sampling_mode

    with sampling_mode(net, "mean"), sampling_mode(fresh, "mean"):
        torch.testing.assert_close(fresh(x), net(x))
    # resume the optimizer too, then keep training
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["opt"])
    enforce_prune_masks(fresh, opt2)
    for _ in range(3):
        opt2.zero_grad()
        nn.functional.cross_entropy(fresh(x), y).backward()
        opt2.step()
    for name, module in fresh.named_modules():
        for pname in ("weight", "bias"):
            mask = getattr(module, pname + MASK_SUFFIX, None)
            if mask is not None:
                assert torch.count_nonzero(getattr(module, pname)[~mask]) == 0, name


def test_masks_accumulate_and_report_counts():
    net = _flat()
    first = bmr_prune(net)
    masks = {k: torch.ones_like(v) for k, v in first.masks.items()}
    masks["2.weight"] = torch.zeros_like(masks["2.weight"])  # prune the whole conv weight
    report = apply_prune_masks(net, masks)
    assert not hasattr(net[2], "weight_rho"), "a parameter with no survivor has no ρ"
    assert torch.count_nonzero(net[2].weight) == 0
    for name in first.masks:
        layer, pname = name.rsplit(".", 1)
        stored = getattr(net.get_submodule(layer), pname + MASK_SUFFIX)
        assert not bool((stored & ~first.masks[name]).any()), "a pruned entry came back"
    rows = {r.layer: r for r in report.layers}
    assert rows["2"].pruned >= net[2].weight.numel()
    assert report.pruned == sum(
        int((~getattr(m, p + MASK_SUFFIX)).sum()) for m in (net[0], net[2]) for p in ("weight", "bias")
    )
    assert report.entries == sum(m.weight.numel() + m.bias.numel() for m in (net[0], net[2]))
    assert net(torch.zeros(1, 1, 4, 4)).shape == (1, 2, 4, 4)
    assert "| **total** |" in report.to_markdown()


def test_baselines_prune_the_lowest_scores_at_equal_sparsity():
    net = _flat()
    num = bmr_prune(copy.deepcopy(net)).report.pruned
    posts = flat_posteriors(net)
    mu = torch.cat([p.mu for p in posts])
    sd = torch.cat([p.sigma for p in posts])
    for method, score in (("magnitude", mu.abs()), ("snr", mu.abs() / sd)):
        masks = baseline_masks(net, method, num)
        keep = torch.cat(
            [masks["0.weight"].reshape(-1), masks["0.bias"], masks["2.weight"].reshape(-1), masks["2.bias"]]
        )
        assert int((~keep).sum()) == num
        assert score[~keep].max() <= score[keep].min()
    r1 = baseline_masks(net, "random", num, torch.Generator().manual_seed(3))
    r2 = baseline_masks(net, "random", num, torch.Generator().manual_seed(3))
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert sum(int((~v).sum()) for v in r1.values()) == num
    with pytest.raises(ValueError, match="method"):
        baseline_masks(net, "l2", 3)
    with pytest.raises(ValueError, match="num_pruned"):
        baseline_masks(net, "snr", 10**6)


def test_apply_prune_masks_rejects_bad_masks():
    net = _flat()
    with pytest.raises(ValueError, match="names no weight"):
        apply_prune_masks(net, {"1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        apply_prune_masks(net, {"0.weight": torch.ones(6, 1, 3, 3)})
    with pytest.raises(ValueError, match="threshold"):
        bmr_masks(net, threshold=1.0)
    with pytest.raises(ValueError, match="no Bayesian entries"):
        bmr_masks(_net())


def test_partial_net_prunes_only_bayesian_entries():
    net = _net()
    sel = {"0.weight": torch.zeros(6, 1, 3, 3, dtype=torch.bool)}
    sel["0.weight"][:3] = True
    with torch.no_grad():
        net[0].weight[:3] *= 0.01  # μ̂ ≈ 0.03, σ̂ = 0.2: ΔF(0) ≈ 1.6 > 0, every Bayesian weight is pruned
    to_partial_bayes(net, sel, prior_sigma=0.1, sigma_init=0.02)
    result = bmr_prune(net)
    mask = result.masks["0.weight"]
    assert not mask[:3].any() and mask[3:].all()
    assert result.report.pruned == 27


def test_compact_roundtrip_and_size(tmp_path):
    net = _flat()
    bmr_prune(net)
    path = tmp_path / "pruned.pt"
    size = save_compact(net, path)
    dense = sum(t.numel() * t.element_size() for k, t in net.state_dict().items() if not k.endswith(MASK_SUFFIX))
    assert size.dense_bytes == dense
    assert size.compact_bytes < size.dense_bytes
    assert size.compact_bytes == compact_state(net)[1].compact_bytes
    loaded = load_compact(_net(seed=9), path, gamma0=0.1)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_compact(_net(), tmp_path / "bad.pt")


def test_pruned_posterior_mean_exports_as_the_plain_network():
    net = _flat()
    bmr_prune(net)
    plain = strip_prune_masks(to_deterministic(net))
    reference = _net()
    reference.load_state_dict(plain.state_dict(), strict=True)
    assert torch.count_nonzero(reference[0].weight[~net[0].weight_bmr_mask]) == 0
    assert torch.jit.script(reference) is not None


def test_pass_on_a_fully_pruned_network_changes_nothing():
    net = _flat()
    apply_prune_masks(
        net, {n: torch.zeros_like(p, dtype=torch.bool) for n, p in net.named_parameters() if "rho" not in n}
    )
    assert flat_posteriors(net) == []
    before = prune_report(net).as_dict()
    result = bmr_prune(net)
    assert result.masks == {} and result.layers == [] and result.posterior.iterations == 0
    assert result.report.as_dict() == before and result.report.fraction == 1.0


def test_prior_scale_is_in_the_checkpoint_and_old_checkpoints_still_load():
    """Issue 17 point 5: a reload keeps γ₀ (no reset to 1.0); a checkpoint without the prior keeps the layer's."""
    from monai_bayes.reduction import bmr_prune, load_pruned_state_dict, spike_delta_f_by_layer, to_flat_bayes

    torch.manual_seed(0)

    def plain() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))

    net = to_flat_bayes(plain(), gamma0=0.1, layer_gamma0={"2": 0.3}, sigma_init=0.05)
    bmr_prune(net)
    state = net.state_dict()
    assert state["0.bayes_prior"].tolist() == [0.0, 0.1] and state["2.bayes_prior"].tolist() == [0.0, 0.3]
    fresh = load_pruned_state_dict(plain(), state)  # no gamma0 passed: the stored prior is used
    assert [fresh[0].prior_sigma, fresh[2].prior_sigma] == [pytest.approx(0.1), pytest.approx(0.3)]
    for a, b in zip(spike_delta_f_by_layer(fresh), spike_delta_f_by_layer(net)):
        torch.testing.assert_close(a.delta_f0, b.delta_f0, rtol=0, atol=0)
    torch.testing.assert_close(kl_divergence(fresh), kl_divergence(net), rtol=1e-6, atol=0)
    # a checkpoint written before the prior was stored: strict loading works and keeps the layer's own prior
    old = {k: v for k, v in to_flat_bayes(plain(), gamma0=0.1).state_dict().items() if not k.endswith("bayes_prior")}
    target = to_flat_bayes(plain(), gamma0=0.2)
    target.load_state_dict(old, strict=True)
    assert target[0].prior_sigma == pytest.approx(0.2)
    assert load_pruned_state_dict(plain(), old, gamma0=0.1)[0].prior_sigma == pytest.approx(0.1)
