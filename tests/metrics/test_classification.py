"""Multi-label classification metrics against torch / torchmetrics and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

from monai_bayes.metrics import image_uncertainty, multilabel_metrics


def test_metrics_match_references() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 3)) < 0.3).astype(np.uint8)
    samples = np.clip(rng.random((50, 4, 3)) * 0.6 + 0.35 * y[:, None], 0.01, 0.99)
    m = multilabel_metrics(y, samples)
    mean = samples.mean(axis=1)
    bce = torch.nn.functional.binary_cross_entropy(torch.tensor(mean), torch.tensor(y, dtype=torch.float64))
    assert m["NLL"] == pytest.approx(float(bce), rel=1e-6)
    ece = binary_calibration_error(torch.tensor(mean.ravel()), torch.tensor(y.ravel()), n_bins=15, norm="l1")
    assert m["ECE"] == pytest.approx(float(ece), abs=1e-6)
    assert m["accuracy"] == pytest.approx(((mean >= 0.5) == y).mean())
    assert m["mAP"] == pytest.approx(np.mean(m["AP"]))
    assert m["entropy"].shape == (50,) and m["mean_MI"] > 0


def test_image_uncertainty_by_hand() -> None:
    u = image_uncertainty(np.array([[[0.5, 0.5]], [[0.0, 1.0]]]))  # one sample: no MI, no disagreement
    np.testing.assert_allclose(u["entropy"], [2 * math.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(u["mutual_information"], [0, 0], atol=1e-12)
    u = image_uncertainty(np.array([[[0.0], [1.0]]]))  # two confident samples that disagree: MI = ln 2
    assert u["mutual_information"][0] == pytest.approx(math.log(2))
    assert u["disagreement"][0] == pytest.approx(0.5)
