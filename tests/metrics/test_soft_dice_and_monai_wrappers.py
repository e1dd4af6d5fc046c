"""Soft-label Dice and MONAI metrics (Dice, MeanIoU, ECE, ROC AUC, AP) on samples × raters via MultiRaterMetric."""

from __future__ import annotations

import math

import pytest
import torch
from _metrics_bruteforce import soft_dice_case
from _metrics_data import random_binary_masks, random_probabilities
from monai.metrics import AveragePrecisionMetric, CalibrationErrorMetric, DiceMetric, MeanIoU, ROCAUCMetric

from monai_bayes.metrics import MultiRaterMetric, SoftDiceMetric, compute_soft_dice, reduce_samples_and_raters

TOL = 1e-6


@pytest.mark.parametrize("categorical", [False, True])
@pytest.mark.parametrize("soft_prediction", [False, True])
@pytest.mark.parametrize("spatial", [(5, 4), (3, 3, 3)])
def test_soft_dice_matches_bruteforce(categorical, soft_prediction, spatial):
    g = torch.Generator().manual_seed(3 * categorical + soft_prediction + len(spatial))
    c = 3 if categorical else 1
    probs = random_probabilities(g, 3, 4, c, spatial, categorical)
    raters = random_binary_masks(g, 3, 3, c, spatial, one_hot=categorical, empty_fraction=0.0)
    raters[1] = 0.0 if not categorical else raters[1]  # empty soft label -> NaN
    for include_background in (True, False):
        result = compute_soft_dice(
            probs, raters, include_background=include_background, soft_prediction=soft_prediction
        )
        for b in range(3):
            expected = soft_dice_case(probs[b], raters[b], include_background, soft_prediction, categorical)
            assert result.shape[1] == len(expected)
            for k, ref in enumerate(expected):
                if math.isnan(ref):
                    assert torch.isnan(result[b, k])
                else:
                    assert abs(result[b, k].item() - ref) < TOL


@pytest.mark.parametrize("categorical", [False, True])
def test_hard_soft_dice_equals_monai_dice_with_soft_label(categorical):
    g = torch.Generator().manual_seed(12)
    c = 3 if categorical else 1
    probs = random_probabilities(g, 4, 5, c, (6, 6), categorical)
    raters = random_binary_masks(g, 4, 3, c, (6, 6), one_hot=categorical, empty_fraction=0.0)
    ours = compute_soft_dice(probs, raters, include_background=True)
    pred, label = reduce_samples_and_raters(probs, raters, prediction="discrete", rater_mode="soft")
    if not categorical:  # MONAI reads a single channel as class indices: give it the two-channel one-hot form
        pred, label = torch.cat([1 - pred, pred], dim=1), torch.cat([1 - label, label], dim=1)
    monai = DiceMetric(include_background=categorical, reduction="none")(pred, label)
    assert torch.allclose(ours, monai, atol=1e-6, equal_nan=True)
    metric = SoftDiceMetric()
    metric(probs, raters)
    assert torch.allclose(metric.aggregate(), monai.nanmean())


def test_soft_dice_identical_labels_and_ignore_empty():
    y = torch.zeros(1, 2, 1, 4, 4)
    y[:, :, :, :2] = 1
    assert compute_soft_dice(y.clone(), y).item() == pytest.approx(1.0)
    empty = torch.zeros(1, 2, 1, 4, 4)
    assert torch.isnan(compute_soft_dice(empty, empty))
    assert compute_soft_dice(empty, empty, ignore_empty=False).item() == 1.0
    assert compute_soft_dice(y, empty, ignore_empty=False).item() == 0.0


def test_ece_of_a_perfectly_calibrated_toy_is_zero():
    # 4 bins of 0.125, 0.375, 0.625, 0.875 with exactly that fraction of positive voxels in each bin
    values, labels = [], []
    for p, n_pos in ((0.125, 1), (0.375, 3), (0.625, 5), (0.875, 7)):
        values += [p] * 8
        labels += [1.0] * n_pos + [0.0] * (8 - n_pos)
    probs = torch.tensor(values).reshape(1, 1, 1, 4, 8).expand(1, 3, 1, 4, 8)  # 3 identical MC samples
    raters = torch.tensor(labels).reshape(1, 1, 1, 4, 8)
    ece = MultiRaterMetric(CalibrationErrorMetric(num_bins=4), prediction="mean", rater_mode="soft")
    ece(probs, raters)
    assert ece.aggregate().item() == pytest.approx(0.0, abs=1e-7)
    miscalibrated = MultiRaterMetric(CalibrationErrorMetric(num_bins=4))
    miscalibrated(probs, 1.0 - raters)
    assert miscalibrated.aggregate().item() > 0.2


def test_multi_rater_each_and_majority_with_monai_metrics():
    g = torch.Generator().manual_seed(21)
    probs = random_probabilities(g, 2, 4, 1, (5, 5), categorical=False)
    raters = random_binary_masks(g, 2, 3, 1, (5, 5), empty_fraction=0.0)
    mean = probs.mean(1)
    hard = (mean > 0.5).float()

    each = MultiRaterMetric(DiceMetric(reduction="none"), prediction="discrete", rater_mode="each")
    per_row = each(probs, raters)
    assert per_row.shape == (6, 1)
    direct = DiceMetric(reduction="none")(hard.repeat_interleave(3, 0), raters.flatten(end_dim=1))
    assert torch.allclose(per_row, direct, equal_nan=True)
    assert each.get_buffer().shape == (6, 1)

    iou = MultiRaterMetric(MeanIoU(), prediction="discrete", rater_mode="majority")
    iou(probs, raters)
    majority = (raters.mean(1) >= 0.5).float()
    assert torch.allclose(iou.aggregate(), MeanIoU()(hard, majority).nanmean())
    iou.reset()
    assert iou.get_buffer() is None


def test_multi_rater_classification_roc_auc_and_average_precision():
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(20, 5, 3, generator=g)  # (B, S, C): multi-label classification
    raters = (torch.rand(20, 3, 3, generator=g) > 0.5).float()
    majority = (raters.mean(1) >= 0.5).float()
    for monai_metric in (ROCAUCMetric, AveragePrecisionMetric):
        wrapped = MultiRaterMetric(monai_metric(), prediction="mean", rater_mode="majority", likelihood="bernoulli")
        wrapped(probs[:10], raters[:10])
        wrapped(probs[10:], raters[10:])
        reference = monai_metric()
        reference(probs.mean(1), majority)
        assert wrapped.aggregate() == pytest.approx(reference.aggregate())


def test_multi_rater_bad_input():
    with pytest.raises(ValueError, match="metric must be a monai CumulativeIterationMetric"):
        MultiRaterMetric(lambda a, b: a)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prediction must be one of"):
        MultiRaterMetric(DiceMetric(), prediction="argmax")
    metric = MultiRaterMetric(DiceMetric(), rater_mode="majority")
    with pytest.raises(ValueError, match=r"rater_mode='soft' with DiceMetric and a single channel"):
        MultiRaterMetric(DiceMetric())(torch.zeros(1, 2, 1, 3, 3), torch.zeros(1, 2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"y_pred must hold finite probabilities"):
        metric(torch.full((1, 2, 1, 3, 3), float("nan")), torch.zeros(1, 2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"got y \(1, 2, 1, 3, 2\) for y_pred \(1, 2, 1, 3, 3\)"):
        metric(torch.zeros(1, 2, 1, 3, 3), torch.zeros(1, 2, 1, 3, 2))
