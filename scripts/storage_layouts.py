"""Bytes on disk of S posterior samples in each storage layout, and of the partial-Bayes checkpoint (docs/storage.md).

Writes ``results/storage_layouts/{samples,partial_bayes}.csv`` and ``provenance.json``::

    python scripts/storage_layouts.py

The network is the LIDC bundle's MONAI UNet (channels 16-256, 2 residual units, batch norm). File sizes
depend only on tensor shapes, sparsity and number format, so the S = 16 samples are the random
initialisation plus independent Gaussian perturbations (σ = 0.01), not trained SG-MCMC draws.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from monai.networks.nets import UNet

from monai_bayes.networks import save_checkpoint, save_samples, to_full_bayes, to_partial_bayes
from monai_bayes.selection import select_topk
from monai_bayes.utils import atomic_path, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def bundle_unet() -> torch.nn.Module:
    """The LIDC bundle's ``network_def``."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f}"


def sample_rows(num_samples: int, sparsity: float, seed: int, tmp: Path) -> list[dict[str, str]]:
    torch.manual_seed(seed)
    base = bundle_unet().state_dict()
    states = [
        {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in base.items()}
        for _ in range(num_samples)
    ]
    variants = [
        ("dense", "fp32", 0.0),
        ("dense", "fp16", 0.0),
        ("dense", "int8", 0.0),
        ("coo", "fp32", sparsity),
        ("coo", "fp16", sparsity),
        ("shared_sparse", "fp32", sparsity),
        ("shared_sparse", "fp16", sparsity),
        ("shared_sparse", "int8", sparsity),
    ]
    sizes = {}
    for layout, values, s in variants:
        sizes[(layout, values)] = (
            save_samples(states, tmp / "s.pt", layout=layout, sparsity=s, values=values).stat().st_size
        )
    coo, dense = sizes[("coo", "fp32")], sizes[("dense", "fp32")]
    return [
        {
            "layout": layout,
            "values": values,
            "sparsity": f"{int(100 * s)} %",
            "MB on disk": _mb(sizes[(layout, values)]),
            "× independent COO (fp32)": f"{sizes[(layout, values)] / coo:.3f}",
            "× dense (fp32)": f"{sizes[(layout, values)] / dense:.3f}",
        }
        for layout, values, s in variants
    ]


def partial_bayes_rows(seed: int, tmp: Path) -> list[dict[str, str]]:
    torch.manual_seed(seed)
    rows = []
    det = bundle_unet()
    det_bytes = save_checkpoint(det, tmp / "d.pt").stat().st_size
    variants: list[tuple[str, torch.nn.Module]] = [("deterministic (μ only)", det)]
    for r in (0.01, 0.1):
        net = bundle_unet()
        net.load_state_dict(det.state_dict())
        scores = {n: torch.rand_like(p) for n, p in net.named_parameters() if p.dim() > 1 or n.endswith("conv.bias")}
        to_partial_bayes(net, select_topk(scores, r))
        variants.append((f"partial Bayes r = {r:g} (μ dense + σ, index on k)", net))
    full = bundle_unet()
    full.load_state_dict(det.state_dict())
    variants.append(("full mean-field Bayes (μ, σ on every weight)", to_full_bayes(full)))
    for name, net in variants:
        size = save_checkpoint(net, tmp / "p.pt").stat().st_size
        k = sum(int(v.numel()) for key, v in net.state_dict().items() if key.endswith("_rho"))
        rows.append(
            {
                "model": name,
                "Bayesian entries k": str(k),
                "MB on disk": _mb(size),
                "× deterministic": f"{size / det_bytes:.3f}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "storage_layouts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        samples = sample_rows(args.num_samples, args.sparsity, args.seed, Path(tmp))
        partial = partial_bayes_rows(args.seed, Path(tmp))
    _write_csv(args.output / "samples.csv", samples)
    _write_csv(args.output / "partial_bayes.csv", partial)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    atomic_write_json(
        args.output / "provenance.json",
        {
            "command": " ".join(["python", "scripts/storage_layouts.py", *sys.argv[1:]]),
            "commit": commit,
            "seed": args.seed,
            "machine": f"2-core {platform.machine()} dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": f"LIDC bundle UNet (16-256 channels); S={args.num_samples} samples = random init + N(0, 0.01) "
            f"perturbations (sizes depend only on shapes); sparse layouts at {args.sparsity:g} sparsity of every "
            "conv weight; sizes are torch.save files (zip container included).",
        },
    )
    for row in samples + partial:
        print(row)


if __name__ == "__main__":
    main()
