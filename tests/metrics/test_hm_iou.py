"""HM-IoU: exhaustive-search agreement, known values, the balanced S/R rule, host transfer and bad input."""

from __future__ import annotations

import pytest
import torch
from _metrics_bruteforce import hm_iou_case
from _metrics_data import random_binary_masks

import monai_bayes.metrics.hungarian as hungarian
from monai_bayes.metrics import HungarianMatchedIoUMetric, compute_hm_iou, matching_size

TOL = 1e-6


@pytest.mark.parametrize(
    ("num_samples", "num_raters"),
    [(4, 2), (4, 4), (3, 2), (2, 3), (5, 1), (1, 4), (6, 3)],
)
@pytest.mark.parametrize("spatial", [(4, 5), (3, 3, 2)])
def test_hm_iou_matches_exhaustive_search(num_samples, num_raters, spatial):
    g = torch.Generator().manual_seed(100 * num_samples + num_raters + len(spatial))
    samples = random_binary_masks(g, 2, num_samples, 1, spatial, empty_fraction=0.3)
    raters = random_binary_masks(g, 2, num_raters, 1, spatial, empty_fraction=0.3)
    result = compute_hm_iou(samples, raters)
    assert result.shape == (2, 1)
    for b in range(2):
        assert abs(result[b, 0].item() - hm_iou_case(samples[b], raters[b])[0]) < TOL


@pytest.mark.parametrize("class_reduction", ["mean", "none", "union"])
@pytest.mark.parametrize("empty_policy", ["match", "mismatch"])
def test_hm_iou_multiclass_matches_exhaustive_search(class_reduction, empty_policy):
    g = torch.Generator().manual_seed(17)
    samples = random_binary_masks(g, 2, 4, 3, (4, 4), empty_fraction=0.4)
    raters = random_binary_masks(g, 2, 2, 3, (4, 4), empty_fraction=0.4)
    result = compute_hm_iou(samples, raters, class_reduction=class_reduction, empty_policy=empty_policy)
    for b in range(2):
        expected = hm_iou_case(samples[b], raters[b], class_reduction=class_reduction, empty_policy=empty_policy)
        assert result.shape[1] == len(expected)
        for k, ref in enumerate(expected):
            assert abs(result[b, k].item() - ref) < TOL


def test_hm_iou_ignore_policy_with_class_mean():
    g = torch.Generator().manual_seed(23)
    samples = random_binary_masks(g, 2, 4, 3, (3, 4), empty_fraction=0.6)
    raters = random_binary_masks(g, 2, 2, 3, (3, 4), empty_fraction=0.6)
    samples[0, 0] = 0
    raters[0, 0] = 0  # a pair that is empty in every class
    result = compute_hm_iou(samples, raters, empty_policy="ignore")
    for b in range(2):
        assert abs(result[b, 0].item() - hm_iou_case(samples[b], raters[b], empty_policy="ignore")[0]) < TOL


@pytest.mark.parametrize("spatial", [(6, 6), (3, 4, 5)])
def test_hm_iou_identical_sets_is_one(spatial):
    g = torch.Generator().manual_seed(1)
    masks = random_binary_masks(g, 3, 5, 2, spatial)
    result = compute_hm_iou(masks, masks[:, torch.randperm(5, generator=g)], include_background=True)
    assert torch.allclose(result, torch.ones_like(result))
    # raters repeated S/R times: 8 samples = two copies of 4 raters -> 1
    raters = random_binary_masks(g, 2, 4, 1, spatial)
    assert torch.allclose(compute_hm_iou(torch.cat([raters, raters], dim=1), raters), torch.ones(2, 1))


def test_hm_iou_balanced_rule_is_rater_order_invariant():
    g = torch.Generator().manual_seed(31)
    samples = random_binary_masks(g, 3, 5, 1, (6, 6), empty_fraction=0.0)
    raters = random_binary_masks(g, 3, 3, 1, (6, 6), empty_fraction=0.0)
    assert matching_size(5, 3) == 15
    base = compute_hm_iou(samples, raters)
    for perm in ([2, 0, 1], [1, 2, 0]):
        assert torch.allclose(compute_hm_iou(samples, raters[:, perm]), base, atol=1e-7)


def test_hm_iou_only_the_iou_matrix_crosses_to_the_host(monkeypatch):
    seen = []
    original = hungarian._assignment_indices

    def spy(iou):
        seen.append((tuple(iou.shape), iou.device.type))
        return original(iou)

    monkeypatch.setattr(hungarian, "_assignment_indices", spy)
    g = torch.Generator().manual_seed(2)
    compute_hm_iou(
        random_binary_masks(g, 2, 6, 3, (5, 5)), random_binary_masks(g, 2, 3, 3, (5, 5)), class_reduction="none"
    )
    assert seen == [((2, 2, 6, 3), "cpu")]


def test_hm_iou_runs_on_meta_device_except_the_assignment(monkeypatch):
    def fake_assignment(iou):  # scipy cannot see meta data; keep the device-side path under test
        b, k, s, r = iou.shape
        size = matching_size(s, r)
        idx = torch.zeros(b, k, size, dtype=torch.int64, device=iou.device)
        return idx, idx

    monkeypatch.setattr(hungarian, "_assignment_indices", fake_assignment)
    samples = torch.empty(2, 4, 1, 8, 8, device="meta")
    raters = torch.empty(2, 2, 1, 8, 8, device="meta")
    out = compute_hm_iou(samples, raters)
    assert out.device.type == "meta" and out.shape == (2, 1)


def test_hm_iou_metric_and_bad_input():
    g = torch.Generator().manual_seed(4)
    s, r = random_binary_masks(g, 2, 4, 1, (5, 5)), random_binary_masks(g, 2, 2, 1, (5, 5))
    metric = HungarianMatchedIoUMetric()
    metric(s, r)
    metric(s, r)
    assert torch.allclose(metric.aggregate(), compute_hm_iou(s, r).mean())
    assert metric.get_details()["hm_iou"].shape == (4, 1)
    with pytest.raises(ValueError, match=r"lcm\(S, R\) = 12 > max_matching_size=8"):
        compute_hm_iou(torch.zeros(1, 4, 1, 3, 3), torch.zeros(1, 3, 1, 3, 3), max_matching_size=8)
    with pytest.raises(ValueError, match="empty_policy='ignore' needs class_reduction='mean'"):
        compute_hm_iou(s, r, empty_policy="ignore", class_reduction="none")
    with pytest.raises(ValueError, match=r"y_pred must be a binary mask.*\(2, 4, 1, 5, 5\)"):
        compute_hm_iou(s * 0.7, r)
    with pytest.raises(ValueError, match=r"got y \(2, 2, 1, 5, 4\) for y_pred \(2, 4, 1, 5, 5\)"):
        compute_hm_iou(s, r[..., :4])
