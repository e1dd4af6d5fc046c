"""Bundle-length comparison of selection regions: one LIDC main-job run per row, tabulated (issue 22, item 3).

Each row is one full run of the LIDC bundle's ``pipeline.json`` (deterministic training → selection →
ELBO training → evaluation) with the row's overrides, in its own copy of the bundle folder so the runs do not
share a run directory; the table is read back from each run's ``eval/summary.json`` and the selection step's
``selection_summary.json`` (predicted MC cost of the region at the evaluation sample count).

With ``--seeds 0 1`` every row runs once per seed (the bundle's ``seed`` setting: data split, synthetic CT,
initialisation and noise all change with it); ``comparison.csv`` then has one line per run and
``comparison_mean.csv`` the mean over the seeds of each row.

Run (from the project root; each run is one main job, ≈ 8 min on 2 idle cores)::

    python scripts/bundle_scope_comparison.py --out results/fast_mc_bundle --seeds 0 1 \\
        --row "global=" --row "skip-free decoder, σ₀ 0.02=--selection_region decoder_skipfree --sigma_init 0.02"

Runs are kept in ``--work`` (``<work>/<row index>-seed<seed>/`` with the row's bundle copy); ``--reuse``
tabulates them without running anything, ``--resume`` runs only those without an evaluation summary (e.g. after
an interrupted session).
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

from monai_bayes.evaluation.results import benchmark_command, git_commit, write_provenance, write_results_table

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"
RUN_NAME = "sparse_bayes_r0.01"
HEADER = (
    "selection",
    "overrides",
    "seed",
    "Dice",
    "GED",
    "HM-IoU",
    "ECE",
    "sample diversity",
    "Bayesian weights",
    "predicted MC cost S=8",
    "run seconds",
)
#: the columns averaged over seeds in ``comparison_mean.csv`` (all but the run seconds)
MEAN_HEADER = (*HEADER[:2], "seeds", *HEADER[3:-1])


def parse_row(text: str) -> tuple[str, list[str]]:
    """``"label=--a 1 --b 2"`` → ``("label", ["--a", "1", "--b", "2"])``."""
    label, sep, overrides = text.partition("=")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"--row must be 'label=overrides', got {text!r}.")
    return label.strip(), shlex.split(overrides)


def run_folder(work: Path, row: int, seed: int) -> Path:
    """Where the run of row ``row`` with ``seed`` keeps its bundle copy."""
    return work / f"{row}-seed{seed}"


def summary_path(folder: Path) -> Path:
    """The evaluation summary a finished run in ``folder`` leaves."""
    return folder / "lidc_sparse_bayes" / "runs" / RUN_NAME / "eval" / "summary.json"


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


def table_row(label: str, overrides: list[str], seed: int, folder: Path, seconds: float | None) -> list[str]:
    """One CSV row from the run in ``folder``."""
    run = folder / "lidc_sparse_bayes" / "runs" / RUN_NAME
    if not summary_path(folder).is_file():
        raise FileNotFoundError(f"{summary_path(folder)}: no evaluation summary (run not finished?).")
    summary = json.loads(summary_path(folder).read_text())
    selection_path = run / "selection_summary.json"
    selection = json.loads(selection_path.read_text()) if selection_path.exists() else {}
    params = summary["costs"]["train"]["parameters"]
    share = 100.0 * params["bayesian"] / params["total"]
    cost = selection.get("predicted_mc_cost")
    return [
        label,
        " ".join(overrides) or "(defaults)",
        str(seed),
        mean_of(summary, "Dice"),
        mean_of(summary, "GED"),
        mean_of(summary, "GED_hm_iou"),
        mean_of(summary, "ECE"),
        mean_of(summary, "GED_sample_diversity"),
        f"{share:.3f} %",
        "—" if cost is None else f"{float(cost):.3f}",
        "—" if seconds is None else f"{seconds:.0f}",
    ]


def mean_rows(rows: list[list[str]]) -> list[list[str]]:
    """Per label, the mean over its seeds of every numeric column of :data:`HEADER` but the run seconds."""
    means = []
    for label in dict.fromkeys(row[0] for row in rows):
        group = [row for row in rows if row[0] == label]
        line = [label, group[0][1], " ".join(row[2] for row in group)]
        for column in range(3, len(HEADER) - 1):
            texts = [row[column] for row in group]
            if "—" in texts:
                line.append("—")
                continue
            unit = " %" if texts[0].endswith(" %") else ""
            decimals = len(texts[0].removesuffix(unit).partition(".")[2])
            value = sum(float(t.removesuffix(unit)) for t in texts) / len(texts)
            line.append(f"{value:.{decimals}f}{unit}")
        means.append(line)
    return means


def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the rows and write ``<out>/comparison.csv``, ``comparison_mean.csv`` and the provenance."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", action="append", type=parse_row, required=True, help="'label=bundle overrides'")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fast_mc_bundle")
    parser.add_argument("--work", type=Path, default=ROOT / "bundles" / "lidc_sparse_bayes" / "runs" / "scope_cmp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="bundle seeds, run in this order")
    parser.add_argument("--reuse", action="store_true", help="tabulate the runs already in --work")
    parser.add_argument("--resume", action="store_true", help="run only the runs without an evaluation summary")
    parser.add_argument("--notes", default="", help="appended to the provenance notes (e.g. how reused runs were made)")
    args = parser.parse_args(argv)
    seconds: dict[tuple[int, int], float] = {}
    for seed in args.seeds:
        for i, (label, overrides) in enumerate(args.row):
            folder = run_folder(args.work, i, seed)
            if args.reuse or (args.resume and summary_path(folder).is_file()):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            seconds[i, seed] = run_row(folder, [*overrides, "--seed", str(seed)])
            print(f"{label}, seed {seed}: {seconds[i, seed]:.0f} s", flush=True)
    rows = [
        table_row(label, overrides, seed, run_folder(args.work, i, seed), seconds.get((i, seed)))
        for i, (label, overrides) in enumerate(args.row)
        for seed in sorted(args.seeds)
    ]
    for row in rows:
        print(" | ".join(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results_table(args.out / "comparison.csv", HEADER, rows)
    write_results_table(args.out / "comparison_mean.csv", MEAN_HEADER, mean_rows(rows))
    write_provenance(
        args.out,
        benchmark_command(argv),
        seed=" ".join(str(seed) for seed in args.seeds),
        commit=git_commit(ROOT),
        notes=(
            "One full LIDC main job per row (bundle defaults: 20 scans of real reader annotations on synthetic CT,"
            " 12 deterministic + 6 ELBO epochs, 5 samples per step, evaluation with 8 samples on 102 patches),"
            " one training per seed; 'predicted MC cost' is the selection step's mc_cost_split at eval_samples;"
            " comparison_mean.csv averages each row over its seeds. " + args.notes
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
