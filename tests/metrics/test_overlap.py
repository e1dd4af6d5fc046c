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


@pytest.fixture(autouse=True)
def torch_path(monkeypatch):
    """These tests cover the torch paths (foreground gather, dense products): the fused kernel is switched off.

    The fused kernel (numba) is tested against brute force and against these paths in test_fused_gram.py.
    """
    monkeypatch.setattr(overlap, "FUSED_DEVICE_TYPES", ())


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


@pytest.mark.parametrize("gather", [True, False])
def test_deviation_below_float32_resolution_is_rejected_on_both_paths(monkeypatch, gather):
    # 1e-30 and 1 − 2⁻²⁴ do not show in float32 sums (Σx = Σx²); the exact x − x² test sees them
    if not gather:
        monkeypatch.setattr(overlap, "GATHER_DEVICE_TYPES", ())
    g = torch.Generator().manual_seed(8)
    samples = random_binary_masks(g, 2, 4, 1, (6, 6), empty_fraction=0.0)
    raters = random_binary_masks(g, 2, 3, 1, (6, 6), empty_fraction=0.0)
    if gather:  # a small foreground: the gather path runs
        samples[..., 2:, :], raters[..., 2:, :] = 0.0, 0.0
    for value in (1e-30, 1.0 - 2**-24):
        nudged = samples.clone()
        nudged[0, 0, 0, 0, 0] = value
        with pytest.raises(ValueError, match="y_pred must be a binary mask"):
            compute_ged(nudged, raters)
    nudged = samples.clone()
    nudged[nudged == 0] = -0.0  # numerically 0: accepted, same result
    assert torch.equal(compute_ged(nudged, raters).ged, compute_ged(samples, raters).ged)


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


def _bytes(value: torch.Tensor) -> torch.Tensor:
    """The bytes of a 0-dim tensor's value (sign of −0.0 and NaN payloads kept)."""
    return torch.tensor([value.item()], dtype=value.dtype).view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool])
def test_nonzero_columns_is_the_brute_force_union_for_every_dtype_and_layout(dtype):
    g = torch.Generator().manual_seed(21)
    masks = (torch.rand(2, 3, 4, 10, generator=g) < 0.2).to(dtype)  # (B, S, C, N)
    if dtype.is_floating_point:
        masks[0, 1, 2, 3] = -0.0  # a set sign bit is "not all bytes zero": the voxel joins the union
        masks[1, 0, 1, 5] = float("nan")
    per_class = masks.transpose(1, 2)  # (B, C, S, N) strided view, as flatten_masks returns for C > 1
    columns = masks[..., ::2].transpose(1, 2)  # non-unit voxel stride: copied first
    single = masks[..., ::10].transpose(1, 2)  # one voxel of stride 10
    for x in (per_class, columns, single):
        want = [
            [any(_bytes(x[b, c, s, n]).any() for s in range(x.shape[2])) for n in range(x.shape[3])]
            for b in range(2)
            for c in range(4)
        ]
        got = overlap._nonzero_columns(x).reshape(8, -1).tolist()
        assert got == want


@pytest.mark.parametrize(
    ("value", "binary"),
    [(0.0, True), (-0.0, True), (1.0, True), (0.5, False), (1e-30, False), (1.0 - 2**-24, False), (1.0 + 2**-23, False),
     (-1.0, False), (2.0, False), (float("inf"), False), (float("-inf"), False), (float("nan"), False),
     (float(torch.finfo(torch.float32).tiny) / 2, False)],
)  # fmt: skip
def test_binary_deviation_is_exact(value, binary):
    # float32, float64 and float16 (where the value is representable in it): exactly 0 and 1 pass, nothing else
    for dtype in (torch.float32, torch.float64, torch.float16):
        x = torch.tensor([[1.0, 0.0, value]], dtype=dtype)
        if x[0, 2].item() != value and value == value:  # rounded on the way into the dtype
            continue
        assert bool((overlap._binary_deviation(x) == 0).all()) == binary, (dtype, value)
    ints = torch.tensor([0, 1, 2, -1, 255, 2**31])
    passed = [bool((overlap._binary_deviation(ints[i : i + 1]) == 0).all()) for i in range(6)]
    assert passed == [True, True] + [False] * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [1e-30, 1.0 - 2**-24, 0.5, -1.0, float("inf"), float("nan")])
def test_foreground_gather_check_is_exact(monkeypatch, dtype, bad):
    # on the gather path every non-zero value is checked exactly: near-binary values that the dense path's
    # Σx = Σx² test cannot see (1e-30, 1 − 2⁻²⁴) are rejected, and the error names the set
    calls = []
    gather = overlap._foreground_set_counts
    monkeypatch.setattr(overlap, "_foreground_set_counts", lambda *a: calls.append(1) or gather(*a))
    samples, raters = torch.zeros(2, 3, 1, 8, 8, dtype=dtype), torch.zeros(2, 2, 1, 8, 8, dtype=dtype)
    samples[:, :, 0, 2, 2:4] = 1.0
    raters[:, :, 0, 2, 3] = 1.0
    raters[1, 0, 0, 6, 6] = bad
    with pytest.raises(ValueError, match=r"^y must be a binary mask"):
        compute_pairwise_iou(samples, raters)
    raters[1, 0, 0, 6, 6] = -0.0  # numerically 0: accepted, counted as 0
    got = compute_pairwise_iou(samples, raters)
    assert calls == [1, 1]
    assert torch.equal(got.sample_rater, torch.full((2, 1, 3, 2), 0.5))
    assert torch.equal(got.sample_sample, torch.ones(2, 1, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_exactly_binary_in_flat_chunks_sees_every_value(monkeypatch, dtype):
    monkeypatch.setattr(overlap, "CHECK_CHUNK", 7)  # 60 values: 8 full chunks and a short last one
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(3, 4, 5, generator=g) < 0.5).to(dtype)
    assert bool(overlap._exactly_binary(x)) and bool(overlap._exactly_binary(x.transpose(0, 2)))  # strided too
    for index in range(x.numel()):
        bad = x.clone().reshape(-1)
        bad[index] = 2
        assert not bool(overlap._exactly_binary(bad.reshape(3, 4, 5))), index
