"""scripts/fast_mc_frontier.py: the checkpoint record that lets ``--cost-only`` re-time without retraining."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fast_mc_frontier.py"


@pytest.fixture(scope="module")
def frontier():
    spec = importlib.util.spec_from_file_location("fast_mc_frontier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(tmp_path: Path, cost_only: bool = False, **sizes: int) -> argparse.Namespace:
    base = {"num_cases": 12, "det_epochs": 12, "bayes_epochs": 3, "train_samples": 2} | sizes
    return argparse.Namespace(checkpoint_dir=tmp_path, cost_only=cost_only, **base)


def test_training_record_is_written_checked_and_read_back_for_cost_only(frontier, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run\.json"):
        frontier.training_record(_args(tmp_path, cost_only=True))
    record = frontier.training_record(_args(tmp_path))
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved == record and saved["num_cases"] == 12 and saved["command"].startswith("python ")
    assert frontier.training_record(_args(tmp_path)) == record  # same sizes: the checkpoints are reused
    with pytest.raises(ValueError, match="use another --checkpoint-dir"):
        frontier.training_record(_args(tmp_path, det_epochs=20))
    cost_only = _args(tmp_path, cost_only=True, num_cases=3, bayes_epochs=1)
    frontier.training_record(cost_only)  # --cost-only takes the trained sizes from run.json
    assert (cost_only.num_cases, cost_only.bayes_epochs) == (12, 3)


def test_row_formats_cells_as_in_the_docs(frontier):
    import torch
    from torch import nn

    from monai_bayes import to_partial_bayes

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 1))  # 40 + 10 = 50 weights and biases
    mask = torch.zeros(4, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, :2, 0] = True  # 2 of 50 entries Bayesian: 4 %
    net = to_partial_bayes(net, {"0.weight": mask})
    metrics = {
        "Dice": 0.5454,
        "GED": 0.7609,
        "GED_hm_iou": 0.35978,
        "ECE": math.nan,
        "Uncertainty_mi_mean": 3e-4,
        "GED_sample_diversity": 0.0913,
    }
    spec = frontier.Row("decoder_skipfree_r5", "decoder_skipfree", r_bayes=0.05, label="skip-free decoder")
    row = frontier.row_of(spec, net, metrics, {8: 0.4789, 16: 0.551}, 0.3612)
    assert row == {
        "selection": "skip-free decoder 5 %",
        "Bayesian weights (% of net)": "4.000",
        "Dice": "0.545",
        "GED": "0.761",
        "HM-IoU": "0.360",
        "ECE": "—",
        "entropy": "—",
        "MI": "0.000",
        "sample diversity": "0.091",
        "MC cost S=8": "0.48",
        "MC cost S=16": "0.55",
        "predicted S=8": "0.36",
    }
    assert frontier.Row("global_rho", "global", sigma_init="rho_normal", seed=1).title() == (
        "global 1 %, σ₀ ρ~N(−3, 1) (seed 1)"
    )
    assert [r.name for r in frontier.ROWS][:4] == ["global", "decoder", "last3", "decoder_skipfree"]
    assert len({r.name for r in frontier.ROWS}) == len(frontier.ROWS)  # one checkpoint per row


def test_each_row_names_the_run_that_trained_it(frontier, tmp_path):
    args = _args(tmp_path)
    args.training = {"command": "python first", "commit": "a" * 40}
    (tmp_path / "late.run.json").write_text(json.dumps({"command": "python second", "commit": "b" * 40}))
    assert frontier.trained_by(args, "early") == args.training  # no sidecar: the first run's record
    assert frontier.trained_by(args, "late") == {"command": "python second", "commit": "b" * 40}
