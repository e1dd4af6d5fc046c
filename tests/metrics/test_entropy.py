"""Entropy / MI volume statistics: brute-force agreement, spacing / affine, precomputed maps, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from _metrics_bruteforce import entropy_case
from _metrics_data import random_probabilities
from monai.data import MetaTensor

from monai_bayes.metrics import EntropyVolumeMetric, compute_entropy_volume, compute_uncertainty_volume

TOL = 1e-6


def _compare(result: dict, probs: torch.Tensor, categorical: bool, ent_thr: float, mi_thr: float, vox: list[float]):
    for b in range(probs.shape[0]):
        expected = entropy_case(probs[b], categorical, ent_thr, mi_thr, vox[b])
        for key, refs in expected.items():
            for k, ref in enumerate(refs):
                value = result[key][b, k].item()
                if math.isnan(ref):
                    assert math.isnan(value), (key, b, k)
                else:
                    assert abs(value - ref) < TOL * max(1.0, abs(ref)), (key, b, k, value, ref)


@pytest.mark.parametrize("categorical", [False, True])
@pytest.mark.parametrize("spatial", [(5, 4), (3, 4, 2)])
def test_entropy_volume_matches_bruteforce(categorical, spatial):
    g = torch.Generator().manual_seed(len(spatial) + 2 * categorical)
    probs = random_probabilities(g, 3, 4, 3 if categorical else 2, spatial, categorical)
    probs[0] = probs[0, :1]  # identical samples: MI = 0 everywhere in case 0
    if not categorical:
        probs[2, :, 1] = 0.01  # empty predicted foreground in case 2, channel 1 -> fg_mean NaN
    spacing = [0.5, 2.0, 1.5][: len(spatial)]
    result = compute_entropy_volume(
        probs,
        likelihood="categorical" if categorical else "bernoulli",
        entropy_threshold=0.3,
        mi_threshold=0.02,
        spacing=spacing,
    )
    vox = math.prod(spacing)
    _compare(result, probs, categorical, 0.3, 0.02, [vox] * 3)
    assert torch.all(result["mi_mean"][0] == 0) and torch.all(result["mi_voxels"][0] == 0)
    if not categorical:
        assert torch.isnan(result["entropy_fg_mean"][2, 1])


def test_entropy_known_values():
    probs = torch.full((1, 2, 1, 2, 2), 0.5)  # maximal binary entropy, no disagreement
    out = compute_entropy_volume(probs, spacing=(2.0, 3.0))
    assert out["entropy_mean"].item() == pytest.approx(math.log(2))
    assert out["entropy_voxels"].item() == 4 and out["entropy_volume"].item() == pytest.approx(24.0)
    assert out["mi_mean"].item() == pytest.approx(0.0, abs=1e-7)
    disagree = torch.zeros(1, 2, 1, 2, 2)
    disagree[:, 1] = 1.0  # two confident samples that disagree: H = log 2, E[H] = 0, MI = log 2
    out = compute_entropy_volume(disagree)
    assert out["mi_mean"].item() == pytest.approx(math.log(2))
    assert out["mi_volume"].item() == 4.0  # unit spacing by default


def test_spacing_from_metatensor_affine_and_per_case():
    g = torch.Generator().manual_seed(0)
    probs = random_probabilities(g, 2, 3, 1, (4, 4, 3), categorical=False)
    affine = torch.stack(
        [torch.diag(torch.tensor([0.5, 1.0, 2.0, 1.0])), torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0]))]
    )
    meta = MetaTensor(probs, affine=affine)
    from_affine = compute_entropy_volume(meta, entropy_threshold=0.2)
    explicit = compute_entropy_volume(
        probs, entropy_threshold=0.2, spacing=torch.tensor([[0.5, 1.0, 2.0], [1.0, 1.0, 3.0]])
    )
    assert torch.allclose(from_affine["entropy_volume"], explicit["entropy_volume"])
    assert torch.allclose(
        from_affine["entropy_volume"][:, 0], from_affine["entropy_voxels"][:, 0] * torch.tensor([1.0, 3.0])
    )
    metric = EntropyVolumeMetric(entropy_threshold=0.2)
    metric(probs, None, spacing=(0.5, 1.0, 2.0))
    assert torch.allclose(metric.get_details()["entropy_volume"], explicit["entropy_voxels"] * 1.0)


def test_precomputed_map_statistics():
    u = torch.tensor([[[[0.1, 0.5], [0.9, 0.2]]]])  # (1, 1, 2, 2)
    fg = torch.tensor([[[[True, True], [False, False]]]])
    stats = compute_uncertainty_volume(u, threshold=0.3, foreground=fg, voxel_volume_mm=2.5)
    assert stats["voxels"].item() == 2 and stats["volume"].item() == pytest.approx(5.0)
    assert stats["mean"].item() == pytest.approx(0.425) and stats["fg_mean"].item() == pytest.approx(0.3)
    assert torch.isnan(compute_uncertainty_volume(u, 0.3)["fg_mean"]).all()
    with pytest.raises(ValueError, match="foreground must have shape"):
        compute_uncertainty_volume(u, 0.3, foreground=fg[..., :1])


def test_metric_primary_and_bad_input():
    g = torch.Generator().manual_seed(8)
    probs = random_probabilities(g, 2, 3, 1, (4, 4), categorical=False)
    metric = EntropyVolumeMetric(primary="mi_mean")
    metric(probs)
    assert torch.allclose(metric.aggregate(), compute_entropy_volume(probs)["mi_mean"].mean())
    assert set(metric.aggregate_all()) == set(EntropyVolumeMetric.quantities)
    with pytest.raises(ValueError, match="primary must be one of"):
        EntropyVolumeMetric(primary="volume")
    bad = probs.clone()
    bad[1, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="y_pred must hold finite probabilities"):
        metric(bad)
    with pytest.raises(ValueError, match=r"spacing must be a float, a sequence of 2 values"):
        compute_entropy_volume(probs, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must be positive"):
        compute_entropy_volume(probs, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"y_pred must have layout \(B, S, C, \*spatial\)"):
        compute_entropy_volume(probs[:, :, :, 0, 0])
