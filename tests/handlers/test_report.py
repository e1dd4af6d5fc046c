"""EvaluationReportHandler: summary.json (metrics ± std, costs, selection), figures, reliability bins."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_bayes.handlers import EvaluationReportHandler

PNG = b"\x89PNG\r\n\x1a\n"


def _items(num_cases: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(num_cases):
        raters = (torch.rand(3, 1, 8, 8, generator=gen) > 0.6).float()  # (R, 1, H, W)
        items.append(
            {
                "image": torch.rand(1, 8, 8, generator=gen),
                "pred": torch.rand(4, 1, 8, 8, generator=gen),  # (S, 1, H, W) foreground probabilities
                "label": raters,
            }
        )
    return items


def _run(handler: EvaluationReportHandler, batches: list[list[dict]], per_case: list[float]) -> Engine:
    engine = Engine(lambda engine, batch: batch)

    @engine.on(Events.COMPLETED)
    def _metrics(engine: Engine) -> None:  # what the metric handlers leave behind
        engine.state.metrics = {"Dice": float(np.nanmean(per_case)), "label": "not a number"}
        engine.state.metric_details = {"Dice": torch.tensor(per_case).reshape(-1, 1)}

    handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def test_summary_figures_and_reliability(tmp_path):
    items = _items(5)
    (tmp_path / "cost_train.json").write_text(json.dumps({"parameters": {"total": 10, "bayesian": 2}}))
    (tmp_path / "selection.json").write_text(json.dumps([{"layer": "conv", "num_bayes": 2}]))
    handler = EvaluationReportHandler(
        tmp_path / "eval",
        info={"method": "sparse_bayes", "run": "demo"},
        cost_files={"train": tmp_path / "cost_train.json", "missing": tmp_path / "nope.json"},
        selection_file=tmp_path / "selection.json",
        num_figure_cases=2,
        num_bins=4,
    )
    per_case = [0.5, 0.7, float("nan"), 0.9, 0.6]
    _run(handler, [items[:2], items[2:]], per_case)

    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["method"] == "sparse_bayes" and summary["num_cases"] == 5
    valid = np.array([v for v in per_case if not np.isnan(v)])
    assert summary["metrics"]["Dice"]["mean"] == pytest.approx(valid.mean())
    assert summary["metrics"]["Dice"]["std"] == pytest.approx(valid.std())  # population std over valid cases
    assert summary["metrics"]["Dice"]["cases"] == 4
    assert "label" not in summary["metrics"]  # only numbers are metrics
    assert summary["costs"] == {"train": {"parameters": {"total": 10, "bayesian": 2}}}  # missing file left out
    assert summary["selection"] == [{"layer": "conv", "num_bayes": 2}]
    assert (tmp_path / "eval" / "cases.png").read_bytes()[:8] == PNG
    assert (tmp_path / "eval" / "reliability.png").read_bytes()[:8] == PNG

    # reliability bins against a numpy histogram of mean probability vs majority vote
    prob = np.concatenate([it["pred"].mean(0).numpy().ravel() for it in items])
    hit = np.concatenate([(it["label"].mean(0).numpy() > 0.5).ravel() for it in items])
    bins = np.minimum((prob * 4).astype(int), 3)
    confidence, frequency = handler.reliability()
    used = [b for b in range(4) if (bins == b).any()]
    assert np.allclose(confidence.numpy(), [prob[bins == b].mean() for b in used])
    assert np.allclose(frequency.numpy(), [hit[bins == b].mean() for b in used])


def test_rerun_starts_from_scratch_and_skips_figures_without_rater_marks(tmp_path):
    items = _items(3, seed=1)
    for item in items:
        item["label"].zero_()  # no rater marked anything: no case figure
    handler = EvaluationReportHandler(tmp_path, num_figure_cases=2)
    _run(handler, [items], [0.1, 0.2, 0.3])
    _run(handler, [items[:1]], [0.4])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_cases"] == 1 and summary["metrics"]["Dice"]["cases"] == 1  # reset on STARTED
    assert summary["selection"] is None and summary["costs"] == {}
    assert not (tmp_path / "cases.png").exists()
    assert (tmp_path / "reliability.png").exists()
