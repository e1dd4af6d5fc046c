"""Device-agnostic computation: every metric runs on the meta device, and host round trips are O(1) per call."""

from __future__ import annotations

import pytest
import torch
from _metrics_data import random_binary_masks, random_probabilities
from torch.utils._python_dispatch import TorchDispatchMode

import monai_bayes.metrics.overlap as overlap
from monai_bayes.metrics import (
    BrierScoreMetric,
    EntropyVolumeMetric,
    GeneralizedEnergyDistanceMetric,
    NegativeLogLikelihoodMetric,
    SoftDiceMetric,
    compute_ged,
    compute_hm_iou,
    pairwise_iou,
    reduce_samples_and_raters,
)

SHAPES = [(2, 4, 1, 8, 8), (2, 4, 3, 4, 4, 3)]


def _meta(shape, num):
    return torch.empty(shape[0], num, *shape[2:], device="meta")


@pytest.mark.parametrize("shape", SHAPES)
def test_all_metrics_stay_on_the_meta_device(shape):
    samples, raters = _meta(shape, shape[1]), _meta(shape, 3)
    per_case_k = 1
    outputs = {
        "ged": GeneralizedEnergyDistanceMetric()._compute_tensor(samples, raters),
        "brier": BrierScoreMetric(likelihood="bernoulli")._compute_tensor(samples, raters),
        "nll": NegativeLogLikelihoodMetric(likelihood="bernoulli")._compute_tensor(samples, raters),
        "entropy": EntropyVolumeMetric(likelihood="bernoulli")._compute_tensor(samples, None, spacing=1.0),
        "soft_dice": SoftDiceMetric(likelihood="bernoulli")._compute_tensor(samples, raters),
        "reduce": list(reduce_samples_and_raters(samples, raters, prediction="discrete", rater_mode="majority")),
        "iou": pairwise_iou(samples.flatten(start_dim=2), raters.flatten(start_dim=2)),
    }
    for name, out in outputs.items():
        tensors = out if isinstance(out, list) else [out]
        for t in tensors:
            assert t.device.type == "meta", name
            assert t.shape[0] == shape[0], name
    assert outputs["ged"][0].shape == (shape[0], per_case_k)
    assert outputs["brier"].shape == (shape[0], shape[2])


class _HostSyncCounter(TorchDispatchMode):
    """Counts ops that bring a value to the host (``.item()``, ``bool()``) or copy to another device."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0
        self.copies: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.syncs += 1
        if func is torch.ops.aten._to_copy.default and "device" in kwargs:
            self.copies.append(tuple(args[0].shape))
        return func(*args, **kwargs)


@pytest.mark.parametrize("path", ["gather", "dense", "fused"])
@pytest.mark.parametrize(("batch", "num_samples"), [(2, 4), (6, 16)])
def test_host_syncs_do_not_grow_with_batch_samples_or_raters(monkeypatch, batch, num_samples, path):
    # dense: the accelerator path (dense batched products); gather: CPU's foreground gather, which also reads the
    # foreground size on the host to choose between the two; fused: the CPU kernel (numba, where installed)
    if path == "fused":
        pytest.importorskip("numba", reason="the fused kernel needs numba (extra 'fast')")
    monkeypatch.setattr(overlap, "FUSED_DEVICE_TYPES", ("cpu",) if path == "fused" else ())
    monkeypatch.setattr(overlap, "GATHER_DEVICE_TYPES", ("cpu",) if path == "gather" else ())
    expected_syncs = 2 if path == "gather" else 1
    g = torch.Generator().manual_seed(0)
    samples = random_binary_masks(g, batch, num_samples, 2, (6, 6))
    raters = random_binary_masks(g, batch, 4, 2, (6, 6))
    with _HostSyncCounter() as counter:
        compute_ged(samples, raters)
    assert counter.syncs == expected_syncs  # "are both inputs binary?" (+ foreground size): not B, S, R, pixels
    assert counter.copies == []
    with _HostSyncCounter() as counter:
        compute_hm_iou(samples, raters, class_reduction="none", include_background=True)
    assert counter.syncs == expected_syncs
    # the (B, K, S, R) IoU matrix goes to the host (float64 for scipy), the matched indices come back
    assert counter.copies[0] == (batch, 2, num_samples, 4)
    probs = random_probabilities(g, batch, num_samples, 1, (6, 6), categorical=False)
    with _HostSyncCounter() as counter:
        EntropyVolumeMetric()(probs)
    assert counter.syncs == 2 and counter.copies == []  # finite + range check of the probabilities


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_run_on_cuda():
    g = torch.Generator().manual_seed(0)
    samples = random_binary_masks(g, 2, 8, 1, (16, 16)).cuda()
    raters = random_binary_masks(g, 2, 4, 1, (16, 16)).cuda()
    ged = compute_ged(samples, raters)
    hm = compute_hm_iou(samples, raters)
    assert ged.ged.is_cuda and hm.is_cuda
    assert torch.allclose(ged.ged.cpu(), compute_ged(samples.cpu(), raters.cpu()).ged, atol=1e-6)
    assert torch.allclose(hm.cpu(), compute_hm_iou(samples.cpu(), raters.cpu()), atol=1e-6)
