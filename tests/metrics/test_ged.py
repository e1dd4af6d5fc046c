"""GED: brute-force agreement, known values, layouts, empty-mask policies and bad input."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from _metrics_bruteforce import ged_case
from _metrics_data import random_binary_masks

from monai_bayes.metrics import GeneralizedEnergyDistanceMetric, compute_ged

TOL = 1e-6


def _check_against_bruteforce(samples, raters, **kwargs):
    result = compute_ged(samples, raters, **kwargs)
    for b in range(samples.shape[0]):
        expected = ged_case(samples[b], raters[b], **kwargs)
        for k, (ged, cross, ss, yy) in enumerate(expected):
            got = [
                result.ged[b, k],
                result.cross_distance[b, k],
                result.sample_diversity[b, k],
                result.rater_diversity[b, k],
            ]
            for value, ref in zip(got, (ged, cross, ss, yy)):
                if math.isnan(ref):
                    assert torch.isnan(value), (b, k, value, ref)
                else:
                    assert abs(value.item() - ref) < TOL, (b, k, value.item(), ref, kwargs)
    return result


@pytest.mark.parametrize("empty_policy", ["match", "mismatch", "ignore"])
@pytest.mark.parametrize("class_reduction", ["mean", "none", "union"])
@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 3)])
def test_ged_matches_bruteforce_multilabel(empty_policy, class_reduction, spatial):
    g = torch.Generator().manual_seed(zlib.crc32(f"{empty_policy}{class_reduction}{spatial}".encode()))
    samples = random_binary_masks(g, 2, 4, 3, spatial, empty_fraction=0.4)
    raters = random_binary_masks(g, 2, 3, 3, spatial, empty_fraction=0.4)
    result = _check_against_bruteforce(
        samples, raters, class_reduction=class_reduction, empty_policy=empty_policy, include_background=False
    )
    k = 2 if class_reduction == "none" else 1
    assert result.ged.shape == (2, k)


@pytest.mark.parametrize("include_background", [True, False])
def test_ged_matches_bruteforce_one_hot_and_unsquared(include_background):
    g = torch.Generator().manual_seed(7)
    samples = random_binary_masks(g, 3, 5, 3, (4, 5), one_hot=True)
    raters = random_binary_masks(g, 3, 2, 3, (4, 5), one_hot=True)
    for squared in (True, False):
        _check_against_bruteforce(samples, raters, include_background=include_background, squared=squared)


def test_ged_single_channel_all_empty_masks():
    samples = torch.zeros(2, 3, 1, 4, 4)
    raters = torch.zeros(2, 2, 1, 4, 4)
    raters[1, 0, 0, :2] = 1  # case 1: one rater marks a region
    result = _check_against_bruteforce(samples, raters)
    assert result.ged[0, 0] == 0  # everything empty: identical under the PHiSeg policy
    ignored = compute_ged(samples, raters, empty_policy="ignore")
    assert torch.isnan(ignored.sample_diversity[0, 0]) and torch.isnan(ignored.ged[0, 0])
    mismatch = compute_ged(samples, raters, empty_policy="mismatch")
    assert mismatch.cross_distance[0, 0] == 1 and mismatch.ged[0, 0] == 0


@pytest.mark.parametrize("spatial", [(6, 7), (3, 4, 5)])
def test_ged_of_a_set_against_itself_is_zero(spatial):
    g = torch.Generator().manual_seed(3)
    masks = random_binary_masks(g, 2, 6, 2, spatial)
    for policy in ("match", "mismatch", "ignore"):
        result = compute_ged(masks, masks.clone(), empty_policy=policy, include_background=True)
        assert torch.allclose(result.ged, torch.zeros_like(result.ged), atol=1e-7)
        assert torch.allclose(result.cross_distance, result.sample_diversity)


def test_ged_known_value_disjoint_masks():
    # one sample = left half, one rater = right half: d(S, Y) = 1, d(S, S) = d(Y, Y) = 0 -> GED² = 2
    s = torch.zeros(1, 1, 1, 4, 4)
    s[..., :2] = 1
    y = 1 - s
    result = compute_ged(s, y)
    assert result.ged.item() == pytest.approx(2.0)
    assert compute_ged(s, y, squared=False).ged.item() == pytest.approx(math.sqrt(2.0))


def test_ged_accepts_bool_and_probabilities_with_binarize():
    g = torch.Generator().manual_seed(11)
    probs = torch.rand(2, 4, 1, 5, 5, generator=g)
    raters = random_binary_masks(g, 2, 3, 1, (5, 5))
    by_threshold = compute_ged(probs, raters, binarize=0.5)
    by_bool = compute_ged(probs > 0.5, raters.bool())
    assert torch.equal(by_threshold.ged, by_bool.ged)
    probs3 = torch.rand(2, 4, 3, 5, 5, generator=g).softmax(dim=2)
    hard = torch.nn.functional.one_hot(probs3.argmax(2), 3).movedim(-1, 2)
    raters3 = random_binary_masks(g, 2, 3, 3, (5, 5), one_hot=True)
    assert torch.equal(compute_ged(probs3, raters3, binarize="argmax").ged, compute_ged(hard, raters3).ged)


def test_ged_metric_accumulates_and_reduces():
    g = torch.Generator().manual_seed(5)
    metric = GeneralizedEnergyDistanceMetric(class_reduction="none", include_background=True)
    batches = [(random_binary_masks(g, 2, 4, 2, (5, 5)), random_binary_masks(g, 2, 3, 2, (5, 5))) for _ in range(3)]
    expected = [compute_ged(s, r, class_reduction="none", include_background=True) for s, r in batches]
    for s, r in batches:
        out = metric(s, r)
        assert isinstance(out, list) and len(out) == 4
    details = metric.get_details()
    assert list(details) == ["ged", "cross_distance", "sample_diversity", "rater_diversity"]
    all_ged = torch.cat([e.ged for e in expected])
    assert torch.allclose(details["ged"], all_ged)
    assert torch.allclose(metric.aggregate(), all_ged.mean())
    assert torch.allclose(
        metric.aggregate(quantity="sample_diversity"), torch.cat([e.sample_diversity for e in expected]).mean()
    )
    assert torch.allclose(metric.aggregate(reduction="mean_batch"), all_ged.mean(0))
    agg = metric.aggregate_all()
    assert set(agg) == set(details)
    metric.reset()
    assert metric.get_buffer() is None


def test_ged_metric_accepts_list_of_cases():
    g = torch.Generator().manual_seed(9)
    s, r = random_binary_masks(g, 3, 4, 1, (4, 4)), random_binary_masks(g, 3, 2, 1, (4, 4))
    metric = GeneralizedEnergyDistanceMetric()
    metric(list(s), list(r))
    assert torch.allclose(metric.get_details()["ged"], compute_ged(s, r).ged)


def test_ged_ignore_nan_is_skipped_by_reduction():
    samples = torch.zeros(2, 2, 1, 3, 3)
    raters = torch.zeros(2, 2, 1, 3, 3)
    samples[1, :, 0, 0, 0] = 1
    raters[1, :, 0, 0, 0] = 1
    metric = GeneralizedEnergyDistanceMetric(empty_policy="ignore", get_not_nans=True)
    metric(samples, raters)
    value, not_nans = metric.aggregate()
    assert value.item() == 0.0 and not_nans.item() == 1.0


@pytest.mark.parametrize(
    ("samples_shape", "raters_shape", "fragment"),
    [
        ((2, 4, 1, 5, 5), (2, 3, 1, 5, 6), "(2, 3, 1, 5, 6)"),
        ((2, 4, 1, 5, 5), (3, 3, 1, 5, 5), "(3, 3, 1, 5, 5)"),
        ((2, 4, 1, 5, 5), (2, 3, 2, 5, 5), "y_pred (2, 4, 1, 5, 5)"),
        ((2, 4, 1, 5, 5), (2, 3, 1, 5, 5, 1), "y (2, 3, 1, 5, 5, 1)"),
    ],
)
def test_ged_shape_mismatch_raises(samples_shape, raters_shape, fragment):
    with pytest.raises(ValueError, match="y") as err:
        compute_ged(torch.zeros(samples_shape), torch.zeros(raters_shape))
    assert fragment in str(err.value)


def test_ged_bad_values_raise():
    masks = torch.zeros(1, 2, 1, 3, 3)
    half = masks.clone()
    half[0, 0, 0, 0, 0] = 0.5
    with pytest.raises(ValueError, match=r"y_pred must be a binary mask.*0\.5.*\(1, 2, 1, 3, 3\)"):
        compute_ged(half, masks)
    with pytest.raises(ValueError, match=r"y must be a binary mask"):
        compute_ged(masks, half)
    nan = masks.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"y_pred must be a binary mask"):
        compute_ged(nan, masks)
    with pytest.raises(ValueError, match=r"y_pred must hold finite probabilities, got 1 NaN"):
        compute_ged(nan, masks, binarize=0.5)
    for bad in (1.5, True, "max"):
        with pytest.raises(ValueError, match="binarize"):
            compute_ged(masks, masks, binarize=bad)
    with pytest.raises(ValueError, match=r"y must be a binary mask.*AsDiscrete\)\.$"):  # no `binarize` hint for y
        compute_ged(masks, half, class_reduction="union")
    with pytest.raises(ValueError, match="empty_policy"):
        compute_ged(masks, masks, empty_policy="zero")
    with pytest.raises(ValueError, match="class_reduction"):
        GeneralizedEnergyDistanceMetric(class_reduction="sum")
    with pytest.raises(ValueError, match="y_pred must have layout"):
        compute_ged(torch.zeros(2, 3), masks)
    with pytest.raises(ValueError, match="y \\(rater masks"):
        GeneralizedEnergyDistanceMetric()(masks)
