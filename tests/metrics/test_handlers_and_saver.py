"""Ignite handlers in an evaluator loop and per-case CSV reports (2D and 3D)."""

from __future__ import annotations

import csv
import math
import os

import pytest
import torch
from _metrics_data import random_binary_masks, random_probabilities
from ignite.engine import Engine
from monai.handlers import MetricsSaver, from_engine
from monai.metrics import CalibrationErrorMetric

from monai_bayes.handlers.metric_handlers import (
    BrierScore,
    EntropyVolume,
    GeneralizedEnergyDistance,
    HungarianMatchedIoU,
    MultiRater,
    NegativeLogLikelihood,
    PerCaseMetricsSaver,
    SoftDice,
)
from monai_bayes.metrics import (
    compute_brier_score,
    compute_entropy_volume,
    compute_ged,
    compute_hm_iou,
    compute_nll,
    compute_soft_dice,
    per_case_table,
    write_per_case_report,
)


def _batches(spatial: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(3):
        probs = random_probabilities(g, 2, 6, 1, spatial, categorical=False)
        batches.append(
            {
                "probs": probs,
                "samples": (probs > 0.5).float(),
                "raters": random_binary_masks(g, 2, 3, 1, spatial),
                "spacing": torch.tensor([[0.5] * len(spatial), [2.0] * len(spatial)]),
                "names": [f"case{2 * i}", f"case{2 * i + 1}"],
            }
        )
    return batches


def _read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 3)])
def test_handlers_in_an_evaluator_and_reports(tmp_path, spatial):
    batches = _batches(spatial)
    engine = Engine(lambda e, batch: batch)
    masks = from_engine(["samples", "raters"])
    probs = from_engine(["probs", "raters"])
    GeneralizedEnergyDistance(output_transform=masks, with_hm_iou=True).attach(engine, "GED")
    HungarianMatchedIoU(output_transform=masks).attach(engine, "HM_IoU")
    BrierScore(output_transform=probs).attach(engine, "Brier")
    NegativeLogLikelihood(output_transform=probs).attach(engine, "NLL")
    SoftDice(output_transform=probs).attach(engine, "SoftDice")
    EntropyVolume(entropy_threshold=0.2, output_transform=from_engine(["probs", "raters", "spacing"])).attach(
        engine, "Entropy"
    )
    MultiRater(CalibrationErrorMetric(num_bins=10), output_transform=probs).attach(engine, "ECE")
    PerCaseMetricsSaver(
        str(tmp_path / "ours"), batch_transform=lambda b: {"filename_or_obj": b["names"]}, prefix="eval_"
    ).attach(engine)
    MetricsSaver(str(tmp_path / "monai"), metric_details=["GED", "GED_sample_diversity", "Brier"]).attach(engine)

    for _ in range(2):  # a second run must reset the buffers
        engine.run(batches, max_epochs=1)

    cat = {k: torch.cat([b[k] for b in batches]) for k in ("probs", "samples", "raters", "spacing")}
    ged = compute_ged(cat["samples"], cat["raters"])
    metrics = engine.state.metrics
    assert metrics["GED"] == pytest.approx(ged.ged.mean().item(), abs=1e-6)
    assert metrics["GED_sample_diversity"] == pytest.approx(ged.sample_diversity.mean().item(), abs=1e-6)
    assert metrics["GED_rater_diversity"] == pytest.approx(ged.rater_diversity.mean().item(), abs=1e-6)
    assert metrics["HM_IoU"] == pytest.approx(compute_hm_iou(cat["samples"], cat["raters"]).mean().item(), abs=1e-6)
    assert metrics["GED_hm_iou"] == pytest.approx(metrics["HM_IoU"], abs=1e-7)
    assert metrics["Brier"] == pytest.approx(compute_brier_score(cat["probs"], cat["raters"]).mean().item(), abs=1e-6)
    assert metrics["NLL"] == pytest.approx(compute_nll(cat["probs"], cat["raters"]).mean().item(), abs=1e-6)
    assert metrics["SoftDice"] == pytest.approx(
        compute_soft_dice(cat["probs"], cat["raters"]).nanmean().item(), abs=1e-6
    )
    ent = compute_entropy_volume(cat["probs"], entropy_threshold=0.2, spacing=cat["spacing"])
    assert metrics["Entropy"] == pytest.approx(ent["entropy_volume"].mean().item(), rel=1e-6)
    assert metrics["Entropy_mi_mean"] == pytest.approx(ent["mi_mean"].mean().item(), abs=1e-6)
    assert 0.0 <= metrics["ECE"] <= 1.0
    details = engine.state.metric_details
    assert details["GED"].shape == (6, 1) and details["Entropy_entropy_voxels"].shape == (6, 1)

    rows = _read_csv(str(tmp_path / "ours" / "eval_per_case.csv"))
    header = rows[0]
    assert (
        header[0] == "case" and "GED" in header and "GED_sample_diversity" in header and "Entropy_mi_volume" in header
    )
    assert [r[0] for r in rows[1:]] == [f"case{i}" for i in range(6)]
    col = header.index("GED")
    assert [float(r[col]) for r in rows[1:]] == pytest.approx(ged.ged[:, 0].tolist(), abs=1e-7)
    summary = _read_csv(str(tmp_path / "ours" / "eval_summary.csv"))
    assert summary[0] == ["metric", "mean", "std", "median", "min", "max", "notnans"]
    ged_row = next(r for r in summary if r[0] == "GED")
    assert float(ged_row[1]) == pytest.approx(ged.ged.mean().item(), abs=1e-6) and float(ged_row[6]) == 6
    assert os.path.exists(tmp_path / "ours" / "eval_metrics.csv")
    # MONAI's own MetricsSaver understands the per-quantity details too
    assert os.path.exists(tmp_path / "monai" / "GED_sample_diversity_raw.csv")
    assert not [f for f in os.listdir(tmp_path / "ours") if f.endswith(".tmp")]


def test_handler_report_all_off_and_bad_output():
    batches = _batches((4, 4))
    engine = Engine(lambda e, batch: batch)
    GeneralizedEnergyDistance(output_transform=from_engine(["samples", "raters"]), report_all=False).attach(engine, "G")
    engine.run(batches, max_epochs=1)
    assert "G" in engine.state.metrics and "G_sample_diversity" not in engine.state.metrics
    bad = Engine(lambda e, batch: batch)
    EntropyVolume(output_transform=lambda out: (out["probs"],)).attach(bad, "E")
    with pytest.raises(ValueError, match=r"output must be \(y_pred, y\) or \(y_pred, y, spacing\)"):
        bad.run(batches, max_epochs=1)


def test_write_per_case_report_contents(tmp_path):
    details = {
        "ged": torch.tensor([[0.1], [float("nan")], [0.3]]),
        "dice": torch.tensor([[0.5, 0.7], [0.6, 0.8], [0.9, 1.0]]),
        "vol": [1.0, 2.0, 3.0],
    }
    columns, table = per_case_table(details)
    assert columns == ["ged", "dice_0", "dice_1", "vol"] and table.shape == (3, 4)
    paths = write_per_case_report(
        tmp_path / "r",
        details,
        case_ids=["a", "b", "c"],
        summary_ops=["mean", "notnans", "50percentile"],
        metrics={"ged": 0.2},
    )
    rows = _read_csv(paths["per_case"])
    assert rows[0] == ["case", "ged", "dice_0", "dice_1", "vol"]
    assert rows[2][1] == "nan" and float(rows[3][2]) == 0.9
    summary = {r[0]: r[1:] for r in _read_csv(paths["summary"])[1:]}
    assert float(summary["ged"][0]) == pytest.approx(0.2) and float(summary["ged"][1]) == 2
    assert float(summary["dice_1"][2]) == pytest.approx(0.8)
    assert _read_csv(paths["metrics"]) == [["ged", "0.2"]]
    with pytest.raises(ValueError, match="same number of cases: 3, got 2 for 'x'"):
        write_per_case_report(tmp_path, {**details, "x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="case_ids must have one name per case"):
        write_per_case_report(tmp_path, details, case_ids=["a"])
    with pytest.raises(ValueError, match="summary op must be one of"):
        write_per_case_report(tmp_path, details, summary_ops=["avg"])
    assert math.isnan(float(_read_csv(paths["per_case"])[2][1]))
