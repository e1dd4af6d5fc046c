"""Fused CPU kernel of the shared GED / HM-IoU pass (numba): exact counts and rejections, same as the torch path."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from _metrics_data import random_binary_masks

import monai_bayes.metrics._fused as fused
import monai_bayes.metrics.overlap as overlap
from monai_bayes.metrics import compute_ged, compute_pairwise_iou

pytest.importorskip("numba", reason="the fused kernel needs numba (extra 'fast'; the dev extra installs it)")

DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
]


@pytest.fixture
def fused_calls(monkeypatch):
    """Record whether each fused_gram call ran the kernel (True) or declined (False)."""
    calls: list[bool] = []
    original = fused.fused_gram

    def spy(s, y):
        result = original(s, y)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(fused, "fused_gram", spy)
    return calls


def _torch_path(monkeypatch, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the fused kernel switched off (the torch gather / dense paths)."""
    with monkeypatch.context() as m:
        m.setattr(overlap, "FUSED_DEVICE_TYPES", ())
        return fn(*args, **kwargs)


def _masks(seed: int, batch: int, count: int, channels: int, spatial: tuple[int, ...], dtype: torch.dtype):
    """Random 0/1 masks in ``dtype``; for floats about half of the zeros are −0.0 (accepted as 0)."""
    g = torch.Generator().manual_seed(seed)
    x = random_binary_masks(g, batch, count, channels, spatial).to(dtype)
    if dtype.is_floating_point:
        negative_zero = (x == 0) & (torch.rand(x.shape, generator=g) < 0.5)
        x = torch.where(negative_zero, torch.full_like(x, -0.0), x)
    return x


def _brute_force_gram(x: np.ndarray) -> np.ndarray:
    """(C, M, N) values → (C, M, M) int64 counts of voxels where both masks are exactly 1 (numpy, per pair)."""
    ones = x == 1
    cases, masks = ones.shape[:2]
    out = np.zeros((cases, masks, masks), dtype=np.int64)
    for c in range(cases):
        for i in range(masks):
            for j in range(masks):
                out[c, i, j] = int(np.logical_and(ones[c, i], ones[c, j]).sum())
    return out


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gram_equals_brute_force(dtype, n):
    s = _masks(n, 3, 5, 1, (n,), dtype)[:, :, 0]  # (B, S, N)
    y = _masks(n + 1, 3, 2, 1, (n,), dtype)[:, :, 0]
    got = fused.fused_gram(s, y)
    assert got is not None and bool(got.binary_s) and bool(got.binary_y)
    both = torch.cat([s, y], dim=1).to(torch.float64).numpy()  # ±0 → 0, 1 → 1 (exact in float64)
    assert np.array_equal(got.gram.numpy(), _brute_force_gram(both))


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_pass_is_identical_on_both_paths(monkeypatch, fused_calls, dtype):
    # multi-class masks: flatten_masks gives (B, K, S, N) strided views, read in place by the kernel
    s = _masks(1, 2, 6, 3, (7, 9), dtype)
    y = _masks(2, 2, 4, 3, (7, 9), torch.float32 if dtype == torch.bool else dtype)  # mixed dtypes too
    for kwargs in ({"class_reduction": "none"}, {"class_reduction": "mean", "include_background": True}):
        got = compute_pairwise_iou(s, y, **kwargs)
        want = _torch_path(monkeypatch, compute_pairwise_iou, s, y, **kwargs)
        for name in got._fields:
            assert torch.equal(getattr(got, name), getattr(want, name)), (name, kwargs)
    assert fused_calls == [True, True]


def test_unusual_layouts_read_in_place_or_declined(monkeypatch, fused_calls):
    s = _masks(3, 4, 5, 1, (6, 10), torch.float32)
    y = _masks(4, 4, 3, 1, (6, 10), torch.float32)
    views = {
        "every other case": (s[::2], y[::2]),  # strided rows: read in place
        "one case repeated": (s[:1].expand(3, -1, -1, -1, -1), y[:1].expand(3, -1, -1, -1, -1)),  # stride 0
        "every other voxel": (s[..., ::2], y[..., ::2]),  # non-unit voxel stride: torch path
    }
    for name, (a, b) in views.items():
        got = compute_ged(a, b)
        want = _torch_path(monkeypatch, compute_ged, a, b)
        assert torch.equal(got.ged, want.ged), name
    assert fused_calls == [True, True, False]
    assert not fused.supports(torch.zeros(2, 3, dtype=torch.complex64))
    assert not fused.supports(torch.zeros(2, 3, dtype=torch.uint16))
    assert not fused.supports(torch.zeros(2, 0))
    assert not fused.supports(torch.zeros(2, 3, device="meta"))
    assert not fused.supports(torch.eye(3).to_sparse())


def _bad_values(dtype: torch.dtype) -> list[float]:
    if dtype.is_floating_point:
        tiny = torch.finfo(dtype).tiny
        eps = torch.finfo(dtype).eps
        return [0.5, 2.0, -1.0, math.nan, math.inf, -math.inf, tiny, 1.0 - eps / 2, 1.0 + eps, -tiny]
    info = torch.iinfo(dtype)
    return [v for v in (2, -1, info.max, info.min) if v not in (0, 1)]


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.bool])
@pytest.mark.parametrize("where", ["y_pred", "y"])
def test_rejections_are_identical_on_both_paths(monkeypatch, dtype, where):
    s, y = _masks(5, 2, 3, 1, (5, 13), dtype), _masks(6, 2, 2, 1, (5, 13), dtype)
    for value in _bad_values(dtype):
        bad_s, bad_y = s.clone(), y.clone()
        target = bad_s if where == "y_pred" else bad_y
        target[1, 1, 0, 4, 12] = value
        with pytest.raises(ValueError) as fused_error:
            compute_pairwise_iou(bad_s, bad_y)
        with pytest.raises(ValueError) as torch_error:
            _torch_path(monkeypatch, compute_pairwise_iou, bad_s, bad_y)
        message = str(fused_error.value)
        assert re.match(rf"^{where} must be a binary mask", message), (value, message)
        assert message == str(torch_error.value), value


def test_bool_and_binary_inputs_pass_the_check():
    s = _masks(7, 2, 4, 1, (3, 30), torch.bool)[:, :, 0].flatten(start_dim=2)
    y = _masks(8, 2, 3, 1, (3, 30), torch.float64)[:, :, 0].flatten(start_dim=2)
    got = fused.fused_gram(s, y)
    assert got is not None and bool(got.binary_s) and bool(got.binary_y)
    y[0, 0, 0] = 0.25
    got = fused.fused_gram(s, y)
    assert got is not None and bool(got.binary_s) and not bool(got.binary_y)


def test_without_numba_the_torch_path_runs(monkeypatch, fused_calls):
    s, y = _masks(9, 2, 4, 1, (8, 8), torch.float32), _masks(10, 2, 3, 1, (8, 8), torch.float32)
    want = compute_ged(s, y).ged
    monkeypatch.setattr(fused, "_kernels", lambda: None)  # as if numba were not installed
    assert not fused.available()
    assert torch.equal(compute_ged(s, y).ged, want)
    assert fused_calls == [True, False]


def test_a_failing_compilation_warns_once_and_falls_back(monkeypatch):
    def broken(*args):
        raise RuntimeError("no LLVM today")

    monkeypatch.setattr(fused, "_kernels", lambda: fused._Kernels(broken, broken, broken))
    monkeypatch.setattr(fused, "_DISABLED", [])
    s, y = _masks(11, 2, 4, 1, (8, 8), torch.float32), _masks(12, 2, 3, 1, (8, 8), torch.float32)
    with pytest.warns(UserWarning, match="fused GED / HM-IoU kernel disabled.*no LLVM today"):
        got = compute_ged(s, y).ged
    assert not fused.available()
    assert torch.equal(got, _torch_path(monkeypatch, compute_ged, s, y).ged)


def test_unwritable_cache_only_disables_caching():
    calls = []

    class FakeNumba:
        @staticmethod
        def njit(cache: bool, **options):
            calls.append(cache)
            if cache:
                raise RuntimeError("cannot cache function: no locator available")
            return lambda function: function

    assert fused._jit(FakeNumba, fused._pair_counts) is fused._pair_counts
    assert calls == [True, False]


def test_first_calls_are_timed():
    s, y = _masks(13, 1, 2, 1, (4, 4), torch.float32), _masks(14, 1, 2, 1, (4, 4), torch.float32)
    compute_ged(s, y)
    seconds = fused.compile_seconds()
    assert {"uint32", "pairs"} <= set(seconds) and all(t > 0 for t in seconds.values())
