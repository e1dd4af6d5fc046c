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

import pytest
import torch
from torch import nn

from monai_bayes.mcmc import SGHMC, SGLD, CyclicalLR, SampleCollector, cyclical_lr_factor, in_sampling_stage


class Chains(nn.Module):
    """``C`` independent chains of a ``d``-dim weight vector, one row each."""

    def __init__(self, chains: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(chains, dim))


def problem(n: int = 20, dim: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6], dtype=torch.float64)
    w = torch.tensor([0.8, -0.5], dtype=torch.float64)
    y = x @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return {
        "x": x,
        "y": y,
        "sigma2": torch.tensor(0.25, dtype=torch.float64),
        "alpha": torch.tensor(2.0, dtype=torch.float64),
    }


def posterior(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, covariance, precision) of N(w | μ, Σ), Σ⁻¹ = α I + XᵀX/σ², μ = Σ Xᵀy/σ² (Bishop eq. 3.53-3.54)."""
    dim = p["x"].shape[1]
    precision = p["alpha"] * torch.eye(dim, dtype=torch.float64) + p["x"].T @ p["x"] / p["sigma2"]
    cov = torch.linalg.inv(precision)
    return cov @ p["x"].T @ p["y"] / p["sigma2"], cov, precision


def run_chains(p, make_optimizer, steps: int, chains: int = 256, scheduler=None, **collect) -> torch.Tensor:
    """Full-batch SG-MCMC on every chain at once; returns the collected samples, (num, d)."""
    torch.manual_seed(0)
    model = Chains(chains, p["x"].shape[1]).double()
    opt = make_optimizer(model.parameters(), len(p["y"]))
    sched = scheduler(opt) if scheduler is not None else None
    collector = SampleCollector(model, **collect)
    for k in range(steps):
        opt.zero_grad()
        resid = p["y"][None] - model.theta @ p["x"].T  # (C, N)
        loss = (resid**2 / (2 * p["sigma2"])).mean(dim=1).sum()  # mean per-datum NLL, summed over chains
        loss.backward()
        opt.step()
        collector.step(k)
        if sched is not None:
            sched.step()
    return collector.samples().stacked["theta"].reshape(-1, p["x"].shape[1])


def _errors(samples: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    mean_err = ((samples.mean(0) - mu) / cov.diagonal().sqrt()).abs().max().item()
    cov_err = (torch.linalg.norm(torch.cov(samples.T) - cov) / torch.linalg.norm(cov)).item()
    return mean_err, cov_err


@pytest.fixture(scope="module")
def blr():
    p = problem()
    mu, cov, precision = posterior(p)
    return p, mu, cov, precision


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
    alpha = p["alpha"].item()
    samples = run_chains(p, lambda ps, n: make(ps, n, alpha), steps=900, burn_in=300, thinning=40)
    assert samples.shape == (256 * 15, 2)
    mean_err, cov_err = _errors(samples, mu, cov)
    assert mean_err < 0.05 and cov_err < 0.08, (mean_err, cov_err)


def test_sgld_stationary_covariance_is_the_discretised_one(blr):
    """For a Gaussian target, full-batch SGLD's stationary covariance is exactly (P − ηP²/2)⁻¹ (η = lr/N)."""
    p, _, cov, precision = blr
    lr, n = 0.2, len(p["y"])
    samples = run_chains(
        p,
        lambda ps, n: SGLD(ps, lr=lr, dataset_size=n, prior_precision=p["alpha"].item()),
        900,
        256,
        None,
        burn_in=300,
        thinning=40,
    )
    eta = lr / n
    discretised = torch.linalg.inv(precision - eta * precision @ precision / 2)
    emp = torch.cov(samples.T)
    assert torch.linalg.norm(emp - discretised) / torch.linalg.norm(discretised) < 0.08
    assert torch.linalg.norm(discretised - cov) / torch.linalg.norm(cov) > 0.15  # the bias the check resolves


def test_temperature_scales_the_covariance(blr):
    """At temperature T the stationary covariance is T·(P − ηP²/2)⁻¹."""
    p, _, _, precision = blr
    lr, n = 0.05, len(p["y"])
    make = lambda ps, n: SGLD(ps, lr=lr, dataset_size=n, prior_precision=p["alpha"].item(), temperature=0.5)  # noqa: E731
    samples = run_chains(p, make, steps=900, burn_in=300, thinning=40)
    expected = 0.5 * torch.linalg.inv(precision - lr / n * precision @ precision / 2)
    assert torch.linalg.norm(torch.cov(samples.T) - expected) / torch.linalg.norm(expected) < 0.08


def test_cyclical_sghmc_cycle_end_samples(blr):
    p, mu, cov, _ = blr
    length, beta = 300, 0.5
    samples = run_chains(
        p,
        lambda ps, n: SGHMC(ps, lr=0.01, dataset_size=n, prior_precision=p["alpha"].item()),
        steps=3 * length,
        scheduler=lambda opt: CyclicalLR(opt, length, beta),
        cycle_length=length,
        exploration_fraction=beta,
        samples_per_cycle=3,
        thinning=20,
    )
    assert samples.shape == (256 * 3 * 3, 2)
    mean_err, cov_err = _errors(samples, mu, cov)
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
