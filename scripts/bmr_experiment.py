"""Issue 17's measured comparison: MAP / Flat-FF / Tiered-FF / BMR-S&S on the LIDC bundle, written to ``results/bmr/``.

Everything runs through the LIDC bundle's own configs: its synthetic (or real-annotation) data, its training
data loader and loss (``nll``), and its evaluator (``evaluate#evaluator`` of ``evaluate.json``: Dice vs the
majority vote, GED, ECE, NLL, ... with ``eval_samples`` Monte-Carlo samples) -- with the evaluator's file-writing
handlers removed and its network swapped for each variant. The steps:

1. a deterministic UNet trained with the bundle's NLL for ``--base-epochs`` (shared start of every method);
2. from it, for ``--epochs`` more epochs each, evaluated after every epoch (the seed's Fig. 1):
   MAP (Adam with weight decay), Flat-FF (``to_flat_bayes``, γ₀ = 0.1, ELBO β = 1), Tiered-FF
   (``to_horseshoe_bayes``, ELBO β = 1) and BMR-S&S (the flat model with a BMR pass after epoch
   ``--first-pass`` and then every epoch, ``--rounds`` passes; :class:`BMRPruningHandler`'s schedule);
3. on the final Flat-FF posterior: one BMR pass, and magnitude / SNR / random pruning at BMR-S&S's final
   sparsity and at a grid of sparsities (no retraining) -- the sparsity-vs-quality curves;
4. per-layer pruned fractions (Fig. 2), per-layer CDFs of |posterior mean| for BMR-S&S vs Tiered-FF (Fig. 3),
   compact vs dense bytes, and wall time per training epoch.

Usage::

    python scripts/bmr_experiment.py [--out results/bmr] [--epochs 10] [--base-epochs 6] [--num-cases 12]
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from torch import nn

from monai_bayes.layers import HorseshoeBayesLayer, PartialBayesLayer, kl_divergence
from monai_bayes.networks import to_horseshoe_bayes
from monai_bayes.reduction import (
    MASK_SUFFIX,
    apply_prune_masks,
    baseline_masks,
    bmr_masks,
    bmr_prune,
    prune_report,
    save_compact,
    to_flat_bayes,
)

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lidc_sparse_bayes"
METRICS = ("Dice", "GED", "ECE", "NLL")
METHOD_NAMES = {"map": "MAP", "flat": "Flat-FF", "tiered": "Tiered-FF", "bmr": "BMR-S&S"}


def bundle_parser(args: argparse.Namespace) -> ConfigParser:
    """The LIDC bundle's common + evaluate configs with the experiment's sizes; the evaluator writes no files."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f"{n}.json") for n in ("common", "evaluate")])
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "device": "cpu",
            "method": "full_bayes",  # eval_samples Monte-Carlo samples for every variant
            "dataset_dir": args.dataset,
            "cache_dir": str(Path(args.cache)),
            "runs_dir": str(Path(args.cache) / "runs"),
            "num_cases": args.num_cases,
            "synth_kwargs": {"shape": [16, args.size, args.size]},
            "patch_size": args.patch,
            "network_def#channels": args.channels,
            "network_def#strides": [2] * (len(args.channels) - 1),
            "network_def#num_res_units": args.num_res_units,
            "batch_size": args.batch,
            "eval_samples": args.eval_samples,
            "seed": args.seed,
            "network": "$torch.nn.Identity()",
            "evaluate#handlers": [],
        }
    )
    return parser


def evaluate(evaluator: Any, net: nn.Module) -> dict[str, float]:
    """The bundle's evaluator on ``net`` (posterior samples, majority-vote Dice, GED, ECE, NLL)."""
    evaluator.network = net
    net.eval()
    torch.manual_seed(0)
    evaluator.run()
    return {m: float(evaluator.state.metrics[m]) for m in METRICS}


def train_epoch(
    net: nn.Module, loader: Any, nll: nn.Module, opt: torch.optim.Optimizer, kl_scale: float | None
) -> None:
    """One epoch: NLL (+ KL / ``kl_scale``, β = 1) with one posterior sample per step."""
    net.train()
    for batch in loader:
        opt.zero_grad()
        loss = nll(net(batch["image"]), batch["label"])
        if kl_scale is not None:
            loss = loss + kl_divergence(net) / kl_scale
        loss.backward()
        opt.step()


def optimizer(
    net: nn.Module, lr: float, weight_decay: float = 0.0, hs_rho_lr: float | None = None
) -> torch.optim.Optimizer:
    """Adam; the σ parameters (``*_rho``) get a higher rate, as the bundle's ``rho_lr`` allows.

    ``hs_rho_lr`` (if given) is the rate of the horseshoe scales' log-normal σ (``hs_unit_rho``, ``hs_layer_rho``).
    """
    rho = [p for n, p in net.named_parameters() if n.endswith("_rho") and not (hs_rho_lr and ".hs_" in f".{n}")]
    hs_rho = [p for n, p in net.named_parameters() if hs_rho_lr and n.endswith("_rho") and ".hs_" in f".{n}"]
    ids = {id(p) for p in rho + hs_rho}
    rest = [p for p in net.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": weight_decay}]
    if rho:
        groups.append({"params": rho, "lr": 10 * lr, "weight_decay": 0.0})
    if hs_rho:
        groups.append({"params": hs_rho, "lr": hs_rho_lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=lr)


def horseshoe_state(net: nn.Module) -> str:
    """Mean median scale γ̄, mean σ of the scales' log-normals and mean σ of ŵ over the horseshoe layers."""
    layers = [m for m in net.modules() if isinstance(m, HorseshoeBayesLayer)]
    if not layers:
        return ""
    gamma = torch.cat([m.median_scale().detach() for m in layers])
    unit_sigma = torch.cat([torch.nn.functional.softplus(m.hs_unit_rho.detach()).reshape(-1) for m in layers])
    w_sigma = torch.cat([m.sigma("weight").detach().reshape(-1) for m in layers])
    w_mu = torch.cat([m.weight.detach().abs().reshape(-1) for m in layers])
    return (
        f"gamma_bar mean {gamma.mean():.4f} min {gamma.min():.2e}; scale log-sigma mean {unit_sigma.mean():.3f}; "
        f"sigma(w_hat) mean {w_sigma.mean():.3f}; |mu(w_hat)| mean {w_mu.mean():.3f}"
    )


def run_method(
    name: str,
    net: nn.Module,
    args: argparse.Namespace,
    loader: Any,
    nll: nn.Module,
    evaluator: Any,
    kl_scale: float | None,
    weight_decay: float = 0.0,
    after_epoch: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Train ``net`` for ``args.epochs`` epochs, evaluating after each; returns the rows and seconds per epoch."""
    opt = optimizer(net, args.lr, weight_decay, args.hs_rho_lr)
    rows, seconds = [], 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_epoch(net, loader, nll, opt, kl_scale)
        seconds += time.perf_counter() - start
        if after_epoch is not None:
            after_epoch(epoch, net, opt)
        scores = evaluate(evaluator, net)
        rows.append({"method": METHOD_NAMES[name], "epoch": epoch, "pruned": prune_report(net).fraction, **scores})
        print(f"{name} epoch {epoch}: {scores} pruned {rows[-1]['pruned']:.3f} {horseshoe_state(net)}", flush=True)
    return rows, seconds / args.epochs


def compact_bytes(net: nn.Module) -> tuple[int, int]:
    """(compact, dense) tensor bytes of ``net`` stored with :func:`save_compact`."""
    with tempfile.TemporaryDirectory() as tmp:
        size = save_compact(net, Path(tmp) / "net.pt")
    return size.compact_bytes, size.dense_bytes


def mean_abs_by_layer(net: nn.Module) -> dict[str, torch.Tensor]:
    """|posterior mean| of every weight and bias per layer, in weight units (Tiered-FF: γ̄ ⊙ μ)."""
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, HorseshoeBayesLayer):
            values = [module.effective_mean(p).detach().reshape(-1) for p in module.hs_param_names]
        elif isinstance(module, PartialBayesLayer) or hasattr(module, "weight" + MASK_SUFFIX):
            values = [
                getattr(module, p).detach().reshape(-1)
                for p in ("weight", "bias")
                if getattr(module, p, None) is not None
            ]
        else:
            continue
        out[name] = torch.cat(values).abs()
    return out


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results" / "bmr"))
    ap.add_argument("--cache", default="/tmp/bmr_experiment_cache")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--num-cases", type=int, default=12)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--base-epochs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--first-pass", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=int, default=1, help="epochs of training between two BMR passes")
    ap.add_argument("--num-res-units", type=int, default=1)
    ap.add_argument("--save-nets", default=None, help="folder for the trained networks' state dicts")
    ap.add_argument("--bmr-thresholds", type=float, nargs="+", default=[0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
    ap.add_argument(
        "--base-checkpoint",
        default=None,
        help="state dict of the deterministic start: loaded if it exists, else written after training",
    )
    ap.add_argument(
        "--hs-rho-lr",
        type=float,
        default=None,
        help="learning rate of the horseshoe scales' log-normal sigmas (default: the 10x rho rate)",
    )
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--base-lr", type=float, default=1e-2)
    ap.add_argument("--sigma-hat", type=float, default=0.1, help="initial posterior σ of ŵ (flat and horseshoe)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    set_determinism(args.seed)
    out = Path(args.out)
    parser = bundle_parser(args)
    loader = parser.get_parsed_content("train_data#dataloader")
    nll = parser.get_parsed_content("nll")
    evaluator = parser.get_parsed_content("evaluate#evaluator")
    # every voxel of every training patch is one likelihood term (the NLL is a voxel mean): KL / (items · patch²)
    kl_scale = float(len(parser.get_parsed_content("train_items")) * args.patch**2)

    base = parser.get_parsed_content("network_def")
    cached = Path(args.base_checkpoint) if args.base_checkpoint else None
    if cached is not None and cached.exists():
        base.load_state_dict(torch.load(cached, weights_only=True))
    else:
        opt = optimizer(base, args.base_lr)
        for epoch in range(1, args.base_epochs + 1):
            start = time.perf_counter()
            train_epoch(base, loader, nll, opt, None)
            if epoch % 5 == 0:
                print(
                    f"base epoch {epoch} ({time.perf_counter() - start:.1f} s):", evaluate(evaluator, base), flush=True
                )
        if cached is not None:
            torch.save(base.state_dict(), cached)
    print(f"KL / {kl_scale:.0f}; deterministic start:", evaluate(evaluator, base), flush=True)

    curves: list[dict[str, Any]] = []
    step_time: dict[str, float] = {}
    nets: dict[str, nn.Module] = {}
    nets["map"] = copy.deepcopy(base)
    rows, step_time["map"] = run_method("map", nets["map"], args, loader, nll, evaluator, None, weight_decay=1e-4)
    curves += rows
    nets["flat"] = to_flat_bayes(copy.deepcopy(base), gamma0=0.1, sigma_init=0.1 * args.sigma_hat)
    rows, step_time["flat"] = run_method("flat", nets["flat"], args, loader, nll, evaluator, kl_scale)
    curves += rows
    nets["tiered"] = to_horseshoe_bayes(
        copy.deepcopy(base), weight_sigma_relative=1e-9, weight_sigma_floor=args.sigma_hat
    )
    rows, step_time["tiered"] = run_method("tiered", nets["tiered"], args, loader, nll, evaluator, kl_scale)
    curves += rows

    passes: list[dict[str, Any]] = []

    def bmr_schedule(epoch: int, net: nn.Module, opt: torch.optim.Optimizer) -> None:
        due = epoch >= args.first_pass and (epoch - args.first_pass) % args.interval == 0
        if due and len(passes) < args.rounds:
            result = bmr_prune(net, optimizer=opt)
            passes.append({"epoch": epoch, "report": result.report})
            scores = evaluate(evaluator, net)
            passes[-1]["scores"] = scores

    nets["bmr"] = to_flat_bayes(copy.deepcopy(base), gamma0=0.1, sigma_init=0.1 * args.sigma_hat)
    rows, step_time["bmr"] = run_method(
        "bmr", nets["bmr"], args, loader, nll, evaluator, kl_scale, after_epoch=bmr_schedule
    )
    curves += rows
    final_scores = {k: v for k, v in curves[-1].items() if k in METRICS}

    # ---------------------------------------------------------------- comparison at equal sparsity
    flat = nets["flat"]
    flat_scores = {k: v for k, v in [r for r in curves if r["method"] == "Flat-FF"][-1].items() if k in METRICS}
    bmr_report = prune_report(nets["bmr"])
    count = bmr_report.pruned
    table: list[dict[str, Any]] = []

    dense_reference = compact_bytes(flat)[1]  # the unpruned flat posterior (μ, σ of every weight), stored densely

    def row(label: str, net: nn.Module, scores: dict[str, float], note: str) -> dict[str, Any]:
        compact, dense = compact_bytes(net)
        rep = prune_report(net)
        return {
            "network": label,
            "pruned fraction": fmt(rep.fraction),
            "Dice": fmt(scores["Dice"]),
            "GED": fmt(scores["GED"]),
            "ECE": fmt(scores["ECE"], 4),
            "NLL": fmt(scores["NLL"], 4),
            "bytes (save_compact)": f"{compact:,}",
            "bytes (dense state dict)": f"{dense:,}",
            "vs dense Flat-FF": fmt(compact / dense_reference, 2),
            "note": note,
        }

    table.append(row("Flat-FF (unpruned posterior)", flat, flat_scores, f"{args.epochs} epochs ELBO"))
    table.append(row(f"BMR-S&S (stochastic, {len(passes)} passes)", nets["bmr"], final_scores, "prune + retrain"))
    one = copy.deepcopy(flat)
    masks, _, _ = bmr_masks(one)
    apply_prune_masks(one, masks)
    table.append(row("BMR, one pass on Flat-FF", one, evaluate(evaluator, one), "no retraining"))
    curve_rows: list[dict[str, Any]] = []
    one_rep = prune_report(one)
    curve_rows.append({"method": "BMR (one pass)", "pruned": one_rep.fraction, **evaluate(evaluator, one)})
    for p in passes:
        curve_rows.append({"method": "BMR-S&S (after each pass)", "pruned": p["report"].fraction, **p["scores"]})
    flat_entries = prune_report(flat).entries
    # BMR's ranking at other thresholds (prune q < t, t > ½): the largest sparsity within 0.01 Dice of Flat-FF
    best: tuple[float, nn.Module, dict[str, float], float] | None = None
    for t in args.bmr_thresholds:
        cand = copy.deepcopy(flat)
        cand_masks, _, _ = bmr_masks(cand, threshold=t)
        apply_prune_masks(cand, cand_masks)
        cand_scores = evaluate(evaluator, cand)
        frac = prune_report(cand).fraction
        curve_rows.append({"method": "BMR (q < t, one pass)", "pruned": frac, **cand_scores})
        print(f"BMR threshold {t}: pruned {frac:.3f} {cand_scores}", flush=True)
        if flat_scores["Dice"] - cand_scores["Dice"] <= 0.01 and (best is None or frac > best[0]):
            best = (frac, cand, cand_scores, t)
    if best is not None:
        frac, cand, cand_scores, t = best
        table.append(
            row(f"BMR (q < {t:g}) on Flat-FF", cand, cand_scores, "largest sparsity within 0.01 Dice, no retraining")
        )
        n_best = prune_report(cand).pruned
        for method in ("magnitude", "snr", "random"):
            other = copy.deepcopy(flat)
            apply_prune_masks(other, baseline_masks(other, method, n_best, torch.Generator().manual_seed(0)))
            table.append(
                row(f"{method}, same count", other, evaluate(evaluator, other), f"on Flat-FF, as BMR (q < {t:g})")
            )
    for method in ("magnitude", "snr", "random"):
        other = copy.deepcopy(flat)
        apply_prune_masks(
            other, baseline_masks(other, method, min(count, flat_entries), torch.Generator().manual_seed(0))
        )
        table.append(row(f"{method}, BMR-S&S's count", other, evaluate(evaluator, other), "on Flat-FF, no retraining"))
        grid = sorted({0.5, 0.7, 0.8, 0.9, 0.95, round(one_rep.fraction, 3), round(bmr_report.fraction, 3)})
        for frac in grid:
            other = copy.deepcopy(flat)
            n = min(round(frac * flat_entries), flat_entries)
            apply_prune_masks(other, baseline_masks(other, method, n, torch.Generator().manual_seed(0)))
            curve_rows.append({"method": method, "pruned": prune_report(other).fraction, **evaluate(evaluator, other)})
    if args.save_nets:
        Path(args.save_nets).mkdir(parents=True, exist_ok=True)
        for key, net in nets.items():
            torch.save(net.state_dict(), Path(args.save_nets) / f"{key}.pt")
    map_scores = {k: v for k, v in [r for r in curves if r["method"] == "MAP"][-1].items() if k in METRICS}
    tiered_scores = {k: v for k, v in [r for r in curves if r["method"] == "Tiered-FF"][-1].items() if k in METRICS}
    table.append(row("MAP (weight decay)", nets["map"], map_scores, "deterministic"))
    table.append(row("Tiered-FF (horseshoe)", nets["tiered"], tiered_scores, "not pruned"))

    # ---------------------------------------------------------------- write
    write_csv(out / "comparison.csv", table)
    write_csv(
        out / "curves.csv",
        [{**r, "pruned": fmt(r["pruned"]), **{m: fmt(r[m], 4) for m in METRICS}} for r in curves],
    )
    write_csv(
        out / "sparsity_quality.csv",
        [{**r, "pruned": fmt(r["pruned"]), **{m: fmt(r[m], 4) for m in METRICS}} for r in curve_rows],
    )
    layers = []
    for i, s in enumerate(passes[-1]["report"].layers if passes else []):
        entry = {"layer": s.layer, "entries": s.entries}
        for k, p in enumerate(passes, 1):
            entry[f"pass {k}"] = fmt(p["report"].layers[i].fraction)
        layers.append(entry)
    total = {"layer": "total", "entries": bmr_report.entries}
    for k, p in enumerate(passes, 1):
        total[f"pass {k}"] = fmt(p["report"].fraction)
    write_csv(out / "pruned_per_layer.csv", [*layers, total])
    flat_by_epoch = {r["epoch"]: r for r in curves if r["method"] == "Flat-FF"}
    round_rows = []
    for k, p in enumerate(passes, 1):
        ref = flat_by_epoch[p["epoch"]]
        round_rows.append(
            {
                "round": k,
                "after epoch": p["epoch"],
                "pruned fraction": fmt(p["report"].fraction),
                "Dice": fmt(p["scores"]["Dice"]),
                "GED": fmt(p["scores"]["GED"]),
                "ECE": fmt(p["scores"]["ECE"], 4),
                "Flat-FF Dice (same epoch)": fmt(ref["Dice"]),
                "Dice loss": fmt(ref["Dice"] - p["scores"]["Dice"]),
            }
        )
    if round_rows:
        write_csv(out / "rounds.csv", round_rows)
    thresholds = [10 ** (e / 4) for e in range(-24, 1)]  # 1e-6 … 1
    cdf_rows = []
    for key in ("bmr", "tiered"):
        for layer, values in mean_abs_by_layer(nets[key]).items():
            for t in thresholds:
                cdf_rows.append({"method": METHOD_NAMES[key], "layer": layer, "threshold": f"{t:.3g}",
                                 "fraction <= threshold": fmt(float((values <= t).float().mean()), 4)})  # fmt: skip
    write_csv(out / "cdf_abs_mean.csv", cdf_rows)
    write_csv(
        out / "epoch_time.csv",
        [
            {
                "method": METHOD_NAMES[k],
                "seconds per epoch": fmt(v, 2),
                "ratio to Tiered-FF": fmt(v / step_time["tiered"], 2),
            }
            for k, v in step_time.items()
        ],
    )
    loss = flat_scores["Dice"] - final_scores["Dice"]
    summary = {
        "bmr_sparsity": bmr_report.fraction,
        "bmr_dice_loss_vs_flat": loss,
        "within_0.01": loss <= 0.01,
        "flat": flat_scores,
        "bmr": final_scores,
        "passes": [{"epoch": p["epoch"], "pruned": p["report"].fraction, **p["scores"]} for p in passes],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    provenance = {
        "command": "python "
        + " ".join(
            [
                str(Path(sys.argv[0]).relative_to(REPO)) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                *sys.argv[1:],
            ]
        ),
        "commit": commit,
        "seed": args.seed,
        "machine": f"2-core x86_64 dev VM, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "notes": (
            f"LIDC bundle, dataset_dir={args.dataset!r}, {args.num_cases} cases of 16x{args.size}x{args.size}, "
            f"patch {args.patch}, UNet channels {args.channels}, batch {args.batch}; deterministic start "
            f"{args.base_epochs} epochs (Adam lr {args.base_lr}), then {args.epochs} epochs per method; "
            f"{args.rounds} BMR passes after epoch {args.first_pass} and then every {args.interval} epochs; "
            f"UNet num_res_units {args.num_res_units}; bundle evaluator "
            f"with {args.eval_samples} MC samples on the fold-0 evaluation split; KL / {int(kl_scale)} "
            f"(training items x patch voxels), beta = 1; initial posterior sigma of w_hat {args.sigma_hat}; "
            f"Adam lr {args.lr} (rho: 10x); {platform.python_version()}; machine shared with other jobs."
        ),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    prefix = "bmr" if out.name == "bmr" else out.name
    plots = {
        f"{prefix}_fig1_curves.png": ("plot_training_curves", "curves.csv"),
        f"{prefix}_fig2_pruned_per_layer.png": ("plot_pruned_per_layer", "pruned_per_layer.csv"),
        f"{prefix}_fig3_cdf.png": ("plot_abs_mean_cdf", "cdf_abs_mean.csv"),
        f"{prefix}_sparsity_quality.png": ("plot_sparsity_quality", "sparsity_quality.csv"),
    }
    figures = [
        {
            "output": f"docs/images/{png}",
            "function": f"monai_bayes.reduction.figures:{fn}",
            "inputs": [f"results/{out.name}/{table}"],
        }
        for png, (fn, table) in plots.items()
    ]
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
