"""Samples × latent widths of a trained ``bn3_prob_unet`` bundle run (seed 001 Fig. 7 with latent dimensions as widths).

Reads the run that ``scripts/run_multirater_baselines.py`` (or the bundle pipeline) trained, evaluates GED²,
HM-IoU and sample diversity for every number of kept latent dimensions and sample count on the bundle's
evaluation items, and writes ``<out>/latent_widths.csv`` and ``<out>/provenance.json`` (results contract).

Example (same overrides as the training run)::

    python scripts/latent_width_sweep.py --runs-dir /tmp/baseline_runs --out results/nested_bn3 \\
        --set patch_size=32 --set 'network_def#channels=[8,16,32]' --set 'network_def#strides=[2,2]'
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    """Evaluate the widths and write the table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "lidc_sparse_bayes")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "nested_bn3")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
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
