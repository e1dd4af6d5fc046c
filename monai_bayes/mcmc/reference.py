"""A model with a known posterior to check SG-MCMC samplers against: Bayesian linear regression.

With ``y = X w + e``, ``e ~ N(0, σ² I)`` and the prior ``w ~ N(0, α⁻¹ I)``, the posterior is
``N(μ, Σ)`` with ``Σ⁻¹ = α I + XᵀX / σ²`` and ``μ = Σ Xᵀ y / σ²`` (Bishop 2006, eq. 3.53-3.54).
:func:`run_blr_chains` runs ``C`` independent full-batch chains at once (one row of a ``(C, d)``
parameter each; the summed loss keeps their gradients separate) through a sampler and a
:class:`~monai_bayes.mcmc.SampleCollector`, so thousands of samples cost a few hundred steps.
Used by ``tests/mcmc`` and ``scripts/sgmcmc_blr_check.py`` (the table in ``docs/sgmcmc.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from monai_bayes.mcmc.collect import SampleCollector

__all__ = ["LinearRegressionProblem", "blr_posterior", "posterior_errors", "run_blr_chains"]


@dataclass(frozen=True)
class LinearRegressionProblem:
    """Data and prior of a Bayesian linear regression (float64).

    Attributes
    ----------
    x : torch.Tensor
        Design matrix, (N, d).
    y : torch.Tensor
        Targets, (N,).
    sigma2 : float
        Noise variance σ².
    alpha : float
        Prior precision α.
    """

    x: torch.Tensor
    y: torch.Tensor
    sigma2: float
    alpha: float

    @classmethod
    def synthetic(cls, n: int = 20, seed: int = 0) -> LinearRegressionProblem:
        """A 2-d problem with correlated, anisotropic posterior (N = ``n``, σ = 0.5, α = 2).

        Parameters
        ----------
        n : int
            Number of data points.
        seed : int
            Seed of the data.

        Returns
        -------
        LinearRegressionProblem
        """
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6], dtype=torch.float64)
        w = torch.tensor([0.8, -0.5], dtype=torch.float64)
        y = x @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        return cls(x=x, y=y, sigma2=0.25, alpha=2.0)


def blr_posterior(problem: LinearRegressionProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form posterior of the weights.

    Parameters
    ----------
    problem : LinearRegressionProblem
        Data and prior.

    Returns
    -------
    tuple of torch.Tensor
        ``(μ (d,), Σ (d, d), Σ⁻¹ (d, d))``.
    """
    dim = problem.x.shape[1]
    precision = problem.alpha * torch.eye(dim, dtype=problem.x.dtype) + problem.x.T @ problem.x / problem.sigma2
    cov = torch.linalg.inv(precision)
    return cov @ problem.x.T @ problem.y / problem.sigma2, cov, precision


class _Chains(nn.Module):
    def __init__(self, chains: int, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(chains, dim, dtype=torch.float64))


def run_blr_chains(
    problem: LinearRegressionProblem,
    make_optimizer: Callable[[Iterable[nn.Parameter], int], torch.optim.Optimizer],
    steps: int,
    chains: int = 256,
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    seed: int = 0,
    **collect: Any,
) -> torch.Tensor:
    """Run ``chains`` full-batch chains of a sampler on the problem and return the collected samples.

    Parameters
    ----------
    problem : LinearRegressionProblem
        Data and prior (the prior enters through the optimiser's ``prior_precision``).
    make_optimizer : callable
        ``(parameters, dataset_size) -> optimiser``.
    steps : int
        Optimiser steps.
    chains : int
        Independent chains run at once, all started at 0.
    make_scheduler : callable, optional
        ``optimiser -> scheduler`` stepped after every step (e.g. :class:`~monai_bayes.mcmc.CyclicalLR`).
    seed : int
        Seed of the global RNG (the samplers' noise).
    **collect
        Keywords of :class:`~monai_bayes.mcmc.SampleCollector` (burn_in, thinning, cycle_length, ...).

    Returns
    -------
    torch.Tensor
        ``(samples × chains, d)``.
    """
    torch.manual_seed(seed)
    model = _Chains(chains, problem.x.shape[1])
    optimizer = make_optimizer(model.parameters(), len(problem.y))
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    collector = SampleCollector(model, **collect)
    for k in range(steps):
        optimizer.zero_grad()
        resid = problem.y[None] - model.theta @ problem.x.T  # (C, N)
        loss = (resid**2 / (2 * problem.sigma2)).mean(dim=1).sum()  # mean per-datum NLL, summed over chains
        loss.backward()
        optimizer.step()
        collector.step(k)
        if scheduler is not None:
            scheduler.step()
    return collector.samples().stacked["theta"].reshape(-1, problem.x.shape[1])


def posterior_errors(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """How far samples are from a Gaussian posterior.

    Parameters
    ----------
    samples : torch.Tensor
        (M, d).
    mean : torch.Tensor
        (d,) exact mean.
    cov : torch.Tensor
        (d, d) exact covariance.

    Returns
    -------
    tuple of float
        ``(max_i |mean error_i| / σ_i, ‖Ĉ − Σ‖_F / ‖Σ‖_F)``.
    """
    mean_err = ((samples.mean(0) - mean) / cov.diagonal().sqrt()).abs().max().item()
    cov_err = (torch.linalg.norm(torch.cov(samples.T) - cov) / torch.linalg.norm(cov)).item()
    return mean_err, cov_err
