"""Samples × latent widths of a trained ``bn3_prob_unet`` bundle run (seed 001 Fig. 7 with latent dimensions as widths).

Reads the run that ``scripts/run_multirater_baselines.py`` (or the bundle pipeline) trained, evaluates GED²,
HM-IoU and sample diversity for every number of kept latent dimensions and sample count on the bundle's
evaluation items, and writes ``<out>/latent_widths.csv`` and ``<out>/provenance.json`` (results contract).
With ``--baselines`` it also evaluates those finished runs of the same ``--runs-dir`` (and the BN3 Prob. U-Net with
widths sampled from its learnt ordering) at the same sample counts into ``<out>/comparison.csv``: the seed-style
comparison of docs/nested.md (nested Prob. U-Net vs Prob. U-Net vs ensemble U-Net vs MC dropout). An ensemble at
``S`` samples is the sub-ensemble of its first ``S`` members (``S = 1``: member 0).

Example (same overrides as the training run)::

    python scripts/latent_width_sweep.py --runs-dir /tmp/baseline_runs --out results/nested_bn3 \\
        --set patch_size=32 --set 'network_def#channels=[8,16,32]' --set 'network_def#strides=[2,2]'
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_bayes.bundle import RunLayout, build_network
from monai_bayes.evaluation import evaluate_width_sweep
from monai_bayes.layers import width_layers
from monai_bayes.utils.atomic import atomic_path, atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def _setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


LABELS = {
    "prob_unet": "Prob. U-Net",
    "ensemble": "ensemble U-Net",
    "mc_dropout": "MC-dropout U-Net",
    "deterministic": "deterministic U-Net",
    "ssn": "SSN",
}


def _cells(row: dict[str, Any]) -> list[str]:
    return [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in ("ged", "hm_iou", "sample_diversity")]


def _write_comparison(
    args: argparse.Namespace, config: ConfigParser, bn3: torch.nn.Module, widths: list[int], bn3_rows: list[dict]
) -> None:
    """``<out>/comparison.csv``: every baseline and BN3 (sampled widths, best and full fixed width) per ``S``."""
    loader = config.get_parsed_content("evaluate#dataloader")
    sampled = evaluate_width_sweep(bn3, loader, num_samples=args.samples, method="BN3 Prob. U-Net", seed=0)
    rows = [["BN3 Prob. U-Net (sampled widths)", r["samples"], *_cells(r), r["cases"]] for r in sampled.table()]
    full = [r for r in bn3_rows if r["width"] == widths[-1]]
    rows += [[f"BN3 Prob. U-Net (all {widths[-1]} latent dims)", r["samples"], *_cells(r), r["cases"]] for r in full]
    network_def = config.get_parsed_content("network_def")
    for method in args.baselines:
        layout = RunLayout(args.runs_dir, method, ensemble_size=args.ensemble_size)
        network = build_network(
            copy.deepcopy(network_def),
            method,
            layout.model_checkpoint,
            member_checkpoints=layout.member_checkpoints,
            mc_dropout_p=float(config.get_parsed_content("mc_dropout_p")),
        )
        counts = [1] if method == "deterministic" else args.samples
        result = evaluate_width_sweep(network, loader, num_samples=counts, method=method, seed=0)
        rows += [[LABELS.get(method, method), r["samples"], *_cells(r), r["cases"]] for r in result.table()]
    rows.sort(key=lambda r: (int(r[1]), str(r[0])))
    with atomic_path(args.out / "comparison.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "S", "GED²", "HM-IoU", "sample diversity", "cases"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """Evaluate the widths and write the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "lidc_sparse_bayes")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "nested_bn3")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--baselines", nargs="*", default=[], help="e.g. prob_unet ensemble mc_dropout deterministic")
    parser.add_argument("--ensemble-size", type=int, default=16, help="members of the ensemble run")
    parser.add_argument("--set", action="append", default=[], type=_setting, help="bundle override key=json")
    args = parser.parse_args(argv)
    overrides = {"runs_dir": str(args.runs_dir), "method": "bn3_prob_unet", **dict(args.set)}
    config = ConfigParser()
    config.read_config([str(args.bundle / "configs" / f"{n}.json") for n in ("common", "evaluate")])
    config.update({"bundle_root": str(args.bundle), **overrides})
    layout = RunLayout(args.runs_dir, "bn3_prob_unet")
    network = build_network(config.get_parsed_content("network_def"), "bn3_prob_unet", layout.model_checkpoint)
    (_, mask), *_ = width_layers(network)
    widths = list(range(1, mask.nested_groups + 1))
    result = evaluate_width_sweep(
        network, config.get_parsed_content("evaluate#dataloader"), widths=widths, num_samples=args.samples, seed=0
    )
    with atomic_path(args.out / "latent_widths.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["latent dims kept", "S", "GED²", "HM-IoU", "sample diversity", "cases"])
        for row in result.table():
            writer.writerow(
                [
                    f"{row['width']}/{row['groups']}",
                    row["samples"],
                    *(f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in ("ged", "hm_iou", "sample_diversity")),
                    row["cases"],
                ]
            )
    if args.baselines:
        _write_comparison(args, config, network, widths, result.table())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    atomic_write_json(
        args.out / "provenance.json",
        {
            "command": " ".join(["python", *sys.argv]),
            "commit": commit,
            "seed": int(overrides.get("seed", 0)),
            "machine": f"2-core x86_64 dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": f"bn3_prob_unet run in {args.runs_dir}; overrides {json.dumps(overrides)}",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
