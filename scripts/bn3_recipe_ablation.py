"""Controlled runs of the ``lidc_nested_unet`` bundle's BN3 recipe (issue 20): which setting makes BN3 worse.

Every variant trains BN3 from the **same** deterministic UNet (and is compared with the same MC-dropout UNet):
the first variant trains both baselines in ``<runs-dir>/<first>``, the others link to them, so only the
``train_nested`` step and the evaluation differ. One variant changes one setting of the bundle's default
recipe (soft Downhill masks, τ annealed 2 → 0.5, ELBO with β = 1 and the KL per voxel, 16 groups, 6 epochs).
Writes (results contract, docs/nested.md):

* ``<out>/recipes.csv`` -- per variant: BN3 at full width and at half width, deterministic and MC-dropout UNet,
  GED² and HM-IoU at ``S = 16`` (mean ± std over evaluation patches), BN3 training seconds;
* ``<out>/provenance.json``.

Example (the size docs/nested.md reports)::

    python scripts/bn3_recipe_ablation.py --runs-dir /tmp/bn3_abl --out results/bn3_recipe \\
        --set cache_dir=/tmp/pu_runs/cache --set patch_size=32 --set 'network_def#channels=[16,32,64]' \\
        --set 'network_def#strides=[2,2]'
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from monai_bayes.bundle.nested import run_nested_pipeline
from monai_bayes.utils.atomic import atomic_path, atomic_write_json

REPO = Path(__file__).resolve().parents[1]
SOFT_ANNEALED: dict[str, Any] = {}  # the bundle defaults
STRAIGHT_THROUGH = {"nested_straight_through": True, "temperature_start": 0.5, "temperature_decay": 1.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "soft masks, tau 2 -> 0.5 (bundle default)": SOFT_ANNEALED,
    "hard straight-through masks, tau 0.5": STRAIGHT_THROUGH,
    "soft, beta 0.1 (KL per voxel / 10)": {"nested_beta": 0.1},
    "soft, 8 groups": {"nested_groups": 8},
    "soft, 18 epochs": {"bayes_epochs": 18},
    "straight-through, 18 epochs": {**STRAIGHT_THROUGH, "bayes_epochs": 18},
    # evaluation only: the trained BN3 of another row (``_bn3_from``) without the keep-probability rescaling
    "soft, evaluated without rescaling": {"nested_rescale": False, "_bn3_from": 0},
    "straight-through, evaluated without rescaling": {**STRAIGHT_THROUGH, "nested_rescale": False, "_bn3_from": 1},
}


def _setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _rows(table: Path) -> list[dict[str, str]]:
    with open(table, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cell(rows: list[dict[str, str]], method: str, samples: int, metric: str, width: int | None = None) -> str:
    for row in rows:
        if row["method"] != method or int(row["samples"]) != samples:
            continue
        if width is not None and int(row["width"]) != width:
            continue
        return f"{float(row[f'{metric}_mean']):.3f} ± {float(row[f'{metric}_std']):.3f}"
    return "–"


def _link_baselines(first: Path, runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    for name in ("deterministic", "mc_dropout"):
        link = runs / name
        if not link.exists():
            link.symlink_to((first / name).resolve(), target_is_directory=True)


def _link_bn3(source: Path, runs: Path, groups: int) -> None:
    """Reuse the trained BN3 of another variant: its checkpoint and cost file, not its evaluation."""
    run = runs / f"nested_g{groups}"
    run.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "costs_train_nested.json"):
        if not (run / name).exists():
            (run / name).symlink_to((source / f"nested_g{groups}" / name).resolve())


def main(argv: list[str] | None = None) -> int:
    """Run the variants, write the table and provenance; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "bundles" / "lidc_nested_unet")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bn3_recipe")
    parser.add_argument("--variants", nargs="+", type=int, help="indices into VARIANTS (default: all)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--table-only", action="store_true", help="only re-read the finished runs' evaluation tables")
    parser.add_argument("--set", action="append", default=[], type=_setting, help="bundle override key=json")
    args = parser.parse_args(argv)
    chosen = [list(VARIANTS)[i] for i in (args.variants or range(len(VARIANTS)))]
    first = args.runs_dir / "v0"
    header = [
        "recipe",
        "BN3 full width GED²",
        "BN3 full width HM-IoU",
        "BN3 full width diversity",
        "BN3 full width GED², S = 1",
        "BN3 half width GED²",
        "deterministic GED²",
        "MC dropout GED²",
        "MC dropout HM-IoU",
        "BN3 train time (s)",
    ]
    table = args.out / "recipes.csv"
    done = {r[0]: r for r in csv.reader(table.open(encoding="utf-8"))} if table.is_file() else {}
    done = {k: v for k, v in done.items() if len(v) == len(header)}  # rows of an older layout are dropped
    done.pop("recipe", None)  # earlier rows of other variants are kept (rerun a variant to replace its row)
    for name in chosen:
        index = list(VARIANTS).index(name)
        runs = args.runs_dir / f"v{index}"
        if runs != first:
            _link_baselines(first, runs)
        settings = {**dict(args.set), **VARIANTS[name], "runs_dir": str(runs), "sweep_samples": [1, args.samples]}
        groups = int(settings.get("nested_groups", 16))
        if "_bn3_from" in settings:
            _link_bn3(args.runs_dir / f"v{settings.pop('_bn3_from')}", runs, groups)
        settings["widths"] = sorted({groups // 2, groups})
        start = time.time()
        if args.table_only:
            table_file = runs / f"nested_g{groups}" / "eval" / "width_sweep.csv"
        else:
            table_file = run_nested_pipeline(args.bundle, settings, publish=False)["table"]
        seconds = json.loads((table_file.parent.parent / "costs_train_nested.json").read_text())
        rows = _rows(table_file)
        s = args.samples
        done[name] = [
            name,
            _cell(rows, "BN3", s, "ged", groups),
            _cell(rows, "BN3", s, "hm_iou", groups),
            _cell(rows, "BN3", s, "sample_diversity", groups),
            _cell(rows, "BN3", 1, "ged", groups),
            _cell(rows, "BN3", s, "ged", groups // 2),
            _cell(rows, "deterministic UNet", 1, "ged"),
            _cell(rows, "MC-dropout UNet", s, "ged"),
            _cell(rows, "MC-dropout UNet", s, "hm_iou"),
            f"{float(seconds.get('wall_seconds', time.time() - start)):.0f}",
        ]
        print(dict(zip(header, done[name], strict=True)), flush=True)
        with atomic_path(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(done[n] for n in VARIANTS if n in done)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    atomic_write_json(
        args.out / "provenance.json",
        {
            "command": " ".join(["python", *sys.argv]),
            "commit": commit,
            "seed": int(dict(args.set).get("seed", 0)),
            "machine": f"2-core x86_64 dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": f"variants {json.dumps({n: VARIANTS[n] for n in VARIANTS if n in done})}; shared overrides "
            f"{json.dumps(dict(args.set))}; every variant starts from the deterministic UNet of the first",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
