"""Before/after table of the ISIC bundle's default run (docs/bundles.md, "ISIC defaults").

Reads finished pipeline runs (``<runs_dir>/<run>/model.pt`` and ``eval/summary.json``, written by
``python -m monai.bundle run --config_file bundles/isic_sparse_bayes/configs/pipeline.json ...``), recomputes the
predictive entropy and mutual information of ``--samples`` Monte-Carlo samples on the held-out cases, split into
background, lesion-border (within ``--border`` pixels of the ground-truth contour) and lesion-interior pixels, and
writes ``results/isic_defaults/defaults.csv`` plus ``provenance.json``::

    python scripts/isic_defaults_report.py --cache /tmp/isic_cache/synthetic_isic_n40_s0/isic_cache \\
        --run "before (10+5 epochs, batch 8)=/tmp/isic_before/sparse_bayes_r0.01" \\
        --run "after=/tmp/isic_after/sparse_bayes_r0.01" --output results/isic_defaults
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

from monai_bayes.layers.base import mc_samples, sampling_mode, stochastic_layers
from monai_bayes.networks import load_checkpoint
from monai_bayes.uncertainty import uncertainty_maps
from monai_bayes.utils.atomic import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "isic_sparse_bayes"


def border_mask(label: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` of the contour of a binary mask: dilation minus erosion.

    Parameters
    ----------
    label : torch.Tensor
        ``(B, 1, H, W)`` binary mask.
    width : int
        Half-width of the band in pixels.

    Returns
    -------
    torch.Tensor
        ``(B, 1, H, W)`` bool.
    """
    k = 2 * width + 1
    dilated = F.max_pool2d(label.float(), k, stride=1, padding=width) > 0.5
    eroded = -F.max_pool2d(-label.float(), k, stride=1, padding=width) > 0.5
    return dilated & ~eroded


def region_uncertainty(run_dir: Path, cases: list[dict], cache: Path, samples: int, border: int) -> dict[str, float]:
    """Mean predictive entropy / mutual information (nats) per region over the test cases.

    Parameters
    ----------
    run_dir : Path
        Folder of the run (holds ``model.pt``).
    cases : list of dict
        Datalist items of the test split.
    cache : Path
        Folder the datalist paths are relative to.
    samples : int
        Monte-Carlo samples.
    border : int
        Border half-width in pixels.

    Returns
    -------
    dict of str to float
        ``{"background": ..., "border": ..., "lesion": ..., "MI background": ..., "MI border": ...}``.
    """
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "common.json"))
    network = load_checkpoint(parser.get_parsed_content("network_def", lazy=False), run_dir / "model.pt").eval()
    x = torch.as_tensor(np.stack([np.load(cache / c["image"]) for c in cases])).float()
    y = torch.as_tensor(np.stack([np.load(cache / c["label"]) for c in cases])).float().reshape(len(cases), 1, 224, 224)
    s = samples if stochastic_layers(network) else 1
    torch.manual_seed(0)
    with torch.no_grad(), sampling_mode(network, "sample"), mc_samples(network, s):
        logits = torch.cat([network(torch.cat([x[i : i + 1]] * s)) for i in range(len(cases))])
    probs = torch.softmax(logits, dim=1).reshape(len(cases), s, 2, 224, 224)
    maps = uncertainty_maps(probs)
    band = border_mask(y, border)
    regions = {"background": (y < 0.5) & ~band, "border": band, "lesion": (y > 0.5) & ~band}
    out = {name: float(maps["total"][mask].mean()) for name, mask in regions.items()}
    out.update({f"MI {name}": float(maps["epistemic"][mask].mean()) for name, mask in regions.items()})
    return out


def table_row(label: str, run_dir: Path, cases: list[dict], cache: Path, samples: int, border: int) -> dict[str, str]:
    """One formatted row: settings, metrics of ``eval/summary.json`` and region uncertainties.

    Parameters
    ----------
    label : str
        Row name.
    run_dir, cases, cache, samples, border
        As in :func:`region_uncertainty`.

    Returns
    -------
    dict of str to str
        Cells as shown in the docs.
    """
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    metrics = summary.get("metrics", summary)

    def metric(name: str) -> float:
        value = metrics[name]
        return float(value["mean"] if isinstance(value, dict) else value[0] if isinstance(value, list) else value)

    wall = 0.0
    for costs in [run_dir.parent / "deterministic" / "costs_train_deterministic.json", run_dir / "costs_train.json"]:
        if costs.is_file():
            wall += json.loads(costs.read_text())["wall_seconds"]
    unc = region_uncertainty(run_dir, cases, cache, samples, border)
    return {
        "run": label,
        "Dice": f"{metric('Dice'):.3f}",
        "ECE": f"{metric('ECE'):.4f}",
        "ECE (pooled)": f"{metric('ECE_pooled'):.4f}",
        "entropy, whole image (nats)": f"{metric('Uncertainty_entropy_mean'):.4f}",
        "entropy background (nats)": f"{unc['background']:.4f}",
        "entropy border (nats)": f"{unc['border']:.3f}",
        "entropy lesion (nats)": f"{unc['lesion']:.4f}",
        "MI border (nats)": f"{unc['MI border']:.4f}",
        "train wall time (s, loaded 2-core VM)": f"{wall:.0f}",
    }


def main(argv: list[str] | None = None) -> None:
    """Write ``defaults.csv`` and ``provenance.json``.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description="ISIC default-run before/after table")
    parser.add_argument("--cache", type=Path, required=True, help="folder with datalist.json (synthetic ISIC cache)")
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeatable)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--border", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "isic_defaults")
    parser.add_argument("--notes", default="")
    options = parser.parse_args(argv)
    cases = json.loads((options.cache / "datalist.json").read_text())["test"]
    rows = []
    for spec in options.run:
        label, _, path = spec.partition("=")
        rows.append(table_row(label, Path(path), cases, options.cache, options.samples, options.border))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(options.output / "defaults.csv", buffer.getvalue())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    atomic_write_json(
        options.output / "provenance.json",
        {
            "command": shlex.join(["python", "scripts/isic_defaults_report.py", *(argv or [])]),
            "commit": commit,
            "seed": 0,
            "machine": f"2-core {platform.machine()} dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": options.notes,
        },
    )
    print(buffer.getvalue())


if __name__ == "__main__":
    main(sys.argv[1:])
