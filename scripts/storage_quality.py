"""Effect of sparse / quantised storage of SG-MCMC samples on Dice and on the uncertainty map (docs/storage.md).

Trains a small cSGHMC run with the LIDC bundle on synthetic data (``--method sgmcmc``), then stores its
samples in each layout and number format, rebuilds the ensemble from the file and compares on the
evaluation patches against the stored-as-is (dense fp32) samples: Dice of the thresholded predictive mean vs
the raters' majority, mean |Δ p̄|, and the Spearman correlation of the total-uncertainty map H[p̄] with the
reference's (over all pixels of all evaluation patches). Writes ``results/storage_quality/``::

    python scripts/storage_quality.py
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from scipy.stats import spearmanr

from monai_bayes.bundle import RunLayout, run_pipeline
from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.networks import load_samples, sample_ensemble, save_samples
from monai_bayes.uncertainty import predictive_entropy
from monai_bayes.utils import atomic_path, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"

SMALL = {
    "dataset_dir": "synthetic",
    "num_cases": 8,
    "synth_kwargs": {"shape": [16, 128, 128]},
    "patch_size": 64,
    "network_def#channels": [8, 16, 32, 64],
    "network_def#strides": [2, 2, 2],
    "network_def#num_res_units": 1,
    "deterministic_epochs": 6,
    "batch_size": 4,
    "val_interval": 100,
    "method": "sgmcmc",
    "sgmcmc_cycles": 4,
    "sgmcmc_epochs_per_cycle": 2,
    "sgmcmc_samples_per_cycle": 2,
    "eval_samples": 8,
    "device": "cpu",
}


def _dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Dice over patches whose majority mask is not empty (MONAI ignore_empty convention)."""
    scores = []
    for p, t in zip(pred, target):
        if t.sum() == 0:
            continue
        scores.append((2 * (p & t).sum() / (p.sum() + t.sum())).item())
    return sum(scores) / max(len(scores), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--deterministic_epochs", type=int, default=SMALL["deterministic_epochs"])
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "storage_quality")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval"))
        overrides = dict(SMALL, seed=args.seed, runs_dir=str(Path(tmp) / "runs"), cache_dir=str(Path(tmp) / "cache"))
        overrides["deterministic_epochs"] = args.deterministic_epochs
        run_pipeline(bundle, overrides, publish=False)
        cfg = ConfigParser()
        cfg.read_config([str(bundle / "configs" / n) for n in ("common.json", "evaluate.json")])
        cfg.update({"bundle_root": str(bundle), **overrides})
        network_def = cfg.get_parsed_content("network_def")
        batches = list(cfg.get_parsed_content("evaluate#dataloader"))
        images = torch.cat([b["image"] for b in batches]).as_tensor()
        majority = torch.cat([b["label"] for b in batches]).as_tensor().float().mean(1) >= 0.5
        samples_path = RunLayout(overrides["runs_dir"], "sgmcmc").model_checkpoint
        samples = load_samples(samples_path)
        inferer = MonteCarloInferer(num_samples=len(samples), activation="softmax", output="samples", seed=0)
        variants = [("dense", "fp32", 0.0), ("dense", "fp16", 0.0), ("dense", "int8", 0.0)]
        for s in args.sparsity:
            variants += [("shared_sparse", "fp32", s), ("shared_sparse", "int8", s), ("coo", "fp32", s)]
        rows, reference = [], None
        for layout, values, sparsity in variants:
            path = save_samples(samples, Path(tmp) / "v.pt", layout=layout, sparsity=sparsity, values=values)
            ensemble = sample_ensemble(network_def, load_samples(path)).eval()
            with torch.no_grad():
                probs = inferer(images, ensemble)  # (B, S, C, H, W)
            mean = probs.mean(1)[:, 1]
            total = predictive_entropy(probs)[:, 0]
            if reference is None:
                reference = (mean, total)
            rho = spearmanr(total.flatten().numpy(), reference[1].flatten().numpy()).statistic
            rows.append(
                {
                    "layout": layout,
                    "values": values,
                    "sparsity": f"{int(100 * sparsity)} %",
                    "MB on disk": f"{path.stat().st_size / 1e6:.3f}",
                    "Dice": f"{_dice(mean >= 0.5, majority):.3f}",
                    "mean abs Δ p̄": f"{(mean - reference[0]).abs().mean().item():.4f}",
                    "Spearman H[p̄] vs dense fp32": f"{rho:.3f}",
                }
            )
    with atomic_path(args.output / "table.csv") as out, open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    atomic_write_json(
        args.output / "provenance.json",
        {
            "command": " ".join(["python", "scripts/storage_quality.py", *sys.argv[1:]]),
            "commit": commit,
            "seed": args.seed,
            "machine": f"2-core {platform.machine()} dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": f"LIDC bundle on synthetic data, small: {overrides}; {len(samples)} cSGHMC samples; "
            f"{images.shape[0]} evaluation patches of {tuple(images.shape[2:])}.",
        },
    )
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
