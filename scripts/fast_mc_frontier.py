"""Quality / cost frontier of selection scopes for fast Monte-Carlo inference (issue 22, item 3).

On the LIDC bundle's default data (the real LIDC-IDRI reader annotations; the bundle's own data resolution,
transforms, network, loss and evaluation metrics from ``configs/common.json`` + ``configs/evaluate.json``):

1. train the deterministic UNet once (``--det-epochs``);
2. for each scope -- ``global`` (saliency Top 1 % over the whole net, the bundle default), ``decoder`` (the
   layers after the bottleneck), ``last3`` (final block + head) and ``decoder_skipfree`` (the decoder without
   the convs that read a skip concatenation, ``scope_modules(..., skip_readers=False)``, so that the split
   convolution can run their shared half once) -- select 1 % of the scope's weights by
   gradient saliency (:func:`monai_bayes.selection.scope_modules` → ``include=``), train with the ELBO
   (``--bayes-epochs``) and evaluate with S = 8 samples: Dice, GED, HM-IoU, ECE, predictive entropy and
   mutual information (the bundle's metric handlers);
3. time one MC call with the default ``MonteCarloInferer`` at S = 8 and S = 16 on a batch of patches,
   as a ratio to 8 × (16 ×) one deterministic forward (medians of ``--repeats`` interleaved rounds).

Writes ``results/fast_mc/frontier.csv`` and ``provenance.json`` (results contract) and the frontier figure
(:func:`monai_bayes.visualize.plot_quality_cost_frontier`). The sizes are small so that the run fits a
shared 2-core machine; they are printed and recorded.

Every trained network is saved in ``--checkpoint-dir`` (``det.pt``, ``<scope>.pt``, with the scope's
metrics in ``<scope>.json``). A rerun with the same ``--checkpoint-dir`` reuses them instead of
training again (the deterministic net and each finished scope), so an interrupted run resumes, and
``--cost-only`` re-times only the MC cost columns from the saved checkpoints (no training, no
evaluation; the quality columns are read back from the JSON files), e.g. after a faster inference
path lands.

Usage::

    python scripts/fast_mc_frontier.py [--num-cases 8] [--det-epochs 4] [--bayes-epochs 2] [--out results/fast_mc]
    python scripts/fast_mc_frontier.py --cost-only [--checkpoint-dir ...]   # re-time the cost columns
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.layers import mc_cost_split
from monai_bayes.networks import load_checkpoint, save_checkpoint
from monai_bayes.selection import region_modules, scope_modules, select_bayesian_weights, selection_report
from monai_bayes.visualize import plot_quality_cost_frontier
from monai_bayes.workflows import OptimizerSettings, train_bayesian, train_deterministic

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lidc_sparse_bayes"


class Row(NamedTuple):
    """One frontier row: checkpoint stem, selection scope, Bayesian fraction of the scope, initial σ, label of the
    scope, and the seed of its selection + ELBO training (0: the global RNG as left by the earlier steps)."""

    name: str
    scope: str
    r_bayes: float = 0.01
    sigma_init: str | float = "relative"
    label: str = ""
    seed: int = 0

    def title(self) -> str:
        """The ``selection`` cell, e.g. ``"skip-free decoder 1 %, σ₀ ρ~N(−3, 1)"``."""
        text = f"{self.label or self.scope} {100 * self.r_bayes:g} %"
        if self.sigma_init == "rho_normal":
            text += ", σ₀ ρ~N(−3, 1)"
        elif not isinstance(self.sigma_init, str):
            text += f", σ₀ {self.sigma_init:g}"
        return text + (f" (seed {self.seed})" if self.seed else "")


#: the rows, in table order; the last three raise the sample diversity (issue 22: GED of the late scopes)
ROWS = (
    Row("global", "global"),
    Row("decoder", "decoder"),
    Row("last3", "last3"),
    Row("decoder_skipfree", "decoder_skipfree", label="skip-free decoder"),
    Row("decoder_skipfree_rho", "decoder_skipfree", sigma_init="rho_normal", label="skip-free decoder"),
    Row("decoder_skipfree_r5", "decoder_skipfree", r_bayes=0.05, label="skip-free decoder"),
    Row("global_rho", "global", sigma_init="rho_normal"),
    # a second training of the two rows that the default decision compares (selection + ELBO reseeded)
    Row("global_seed1", "global", seed=1),
    Row("decoder_skipfree_r5_seed1", "decoder_skipfree", r_bayes=0.05, label="skip-free decoder", seed=1),
    # constant initial σ between "relative" (5 % of |μ|: ≈ 0.001–0.007 here) and rho_normal (median 0.049)
    Row("decoder_skipfree_s01", "decoder_skipfree", sigma_init=0.01, label="skip-free decoder"),
    Row("decoder_skipfree_s02", "decoder_skipfree", sigma_init=0.02, label="skip-free decoder"),
    Row("global_s01", "global", sigma_init=0.01),
    # second trainings of the two constant-σ₀ rows that the default decision compares
    Row("decoder_skipfree_s02_seed1", "decoder_skipfree", sigma_init=0.02, label="skip-free decoder", seed=1),
    Row("global_s01_seed1", "global", sigma_init=0.01, seed=1),
)
#: metric key in the evaluator state -> CSV column
METRICS = {"Dice": "Dice", "GED": "GED", "GED_hm_iou": "HM-IoU", "ECE": "ECE"}
OPTIMIZER = OptimizerSettings(name="adam", lr=1e-3, weight_decay=1e-5)


def bundle_parser(work: Path, args: argparse.Namespace) -> ConfigParser:
    """The bundle's common + evaluate configs with this run's sizes (no report handlers)."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "common.json"), str(BUNDLE / "configs" / "evaluate.json")])
    parser.update(
        {
            "bundle_root": str(work),
            "cache_dir": str(args.cache_dir),
            "num_cases": args.num_cases,
            "num_workers": 0,
            "device": "$torch.device('cpu')",
            "evaluate#handlers": [],
            "eval_samples": 8,
        }
    )
    return parser


def evaluate(parser: ConfigParser, network: torch.nn.Module, num_samples: int = 8) -> dict[str, float]:
    """The bundle's evaluation metrics of ``network`` with ``num_samples`` samples (fresh metric objects)."""
    fresh = {k: parser.get_parsed_content(f"evaluate#{k}", lazy=False) for k in ("key_metric", "additional_metrics")}
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=parser.get_parsed_content("evaluate#dataloader"),
        network=network,
        inferer=MonteCarloInferer(num_samples, activation="softmax", output="samples", seed=0),
        postprocessing=parser.get_parsed_content("evaluate#postprocessing", lazy=False),
        key_val_metric=fresh["key_metric"],
        additional_metrics=fresh["additional_metrics"],
    )
    evaluator.run()
    return {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}


def mc_cost(network: torch.nn.Module, det: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[int, float]:
    """MC time at S = 8, 16 over S × one deterministic forward (medians, interleaved).

    All S samples in one pass with the shared prefix (and the sparse shared input where a layer's cost
    model predicts a gain): the plan that the scopes are for. A fixed plan, not the default's probe: the
    probe would cost ~40 S-sample calls per scope on this machine (``benchmarks/bench_mc.py`` times the
    default against this plan).
    """
    inferers = {s: MonteCarloInferer(s, chunk_size=s, shared_prefix=True, seed=0) for s in (8, 16)}
    fns = {"det": lambda: det(x), 8: lambda: inferers[8](x, network), 16: lambda: inferers[16](x, network)}
    times: dict[Any, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up; the inferers probe their plan here
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    det_t = statistics.median(times["det"])
    return {s: statistics.median(times[s]) / (s * det_t) for s in (8, 16)}


def scoped(det: torch.nn.Module, scope: str, example: torch.Tensor) -> list[str] | None:
    """``include=`` module names of a scope (None: the whole network)."""
    if scope.startswith("last"):  # any n, not only the bundles' "last3"
        return scope_modules(det, example, "last", last_n=int(scope.removeprefix("last")))
    return region_modules(det, example, "all" if scope == "global" else scope)


def log(message: str, started: float) -> None:
    """Print a progress line with the elapsed wall time."""
    print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {message}", flush=True)


def row_of(
    spec: Row, net: torch.nn.Module, metrics: dict[str, float], cost: dict[int, float], predicted: float
) -> dict[str, str]:
    """One ``frontier.csv`` row (cells formatted as shown in the docs)."""
    layers = selection_report(net)
    share = 100 * sum(r.num_bayes for r in layers) / sum(r.num_params for r in layers)
    row = {"selection": spec.title(), "Bayesian weights (% of net)": f"{share:.3f}"}
    for key, col in METRICS.items():
        row[col] = _fmt(metrics.get(key))
    row["entropy"] = _fmt(metrics.get("Uncertainty_entropy_mean"))
    row["MI"] = _fmt(metrics.get("Uncertainty_mi_mean"))
    row["sample diversity"] = _fmt(metrics.get("GED_sample_diversity"))
    row["MC cost S=8"] = f"{cost[8]:.2f}"
    row["MC cost S=16"] = f"{cost[16]:.2f}"
    row["predicted S=8"] = f"{predicted:.2f}"
    return row


def trained_det(parser: ConfigParser, args: argparse.Namespace, started: float) -> torch.nn.Module:
    """The deterministic UNet: loaded from ``det.pt`` when present, else trained once and saved."""
    det = parser.get_parsed_content("network_def")
    path = args.checkpoint_dir / "det.pt"
    if path.exists():
        log(f"deterministic net reused from {path}", started)
        return load_checkpoint(det, path).eval()
    if args.cost_only:
        raise FileNotFoundError(f"--cost-only needs {path} from a previous run (see --checkpoint-dir).")
    train_loader = parser.get_parsed_content("train_data#dataloader")
    log(f"training the deterministic net, {args.det_epochs} epochs", started)
    train_deterministic(
        det,
        train_loader,
        loss_function=parser.get_parsed_content("nll"),
        max_epochs=args.det_epochs,
        optimizer=OPTIMIZER,
        progress=False,
    )
    save_checkpoint(det, path)
    det.eval()
    metrics = evaluate(parser, det, num_samples=1)
    (args.checkpoint_dir / "det.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"deterministic net: Dice {metrics.get('Dice', float('nan')):.3f} (saved {path})", started)
    return det


def trained_scope(
    parser: ConfigParser, det: torch.nn.Module, spec: Row, x: torch.Tensor, args: argparse.Namespace, started: float
) -> tuple[torch.nn.Module, dict[str, float]]:
    """The row's partial-Bayes net and its metrics: reused from ``<name>.pt`` / ``.json``, else trained."""
    scope = spec.name
    path, metrics_path = args.checkpoint_dir / f"{scope}.pt", args.checkpoint_dir / f"{scope}.json"
    if path.exists() and metrics_path.exists():
        log(f"{scope}: reused {path}", started)
        args.reused.append(scope)
        net = load_checkpoint(copy.deepcopy(det), path).eval()
        return net, json.loads(metrics_path.read_text())
    if args.cost_only:
        raise FileNotFoundError(f"--cost-only needs {path} and {metrics_path} from a previous run.")
    train_loader = parser.get_parsed_content("train_data#dataloader")
    nll = parser.get_parsed_content("nll")
    net = copy.deepcopy(det).train()
    include = scoped(det, spec.scope, x[:1])
    log(f"{scope}: selecting {spec.title()} of {'all' if include is None else len(include)} layers", started)
    if spec.seed or spec.sigma_init == "rho_normal":  # rho_normal draws σ₀ from the global generator
        torch.manual_seed(spec.seed)
    select_bayesian_weights(
        net,
        loader=train_loader,
        loss_function=nll,
        r_bayes=spec.r_bayes,
        include=include,
        sigma_init=spec.sigma_init,
        progress=False,
    )
    log(f"{scope}: ELBO training, {args.bayes_epochs} epochs", started)
    train_bayesian(
        net,
        train_loader,
        loss_function=nll,
        max_epochs=args.bayes_epochs,
        num_samples=args.train_samples,
        optimizer=OPTIMIZER,
        progress=False,
    )
    net.eval()
    save_checkpoint(net, path)
    log(f"{scope}: evaluating with S = 8", started)
    metrics = evaluate(parser, net)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    origin = {"command": "python " + " ".join(sys.argv), "commit": _commit()}
    (args.checkpoint_dir / f"{scope}.run.json").write_text(json.dumps(origin, indent=2) + "\n")
    return net, metrics


TRAINING_KEYS = ("num_cases", "det_epochs", "bayes_epochs", "train_samples")


def training_record(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes and command of the run that trained the checkpoints (``run.json``; read back for ``--cost-only``).

    A new training run writes it; a run reusing checkpoints must have the same sizes (else it fails),
    and ``--cost-only`` takes its sizes from it.
    """
    path = args.checkpoint_dir / "run.json"
    if path.exists():
        record = json.loads(path.read_text())
        if args.cost_only:
            for key in TRAINING_KEYS:
                setattr(args, key, record[key])
        elif any(record[k] != getattr(args, k) for k in TRAINING_KEYS):
            raise ValueError(
                f"{path} was trained with {dict((k, record[k]) for k in TRAINING_KEYS)}; this run asks for"
                f" {dict((k, getattr(args, k)) for k in TRAINING_KEYS)}: use another --checkpoint-dir."
            )
        return record
    if args.cost_only:
        raise FileNotFoundError(f"--cost-only needs {path} from a previous run (see --checkpoint-dir).")
    record = {k: getattr(args, k) for k in TRAINING_KEYS}
    record |= {"command": "python " + " ".join(sys.argv), "commit": _commit()}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def trained_by(args: argparse.Namespace, name: str) -> dict[str, str]:
    """``{"command", "commit"}`` that trained row ``name``: its ``<name>.run.json``, else ``run.json``'s."""
    path = args.checkpoint_dir / f"{name}.run.json"
    record = json.loads(path.read_text()) if path.exists() else args.training
    return {"command": record["command"], "commit": record["commit"]}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-cases", type=int, default=8)
    ap.add_argument("--det-epochs", type=int, default=4)
    ap.add_argument("--bayes-epochs", type=int, default=2)
    ap.add_argument("--train-samples", type=int, default=2, help="MC samples per ELBO step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cost-batch", type=int, default=4, help="128^2 patches per timed MC call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=BUNDLE / "cache")
    ap.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=BUNDLE / "runs" / "fast_mc_frontier",
        help="trained nets and their metrics (det.pt, <scope>.pt/.json); reused when present",
    )
    ap.add_argument(
        "--cost-only",
        action="store_true",
        help="re-time the MC cost columns from the saved checkpoints; quality columns from their JSON",
    )
    ap.add_argument("--rows", default="", help="comma-separated row names to run (default: all rows, see ROWS)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "fast_mc")
    ap.add_argument("--figure", type=Path, default=REPO / "docs" / "images" / "fast_mc_frontier.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    args.training = training_record(args)
    args.reused: list[str] = []
    args.loads: list[float] = []  # 1-minute load average after each row's timing
    work = Path(tempfile.mkdtemp(prefix="fast_mc_"))
    parser = bundle_parser(work, args)
    n_train = len(parser.get_parsed_content("train_items"))
    log(f"train patches: {n_train}, eval patches: {len(parser.get_parsed_content('eval_items'))}", started)
    det = trained_det(parser, args, started)
    batch = next(iter(parser.get_parsed_content("evaluate#dataloader")))["image"]
    x = torch.as_tensor(batch)[: args.cost_batch]
    rows = []
    wanted = args.rows.split(",") if args.rows else [r.name for r in ROWS]
    unknown = sorted(set(wanted) - {r.name for r in ROWS})
    if unknown:
        raise ValueError(f"--rows: unknown {unknown}; expected names from {[r.name for r in ROWS]}.")
    for spec in (r for r in ROWS if r.name in wanted):
        scope = spec.name
        net, metrics = trained_scope(parser, det, spec, x, args, started)
        log(f"{scope}: timing MC cost", started)
        cost = mc_cost(net, det, x, args.repeats)
        args.loads.append(os.getloadavg()[0])
        split = mc_cost_split(net, x)
        log(f"{scope}: {metrics} cost {cost} predicted {split.predicted_cost(8):.3f}", started)
        rows.append(row_of(spec, net, metrics, cost, split.predicted_cost(8)))
    write(args, rows, time.perf_counter() - started)
    plot_quality_cost_frontier([args.out / "frontier.csv"], args.figure)


def _fmt(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def write(args: argparse.Namespace, rows: list[dict[str, str]], seconds: float) -> None:
    """``frontier.csv``, ``provenance.json`` and ``figures.json`` in ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "frontier.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python " + " ".join(sys.argv)
    det_json = args.checkpoint_dir / "det.json"
    det_dice = json.loads(det_json.read_text()).get("Dice", math.nan) if det_json.exists() else math.nan
    retimed = ""
    if args.cost_only:
        retimed = f" Cost columns re-timed from the saved checkpoints by `{command}` at commit {_commit()}."
        command = f"{args.training['command']} && {command}"
    if args.reused:
        groups: dict[tuple[str, str], list[str]] = {}
        for name in args.reused:
            origin = trained_by(args, name)
            groups.setdefault((origin["command"], origin["commit"]), []).append(name)
        retimed += (
            f" Checkpoints reused from {args.checkpoint_dir.name}/ (not retrained; this run timed every row): "
            + "; ".join(
                f"{', '.join(names)} trained and evaluated by `{cmd}` at commit {sha}"
                for (cmd, sha), names in groups.items()
            )
            + "."
        )
    provenance = {
        "command": command,
        "commit": _commit(),
        "seed": 0,
        "machine": f"2-core x86_64 dev VM, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
        "notes": (
            f"LIDC bundle default data (real reader annotations), {args.num_cases} scans, bundle fold 0;"
            f" deterministic UNet {args.det_epochs} epochs (its own Dice {det_dice:.3f}),"
            " then per row saliency selection of r_bayes of the scope's weights (the row's label; σ₀ relative"
            " unless labelled) and"
            f" {args.bayes_epochs} ELBO epochs ({args.train_samples} samples per step); evaluation with S = 8;"
            f" MC cost = MonteCarloInferer(S, chunk_size=S, shared_prefix=True) time / (S x deterministic forward),"
            f" batch of {args.cost_batch} 128^2 patches,"
            f" medians of {args.repeats}, {args.threads} thread(s), shared machine (1-minute load average after"
            f" each row's timing: {', '.join(f'{v:.1f}' for v in args.loads)}); wall {seconds / 60:.0f} min."
            " Far shorter training than the bundle's (12 + 6 epochs on 20 scans): read the quality columns as a"
            " comparison between scopes at equal training, not as the bundle's results." + retimed
        ),
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    figure = {
        "output": os.path.relpath(args.figure, REPO),
        "function": "monai_bayes.visualize:plot_quality_cost_frontier",
        "inputs": [os.path.relpath(args.out / "frontier.csv", REPO)],
    }
    (args.out / "figures.json").write_text(json.dumps([figure], indent=2) + "\n")


if __name__ == "__main__":
    main()
