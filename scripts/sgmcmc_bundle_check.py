"""``--method sgmcmc`` on the LIDC bundle vs its deterministic start, with and without the voxel likelihood.

Issue 19: with ``dataset_size`` counting patches while the loss is the mean over voxels, cSGHMC's noise was
``voxels per patch`` times too large in variance and erased the segmentation. This runs, in one runs folder
(the deterministic model is trained once and shared), on a small version of the bundle's default data
(real LIDC reader annotations over synthetic CT):

* ``deterministic`` (the start of the chain),
* ``sgmcmc`` with the defaults (``sgmcmc_voxel_likelihood`` true: ``N`` = patches × voxels),
* ``sgmcmc`` with ``sgmcmc_voxel_likelihood`` false (the pre-fix scaling ``N`` = patches),

each evaluated by the bundle's own evaluator, and writes ``results/sgmcmc_bundle/``::

    python scripts/sgmcmc_bundle_check.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from monai_bayes.bundle import run_pipeline
from monai_bayes.evaluation.results import write_provenance, write_results_table

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"

#: the small bundle run (every key is a bundle setting); benchmarks/bench_deployer.py's SMALL has the same
#: settings (plus bayes_epochs), so its deterministic and SG-MCMC rows reproduce this script's numbers
SMALL: dict[str, Any] = {
    "dataset_dir": "",
    "num_cases": 8,
    "patch_size": 64,
    "network_def#channels": [8, 16, 32, 64],
    "network_def#strides": [2, 2, 2],
    "network_def#num_res_units": 1,
    "deterministic_epochs": 20,
    "batch_size": 8,
    "val_interval": 100,
    "device": "cpu",
}

RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("deterministic (start of the chain)", {"method": "deterministic", "eval_samples": 1}),
    ("cSGHMC, N = patches × voxels (default)", {"method": "sgmcmc", "eval_samples": 8}),
    ("cSGHMC, N = patches (before the fix)", {"method": "sgmcmc", "eval_samples": 8, "sgmcmc_voxel_likelihood": False}),
)


def _fmt(summary: dict[str, Any], key: str) -> str:
    m = summary["metrics"][key]
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "sgmcmc_bundle")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval"))
        base = dict(SMALL, seed=args.seed, cache_dir=str(Path(tmp) / "cache"))
        for label, run in RUNS:
            # a fresh runs folder per SG-MCMC variant, the deterministic checkpoint copied in (trained once)
            runs = Path(tmp) / f"runs{len(rows)}"
            if rows:
                shutil.copytree(Path(tmp) / "runs0" / "deterministic", runs / "deterministic")
            summary = run_pipeline(bundle, dict(base, runs_dir=str(runs), **run), publish=False)
            rows.append(
                [
                    label,
                    str(summary["mc_samples"]),
                    _fmt(summary, "Dice"),
                    _fmt(summary, "GED"),
                    _fmt(summary, "GED_sample_diversity"),
                    _fmt(summary, "ECE"),
                ]
            )
            print(rows[-1], flush=True)
    header = ["model", "S", "Dice", "GED²", "sample diversity", "ECE"]
    write_results_table(args.output / "table.csv", header, rows)
    write_provenance(
        args.output,
        " ".join(["python", "scripts/sgmcmc_bundle_check.py", *sys.argv[1:]]),
        args.seed,
        f"LIDC bundle, small: {SMALL}; cSGHMC with the bundle defaults (lr 0.01, momentum 0.9, T 1, prior "
        "precision 1, 4 cycles x 2 epochs, beta 0.5, 2 samples per cycle); bundle evaluator on the fold-0 "
        "validation patches; mean ± sd over patches.",
    )


if __name__ == "__main__":
    main()
