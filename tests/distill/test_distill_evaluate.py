"""Spearman vs scipy; segmentation scores vs direct computations; the foreground union."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from monai_bayes.distill import foreground_union, segmentation_scores, spearman


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy(ties: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, generator=gen)
    y = x + torch.randn(500, generator=gen)
    if ties:
        x, y = x.round(), (y * 2).round()
    expected = spearmanr(x.numpy(), y.numpy()).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(spearman(torch.ones(5), y[:5]))
    with pytest.raises(ValueError):
        spearman(x, y[:3])


def test_foreground_union() -> None:
    t = torch.tensor([[0.9, 0.1], [0.4, 0.6]]).T.reshape(1, 2, 2)  # argmax: 0, 1
    s = torch.tensor([[0.2, 0.8], [0.7, 0.3]]).T.reshape(1, 2, 2)  # argmax: 1, 0
    assert foreground_union(t, s).tolist() == [[[True, True]]]


def test_segmentation_scores_against_direct_computation() -> None:
    labels = torch.zeros(1, 2, 4, 4)
    labels[0, :, :2, :2] = 1  # both raters: top-left 2x2
    fg = torch.zeros(1, 1, 1, 4, 4)
    fg[..., :2, :] = 0.8  # predicts the top two rows (8 px), 4 of them right
    samples = torch.cat([1 - fg, fg], dim=2)
    scores = segmentation_scores(samples, labels)
    assert float(scores["Dice"]) == pytest.approx(2 * 4 / (8 + 4))
    iou = 4 / 8
    assert float(scores["HM-IoU"]) == pytest.approx(iou)
    assert float(scores["GED"]) == pytest.approx(2 * (1 - iou))  # identical raters, one sample
    # ECE: 8 px at 0.8 with accuracy 0.5, 8 px at 0.0 with accuracy 1 -> (8·0.3 + 0) / 16
    assert float(scores["ECE"]) == pytest.approx(8 * 0.3 / 16, abs=1e-6)
