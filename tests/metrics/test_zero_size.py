"""A zero-size spatial (or channel) dimension has no overlap to score: an error, not a perfect score."""

from __future__ import annotations

import pytest
import torch

from monai_bayes.metrics import compute_ged, compute_hm_iou


@pytest.mark.parametrize("shape", [(1, 2, 1, 0, 8), (1, 2, 1, 8, 0), (1, 2, 0, 8, 8), (1, 2, 1, 4, 0, 4)])
@pytest.mark.parametrize("fn", [compute_ged, compute_hm_iou])
def test_zero_size_dimension_is_rejected(shape, fn):
    y_pred = torch.zeros(shape)
    y = torch.zeros((shape[0], 3, *shape[2:]))
    with pytest.raises(ValueError, match="at least one channel and one voxel"):
        fn(y_pred, y)


def test_one_voxel_still_scores():
    y_pred = torch.ones(1, 2, 1, 1, 1)
    y = torch.ones(1, 2, 1, 1, 1)
    assert float(compute_ged(y_pred, y).ged) == 0.0 and float(compute_hm_iou(y_pred, y)) == 1.0
