"""Bundle-length comparison of selection regions: one LIDC main-job run per row, tabulated (issue 22, item 3).

Each row is one full run of the LIDC bundle's ``pipeline.json`` (deterministic training → selection →
ELBO training → evaluation) with the row's overrides, in its own copy of the bundle folder so the runs do not
share a run directory; the table is read back from each run's ``eval/summary.json`` and the selection step's
``selection_summary.json`` (predicted MC cost of the region at the evaluation sample count).

Run (from the project root; each row is one main job, ≈ 7 min on 2 idle cores)::

    python scripts/bundle_scope_comparison.py --out results/fast_mc_bundle \\
        --row "global=" --row "skip-free decoder, σ₀ 0.02=--selection_region decoder_skipfree --sigma_init 0.02"

``--reuse DIR`` tabulates finished runs instead of running them (``DIR/<n>/`` with the row's bundle copy, as this
script leaves them), e.g. after an interrupted session.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monai_bayes.evaluation.results import benchmark_command, write_provenance, write_results_table

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"
RUN_NAME = "sparse_bayes_r0.01"
HEADER = (
    "selection",
    "overrides",
    "Dice",
    "GED",
    "HM-IoU",
    "ECE",
    "sample diversity",
    "Bayesian weights",
    "predicted MC cost S=8",
    "run seconds",
)


def parse_row(text: str) -> tuple[str, list[str]]:
    """``"label=--a 1 --b 2"`` → ``("label", ["--a", "1", "--b", "2"])``."""
    label, sep, overrides = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"--row must be 'label=overrides', got {text!r}.")
    return label.strip(), shlex.split(overrides)


def run_row(folder: Path, overrides: list[str]) -> float:
    """Copy the bundle (without runs / models / cache outputs) into ``folder`` and run its pipeline there."""
    bundle = folder / "lidc_sparse_bayes"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("runs", "models", "eval"))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    command += [str(bundle / "configs" / "pipeline.json"), "--bundle_root", str(bundle), *overrides]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def mean_of(summary: dict[str, Any], metric: str) -> str:
    """The summary's per-case mean of ``metric``, three decimals (four for ECE)."""
    value = float(summary["metrics"][metric]["mean"])
    return f"{value:.4f}" if metric == "ECE" else f"{value:.3f}"


def table_row(label: str, overrides: list[str], folder: Path, seconds: float | None) -> list[str]:
    """One CSV row from the run in ``folder``."""
    run = folder / "lidc_sparse_bayes" / "runs" / RUN_NAME
    summary = json.loads((run / "eval" / "summary.json").read_text())
    selection_path = run / "selection_summary.json"
    selection = json.loads(selection_path.read_text()) if selection_path.exists() else {}
    params = summary["costs"]["train"]["parameters"]
    share = 100.0 * params["bayesian"] / params["total"]
    cost = selection.get("predicted_mc_cost")
    return [
        label,
        " ".join(overrides) or "(defaults)",
        mean_of(summary, "Dice"),
        mean_of(summary, "GED"),
        mean_of(summary, "GED_hm_iou"),
        mean_of(summary, "ECE"),
        mean_of(summary, "GED_sample_diversity"),
        f"{share:.3f} %",
        "—" if cost is None else f"{float(cost):.3f}",
        "—" if seconds is None else f"{seconds:.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the rows and write ``<out>/comparison.csv`` and its provenance."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", type=parse_row, required=True, help="'label=bundle overrides'")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fast_mc_bundle")
    parser.add_argument("--work", type=Path, default=ROOT / "bundles" / "lidc_sparse_bayes" / "runs" / "scope_cmp")
    parser.add_argument("--reuse", action="store_true", help="tabulate the runs already in --work")
    parser.add_argument("--notes", default="", help="appended to the provenance notes (e.g. how reused runs were made)")
    args = parser.parse_args(argv)
    rows = []
    for i, (label, overrides) in enumerate(args.row):
        folder = args.work / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        seconds = None if args.reuse else run_row(folder, overrides)
        rows.append(table_row(label, overrides, folder, seconds))
        print(" | ".join(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results_table(args.out / "comparison.csv", HEADER, rows)
    write_provenance(
        args.out,
        benchmark_command(argv),
        seed=0,
        notes=(
            "One full LIDC main job per row (bundle defaults: 20 scans of real reader annotations on synthetic CT,"
            " 12 deterministic + 6 ELBO epochs, 5 samples per step, evaluation with 8 samples on 102 patches),"
            " one training each; 'predicted MC cost' is the selection step's mc_cost_split at eval_samples. "
            + args.notes
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
