"""Dirichlet maths of EnD² against torch.distributions and Monte-Carlo sampling."""

from __future__ import annotations

import pytest
import torch

from monai_bayes.distill import (
    dirichlet_nll,
    dirichlet_uncertainty,
    heat_probabilities,
    sample_dirichlet_probabilities,
    smooth_probabilities,
)
from monai_bayes.uncertainty import uncertainty_maps


def _alpha(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) * 1.5)  # (B, C, H, W)


def test_nll_matches_torch_distributions() -> None:
    alpha = _alpha()
    dist = torch.distributions.Dirichlet(alpha.permute(0, 2, 3, 1))  # batch (B, H, W), event C
    draws = smooth_probabilities(dist.sample((6,)), 1e-6, channel_dim=-1)  # (S, B, H, W, C), open simplex
    nll = dirichlet_nll(alpha, draws.permute(1, 0, 4, 2, 3))
    reference = -dist.log_prob(draws).permute(1, 0, 2, 3)
    assert nll.shape == (2, 6, 4, 5)
    torch.testing.assert_close(nll, reference)


def test_closed_forms_match_monte_carlo() -> None:
    alpha = _alpha(1)
    maps = dirichlet_uncertainty(alpha)
    samples = sample_dirichlet_probabilities(alpha, 20000, seed=3).clamp_min(1e-300)
    mc = uncertainty_maps(samples, "softmax")
    torch.testing.assert_close(maps["mean"], alpha / alpha.sum(1, keepdim=True))
    torch.testing.assert_close(maps["total"], mc["total"], atol=0.02, rtol=0.0)
    torch.testing.assert_close(maps["aleatoric"], mc["aleatoric"], atol=0.02, rtol=0.0)
    torch.testing.assert_close(maps["epistemic"], mc["epistemic"], atol=0.02, rtol=0.0)
    torch.testing.assert_close(maps["total"], maps["aleatoric"] + maps["epistemic"])


def test_sharp_dirichlet_has_no_epistemic_uncertainty() -> None:
    alpha = torch.tensor([[1e6, 1e6]], dtype=torch.float64).view(1, 2, 1)
    maps = dirichlet_uncertainty(alpha)
    torch.testing.assert_close(
        maps["total"], torch.full((1, 1, 1), torch.log(torch.tensor(2.0)).item(), dtype=torch.float64)
    )
    assert float(maps["epistemic"]) < 1e-5


def test_sampling_is_seeded_and_shaped() -> None:
    alpha = _alpha().float()
    a = sample_dirichlet_probabilities(alpha, 3, seed=7)
    b = sample_dirichlet_probabilities(alpha, 3, seed=7)
    assert a.shape == (2, 3, 3, 4, 5)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.sum(2), torch.ones(2, 3, 4, 5))


def test_heating_and_smoothing() -> None:
    p = torch.tensor([0.9, 0.1]).view(1, 1, 2)
    heated = heat_probabilities(p, 2.0)
    expected = torch.tensor([0.75, 0.25])  # softmax(ln p / 2) ∝ sqrt(p): 3/4, 1/4
    torch.testing.assert_close(heated.flatten(), expected)
    torch.testing.assert_close(heat_probabilities(p, 1.0), p)
    torch.testing.assert_close(
        smooth_probabilities(torch.tensor([[[1.0, 0.0]]]), 0.1).flatten(), torch.tensor([0.95, 0.05])
    )
    with pytest.raises(ValueError, match="epsilon"):
        smooth_probabilities(p, 1.0)
    with pytest.raises(ValueError, match="probs must"):
        dirichlet_nll(torch.ones(1, 2, 3), torch.full((1, 2, 3), 0.5))
