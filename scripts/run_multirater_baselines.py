"""Run the multi-rater baselines and the project's methods on the LIDC bundle with one evaluator (results/baselines).

Every method runs through :func:`monai_bayes.bundle.run_pipeline` with the same overrides (data, U-Net, epochs,
``eval_samples``), so the rows share data, fold and sample count. Writes (results contract, docs/baselines.md):

* ``<out>/table.csv`` -- one row per method: GED², HM-IoU, sample diversity, Dice (mean ± std over cases),
  parameters, training wall time and FLOPs, inference wall time for ``S = eval_samples`` samples per case;
* ``<out>/provenance.json`` -- command, commit, seed, machine, date, settings.

Example (the size docs/baselines.md reports)::

    python scripts/run_multirater_baselines.py --out results/baselines --runs-dir /tmp/baseline_runs \\
        --set patch_size=64 --set 'network_def#channels=[8,16,32,64]' --set 'network_def#strides=[2,2,2]' \\
        --set deterministic_epochs=12 --set baseline_epochs=12 --set eval_samples=16
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_bayes.bundle import RunLayout, build_network, bundle_config, run_pipeline
from monai_bayes.bundle.overrides import setting_defaults
from monai_bayes.evaluation.tables import metric_table_rows
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.utils.atomic import atomic_path, atomic_write_json
from monai_bayes.workflows import method_spec

REPO = Path(__file__).resolve().parents[1]
METRICS = {"GED": "GED²", "GED_hm_iou": "HM-IoU", "GED_sample_diversity": "sample diversity", "Dice": "Dice"}


def _setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser(bundle: Path, overrides: dict[str, Any]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "common.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser


def inference_seconds(bundle: Path, overrides: dict[str, Any], method: str, num_samples: int) -> float:
    """Wall seconds per case of ``num_samples`` Monte-Carlo samples of the trained network, batch of 10 patches.

    The first call (the inferer's timed plan probe for the shape, and warm-up) is not counted.
    """
    parser = _parser(bundle, overrides)
    layout = RunLayout(overrides["runs_dir"], method, ensemble_size=int(parser.get_parsed_content("ensemble_size")))
    network = build_network(
        parser.get_parsed_content("network_def"),
        method,
        layout.model_checkpoint,
        member_checkpoints=layout.member_checkpoints,
        mc_dropout_p=float(parser.get_parsed_content("mc_dropout_p")),
    ).eval()
    patch = int(parser.get_parsed_content("patch_size"))
    x = torch.rand(10, 1, patch, patch)
    samples = 1 if method == "deterministic" else num_samples
    inferer = MonteCarloInferer(samples, seed=0)
    with torch.no_grad():
        inferer(x, network)  # the plan probe for this input shape, and warm-up
        start = time.perf_counter()
        inferer(x, network)
    return (time.perf_counter() - start) / x.shape[0]


def _for(bundle: Path, method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that are settings of ``method``'s configs (e.g. ``baseline_epochs`` only for the baselines)."""
    names = ("common", *method_spec(method).configs)
    known = setting_defaults([bundle_config(bundle, n) for n in names])
    return {k: v for k, v in overrides.items() if k.split("#")[0] in known}


def _cell(row: dict[str, Any], key: str) -> str:
    mean, std = row.get(key), row.get(f"{key}_std")
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Run the methods, write the table and provenance; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "lidc_sparse_bayes")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "baselines")
    parser.add_argument(
        "--methods", nargs="+", default=["deterministic", "mc_dropout", "ensemble", "prob_unet", "ssn", "bn3_prob_unet"]
    )
    parser.add_argument("--reuse", action="store_true", help="read the finished runs' summaries, do not run")
    parser.add_argument("--set", action="append", default=[], type=_setting, help="bundle override key=json")
    args = parser.parse_args(argv)
    overrides = {"runs_dir": str(args.runs_dir), **dict(args.set)}
    eval_samples = int(overrides.get("eval_samples", 8))
    rows = []
    for method in args.methods:
        start = time.time()
        if args.reuse:  # the runs exist: take their evaluation summaries, only re-time inference
            layout = RunLayout(args.runs_dir, method, ensemble_size=int(overrides.get("ensemble_size", 5)))
            summary = json.loads((layout.eval_dir / "summary.json").read_text())
        else:
            settings = {**_for(args.bundle, method, overrides), "method": method}
            summary = run_pipeline(args.bundle, settings, publish=False)
        row = metric_table_rows([summary], list(METRICS))[0]
        row["inference_s"] = inference_seconds(args.bundle, overrides, method, eval_samples)
        row["pipeline_s"] = time.time() - start
        rows.append(row)
        print(method, {k: row.get(k) for k in (*METRICS, "train_wall_seconds", "inference_s")}, flush=True)
    header = [
        "method",
        *METRICS.values(),
        "params",
        "train time (s)",
        "train GFLOPs",
        f"inference, S = {eval_samples} (s / case)",
    ]
    with atomic_path(args.out / "table.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            flops = row.get("train_flops_total")
            writer.writerow(
                [
                    row["method"],
                    *(_cell(row, k) for k in METRICS),
                    f"{row['params_total']:,}" if row.get("params_total") else "–",
                    f"{row['train_wall_seconds']:.0f}" if row.get("train_wall_seconds") else "–",
                    f"{flops / 1e9:.0f}" if flops else "–",
                    f"{row['inference_s']:.3f}",
                ]
            )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    atomic_write_json(
        args.out / "provenance.json",
        {
            "command": " ".join(["python", *[str(a) for a in sys.argv]]),
            "commit": commit,
            "seed": int(overrides.get("seed", 0)),
            "machine": f"2-core x86_64 dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": (
                f"{platform.machine()}; methods {args.methods}; overrides {json.dumps(overrides)}; the machine was "
                "shared with other jobs, so wall times are upper bounds"
            ),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
