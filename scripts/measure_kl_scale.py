"""Measure the scale of the KL term of the ELBO on the bundles' UNets (docs/training.md, "KL reduction").

For the LIDC and ISIC sparse-Bayes bundles' ``network_def`` at MONAI's initialisation, a random ``r_bayes``
selection (1 % and 100 %) is made Bayesian with each ``sigma_init`` rule, and the KL against the N(0, 1) prior
is computed as the sum over entries (``kl_reduction="dataset"`` / ``"sum"``) and as the authors' per-layer mean
(``"layer_mean"``). ``β·KL/N`` is what ``"dataset"`` adds to a per-voxel cross-entropy for ``N`` training items.

    python scripts/measure_kl_scale.py --output results/kl_scale
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import platform
import subprocess
import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_bayes.cost import count_parameters
from monai_bayes.layers.base import kl_divergence
from monai_bayes.layers.candidates import candidate_parameters
from monai_bayes.losses import ELBOLoss
from monai_bayes.networks import to_partial_bayes
from monai_bayes.selection import random_scores, select_topk
from monai_bayes.utils.atomic import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
#: training items of each bundle at its defaults: LIDC fold 0 of the 20-case default (docs/results.md),
#: ISIC 40 synthetic cases split 28 training / 1 validation / 11 test (bundles/isic_sparse_bayes, resolve_isic_dataset)
DATASET_SIZE = {"lidc_sparse_bayes": 334, "isic_sparse_bayes": 28}
BETAS = (0.2, 0.01)


def network_def(bundle: str) -> torch.nn.Module:
    """The bundle's ``network_def`` (MONAI initialisation, seed 0).

    Parameters
    ----------
    bundle : str
        Folder name under ``bundles/``.

    Returns
    -------
    torch.nn.Module
        The untrained network.
    """
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "common.json"))
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def")


def kl_row(bundle: str, r_bayes: float, sigma_init: str) -> dict[str, str]:
    """One table row: parameter counts and the KL of a random ``r_bayes`` selection with ``sigma_init``.

    Parameters
    ----------
    bundle : str
        Folder name under ``bundles/``.
    r_bayes : float
        Fraction of candidate entries made Bayesian.
    sigma_init : str
        ``"relative"`` or ``"rho_normal"``.

    Returns
    -------
    dict of str to str
        Formatted cells.
    """
    net = network_def(bundle)
    params = count_parameters(net)["total"]
    candidates = sum(p.numel() for p in candidate_parameters(net).values())
    selection = "all" if r_bayes >= 1 else select_topk(random_scores(net, seed=0), r_bayes)
    torch.manual_seed(1)
    to_partial_bayes(net, selection, sigma_init=sigma_init)
    with torch.no_grad():
        kl = float(kl_divergence(net))
        layer_mean = float(ELBOLoss(net, kl_reduction="layer_mean").kl_term())
    n = DATASET_SIZE[bundle]
    return {
        "bundle": bundle,
        "parameters": f"{params:,}".replace(",", " "),
        "candidate weights": f"{candidates:,}".replace(",", " "),
        "r_bayes": f"{r_bayes:g}",
        "sigma_init": sigma_init,
        "Bayesian entries": f"{count_parameters(net)['bayesian']:,}".replace(",", " "),
        "KL sum (nats)": f"{kl:.3g}",
        "N": str(n),
        **{f"β·KL/N (β = {b:g})": f"{b * kl / n:.3g}" for b in BETAS},
        "layer-mean KL (nats)": f"{layer_mean:.3g}",
        **{f"β·layer-mean KL (β = {b:g})": f"{b * layer_mean:.3g}" for b in BETAS},
    }


def main(argv: list[str] | None = None) -> None:
    """Write ``kl_scale.csv`` and ``provenance.json`` to ``--output``.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description="KL scale of the bundles' UNets")
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "kl_scale")
    options = parser.parse_args(argv)
    rows = [
        kl_row(bundle, r, sigma) for bundle in DATASET_SIZE for r in (0.01, 1.0) for sigma in ("relative", "rho_normal")
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(options.output / "kl_scale.csv", buffer.getvalue())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    atomic_write_json(
        options.output / "provenance.json",
        {
            "command": "python scripts/measure_kl_scale.py --output results/kl_scale",
            "commit": commit,
            "seed": 0,
            "machine": f"2-core {platform.machine()} dev VM, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(),
            "notes": "untrained network_def (MONAI init, torch.manual_seed(0)); 1 % = random Top-k (seed 0); "
            "rho_normal drawn after torch.manual_seed(1); N = training items at the bundle defaults "
            "(LIDC: 334 patches of fold 0, docs/results.md; ISIC: 28 of 40 synthetic cases)",
        },
    )
    print(buffer.getvalue())


if __name__ == "__main__":
    main(sys.argv[1:])
