"""Samples × widths evaluation (GED, HM-IoU, sample diversity), table and Fig. 7-like figure."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from monai_bayes.evaluation import evaluate_width_sweep, rater_masks, write_width_sweep_report
from monai_bayes.evaluation.nested import _sweep_values
from monai_bayes.layers import nested_layers
from monai_bayes.metrics import compute_ged, compute_hm_iou, compute_pairwise_iou
from monai_bayes.networks import to_nested


def _data(batches: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        image = torch.randn(2, 1, 16, 16, generator=gen)
        raters = (image + 0.3 * torch.randn(2, 4, 16, 16, generator=gen) > 0.5).long()  # (B, R, H, W)
        out.append({"image": image, "label": raters})
    return out


def _ged_bruteforce(pred: np.ndarray, raters: np.ndarray) -> float:
    """D²_GED with d = 1 - IoU (both empty: d = 0), all pairs incl. the diagonal; masks (N, H, W) bool."""

    def d(a: np.ndarray, b: np.ndarray) -> float:
        union = np.logical_or(a, b).sum()
        return 0.0 if union == 0 else 1.0 - np.logical_and(a, b).sum() / union

    cross = np.mean([d(p, r) for p in pred for r in raters])
    ss = np.mean([d(p, q) for p in pred for q in pred])
    rr = np.mean([d(r, q) for r in raters for q in raters])
    return 2 * cross - ss - rr


def test_deterministic_baseline_matches_a_bruteforce_ged():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,)).eval()
    data = _data()
    result = evaluate_width_sweep(net, data, num_samples=(1, 4), method="deterministic")
    with torch.no_grad():
        preds = torch.cat([net(b["image"]).argmax(1) for b in data]).numpy().astype(bool)
    raters = torch.cat([b["label"] for b in data]).numpy().astype(bool)
    expected = [_ged_bruteforce(preds[i : i + 1], raters[i]) for i in range(len(preds))]
    for samples in (1, 4):  # identical samples: the same GED for any S
        assert np.allclose(result.per_case("ged", None, samples).numpy(), expected, atol=1e-5)
    assert torch.all(result.per_case("sample_diversity", None, 4) == 0)
    assert [row["width"] for row in result.table()] == ["full", "full"]


def test_nested_sweep_restores_the_network_and_writes_table_and_figures(tmp_path):
    torch.manual_seed(1)
    net = to_nested(UNet(2, 1, 2, channels=(8, 16), strides=(2,), num_res_units=1, norm="batch"), groups=4)
    net.train()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    data = _data()
    bn3 = evaluate_width_sweep(net, data, widths=[1, 4], num_samples=(1, 4), recalibration_data=data)
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    assert net.training and all(layer.width is None for _, layer in nested_layers(net))
    assert torch.all(bn3.per_case("sample_diversity", 4, 1) == 0)
    assert float(bn3.per_case("sample_diversity", 4, 4).mean()) > 0  # weight noise gives diverse samples
    hm = bn3.per_case("hm_iou", 1, 4)
    assert hm.shape == (4,) and torch.all((hm >= 0) & (hm <= 1))
    again = evaluate_width_sweep(net, data, widths=[1, 4], num_samples=(1, 4), recalibration_data=data)
    assert torch.equal(again.per_case("ged", 1, 4), bn3.per_case("ged", 1, 4))  # seeded draws
    baseline = evaluate_width_sweep(UNet(2, 1, 2, channels=(8, 16), strides=(2,)), data, num_samples=(1, 4))
    baseline.method = "deterministic"
    paths = write_width_sweep_report([bn3, baseline], tmp_path, metrics=("ged",))
    with open(paths["table"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["width"], r["samples"]) for r in rows] == [
        ("BN3", "1", "1"), ("BN3", "1", "4"), ("BN3", "4", "1"), ("BN3", "4", "4"),
        ("deterministic", "full", "1"), ("deterministic", "full", "4"),
    ]  # fmt: skip
    assert float(rows[0]["width_fraction"]) == 0.25
    assert paths["ged"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rater_masks_layouts():
    labels = torch.tensor([[[[0, 1], [1, 0]], [[1, 1], [0, 0]]]])  # (B=1, R=2, 2, 2)
    onehot = rater_masks(labels, 2, 5)
    assert onehot.shape == (1, 2, 2, 2, 2) and torch.equal(onehot[:, :, 1], labels)
    assert rater_masks(labels, 1, 5).shape == (1, 2, 1, 2, 2)
    assert rater_masks(onehot, 2, 5) is onehot
    with pytest.raises(ValueError, match="labels must be"):
        rater_masks(labels[0], 2, 5)


def test_bad_sweep_arguments():
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="need a nested network"):
        evaluate_width_sweep(net, _data(1), widths=[1])
    with pytest.raises(ValueError, match="num_samples"):
        evaluate_width_sweep(net, _data(1), num_samples=())
    with pytest.raises(ValueError, match="no batch"):
        evaluate_width_sweep(net, [], num_samples=(1,))


@pytest.mark.parametrize("empty_policy", ["match", "mismatch"])
def test_one_pairwise_pass_per_batch_equals_separate_ged_and_hm_iou_per_sample_count(empty_policy):
    """The sweep slices one pairwise-IoU pass of S_max samples; that equals compute_ged / compute_hm_iou per S."""
    gen = torch.Generator().manual_seed(3)
    samples = (torch.rand(3, 6, 1, 12, 12, generator=gen) > 0.6).float()
    samples[0, 2] = 0  # an empty sample: the empty-pair policy matters
    raters = (torch.rand(3, 3, 1, 12, 12, generator=gen) > 0.6).float()
    raters[1] = 0
    pairwise = compute_pairwise_iou(samples, raters, empty_policy=empty_policy)
    for s in (1, 2, 3, 6):
        values = _sweep_values(pairwise, s)
        ged = compute_ged(samples[:, :s], raters, empty_policy=empty_policy)
        hm = compute_hm_iou(samples[:, :s], raters, empty_policy=empty_policy)
        assert torch.allclose(values["ged"], ged.ged)
        assert torch.allclose(values["sample_diversity"], ged.sample_diversity)
        assert torch.allclose(values["hm_iou"], hm)
