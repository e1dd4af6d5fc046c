"""Thresholded Jaccard (ISIC 2018 task 1) against a re-implementation of the official scorer's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_bayes.metrics import (
    ISIC_JACCARD_THRESHOLD,
    MultiRaterMetric,
    ThresholdedJaccardMetric,
    compute_thresholded_jaccard,
    threshold_scores,
)


def _official_threshold_jaccard(truth_png: np.ndarray, prediction_png: np.ndarray, threshold: float = 0.65) -> float:
    """The ISIC challenge scorer's rule, written from its definitions: 8-bit masks binarised at > 128,
    confusion counts, J = TP / (TP + FP + FN) with J = 1 when TP + FP + FN = 0, and J < threshold -> 0."""
    truth, prediction = truth_png.ravel() > 128, prediction_png.ravel() > 128
    tp = int(np.sum(truth & prediction))
    fp = int(np.sum(~truth & prediction))
    fn = int(np.sum(truth & ~prediction))
    jaccard = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
    return jaccard if jaccard >= threshold else 0.0


def _png(rng: np.random.Generator, shape: tuple[int, int], p: float) -> np.ndarray:
    return np.where(rng.random(shape) < p, 255, 0).astype(np.uint8)


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Truth / prediction PNG pairs: at, just below and far from the threshold, empty truth, random masks."""
    cases = []
    truth = np.zeros((8, 10), np.uint8)
    truth[:2, :] = 255  # 20 lesion pixels
    exact = truth.copy()
    exact[1, 3:10] = 0  # TP 13, FN 7: J = 13 / 20 = 0.65 exactly -> kept
    below = truth.copy()
    below[1, 2:10] = 0  # TP 12, FN 8: J = 0.6 -> 0
    cases += [(truth, exact), (truth, below), (truth, truth), (truth, np.zeros_like(truth))]
    empty = np.zeros_like(truth)
    cases += [(empty, empty), (empty, truth)]  # empty truth: 1 for an empty prediction, else 0
    rng = np.random.default_rng(0)
    for _ in range(6):
        t = _png(rng, (8, 10), 0.5)
        p = np.where(rng.random(t.shape) < 0.85, t, 255 - t).astype(np.uint8)  # J around the threshold
        cases.append((t, p))
    return cases


def _batch(cases: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    truth = torch.from_numpy(np.stack([t for t, _ in cases]) > 128).float()[:, None]
    pred = torch.from_numpy(np.stack([p for _, p in cases]) > 128).float()[:, None]
    return pred, truth


def test_per_image_scores_equal_the_official_rule() -> None:
    cases = _cases()
    pred, truth = _batch(cases)
    ours = compute_thresholded_jaccard(pred, truth)
    expected = torch.tensor([[_official_threshold_jaccard(t, p)] for t, p in cases])
    assert ours.shape == (len(cases), 1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert ours[0, 0].item() == pytest.approx(0.65) and ours[1, 0].item() == 0.0  # at / below the threshold
    assert ours[4, 0].item() == 1.0 and ours[5, 0].item() == 0.0  # empty truth, official convention


def test_metric_mean_is_the_challenge_score_whatever_the_batching() -> None:
    cases = _cases()
    pred, truth = _batch(cases)
    official = float(np.mean([_official_threshold_jaccard(t, p) for t, p in cases]))
    metric = ThresholdedJaccardMetric()
    for start in range(0, len(cases), 5):  # uneven batches
        metric(pred[start : start + 5], truth[start : start + 5])
    assert metric.aggregate().item() == pytest.approx(official, abs=1e-6)
    assert metric.get_buffer().shape == (len(cases), 1)


def test_ignore_empty_true_is_monai_meaniou_convention() -> None:
    cases = _cases()
    pred, truth = _batch(cases)
    scores = compute_thresholded_jaccard(pred, truth, ignore_empty=True)
    assert torch.isnan(scores[4:6]).all() and not torch.isnan(scores[:4]).any()
    metric = ThresholdedJaccardMetric(ignore_empty=True)
    metric(pred, truth)
    kept = [_official_threshold_jaccard(t, p) for t, p in cases if t.any()]
    assert metric.aggregate().item() == pytest.approx(float(np.mean(kept)), abs=1e-6)


def test_threshold_zero_is_plain_jaccard_and_nan_survives() -> None:
    pred, truth = _batch(_cases())
    from monai.metrics import compute_iou

    plain = compute_iou(pred, truth, ignore_empty=False)
    torch.testing.assert_close(compute_thresholded_jaccard(pred, truth, threshold=0.0), plain)
    x = torch.tensor([0.2, 0.65, float("nan"), 0.9])
    out = threshold_scores(x, ISIC_JACCARD_THRESHOLD)
    assert out[0] == 0 and out[1] == pytest.approx(0.65) and torch.isnan(out[2]) and out[3] == pytest.approx(0.9)


def test_on_samples_and_raters_through_multirater() -> None:
    """MC samples (B, S, 1, H, W) and one rater (B, 1, 1, H, W), as in the ISIC bundle's evaluator."""
    cases = _cases()
    pred, truth = _batch(cases)
    samples = torch.stack([pred * 0.9, pred * 0.7, pred * 0.8], dim=1)  # mean > 0.5 exactly where pred = 1
    metric = MultiRaterMetric(ThresholdedJaccardMetric(), prediction="discrete", rater_mode="majority")
    metric(samples, truth[:, None])
    official = float(np.mean([_official_threshold_jaccard(t, p) for t, p in cases]))
    assert metric.aggregate().item() == pytest.approx(official, abs=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold must be a number in"):
        ThresholdedJaccardMetric(threshold=1.5)
    with pytest.raises(ValueError, match="same shape"):
        compute_thresholded_jaccard(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
