"""Uncertainty decomposition on hand-made cases (issue 2, point 4)."""

from __future__ import annotations

import math

import pytest
import torch

from monai_bayes.uncertainty import (
    expected_entropy,
    mutual_information,
    predictive_entropy,
    predictive_mean,
    uncertainty_maps,
)


def _softmax_samples(B=2, S=5, C=3, H=4, W=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(B, S, C, H, W, generator=gen) * 2, dim=2)


def test_identical_samples_have_zero_mutual_information():
    p = _softmax_samples(S=1).expand(-1, 6, -1, -1, -1)
    assert torch.allclose(mutual_information(p), torch.zeros(()), atol=1e-6)
    torch.testing.assert_close(predictive_entropy(p), expected_entropy(p))


def test_total_is_aleatoric_plus_epistemic_softmax_and_sigmoid():
    p = _softmax_samples()
    maps = uncertainty_maps(p)
    torch.testing.assert_close(maps["total"], maps["aleatoric"] + maps["epistemic"])
    assert maps["total"].shape == (2, 1, 4, 4)
    q = torch.rand(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    smaps = uncertainty_maps(q, "sigmoid")
    torch.testing.assert_close(smaps["total"], smaps["aleatoric"] + smaps["epistemic"])
    assert smaps["total"].shape == (2, 3, 4, 4)


def test_hand_computed_values():
    # two confident but contradicting samples: each has zero entropy, the mean is 50/50
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 2, 1)
    torch.testing.assert_close(predictive_entropy(p), torch.full((1, 1, 1), math.log(2)))
    torch.testing.assert_close(expected_entropy(p), torch.zeros(1, 1, 1))
    torch.testing.assert_close(mutual_information(p), torch.full((1, 1, 1), math.log(2)))
    # two identical uniform samples: all uncertainty is aleatoric
    u = torch.full((1, 2, 4, 1), 0.25)
    torch.testing.assert_close(expected_entropy(u), torch.full((1, 1, 1), math.log(4)))
    torch.testing.assert_close(mutual_information(u), torch.zeros(1, 1, 1))
    # Bernoulli: samples 0.2 and 0.8 per channel
    b = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1)
    h = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    torch.testing.assert_close(expected_entropy(b, "sigmoid"), torch.full((1, 1, 1), h))
    torch.testing.assert_close(predictive_entropy(b, "sigmoid"), torch.full((1, 1, 1), math.log(2)))
    torch.testing.assert_close(predictive_mean(b), torch.full((1, 1, 1), 0.5))


def test_brute_force_against_loops():
    p = _softmax_samples(B=1, S=3, C=2, H=2, W=1)
    mi = mutual_information(p)
    for y in range(2):
        mean = [sum(float(p[0, s, c, y, 0]) for s in range(3)) / 3 for c in range(2)]
        total = -sum(m * math.log(m) for m in mean)
        alea = (
            -sum(sum(float(p[0, s, c, y, 0]) * math.log(float(p[0, s, c, y, 0])) for c in range(2)) for s in range(3))
            / 3
        )
        assert abs(float(mi[0, 0, y, 0]) - (total - alea)) < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="activation"):
        predictive_entropy(torch.rand(1, 2, 2, 3), "relu")
    with pytest.raises(ValueError, match=r"\(B, S, C, \*spatial\)"):
        predictive_entropy(torch.rand(2, 3))
