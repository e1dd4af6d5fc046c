"""Global L1 pruning reaches the requested sparsity exactly, removes the smallest magnitudes, and stays pruned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_bayes.pruning import (
    global_l1_prune,
    prunable_parameters,
    pruned_copy,
    pruning_sweep,
    sparsity,
    weight_magnitudes,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


@pytest.mark.parametrize("k", [0.0, 0.05, 0.37, 0.5, 0.95])
def test_exact_sparsity_and_smallest_magnitudes(k: float) -> None:
    net = _net()
    before = weight_magnitudes(net).clone()
    n = before.numel()  # 4*1*3*3 + 3*4 = 48
    assert n == 48
    global_l1_prune(net, k)
    after = weight_magnitudes(net)
    pruned = after == 0
    assert int(pruned.sum()) == round(k * n)  # exactly round(k N) entries
    assert sparsity(net) == pytest.approx(round(k * n) / n)
    if k > 0:
        assert before[pruned].max() <= before[~pruned].min()  # the smallest magnitudes, ranked globally
    torch.testing.assert_close(after[~pruned], before[~pruned])  # the rest untouched
    assert not any("weight_orig" in key or "weight_mask" in key for key in net.state_dict())
    assert all(not b.bias.eq(0).all() for b in (net[0], net[5]))  # biases are not pruned


def test_pruned_weights_stay_zero_at_evaluation_and_in_training_mode() -> None:
    net = global_l1_prune(_net(), 0.5)
    zeros = [getattr(m, n) == 0 for m, n in prunable_parameters(net)]
    net.eval()
    net(torch.rand(2, 1, 8, 8))
    net.train()
    net(torch.rand(2, 1, 8, 8))
    for mask, (m, n) in zip(zeros, prunable_parameters(net), strict=True):
        assert (getattr(m, n)[mask] == 0).all()


def test_pruned_copy_leaves_the_original_and_bad_sparsity() -> None:
    net = _net()
    copy = pruned_copy(net, 0.5)
    assert sparsity(net) == 0 and sparsity(copy) == pytest.approx(0.5)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="sparsity"):
            global_l1_prune(net, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no Conv"):
        prunable_parameters(nn.Sequential(nn.ReLU()))


def test_sweep_reuses_each_trained_model_and_records_ap() -> None:
    models = [_net(s).eval() for s in range(2)]
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    rng = np.random.default_rng(0)
    images = torch.rand(20, 1, 8, 8)
    labels = (rng.random((20, 3)) < 0.4).astype(np.uint8)
    labels[0] = 1
    ks = [0.0, 0.25, 0.5, 0.9]
    sweep = pruning_sweep(models, images, labels, ks)
    assert sweep.probs.shape == (2, 4, 20, 3) and sweep.ap.shape == (2, 4, 3)
    np.testing.assert_allclose(sweep.reached, [[round(k * 48) / 48 for k in ks]] * 2)
    for m, s in zip(models, states, strict=True):  # the trained models are not changed by the sweep
        for key, v in m.state_dict().items():
            torch.testing.assert_close(v, s[key])
    with torch.no_grad():
        ref = torch.sigmoid(models[1](images)).numpy()
    np.testing.assert_allclose(sweep.probs[1, 0], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sweep.mean_predictions(0), sweep.probs[:, 0].mean(0))
    with pytest.raises(ValueError, match="increase from 0"):
        pruning_sweep(models, images, labels, [0.1, 0.2])
