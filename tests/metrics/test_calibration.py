"""Pooled ECE (torchmetrics' binary convention) vs. the mean of per-image ECEs (MONAI), each checked independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric
from torchmetrics.functional.classification import binary_calibration_error

from monai_bayes.metrics import (
    MultiRaterMetric,
    PooledCalibrationErrorMetric,
    calibration_bin_sums,
    compute_pooled_calibration_error,
)


def _reference_pooled_ece(prob: np.ndarray, label: np.ndarray, num_bins: int) -> float:
    """Textbook ECE over all pixels, bin by bin: Σ_k n_k / N · |mean label − mean probability| over
    bins [k/K, (k+1)/K) and a separate bin for p == 1 (torchmetrics' rule)."""
    p, y = prob.astype(np.float64).ravel(), label.astype(np.float64).ravel()
    edges = [k / num_bins for k in range(num_bins + 1)]
    members = [(p >= edges[k]) & (p < edges[k + 1]) for k in range(num_bins)] + [p == 1.0]
    ece = 0.0
    for m in members:
        if m.any():
            ece += m.sum() / p.size * abs(y[m].mean() - p[m].mean())
    return float(ece)


def _data(seed: int = 0, batch: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prob = torch.rand(batch, 1, size, size, generator=g) ** 2
    prob[0, 0, :2] = 1.0  # exact ones (saturated softmax) and zeros
    prob[1, 0, :2] = 0.0
    label = (torch.rand(batch, 1, size, size, generator=g) < prob * 0.8 + 0.1).float()
    return prob, label


@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_pooled_ece_equals_reference_and_torchmetrics(num_bins: int) -> None:
    prob, label = _data()
    ours = compute_pooled_calibration_error(prob, label, num_bins=num_bins)
    assert ours.shape == (1,) and ours.dtype == torch.float64
    assert ours.item() == pytest.approx(_reference_pooled_ece(prob.numpy(), label.numpy(), num_bins), abs=1e-9)
    theirs = binary_calibration_error(prob.flatten(), label.flatten().long(), n_bins=num_bins, norm="l1")
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_pooled_differs_from_mean_of_per_image_ece_hand_example() -> None:
    """Image A: p = 0.9 everywhere, all foreground (ECE 0.1); image B: p = 0.9, all background (ECE 0.9).
    Mean of per-image ECEs = 0.5; pooled: one bin with confidence 0.9 and accuracy 0.5 -> 0.4."""
    prob = torch.full((2, 1, 4, 4), 0.9)
    label = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    monai_ece = CalibrationErrorMetric(num_bins=15)
    monai_ece(prob, label)
    assert monai_ece.aggregate().item() == pytest.approx(0.5, abs=1e-6)
    pooled = PooledCalibrationErrorMetric(num_bins=15)
    pooled(prob, label)
    assert pooled.aggregate().item() == pytest.approx(0.4, abs=1e-6)  # p = 0.9 in float32


def test_pooled_metric_does_not_depend_on_batching_and_keeps_channels() -> None:
    prob, label = _data(seed=1, batch=7)
    two = torch.cat([prob, 1 - prob], dim=1)
    two_label = torch.cat([label, 1 - label], dim=1)
    whole = PooledCalibrationErrorMetric(num_bins=10, reduction="none")
    whole(two, two_label)
    pieces = PooledCalibrationErrorMetric(num_bins=10, reduction="none")
    for start, stop in ((0, 3), (3, 4), (4, 7)):
        pieces(two[start:stop], two_label[start:stop])
    torch.testing.assert_close(whole.aggregate(), pieces.aggregate())
    expected = [_reference_pooled_ece(two[:, c].numpy(), two_label[:, c].numpy(), 10) for c in range(2)]
    torch.testing.assert_close(whole.aggregate(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9)
    assert whole.aggregate("mean").item() == pytest.approx(float(np.mean(expected)), abs=1e-9)
    no_bg = PooledCalibrationErrorMetric(num_bins=10, include_background=False)
    no_bg(two, two_label)
    assert no_bg.aggregate().item() == pytest.approx(expected[1], abs=1e-9)


def test_bin_sums_layout() -> None:
    prob = torch.tensor([[[0.0, 0.05, 0.5, 0.99, 1.0]]])  # (B=1, C=1, 5 pixels)
    label = torch.tensor([[[0.0, 1.0, 1.0, 1.0, 1.0]]])
    sums = calibration_bin_sums(prob, label, num_bins=10)
    assert sums.shape == (1, 1, 3, 11)
    count, sum_p, sum_y = sums[0, 0]
    assert count.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1]  # 0 and 0.05 share bin 0; 1.0 has bin 10
    assert sum_p[0].item() == pytest.approx(0.05) and sum_y[0].item() == 1.0


def test_on_samples_and_raters_and_errors() -> None:
    prob, label = _data(seed=2, batch=3)
    samples = torch.stack([prob, prob.flip(-1)], dim=1)  # (B, S=2, 1, H, W)
    raters = torch.stack([label, label, 1 - label], dim=1)  # (B, R=3, 1, H, W): majority = label
    metric = MultiRaterMetric(PooledCalibrationErrorMetric(num_bins=15), prediction="mean", rater_mode="majority")
    metric(samples, raters)
    mean = samples.mean(dim=1)
    assert metric.aggregate().item() == pytest.approx(_reference_pooled_ece(mean.numpy(), label.numpy(), 15), abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        calibration_bin_sums(prob, label[..., :-1])
    with pytest.raises(ValueError, match="num_bins must be an int >= 1"):
        PooledCalibrationErrorMetric(num_bins=0)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        compute_pooled_calibration_error(prob * 3, label)
    with pytest.raises(ValueError, match="reduction must be one of"):
        PooledCalibrationErrorMetric(reduction="sum")
    with pytest.raises(ValueError, match="no accumulated values"):
        PooledCalibrationErrorMetric().aggregate()
