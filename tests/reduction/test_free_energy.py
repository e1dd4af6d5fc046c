"""ΔF (eq. 19) and the spike-and-slab fixed point (eq. 20–22) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, special, stats

from monai_bayes.reduction import delta_f, delta_f_spike, spike_and_slab_posterior


def _log_expected_ratio(mu: float, sigma: float, theta: float) -> float:
    """ln E_q[N(w; 0, θ²) / N(w; 0, 1)] by adaptive quadrature (the definition of ΔF, eq. 8–9)."""

    def log_normal(w: float, m: float, s: float) -> float:
        return -0.5 * ((w - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)

    def integrand(w: float) -> float:
        return math.exp(log_normal(w, mu, sigma) + log_normal(w, 0.0, theta) - log_normal(w, 0.0, 1.0))

    # the integrand is a (scaled) Gaussian in w: integrate around its mode, where all the mass is
    prec = 1 / sigma**2 + 1 / theta**2 - 1
    centre, width = (mu / sigma**2) / prec, 1 / math.sqrt(prec)
    value, _ = integrate.quad(integrand, centre - 40 * width, centre + 40 * width, epsabs=0, epsrel=1e-12, limit=200)
    return math.log(value)


def test_delta_f_matches_quadrature():
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 1.5, 40)
    sigma = rng.uniform(0.05, 0.95, 40)
    theta = rng.uniform(0.05, 1.5, 40)
    ours = delta_f(torch.tensor(mu), torch.tensor(sigma), torch.tensor(theta)).numpy()
    for i in range(40):
        ref = _log_expected_ratio(mu[i], sigma[i], theta[i])
        assert abs(ours[i] - ref) <= 1e-6 * max(abs(ref), 1.0), (mu[i], sigma[i], theta[i], ours[i], ref)


def test_spike_limit_and_unit_theta():
    mu = torch.tensor([0.0, 0.3, -2.0, 1e-3], dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 0.2, 0.9], dtype=torch.float64)
    spike = delta_f_spike(mu, sigma)
    # closed form of the seed (below eq. 22) evaluated independently
    expected = torch.tensor(
        [-0.5 * (math.log(s**2) + m**2 / s**2) for m, s in zip(mu.tolist(), sigma.tolist())], dtype=torch.float64
    )
    torch.testing.assert_close(spike, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(delta_f(mu, sigma, 0.0), spike, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(delta_f(mu, sigma, 1e-7), spike, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(delta_f(mu, sigma, 1.0), torch.zeros_like(mu), rtol=0, atol=1e-12)


def test_delta_f_is_log_evidence_change_of_a_conjugate_model():
    """y = x·ŵ + ε with ŵ ~ N(0, 1): the posterior is Gaussian and exact, so eq. 19 equals ln p̃(D) − ln p(D)."""
    rng = np.random.default_rng(1)
    noise = 0.7
    for true_w, n in ((0.0, 5), (0.05, 8), (1.2, 6), (-0.6, 3)):
        x = rng.normal(size=n)
        y = true_w * x + noise * rng.normal(size=n)
        precision = 1.0 + x @ x / noise**2
        mu, sigma = (x @ y / noise**2) / precision, 1 / math.sqrt(precision)

        def log_evidence(prior_sd: float, x: np.ndarray = x, y: np.ndarray = y) -> float:
            cov = prior_sd**2 * np.outer(x, x) + noise**2 * np.eye(len(x))
            return stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(y)

        for theta in (0.0, 0.1, 0.5, 0.9, 1.3):
            expected = log_evidence(theta) - log_evidence(1.0)
            ours = float(delta_f(torch.tensor(mu), torch.tensor(sigma), theta))
            assert ours == pytest.approx(expected, rel=1e-7, abs=1e-9)
            # ΔF > 0 exactly where the reduced model has the larger evidence
            assert (ours > 0) == (log_evidence(theta) > log_evidence(1.0))


def test_delta_f_rejects_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        delta_f(torch.tensor([0.0]), torch.tensor([0.0]), 0.5)
    with pytest.raises(ValueError, match="theta"):
        delta_f(torch.tensor([0.0]), torch.tensor([0.5]), -0.1)
    with pytest.raises(ValueError, match="rho"):
        delta_f(torch.tensor([0.0]), torch.tensor([3.0]), 3.0)


def _free_energy(logits: np.ndarray, log_ab: np.ndarray, df0: np.ndarray, a0: float, b0: float) -> float:
    """Eq. 20 for one layer under q(λ)=Bernoulli(q), q(π)=Beta(α, β), written out independently."""
    q = special.expit(logits)
    a, b = np.exp(log_ab)
    e_ln_pi, e_ln_1mpi = special.digamma(a) - special.digamma(a + b), special.digamma(b) - special.digamma(a + b)
    # E_q[-Σ ΔF(θ)]: ΔF(λ=1) = 0 (prior unchanged), ΔF(λ=0) = spike limit
    expected_reduction = -np.sum((1 - q) * df0)
    entropy_term = np.sum(special.xlogy(q, q) + special.xlogy(1 - q, 1 - q))
    cross = -np.sum(q * e_ln_pi + (1 - q) * e_ln_1mpi)
    kl_beta = (
        special.betaln(a0, b0) - special.betaln(a, b)
        + (a - a0) * special.digamma(a) + (b - b0) * special.digamma(b)
        + (a0 - a + b0 - b) * special.digamma(a + b)
    )  # fmt: skip
    return expected_reduction + entropy_term + cross + kl_beta


def test_fixed_point_equals_brute_force_minimum():
    rng = np.random.default_rng(2)
    df0 = rng.normal(0.0, 3.0, 12)
    a0, b0 = 2.0, 3.0
    ours = spike_and_slab_posterior([torch.tensor(df0)], a0, b0, k_max=500, tol=1e-14)
    x0 = np.concatenate([np.zeros(12), np.log([a0, b0])])
    res = optimize.minimize(
        lambda v: _free_energy(v[:12], v[12:], df0, a0, b0),
        x0,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000},
    )
    q_brute = special.expit(res.x[:12])
    np.testing.assert_allclose(ours.q[0].numpy(), q_brute, atol=2e-4)
    np.testing.assert_allclose(ours.alpha.numpy(), [np.exp(res.x[12])], rtol=1e-3)
    np.testing.assert_allclose(ours.beta.numpy(), [np.exp(res.x[13])], rtol=1e-3)
    # and the fixed point's free energy is not above the optimiser's
    f_ours = _free_energy(
        special.logit(ours.q[0].numpy()), np.log([float(ours.alpha[0]), float(ours.beta[0])]), df0, a0, b0
    )
    assert f_ours <= res.fun + 1e-8


def test_k_max_is_honoured_and_updates_match_eq_22():
    df0 = [torch.tensor([4.0, -3.0, 0.5, 2.0], dtype=torch.float64), torch.tensor([-1.0, 6.0], dtype=torch.float64)]
    one = spike_and_slab_posterior(df0, 1.0, 1.0, k_max=1)
    assert one.iterations == 1
    # first iteration by hand: ζ = ψ(1) − ψ(1) = 0 → q = sigmoid(−ΔF0)
    torch.testing.assert_close(one.q[0], torch.sigmoid(-df0[0]))
    torch.testing.assert_close(one.alpha, torch.stack([1 + one.q[0].sum(), 1 + one.q[1].sum()]))
    torch.testing.assert_close(one.beta, torch.stack([1 + (1 - one.q[0]).sum(), 1 + (1 - one.q[1]).sum()]))
    # second iteration by hand from the first
    zeta = torch.special.digamma(one.alpha) - torch.special.digamma(one.beta)
    two = spike_and_slab_posterior(df0, 1.0, 1.0, k_max=2)
    assert two.iterations == 2
    torch.testing.assert_close(two.q[1], torch.sigmoid(zeta[1] - df0[1]))
    four = spike_and_slab_posterior(df0, 1.0, 1.0)  # seed default k_max = 4
    assert four.iterations == 4
    assert spike_and_slab_posterior(df0, 1.0, 1.0, k_max=50, tol=1e-3).iterations < 50


def test_fixed_point_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        spike_and_slab_posterior([])
    with pytest.raises(ValueError, match="alpha0"):
        spike_and_slab_posterior([torch.zeros(2)], alpha0=0.0)
    with pytest.raises(ValueError, match="k_max"):
        spike_and_slab_posterior([torch.zeros(2)], k_max=0)
