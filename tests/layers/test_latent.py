"""Latent / low-rank stochastic layers against independent computations (torch.distributions)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, LowRankMultivariateNormal, Normal, kl_divergence

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import (
    GaussianLatent,
    LowRankLogits,
    NestedLatentMask,
    diagonal_gaussian_kl,
    draw_noise,
    fixed_noise,
    low_rank_log_likelihood,
    low_rank_sample,
    mc_samples,
    nested_width,
    sampling_mode,
)
from monai_bayes.layers.nested_math import chain_mask_probabilities
from monai_bayes.networks import ProbabilisticUNet, StochasticSegmentationNetwork


def test_gaussian_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    prior, posterior = torch.randn(5, 8, generator=gen), torch.randn(5, 8, generator=gen)
    layer = GaussianLatent(4)
    layer(prior, posterior)
    p = Independent(Normal(prior[:, :4], prior[:, 4:].exp()), 1)
    q = Independent(Normal(posterior[:, :4], posterior[:, 4:].exp()), 1)
    expected = kl_divergence(q, p).mean()
    torch.testing.assert_close(layer.kl(), expected)
    torch.testing.assert_close(
        diagonal_gaussian_kl(posterior[:, :4], posterior[:, 4:], prior[:, :4], prior[:, 4:]).sum(1), kl_divergence(q, p)
    )
    layer(prior)  # inference pass: no posterior, no KL
    assert float(layer.kl()) == 0.0


def test_gaussian_latent_samples_prior_and_freezes_noise():
    prior = torch.tensor([[1.0, -2.0, math.log(0.5), math.log(2.0)]])
    layer = GaussianLatent(2)
    z = torch.cat([layer(prior) for _ in range(4000)])
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.1, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([0.5, 2.0]), atol=0.1, rtol=0)
    with sampling_mode(layer, "mean"):
        torch.testing.assert_close(layer(prior), prior[:, :2])
    noise = draw_noise(layer, 3, torch.Generator().manual_seed(0))
    with mc_samples(layer, 3), fixed_noise(layer, noise):
        z = layer(prior.repeat(6, 1))  # S = 3 samples x B = 2 items, sample-major
    expected = prior[:, :2] + prior[:, 2:].exp() * noise[""]["z"]
    torch.testing.assert_close(z[::2], expected)
    torch.testing.assert_close(z[1::2], expected)  # one latent draw per sample, shared by its items


def test_nested_latent_mask_orders_and_fixes_width():
    mask = NestedLatentMask(4, always_kept=1, prior_keep=0.8, temperature=0.5, straight_through=True)
    z = torch.ones(2000, 4)
    m = mask(z)
    assert set(m.unique().tolist()) <= {0.0, 1.0}  # straight-through: hard masks forward
    assert bool((m[:, :-1] >= m[:, 1:]).all())  # ordered: a dimension is kept only if all before it are
    torch.testing.assert_close(m.mean(0), mask.keep_probabilities().detach(), atol=0.05, rtol=0)
    with nested_width(mask, 2):
        torch.testing.assert_close(mask(z), torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(2000, -1))
    with sampling_mode(mask, "mean"):
        torch.testing.assert_close(mask(z), z)
    beta = torch.softmax(mask.order_logits, 0)
    prior = chain_mask_probabilities(mask.prior_keep)
    torch.testing.assert_close(mask.kl(), (beta * (beta / prior).log()).sum())  # eq. 11 by hand
    with pytest.raises(ValueError, match="width"):
        mask.width = 5


def _tiny_low_rank(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean = torch.randn(1, 2, 2, 1, generator=gen)  # N = 1, C = 2, 2 x 1 voxels: 4 logits
    cov_diag = torch.rand(1, 2, 2, 1, generator=gen) * 0.5 + 0.1
    cov_factor = torch.randn(1, 3, 2, 2, 1, generator=gen)  # rank 3
    return mean, cov_diag, cov_factor


def _reference(mean, cov_diag, cov_factor) -> LowRankMultivariateNormal:
    return LowRankMultivariateNormal(
        mean.reshape(-1), cov_factor.reshape(cov_factor.shape[1], -1).T, cov_diag.reshape(-1)
    )


def test_low_rank_samples_have_the_low_rank_covariance():
    gen = torch.Generator().manual_seed(0)
    mean, cov_diag, cov_factor = _tiny_low_rank(gen)
    m = 200_000
    samples = low_rank_sample(
        mean, cov_diag, cov_factor, torch.randn(m, 1, 3, generator=gen), torch.randn(m, 1, 2, 2, 1, generator=gen)
    ).reshape(m, -1)
    ref = _reference(mean, cov_diag, cov_factor)
    torch.testing.assert_close(samples.mean(0), ref.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), ref.covariance_matrix, atol=0.08, rtol=0.02)


def test_low_rank_log_likelihood_matches_lowrank_mvn_estimate():
    gen = torch.Generator().manual_seed(1)
    mean, cov_diag, cov_factor = _tiny_low_rank(gen)
    target = torch.tensor([[[[1], [0]]]])  # (N, 1, 2, 1)
    ours = low_rank_log_likelihood(mean, cov_diag, cov_factor, target, 100_000, generator=gen)
    # independent estimate: logits drawn by torch.distributions, the likelihood of the mask by brute force
    torch.manual_seed(2)
    logits = _reference(mean, cov_diag, cov_factor).sample((100_000,)).reshape(-1, 2, 2)  # (M, C, voxels)
    log_p = torch.log_softmax(logits, 1)[:, [1, 0], [0, 1]].sum(1)  # voxel 0 is class 1, voxel 1 class 0
    expected = torch.logsumexp(log_p, 0) - math.log(log_p.shape[0])
    torch.testing.assert_close(ours[0], expected, atol=0.01, rtol=0)


def test_low_rank_logits_layer_shapes_and_modes():
    layer = LowRankLogits(rank=2)
    mean, log_diag, factor = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.randn(3, 4, 4, 4)
    out = layer(mean, log_diag, factor)
    assert out.shape == mean.shape and not torch.equal(out, mean)
    with sampling_mode(layer, "mean"):
        torch.testing.assert_close(layer(mean, log_diag, factor), mean)
    with pytest.raises(ValueError, match="rank"):
        layer(mean, log_diag, factor[:, :3])


@pytest.mark.parametrize("kind", ["prob_unet", "bn3_prob_unet", "ssn"])
def test_shared_prefix_gives_the_same_samples(kind):
    torch.manual_seed(0)
    net_kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": (4, 8), "strides": (2,)}
    if kind == "ssn":
        net = StochasticSegmentationNetwork(**net_kwargs, rank=2)
    else:
        net = ProbabilisticUNet(**net_kwargs, latent_dim=3, nested_latent=kind == "bn3_prob_unet")
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    outs = [MonteCarloInferer(4, chunk_size=4, shared_prefix=s, seed=0)(x, net) for s in (True, False)]
    torch.testing.assert_close(outs[0], outs[1])
    if kind != "ssn":  # the latent draw is frozen per sample: the samples differ from each other
        assert not torch.allclose(outs[0][:, 0], outs[0][:, 1])


def test_latent_width_is_the_width_axis_of_the_sweep():
    from monai_bayes.evaluation import evaluate_width_sweep

    torch.manual_seed(0)
    net = ProbabilisticUNet(2, 1, 2, (4, 8), (2,), latent_dim=3, nested_latent=True).eval()
    x = torch.randn(2, 1, 8, 8)
    noise = draw_noise(net, 1, torch.Generator().manual_seed(0))
    changed = {k: {n: e.clone() for n, e in v.items()} for k, v in noise.items()}
    changed["latent"]["z"][:, 1:] += 5.0  # only the latent dimensions after the first
    with nested_width(net, 1), sampling_mode(net, "sample"):
        with fixed_noise(net, noise):
            a = net(x)
        with fixed_noise(net, changed):
            b = net(x)
    torch.testing.assert_close(a, b)  # width 1 keeps latent dimension 1 only
    with sampling_mode(net, "sample"), fixed_noise(net, changed):
        assert not torch.allclose(net(x), a)  # all dimensions kept: the others matter
    data = [{"image": x, "label": torch.randint(0, 2, (2, 3, 8, 8))}]
    result = evaluate_width_sweep(net, data, widths=[1, 3], num_samples=[1, 4])
    assert result.method == "BN3" and result.groups == 3
    assert {key[0] for key in result.values["ged"]} == {1, 3}
