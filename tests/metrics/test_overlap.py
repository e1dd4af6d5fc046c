"""Pairwise overlap core: exact chunked counts, the fused binary-mask check, the shared GED / HM-IoU pass."""

from __future__ import annotations

import pytest
import torch
from _metrics_bruteforce import iou_one
from _metrics_data import random_binary_masks

import monai_bayes.metrics.overlap as overlap
from monai_bayes.metrics import (
    GeneralizedEnergyDistanceMetric,
    compute_ged,
    compute_hm_iou,
    compute_pairwise_iou,
    ged_from_pairwise_iou,
    hm_iou_from_pairwise_iou,
    pairwise_counts,
    pairwise_iou,
)


@pytest.mark.parametrize("chunk", [7, 64, overlap.CHUNK_VOXELS])
def test_chunked_counts_are_exact(monkeypatch, chunk):
    monkeypatch.setattr(overlap, "CHUNK_VOXELS", chunk)
    g = torch.Generator().manual_seed(chunk)
    a = random_binary_masks(g, 2, 5, 1, (9, 11))[:, :, 0].flatten(start_dim=2)  # (2, 5, 99)
    b = random_binary_masks(g, 2, 3, 1, (9, 11))[:, :, 0].flatten(start_dim=2).bool()
    inter, size_a, size_b = pairwise_counts(a, b)
    inter_aa, size_aa, _ = pairwise_counts(a)
    for n in range(2):
        for i in range(5):
            assert size_a[n, i].item() == sum(1 for v in a[n, i].tolist() if v) == size_aa[n, i].item()
            for j in range(3):
                assert size_b[n, j].item() == sum(1 for v in b[n, j].tolist() if v)
                assert inter[n, i, j].item() == sum(1 for u, v in zip(a[n, i].tolist(), b[n, j].tolist()) if u and v)
            for j in range(5):
                assert inter_aa[n, i, j].item() == sum(1 for u, v in zip(a[n, i].tolist(), a[n, j].tolist()) if u and v)
    iou = pairwise_iou(a, b, empty_policy="mismatch")
    assert abs(iou[1, 2, 0].item() - iou_one(a[1, 2].tolist(), b[1, 0].tolist(), "mismatch")) < 1e-7
    ged = compute_ged(a.reshape(2, 5, 1, 9, 11), b.reshape(2, 3, 1, 9, 11))
    monkeypatch.setattr(overlap, "CHUNK_VOXELS", 2**22)
    assert torch.allclose(ged.ged, compute_ged(a.reshape(2, 5, 1, 9, 11), b.reshape(2, 3, 1, 9, 11)).ged)


@pytest.mark.parametrize(
    ("bad_value", "where"),
    [(0.5, "y_pred"), (2.0, "y_pred"), (-1.0, "y"), (float("nan"), "y"), (float("inf"), "y_pred"), (0.999, "y")],
)
@pytest.mark.parametrize("class_reduction", ["mean", "union"])
def test_non_binary_masks_are_rejected(bad_value, where, class_reduction):
    samples = torch.zeros(2, 4, 2, 5, 5)
    raters = torch.zeros(2, 3, 2, 5, 5)
    samples[:, :, 1, :2] = 1.0
    raters[:, :, 1, 1:3] = 1.0
    target = samples if where == "y_pred" else raters
    target[1, 2, 1, 4, 4] = bad_value
    shape = tuple(target.shape)
    with pytest.raises(
        ValueError, match=rf"^{where} must be a binary mask.*{shape}".replace("(", r"\(").replace(")", r"\)")
    ):
        compute_pairwise_iou(samples, raters, class_reduction=class_reduction)
    with pytest.raises(ValueError, match=f"^{where} must be a binary mask"):
        compute_hm_iou(samples, raters, class_reduction=class_reduction)


def test_deviation_below_float32_resolution_is_accepted_and_rounded_away():
    g = torch.Generator().manual_seed(8)
    samples = random_binary_masks(g, 2, 4, 1, (6, 6), empty_fraction=0.0)
    raters = random_binary_masks(g, 2, 3, 1, (6, 6), empty_fraction=0.0)
    nudged = samples.clone()
    nudged[0, 0, 0, 0, 0] = 1e-30 if samples[0, 0, 0, 0, 0] == 0 else 1.0 - 2**-24
    assert torch.equal(compute_ged(nudged, raters).ged, compute_ged(samples, raters).ged)
    with pytest.raises(ValueError, match="y_pred must be a binary mask"):  # the exact check of "union"
        compute_ged(nudged, raters, class_reduction="union")


def test_cancelling_out_of_range_values_are_rejected():
    # x(1 - x) of 0.5 and of (1 + sqrt 2) / 2 cancel in Σx − Σx²: the range check must still fire
    samples = torch.zeros(1, 2, 1, 4, 4)
    samples[0, 0, 0, 0, 0] = 0.5
    samples[0, 0, 0, 0, 1] = (1 + 2**0.5) / 2
    with pytest.raises(ValueError, match="y_pred must be a binary mask"):
        compute_ged(samples, torch.zeros(1, 2, 1, 4, 4))


def test_shared_pass_gives_both_metrics():
    g = torch.Generator().manual_seed(6)
    s, r = random_binary_masks(g, 3, 6, 3, (5, 4), one_hot=True), random_binary_masks(g, 3, 4, 3, (5, 4), one_hot=True)
    pairwise = compute_pairwise_iou(s, r)
    assert pairwise.sample_rater.shape == (3, 1, 6, 4) and pairwise.sample_sample.shape == (3, 1, 6, 6)
    assert torch.equal(ged_from_pairwise_iou(pairwise).ged, compute_ged(s, r).ged)
    assert torch.equal(hm_iou_from_pairwise_iou(pairwise.sample_rater), compute_hm_iou(s, r))
    cross_only = compute_pairwise_iou(s, r, within_sets=False)
    assert cross_only.sample_sample is None and torch.equal(cross_only.sample_rater, pairwise.sample_rater)
    with pytest.raises(ValueError, match="within_sets=True"):
        ged_from_pairwise_iou(cross_only)

    metric = GeneralizedEnergyDistanceMetric(with_hm_iou=True)
    metric(s, r)
    assert metric.quantities[-1] == "hm_iou" and GeneralizedEnergyDistanceMetric.quantities[-1] == "rater_diversity"
    assert torch.allclose(metric.aggregate(quantity="hm_iou"), compute_hm_iou(s, r).mean())
    with pytest.raises(ValueError, match="empty_policy='ignore' needs class_reduction='mean'"):
        GeneralizedEnergyDistanceMetric(with_hm_iou=True, empty_policy="ignore", class_reduction="none")


def _small_lesions(g: torch.Generator, batch: int, count: int, channels: int, size: int) -> torch.Tensor:
    """(batch, count, channels, size, size) float masks with a few foreground pixels per case (gather path)."""
    masks = torch.zeros(batch, count, channels, size, size)
    for b in range(batch - 1):  # the last case stays empty everywhere
        rows = torch.randint(0, size - 2, (channels,), generator=g)
        for c in range(channels):
            blob = torch.rand(count, 3, 3, generator=g) < 0.5
            masks[b, :, c, rows[c] : rows[c] + 3, 1:4] = blob.float()
    return masks


@pytest.mark.parametrize("chunk", [5, overlap.CHUNK_VOXELS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
def test_foreground_gather_equals_brute_force_and_the_dense_path(monkeypatch, chunk, dtype):
    monkeypatch.setattr(overlap, "CHUNK_VOXELS", chunk)  # 5: unions span several chunks (int64 path)
    g = torch.Generator().manual_seed(11)
    samples, raters = _small_lesions(g, 3, 5, 3, 8), _small_lesions(g, 3, 2, 3, 8)
    union = (samples.amax(dim=1) + raters.amax(dim=1))[:, 1:].flatten(start_dim=2)  # (B, K=2, N) kept classes
    assert 0 < int(union.count_nonzero()) <= overlap.FOREGROUND_GATHER_MAX_FRACTION * union.numel()
    rater_dtype = torch.float32 if dtype == torch.uint8 else dtype  # uint8 samples meet float raters
    calls = []
    gather = overlap._foreground_set_counts
    monkeypatch.setattr(overlap, "_foreground_set_counts", lambda *a: calls.append(1) or gather(*a))
    got = compute_pairwise_iou(samples.to(dtype), raters.to(rater_dtype), class_reduction="none")
    assert calls == [1]  # the foreground path ran
    for b in range(3):
        for k, c in enumerate((1, 2)):
            for i in range(5):
                for j in range(2):
                    want = iou_one(samples[b, i, c].flatten().tolist(), raters[b, j, c].flatten().tolist(), "match")
                    assert abs(got.sample_rater[b, k, i, j].item() - want) < 1e-7
                for j in range(5):
                    want = iou_one(samples[b, i, c].flatten().tolist(), samples[b, j, c].flatten().tolist(), "match")
                    assert abs(got.sample_sample[b, k, i, j].item() - want) < 1e-7
    monkeypatch.setattr(overlap, "GATHER_DEVICE_TYPES", ())
    dense = compute_pairwise_iou(samples, raters, class_reduction="none")
    for name in ("sample_rater", "sample_sample", "rater_rater"):
        assert torch.equal(getattr(got, name), getattr(dense, name)), name


def test_foreground_gather_still_rejects_values_outside_the_union():
    # a column whose largest value is 0 is left out of the union: a negative value there must still be caught
    samples, raters = torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, 2, 1, 8, 8)
    samples[:, :, 0, 2, 2] = 1.0
    raters[:, :, 0, 2, 3] = 1.0
    samples[1, 1, 0, 7, 7] = -1.0
    with pytest.raises(ValueError, match="y_pred must be a binary mask"):
        compute_pairwise_iou(samples, raters)
    samples[1, 1, 0, 7, 7] = 0.0
    raters[0, 1, 0, 6, 6] = 0.5  # inside the union, but not binary
    with pytest.raises(ValueError, match="y must be a binary mask"):
        compute_pairwise_iou(samples, raters)
