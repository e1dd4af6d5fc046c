"""Per-size-bin pruning of a segmentation network against a hand-computed fixture (issue 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from monai_bayes.pruning import forgettability_curves, welch_mean_ap
from monai_bayes.pruning.segmentation import (
    equivalent_diameter_mm,
    per_bin_mean,
    per_case_dice,
    segmentation_pruning_sweep,
    size_bins,
)


def _fixture_net() -> nn.Module:
    """1×1 conv, 2 classes: background logit ``0.1 x``, foreground logit ``2 x − 1``.

    Unpruned, a pixel is foreground iff ``2x − 1 > 0.1 x`` ⇔ ``x > 1/1.9 ≈ 0.526``. Global L1 at ``k = 0.5``
    zeroes ``round(0.5 · 2) = 1`` weight, the smaller ``0.1``: then foreground iff ``x > 0.5``.
    """
    net = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.1, 2.0]).view(2, 1, 1, 1))
        net.bias.copy_(torch.tensor([0.0, -1.0]))
    return net


def _fixture() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 4×4 cases; 0.9 = foreground at both k, 0.51 = foreground only after pruning."""
    img = torch.zeros(4, 1, 4, 4)
    ref = torch.zeros(4, 1, 4, 4)
    ref[0, 0, :2, :2] = 1  # A: 4 px, predicted exactly at both k → Dice 1, 1
    img[0, 0, :2, :2] = 0.9
    ref[1, 0, 0, :2] = 1  # B: 2 px, plus 2 px at 0.51 → k=0: 1; k=0.5: 2·2/(2+4) = 2/3
    img[1, 0, 0, :2] = 0.9
    img[1, 0, 3, :2] = 0.51
    ref[2, 0, 1, 1] = 1  # C: 1 px at 0.51 → k=0: empty prediction, Dice 0; k=0.5: 1
    img[2, 0, 1, 1] = 0.51
    img[3, 0, 2, 2] = 0.9  # D: empty reference → Dice undefined (NaN), bin -1
    return img, ref


def test_equivalent_diameter_and_bins() -> None:
    _, ref = _fixture()
    d = equivalent_diameter_mm(ref, (0.5, 2.0))  # 1 mm² per pixel
    np.testing.assert_allclose(d, [2 * math.sqrt(4 / math.pi), 2 * math.sqrt(2 / math.pi), 2 / math.sqrt(math.pi), 0])
    d2 = equivalent_diameter_mm(ref[:, 0].numpy(), np.array([[1, 1], [1, 1], [2, 2], [1, 1]]))
    assert d2[2] == pytest.approx(2 * math.sqrt(4 / math.pi))  # 1 px of 4 mm²
    np.testing.assert_array_equal(size_bins(d, [1.5]), [1, 1, 0, -1])
    np.testing.assert_array_equal(size_bins(np.array([0.5, 5.0, 9.99, 10.0, 30.0]), [5, 10, 20]), [0, 1, 1, 2, 3])
    with pytest.raises(ValueError, match="increasing"):
        size_bins(d, [2.0, 1.0])
    with pytest.raises(ValueError, match="spacing_mm"):
        equivalent_diameter_mm(ref, (1.0, 1.0, 1.0))


def test_per_case_dice_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(6, 1, 5, 5, generator=g) > 0.5).float()
    ref = (torch.rand(6, 1, 5, 5, generator=g) > 0.6).float()
    ref[5] = 0
    brute = [2 * float((p * r).sum()) / float(p.sum() + r.sum()) for p, r in zip(pred[:5], ref[:5], strict=True)]
    dice = per_case_dice(pred, ref)
    np.testing.assert_allclose(dice[:5], brute, rtol=1e-6)
    assert math.isnan(dice[5])


def test_per_bin_mean_by_hand() -> None:
    values = np.array([[1.0, 0.5, np.nan, 0.2], [0.0, 1.0, 0.3, 0.4]])
    got = per_bin_mean(values, np.array([0, 0, 1, -1]), 3)
    np.testing.assert_allclose(got, [[0.75, np.nan, np.nan], [0.5, 0.3, np.nan]])


def test_sweep_quality_matrix_by_hand() -> None:
    img, ref = _fixture()
    bins = size_bins(equivalent_diameter_mm(ref, (1.0, 1.0)), [1.5])  # C → bin 0; A, B → bin 1; D → -1
    models = [_fixture_net(), _fixture_net()]
    sweep = segmentation_pruning_sweep(models, img, ref, bins, 2, [0.0, 0.5])
    assert sweep.quality.shape == (2, 2, 2)
    np.testing.assert_allclose(sweep.dice[0, 0, :3], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(sweep.dice[0, 1, :3], [1.0, 2 / 3, 1.0])
    assert np.isnan(sweep.dice[:, :, 3]).all()
    expected = np.array([[0.0, 1.0], [1.0, (1 + 2 / 3) / 2]])
    np.testing.assert_allclose(sweep.quality, np.stack([expected, expected]))
    np.testing.assert_array_equal(sweep.counts, [1, 2])
    np.testing.assert_allclose(sweep.reached, [[0.0, 0.5], [0.0, 0.5]])
    assert float(models[0].weight[0].item()) == pytest.approx(0.1)  # the sweep prunes copies
    curves = forgettability_curves(sweep.quality)  # the classification maths takes the bins as classes
    assert curves[1, 1] == pytest.approx(-1 / 6)
    assert welch_mean_ap(sweep.quality, sweep.sparsities).mean_ap[0].tolist() == pytest.approx([0.5, (1 + 5 / 6) / 2])


def test_sweep_rejects_bad_input() -> None:
    img, ref = _fixture()
    with pytest.raises(ValueError, match="from 0"):
        segmentation_pruning_sweep([_fixture_net()], img, ref, np.zeros(4, int), 1, [0.5, 0.6])
    with pytest.raises(ValueError, match="same number"):
        segmentation_pruning_sweep([_fixture_net()], img, ref, np.zeros(3, int), 1, [0.0, 0.5])
