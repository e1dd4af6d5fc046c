"""Tiered-FF layers (seed 002, eq. 14, 17–18, 25–26): KL, sampling, conversion and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from monai_bayes.layers import (
    HorseshoeBayesLayer,
    draw_noise,
    fixed_noise,
    horseshoe_median_state_dict,
    horseshoe_scale,
    kl_divergence,
    lognormal_gamma_kl,
    mc_samples,
    sampling_mode,
)
from monai_bayes.networks import load_stochastic_state_dict, to_deterministic, to_horseshoe_bayes


def _log_lognormal(x: float, loc: float, scale: float) -> float:
    return -math.log(x * scale * math.sqrt(2 * math.pi)) - (math.log(x) - loc) ** 2 / (2 * scale**2)


def _log_gamma(x: float, shape: float, rate: float) -> float:
    return shape * math.log(rate) - math.lgamma(shape) + (shape - 1) * math.log(x) - rate * x


def test_density_formulas_match_scipy() -> None:
    for x in (0.05, 0.7, 3.0):
        assert _log_lognormal(x, 0.3, 0.6) == pytest.approx(stats.lognorm(s=0.6, scale=math.exp(0.3)).logpdf(x))
        assert _log_gamma(x, 2.0, 6.0) == pytest.approx(stats.gamma(a=2.0, scale=1 / 6.0).logpdf(x))


def _kl_quadrature(loc: float, scale: float, shape: float, rate: float) -> float:
    """∫ q(x) [ln q(x) − ln p(x)] dx by adaptive quadrature over y = ln x."""

    def integrand(y: float) -> float:
        x = math.exp(y)
        log_q = _log_lognormal(x, loc, scale)
        return math.exp(log_q) * x * (log_q - _log_gamma(x, shape, rate))

    value, _ = integrate.quad(integrand, loc - 12 * scale, loc + 12 * scale, limit=200, epsabs=1e-12, epsrel=1e-10)
    return value


def _kl_gauss_hermite(loc: np.ndarray, scale: np.ndarray, shape: float, rate: float) -> np.ndarray:
    """Vectorised E_q[ln q − ln p] by 80-point Gauss–Hermite quadrature in y = ln x (scipy densities)."""
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    y = loc[..., None] + math.sqrt(2.0) * scale[..., None] * nodes
    x = np.exp(y)
    log_q = stats.lognorm.logpdf(x, s=scale[..., None], scale=np.exp(loc)[..., None])
    log_p = stats.gamma.logpdf(x, a=shape, scale=1.0 / rate)
    return (weights * (log_q - log_p)).sum(-1) / math.sqrt(math.pi)


@pytest.mark.parametrize("shape,rate", [(0.5, 1.0), (2.0, 6.0)])
def test_lognormal_gamma_kl_matches_quadrature(shape: float, rate: float) -> None:
    rng = np.random.default_rng(0)
    for loc, scale in zip(rng.uniform(-2, 2, 4), rng.uniform(0.05, 1.0, 4)):
        got = float(
            lognormal_gamma_kl(
                torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64), shape, rate
            )
        )
        assert got == pytest.approx(_kl_quadrature(loc, scale, shape, rate), rel=1e-6, abs=1e-9)


def test_lognormal_gamma_kl_matches_torch_distributions_monte_carlo() -> None:
    loc, scale = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    q = torch.distributions.LogNormal(loc, scale)
    p = torch.distributions.Gamma(torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    x = (
        q.sample(
            (400_000,),
        )
        if False
        else q.rsample(torch.Size([400_000]))
    )
    mc = (q.log_prob(x) - p.log_prob(x)).mean()
    assert float(lognormal_gamma_kl(loc, scale, 0.5, 1.0)) == pytest.approx(float(mc), abs=5e-3)


def test_horseshoe_scale_is_eq14() -> None:
    a, b, ha, hb, c, tau0 = 0.7, 1.9, 0.4, 2.5, 1.3, 0.1
    tau, v = math.sqrt(a / b), tau0 * math.sqrt(ha / hb)
    expected = math.sqrt(c**2 * v**2 * tau**2 / (c**2 + tau**2 * v**2))
    got = horseshoe_scale(
        torch.tensor([math.log(a)]), torch.tensor([math.log(b)]), torch.tensor(math.log(v)), torch.tensor(math.log(c))
    )
    assert float(got) == pytest.approx(expected, rel=1e-6)


def _layer_kl_by_hand(layer: HorseshoeBayesLayer) -> float:
    """KL from independent pieces: torch.distributions for ŵ, Gauss–Hermite quadrature of scipy densities."""
    total = 0.0
    for pname in layer.hs_param_names:
        q = torch.distributions.Normal(getattr(layer, pname).detach().double(), layer.sigma(pname).detach().double())
        total += float(torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum())
    sp = torch.nn.functional.softplus
    unit_loc = layer.hs_unit_loc.detach().double().numpy()
    unit_sd = sp(layer.hs_unit_rho).detach().double().numpy()
    total += float(_kl_gauss_hermite(unit_loc, unit_sd, 0.5, 1.0).sum())
    locs = layer.hs_layer_loc.detach().double().numpy()
    sds = sp(layer.hs_layer_rho).detach().double().numpy()
    total += float(_kl_gauss_hermite(locs[:2], sds[:2], 0.5, 1.0).sum())
    total += float(_kl_gauss_hermite(-2 * locs[2:], 2 * sds[2:], 2.0, 6.0).sum())
    return total


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(3, 2, 2, stride=2),
        nn.Flatten(),
        nn.Linear(2 * 8 * 8, 4),
    )


def test_kl_of_converted_network_matches_independent_sum() -> None:
    net = to_horseshoe_bayes(_net(), tau0=0.2)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("_loc", "_rho")):
                p.add_(0.3 * torch.randn_like(p))
    layers = [m for m in net.modules() if isinstance(m, HorseshoeBayesLayer)]
    assert len(layers) == 3
    expected = sum(_layer_kl_by_hand(m) for m in layers)
    assert float(kl_divergence(net)) == pytest.approx(expected, rel=1e-5)


def test_conversion_keeps_the_network_and_samples_follow_eq17() -> None:
    det = _net()
    x = torch.randn(2, 2, 4, 4)
    net = to_horseshoe_bayes(det, inplace=False)
    with torch.no_grad(), sampling_mode(net, "mean"):
        assert torch.allclose(net(x), det(x), atol=1e-5)  # posterior-median network = trained network
    exported = to_deterministic(net)
    assert not any(isinstance(m, HorseshoeBayesLayer) for m in exported.modules())
    assert torch.allclose(exported(x), det(x), atol=1e-5)
    conv = net[0]
    # one sample by hand from the frozen noise: w = γ(ε) (μ + σ ε_w)
    noise = draw_noise(net, 1, torch.Generator().manual_seed(3))
    with fixed_noise(net, noise), torch.no_grad():
        gamma = conv.sample_scale(1)
        eps_u = noise["0"]["unit"].view(1, 2, 3)
        eps_l = noise["0"]["layer"]
        sp = torch.nn.functional.softplus
        log_a = conv.hs_unit_loc[0] + sp(conv.hs_unit_rho[0]) * eps_u[0, 0]
        log_b = conv.hs_unit_loc[1] + sp(conv.hs_unit_rho[1]) * eps_u[0, 1]
        layer = conv.hs_layer_loc + sp(conv.hs_layer_rho) * eps_l[0]
        tau, v, c = torch.exp(0.5 * (log_a - log_b)), 0.1 * torch.exp(0.5 * (layer[0] - layer[1])), torch.exp(layer[2])
        assert torch.allclose(gamma[0], torch.sqrt(c**2 * v**2 * tau**2 / (c**2 + v**2 * tau**2)), rtol=1e-5)
        w = conv.sample_parameter("weight", gamma)[0]
        w_hat = conv.weight + conv.sigma("weight") * noise["0"]["weight"].view_as(conv.weight)
        assert torch.allclose(w, gamma[0].view(3, 1, 1, 1) * w_hat, rtol=1e-5)
        y = torch.nn.functional.conv2d(x, w, conv.sample_parameter("bias", gamma)[0], padding=1)
        assert torch.allclose(net[0](x), y, atol=1e-5)


def test_batched_samples_equal_one_at_a_time() -> None:
    net = to_horseshoe_bayes(_net())
    x = torch.randn(2, 2, 4, 4)
    noise = draw_noise(net, 3, torch.Generator().manual_seed(0))
    with torch.no_grad(), fixed_noise(net, noise), mc_samples(net, 3):
        batched = net(torch.cat([x] * 3))
    from monai_bayes.layers import select_noise

    singles = []
    for s in range(3):
        with torch.no_grad(), fixed_noise(net, select_noise(noise, s)):
            singles.append(net(x))
    assert torch.allclose(batched, torch.cat(singles), atol=1e-5)


def test_checkpoint_round_trip_rebuilds_horseshoe_layers() -> None:
    net = to_horseshoe_bayes(_net())
    with torch.no_grad():
        net[0].hs_unit_loc.add_(0.5)
    fresh = load_stochastic_state_dict(_net(), net.state_dict())
    assert isinstance(fresh[0], HorseshoeBayesLayer)
    assert torch.equal(fresh[0].hs_unit_loc, net[0].hs_unit_loc)
    assert float(kl_divergence(fresh)) == pytest.approx(float(kl_divergence(net)))


def test_kl_gradients_reach_every_variational_parameter() -> None:
    net = to_horseshoe_bayes(_net())
    x = torch.randn(2, 2, 4, 4)
    loss = net(x).square().mean() + kl_divergence(net)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_median_state_dict_equals_the_deterministic_export() -> None:
    net = to_horseshoe_bayes(_net())
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_loc"):
                p.add_(0.2 * torch.randn_like(p))
    median = horseshoe_median_state_dict(net.state_dict())
    exported = to_deterministic(net).state_dict()
    for key, value in exported.items():
        assert torch.allclose(median[key], value, atol=1e-6), key
