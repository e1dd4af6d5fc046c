"""Global L1 pruning of the LIDC bundle's UNet, with forgettability per nodule-size bin (issue 18).

Trains ``--runs`` UNets (the ``network_def`` of ``bundles/lidc_sparse_bayes/configs/common.json``, seeds
0 … R-1) on the bundle's default data (the real LIDC-IDRI reader annotations on synthetic CT,
``monai_bayes.bundle.resolve_lidc_dataset("")``, fold ``--fold`` held out), with the reference mask of every
patch the pylidc 50 % consensus of its readers (``MajorityVoted(threshold=0.5, inclusive=True,
readers_key="readers")``), then sweeps global L1 sparsities with
:func:`monai_bayes.pruning.segmentation.segmentation_pruning_sweep` and writes ``results/pruning_lidc/``
(results contract). See docs/pruning.md, "Segmentation: forgetting per nodule size".

Example (the committed run)::

    python scripts/segmentation_pruning.py --num-cases 16 --runs 3 --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import UNet

from monai_bayes.bundle import resolve_lidc_dataset
from monai_bayes.data import get_fold_split
from monai_bayes.data.transforms import MajorityVoted
from monai_bayes.evaluation.results import write_provenance
from monai_bayes.losses import WeightedCrossEntropyLoss
from monai_bayes.pruning import (
    first_forgotten_k,
    first_significant_k,
    forgettability_curves,
    frequency_correlation,
    welch_mean_ap,
)
from monai_bayes.pruning.segmentation import equivalent_diameter_mm, segmentation_pruning_sweep, size_bins
from monai_bayes.utils.atomic import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lidc_sparse_bayes"


def load_items(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images ``(N, 1, P, P)``, consensus masks ``(N, 1, P, P)`` and pixel spacings ``(N, 2)`` mm."""
    vote = MajorityVoted(keys="label", threshold=0.5, inclusive=True, readers_key="readers")
    imgs, masks = [], []
    for it in items:
        d = vote({"label": np.load(it["label"]).astype(np.float32), "readers": it["readers"]})
        imgs.append(np.load(it["image"]).astype(np.float32))
        masks.append(np.asarray(d["label"], dtype=np.float32))
    spacing = np.array([it["pixel_spacing_mm"] for it in items], dtype=float)
    return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(masks)), spacing


def bundle_unet() -> UNet:
    """The LIDC bundle's ``network_def`` (``configs/common.json``)."""
    spec = dict(json.loads((BUNDLE / "configs" / "common.json").read_text())["network_def"])
    if spec.pop("_target_") != "UNet":
        raise ValueError("expected the bundle's network_def to be a MONAI UNet")
    return UNet(**spec)


def train_unet(seed: int, images: torch.Tensor, masks: torch.Tensor, epochs: int, batch_size: int) -> UNet:
    """Adam 1e-3, weight decay 1e-5, class-weighted (1, 2) cross-entropy: the bundle's deterministic defaults."""
    torch.manual_seed(seed)
    net = bundle_unet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = WeightedCrossEntropyLoss(weight=[1.0, 2.0])
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(images[idx]), masks[idx])
            loss.backward()
            opt.step()
    return net.eval()


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _mean_std(x: np.ndarray) -> str:
    """``mean ± std`` over runs (sample std), or ``n/a`` for an empty bin."""
    if not np.isfinite(x).any():
        return "n/a"
    return f"{_fmt(float(np.nanmean(x)))} ± {_fmt(float(np.nanstd(x, ddof=1)) if len(x) > 1 else float('nan'))}"


def _csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def bin_labels(edges: list[float]) -> list[str]:
    """``< 3 mm``, ``3–6 mm``, …, ``≥ 10 mm``."""
    e = [f"{x:g}" for x in edges]
    return [f"< {e[0]} mm"] + [f"{a}–{b} mm" for a, b in itertools.pairwise(e)] + [f"≥ {e[-1]} mm"]


def main(argv: list[str] | None = None) -> None:
    """Train, sweep, analyse, write ``results/pruning_lidc``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-cases", type=int, default=16, help="LIDC scans drawn (bundle num_cases)")
    p.add_argument("--seed", type=int, default=0, help="data draw seed")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--runs", type=int, default=3, help="R independently trained UNets (seeds 0..R-1)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--sparsities", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.98")
    p.add_argument("--bin-edges", default="3,6,10", help="inner edges of the equivalent-diameter bins, mm")
    p.add_argument("--drop", type=float, default=0.2, help="relative Dice drop that counts as forgotten")
    p.add_argument("--cache-dir", default="/tmp/segmentation_pruning_cache")
    p.add_argument("--out", default=str(ROOT / "results" / "pruning_lidc"))
    p.add_argument("--notes", default="")
    args = p.parse_args(argv)
    ks = [float(x) for x in args.sparsities.split(",")]
    edges = [float(x) for x in args.bin_edges.split(",")]
    labels = bin_labels(edges)
    num_bins = len(labels)

    datalist = resolve_lidc_dataset(
        "", args.cache_dir, num_cases=args.num_cases, seed=args.seed, patch_size=128, show_progress=False
    )
    train_items, test_items = get_fold_split(datalist, args.fold)
    x_tr, y_tr, sp_tr = load_items(train_items)
    x_te, y_te, sp_te = load_items(test_items)
    bins_tr = size_bins(equivalent_diameter_mm(y_tr, sp_tr), edges)
    bins_te = size_bins(equivalent_diameter_mm(y_te, sp_te), edges)
    print(f"train {len(x_tr)} / test {len(x_te)} patches; test bins {np.bincount(bins_te + 1, minlength=num_bins + 1)}")

    t0 = time.perf_counter()
    models = [train_unet(r, x_tr, y_tr, args.epochs, args.batch_size) for r in range(args.runs)]
    train_s = time.perf_counter() - t0
    sweep = segmentation_pruning_sweep(models, x_te, y_te, bins_te, num_bins, ks)
    print(f"trained {args.runs} in {train_s:.0f} s; sweep {sweep.seconds:.0f} s")

    q = sweep.quality  # (R, K, B)
    curves = forgettability_curves(q)
    welch = welch_mean_ap(q, ks)
    first = first_forgotten_k(curves, ks, drop=args.drop)
    sig = first_significant_k(welch)
    train_counts = np.array([int((bins_tr == b).sum()) for b in range(num_bins)])

    size_rows = []
    for b, label in enumerate(labels):
        d0, dl = q[:, 0, b], q[:, -1, b]
        size_rows.append(
            {
                "size bin (equivalent diameter)": label,
                "train patches": str(train_counts[b]),
                "test patches": str(sweep.counts[b]),
                "Dice unpruned (mean ± std of runs)": _mean_std(d0),
                f"Dice at k = {ks[-1]:g}": _mean_std(dl),
                f"first k with a median {args.drop:.0%} drop": "never" if first[b] >= 1.0 else f"{first[b]:g}",
                f"forgetting at k = {ks[-1]:g}": _fmt(curves[-1, b]),
            }
        )
    mean_rows = [
        {
            "sparsity": f"{k:g}",
            "measured sparsity": _fmt(float(np.mean(sweep.reached[:, i])), 4),
            "mean Dice over bins (median of runs)": _fmt(float(np.median(welch.mean_ap[:, i]))),
            "Welch t": _fmt(float(welch.t[i]), 2),
            "p": _fmt(float(welch.p[i]), 4),
        }
        for i, k in enumerate(ks)
    ]
    forget_rows = [
        {"model": "LIDC UNet", "sparsity": f"{k:g}", **{lab: _fmt(curves[i, b]) for b, lab in enumerate(labels)}}
        for i, k in enumerate(ks)
    ]
    dice_rows = [
        {"run": str(r), "sparsity": f"{k:g}", **{lab: _fmt(q[r, i, b]) for b, lab in enumerate(labels)}}
        for r in range(args.runs)
        for i, k in enumerate(ks)
    ]
    corr_rows = []
    ok = (train_counts > 0) & np.isfinite(curves[-1])
    if ok.sum() >= 3:
        for name, values in (
            (f"first k with a median {args.drop:.0%} drop", first),
            ("forgetting at k_max", curves[-1]),
        ):
            c = frequency_correlation(train_counts[ok], values[ok])
            corr_rows.append(
                {
                    "training bin frequency vs": name,
                    "Pearson r (log10 freq.)": _fmt(c.pearson_r),
                    "p": _fmt(c.pearson_p),
                    "Spearman ρ": _fmt(c.spearman_rho),
                    "p (Spearman)": _fmt(c.spearman_p),
                    "bins": str(c.n),
                }
            )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "size_bins": size_rows,
        "mean_dice": mean_rows,
        "forgettability": forget_rows,
        "per_bin_dice": dice_rows,
        "frequency_correlations": corr_rows,
    }
    for name, rows in tables.items():
        if rows:
            atomic_write_text(out / f"{name}.csv", _csv(rows))
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    atomic_write_json(
        out / "figures.json",
        [
            {
                "output": "docs/images/pruning_lidc_size_bins.png",
                "function": "monai_bayes.pruning.figures:plot_size_bin_forgettability",
                "inputs": [f"{rel}/forgettability.csv", f"{rel}/per_bin_dice.csv"],
            }
        ],
        indent=1,
    )
    notes = (
        f"TINY run on a 2-core VM shared with other jobs: LIDC bundle default data (real LIDC-IDRI reader "
        f"annotations on synthetic CT), {args.num_cases} scans drawn with seed {args.seed}, fold {args.fold} held "
        f"out ({len(x_tr)} training / {len(x_te)} test patches of 128^2); reference = pylidc 50 % reader "
        f"consensus; R = {args.runs} UNets (bundle network_def, seeds 0..{args.runs - 1}) trained {args.epochs} "
        f"epochs each (bundle default 12), Adam 1e-3, class weights (1, 2), batch {args.batch_size}, no "
        f"augmentation; training {train_s:.0f} s, sweep {sweep.seconds:.0f} s wall. Size bins: equivalent "
        f"diameter 2 sqrt(area/pi) of the consensus mask on the patch slice, inner edges {edges} mm. "
        f"First significant drop of mean Dice over bins (Welch, p < 0.05): "
        f"{'none' if not np.isfinite(sig) else sig}. {args.notes}"
    ).strip()
    command = "python scripts/segmentation_pruning.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_provenance(out, command.strip(), args.seed, notes)
    print((out / "size_bins.csv").read_text())
    print((out / "mean_dice.csv").read_text())


if __name__ == "__main__":
    main()
