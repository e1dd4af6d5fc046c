"""Post-hoc pruning of a saved Flat-FF posterior at equal sparsity: BMR (q < t) vs magnitude / SNR / random.

Reads the networks ``bmr_experiment.py --save-nets DIR`` saved, sweeps the BMR threshold ``t`` (prune where the
spike-and-slab posterior ``q < t``; ``t = ½`` is eq. 23, a smaller ``t`` prunes fewer weights: the same ranking
within a layer), evaluates each pruned posterior with the LIDC bundle's evaluator (same settings and seed as the
experiment), takes the largest sparsity within 0.01 Dice of the unpruned posterior, and prunes the same number of
weights by |μ|, |μ|/σ and at random. Writes ``<out>/equal_sparsity.csv`` and ``<out>/threshold_sweep.csv``.

Usage (the experiment's size arguments, then)::

    python scripts/bmr_posthoc.py --nets /tmp/bmrq/nets --out results/bmr_quality [--thresholds 0.1,0.3] [size args]
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import torch

from monai_bayes.networks.checkpoint import load_stochastic_state_dict
from monai_bayes.reduction import apply_prune_masks, baseline_masks, bmr_masks, prune_report

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bmr_experiment", REPO / "scripts" / "bmr_experiment.py")
assert _spec is not None and _spec.loader is not None
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def main() -> None:
    extra = ["--nets", "--thresholds"]
    argv = sys.argv[1:]
    nets_dir = Path(argv[argv.index("--nets") + 1])
    thresholds = [0.3, 0.1, 0.01, 1e-3, 1e-5, 1e-8, 1e-12, 1e-20]
    if "--thresholds" in argv:
        i = argv.index("--thresholds")
        thresholds = [float(v) for v in argv[i + 1].split(",")]
    rest = [a for k, a in enumerate(argv) if a not in extra and (k == 0 or argv[k - 1] not in extra)]
    sys.argv = [sys.argv[0], *rest]
    args = _parse(rest)
    torch.set_num_threads(1)
    parser = exp.bundle_parser(args)
    evaluator = parser.get_parsed_content("evaluate#evaluator")
    flat = load_stochastic_state_dict(
        parser.get_parsed_content("network_def"), torch.load(nets_dir / "flat.pt", weights_only=True)
    )
    base_scores = exp.evaluate(evaluator, flat)
    sweep, best = [], None
    for t in thresholds:
        cand = copy.deepcopy(flat)
        masks, _, _ = bmr_masks(cand, threshold=t)
        apply_prune_masks(cand, masks)
        scores = exp.evaluate(evaluator, cand)
        frac = prune_report(cand).fraction
        print(f"t={t:g}: pruned {frac:.3f} {scores}", flush=True)
        sweep.append({"threshold t": f"{t:g}", "pruned fraction": exp.fmt(frac), "Dice": exp.fmt(scores["Dice"]),
                      "Dice loss": exp.fmt(base_scores["Dice"] - scores["Dice"]), "GED": exp.fmt(scores["GED"]),
                      "ECE": exp.fmt(scores["ECE"], 4)})  # fmt: skip
        if base_scores["Dice"] - scores["Dice"] <= 0.01 and (best is None or frac > best[0]):
            best = (frac, cand, scores, t)
    out = Path(args.out)
    exp.write_csv(out / "threshold_sweep.csv", sweep)
    if best is None:
        print("no threshold within 0.01 Dice")
        return
    frac, cand, scores, t = best
    dense_reference = exp.compact_bytes(flat)[1]

    def row(label: str, net: torch.nn.Module, s: dict[str, float]) -> dict[str, str]:
        compact, dense = exp.compact_bytes(net)
        return {
            "network": label,
            "pruned fraction": exp.fmt(prune_report(net).fraction),
            "Dice": exp.fmt(s["Dice"]),
            "GED": exp.fmt(s["GED"]),
            "ECE": exp.fmt(s["ECE"], 4),
            "bytes (save_compact)": f"{compact:,}",
            "bytes (dense state dict)": f"{dense:,}",
            "vs dense Flat-FF": exp.fmt(compact / dense_reference, 2),
        }

    rows = [row("Flat-FF (unpruned posterior)", flat, base_scores), row(f"BMR (q < {t:g})", cand, scores)]
    n = prune_report(cand).pruned
    for method in ("magnitude", "snr", "random"):
        other = copy.deepcopy(flat)
        apply_prune_masks(other, baseline_masks(other, method, n, torch.Generator().manual_seed(0)))
        rows.append(row(f"{method}, same count", other, exp.evaluate(evaluator, other)))
    exp.write_csv(out / "equal_sparsity.csv", rows)
    for r in rows:
        print(r)


def _parse(argv: list[str]) -> object:
    """The experiment's arguments (sizes, data, seed) by its own parser definitions."""
    import argparse

    ap = argparse.ArgumentParser()
    for name, kind, default in (
        ("--out", str, str(REPO / "results" / "bmr_quality")),
        ("--cache", str, "/tmp/bmr_experiment_cache"),
        ("--dataset", str, "synthetic"),
        ("--num-cases", int, 12),
        ("--size", int, 96),
        ("--patch", int, 64),
        ("--batch", int, 8),
        ("--eval-samples", int, 4),
        ("--seed", int, 0),
        ("--num-res-units", int, 1),
    ):
        ap.add_argument(name, type=kind, default=default)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    return ap.parse_known_args(argv)[0]


if __name__ == "__main__":
    main()
