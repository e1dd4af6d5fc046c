"""Brier score and NLL: brute-force agreement for Bernoulli / categorical, 2D / 3D / classification, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from _metrics_bruteforce import brier_case, nll_case
from _metrics_data import random_binary_masks, random_probabilities

from monai_bayes.metrics import BrierScoreMetric, NegativeLogLikelihoodMetric, compute_brier_score, compute_nll

TOL = 1e-6


def _data(categorical: bool, spatial: tuple[int, ...], seed: int, channels: int = 3):
    g = torch.Generator().manual_seed(seed)
    c = channels if categorical else 2
    probs = random_probabilities(g, 2, 4, c, spatial, categorical)
    raters = random_binary_masks(g, 2, 3, c, spatial, one_hot=categorical)
    return probs, raters


@pytest.mark.parametrize("categorical", [False, True])
@pytest.mark.parametrize("spatial", [(4, 5), (3, 3, 2), ()])
@pytest.mark.parametrize("rater_mode", ["each", "soft"])
def test_brier_matches_bruteforce(categorical, spatial, rater_mode):
    probs, raters = _data(categorical, spatial, seed=len(spatial) + 10 * categorical)
    likelihood = "categorical" if categorical else "bernoulli"
    result = compute_brier_score(probs, raters, likelihood=likelihood, rater_mode=rater_mode)
    for b in range(2):
        expected = brier_case(probs[b], raters[b], categorical, rater_mode)
        assert result.shape == (2, len(expected))
        for k, ref in enumerate(expected):
            assert abs(result[b, k].item() - ref) < TOL


@pytest.mark.parametrize("categorical", [False, True])
@pytest.mark.parametrize("spatial", [(4, 5), (3, 3, 2), ()])
def test_nll_matches_bruteforce(categorical, spatial):
    probs, raters = _data(categorical, spatial, seed=5 + len(spatial))
    probs[0, :, :, ...] = probs[0, :1]  # identical samples in case 0
    if not categorical:
        probs[1, :, 0].reshape(-1)[0] = 0.0  # log(0) is clamped
    likelihood = "categorical" if categorical else "bernoulli"
    result = compute_nll(probs, raters, likelihood=likelihood)
    soft = compute_nll(probs, raters, likelihood=likelihood, rater_mode="soft")
    assert torch.allclose(result, soft, atol=1e-6)  # NLL is linear in y
    for b in range(2):
        expected = nll_case(probs[b], raters[b], categorical)
        for k, ref in enumerate(expected):
            assert abs(result[b, k].item() - ref) < TOL * max(1.0, abs(ref))


def test_known_values():
    # perfect confident prediction: Brier 0, NLL ~ 0
    y = torch.zeros(1, 1, 1, 4)
    y[..., :2] = 1
    assert compute_brier_score(y.clone(), y).item() == 0.0
    assert compute_nll(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    # p = 0.5 everywhere: Brier 0.25, NLL log 2
    half = torch.full_like(y, 0.5)
    assert compute_brier_score(half, y).item() == pytest.approx(0.25)
    assert compute_nll(half, y).item() == pytest.approx(math.log(2.0))
    # two raters disagreeing on every voxel, p = 0.5: "each" = 0.25, "soft" = 0
    raters = torch.cat([y, 1 - y], dim=1)
    assert compute_brier_score(half, raters, rater_mode="each").item() == pytest.approx(0.25)
    assert compute_brier_score(half, raters, rater_mode="soft").item() == pytest.approx(0.0)
    # majority vote with a tie counts as foreground (>= 0.5)
    assert compute_brier_score(half, raters, rater_mode="majority").item() == pytest.approx(0.25)


def test_metrics_accumulate():
    probs, raters = _data(False, (4, 4), seed=3)
    brier = BrierScoreMetric(likelihood="bernoulli", reduction="mean_batch")
    nll = NegativeLogLikelihoodMetric(likelihood="bernoulli")
    for _ in range(2):
        brier(probs, raters)
        nll(probs, raters)
    assert torch.allclose(brier.aggregate(), compute_brier_score(probs, raters, likelihood="bernoulli").mean(0))
    assert torch.allclose(nll.aggregate(), compute_nll(probs, raters, likelihood="bernoulli").mean())
    with pytest.raises(ValueError, match="must sum to 1"):  # two sigmoid channels are not a softmax
        compute_nll(probs, raters, likelihood="auto")
    assert nll.get_details()["nll"].shape == (4, 2)


def test_bad_input_raises():
    probs, raters = _data(True, (4, 4), seed=1)
    nan = probs.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"y_pred must hold finite probabilities, got 1 NaN/inf value\(s\) in shape"):
        compute_brier_score(nan, raters)
    with pytest.raises(ValueError, match=r"y_pred must hold finite probabilities"):
        NegativeLogLikelihoodMetric()(nan, raters)
    with pytest.raises(ValueError, match=r"y_pred must hold probabilities in \[0, 1\].*logits"):
        compute_nll(probs * 3, raters)
    with pytest.raises(ValueError, match=r"y_pred with likelihood='categorical' must sum to 1"):
        compute_nll(probs[:, :, :2], raters[:, :, :2])
    with pytest.raises(ValueError, match=r"expected \(2, 'R', 3, 4, 4\), got y \(2, 3, 3, 4, 5\)"):
        compute_brier_score(probs, torch.zeros(2, 3, 3, 4, 5))
    with pytest.raises(ValueError, match="rater_mode"):
        BrierScoreMetric(rater_mode="mean")
    with pytest.raises(ValueError, match="likelihood"):
        NegativeLogLikelihoodMetric(likelihood="poisson")
    with pytest.raises(ValueError, match="likelihood='categorical' needs at least 2 channels"):
        compute_nll(probs[:, :, :1], raters[:, :, :1], likelihood="categorical")
