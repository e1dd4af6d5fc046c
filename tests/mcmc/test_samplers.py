"""SGLD / SGHMC / cSGHMC samples of a Bayesian linear regression vs its closed-form posterior.

Every chain runs full-batch on the same data (256 chains at once, one row of a parameter each), so the
only error sources are the discretisation (O(η λ) for step η on U), the finite number of samples and,
for the cyclical schedule, chains that have not re-equilibrated after the noise-free exploration stage.
Stated tolerances (measured errors in brackets, seed 0): SGLD / SGHMC mean within 0.05 posterior sd
[0.01], covariance within 8 % relative Frobenius error [≤ 4 %]; cSGHMC (cycle-end collection) mean within
0.1 sd [0.02] and covariance within 25 % [15 %, under-dispersed: the sampling stage of a 300-step cycle is
short against the mixing time].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_bayes.mcmc import SGHMC, SGLD, CyclicalLR, SampleCollector, cyclical_lr_factor, in_sampling_stage
from monai_bayes.mcmc.reference import LinearRegressionProblem, blr_posterior, posterior_errors, run_blr_chains


@pytest.fixture(scope="module")
def blr():
    p = LinearRegressionProblem.synthetic()
    mu, cov, precision = blr_posterior(p)
    return p, mu, cov, precision


def test_closed_form_is_the_ridge_solution_and_the_hessian(blr):
    """Independent check of the reference: μ is the ridge-regression minimiser (numpy lstsq on the augmented
    system), Σ⁻¹ the Hessian of the negative log posterior (torch.autograd)."""
    p, mu, _, precision = blr
    x, y = p.x.numpy(), p.y.numpy()
    aug_x = np.vstack([x / np.sqrt(p.sigma2), np.sqrt(p.alpha) * np.eye(2)])
    aug_y = np.concatenate([y / np.sqrt(p.sigma2), np.zeros(2)])
    np.testing.assert_allclose(np.linalg.lstsq(aug_x, aug_y, rcond=None)[0], mu.numpy(), rtol=1e-10)

    def neg_log_post(w):
        return ((p.y - p.x @ w) ** 2).sum() / (2 * p.sigma2) + p.alpha / 2 * (w**2).sum()

    hessian = torch.autograd.functional.hessian(neg_log_post, mu)
    torch.testing.assert_close(hessian, precision)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps, n, a: SGLD(ps, lr=0.05, dataset_size=n, prior_precision=a),
        lambda ps, n, a: SGHMC(ps, lr=0.004, dataset_size=n, prior_precision=a, momentum=0.9),
    ],
    ids=["sgld", "sghmc"],
)
def test_constant_step_samples_match_the_closed_form_posterior(blr, make):
    p, mu, cov, _ = blr
    alpha = p.alpha
    samples = run_blr_chains(p, lambda ps, n: make(ps, n, alpha), steps=600, burn_in=200, thinning=25)
    assert samples.shape == (256 * 16, 2)
    mean_err, cov_err = posterior_errors(samples, mu, cov)
    assert mean_err < 0.05 and cov_err < 0.08, (mean_err, cov_err)


def test_sgld_stationary_covariance_is_the_discretised_one(blr):
    """For a Gaussian target, full-batch SGLD's stationary covariance is exactly (P − ηP²/2)⁻¹ (η = lr/N)."""
    p, _, cov, precision = blr
    lr, n = 0.2, len(p.y)
    samples = run_blr_chains(
        p,
        lambda ps, n: SGLD(ps, lr=lr, dataset_size=n, prior_precision=p.alpha),
        600,
        burn_in=200,
        thinning=25,
    )
    eta = lr / n
    discretised = torch.linalg.inv(precision - eta * precision @ precision / 2)
    emp = torch.cov(samples.T)
    assert torch.linalg.norm(emp - discretised) / torch.linalg.norm(discretised) < 0.08
    assert torch.linalg.norm(discretised - cov) / torch.linalg.norm(cov) > 0.15  # the bias the check resolves


def test_temperature_scales_the_covariance(blr):
    """At temperature T the stationary covariance is T·(P − ηP²/2)⁻¹."""
    p, _, _, precision = blr
    lr, n = 0.05, len(p.y)
    make = lambda ps, n: SGLD(ps, lr=lr, dataset_size=n, prior_precision=p.alpha, temperature=0.5)  # noqa: E731
    samples = run_blr_chains(p, make, steps=600, burn_in=200, thinning=25)
    expected = 0.5 * torch.linalg.inv(precision - lr / n * precision @ precision / 2)
    assert torch.linalg.norm(torch.cov(samples.T) - expected) / torch.linalg.norm(expected) < 0.08


def test_cyclical_sghmc_cycle_end_samples(blr):
    p, mu, cov, _ = blr
    length, beta = 300, 0.5
    samples = run_blr_chains(
        p,
        lambda ps, n: SGHMC(ps, lr=0.01, dataset_size=n, prior_precision=p.alpha),
        steps=3 * length,
        make_scheduler=lambda opt: CyclicalLR(opt, length, beta),
        cycle_length=length,
        exploration_fraction=beta,
        samples_per_cycle=3,
        thinning=20,
    )
    assert samples.shape == (256 * 3 * 3, 2)
    mean_err, cov_err = posterior_errors(samples, mu, cov)
    assert mean_err < 0.1 and cov_err < 0.25, (mean_err, cov_err)


def test_cyclical_schedule_is_zhang_eq_1_and_switches_the_noise():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = SGHMC([param], lr=0.4, dataset_size=10)
    sched = CyclicalLR(opt, cycle_length=10, exploration_fraction=0.7)
    lrs, noise = [], []
    for _ in range(25):
        lrs.append(opt.param_groups[0]["lr"])
        noise.append(opt.param_groups[0]["add_noise"])
        opt.step()
        sched.step()
    expected = [0.4 / 2 * (math.cos(math.pi * (k % 10) / 10) + 1) for k in range(25)]
    assert lrs == pytest.approx(expected)
    assert noise == [(k % 10) >= 7 for k in range(25)]
    assert cyclical_lr_factor(10, 10) == 1.0 and in_sampling_stage(9, 10, 0.7)


def test_noise_std_is_sqrt_2_lr_t_over_n():
    """Zero gradient: one SGLD step moves θ by N(0, 2·lr·T/N); SGHMC by N(0, 2·α·lr·T/N)."""
    param = torch.nn.Parameter(torch.zeros(200_000))
    param.grad = torch.zeros_like(param)
    SGLD([param], lr=0.3, dataset_size=6, temperature=2.0).step()
    assert param.detach().std().item() == pytest.approx(math.sqrt(2 * 0.3 * 2.0 / 6), rel=0.01)
    param2 = torch.nn.Parameter(torch.zeros(200_000))
    param2.grad = torch.zeros_like(param2)
    SGHMC([param2], lr=0.3, dataset_size=6, momentum=0.75).step()
    assert param2.detach().std().item() == pytest.approx(math.sqrt(2 * 0.25 * 0.3 / 6), rel=0.01)


def test_collector_schedules_and_errors():
    net = torch.nn.Linear(1, 1)
    plain = SampleCollector(net, burn_in=5, thinning=3)
    assert [k for k in range(15) if plain.should_collect(k)] == [5, 8, 11, 14]
    cyc = SampleCollector(net, cycle_length=10, exploration_fraction=0.5, samples_per_cycle=2, thinning=2)
    assert [k for k in range(30) if cyc.should_collect(k)] == [7, 9, 17, 19, 27, 29]
    capped = SampleCollector(net, max_samples=2)
    assert sum(capped.step(k) for k in range(10)) == 2
    with pytest.raises(ValueError, match="no posterior sample"):
        SampleCollector(net, burn_in=100).samples()
    for bad in ({"thinning": 0}, {"burn_in": -1}, {"cycle_length": 10, "exploration_fraction": 1.0}):
        with pytest.raises(ValueError):
            SampleCollector(net, **bad)
    with pytest.raises(ValueError, match="momentum"):
        SGHMC([torch.nn.Parameter(torch.zeros(1))], lr=0.1, dataset_size=1, momentum=1.0)
    with pytest.raises(ValueError, match="dataset_size"):
        SGLD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, dataset_size=0)
