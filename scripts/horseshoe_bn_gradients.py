"""Why Tiered-FF collapses on a batch-normalised UNet: the NLL gradient reaching the horseshoe's unit scales.

Converts MONAI's 2D UNet (batch norm after every conv of a unit; the residual convs and the output conv have none)
with :func:`~monai_bayes.networks.to_horseshoe_bayes`, draws one posterior sample, and writes, per horseshoe layer,
the mean absolute gradient of the cross-entropy with respect to ``hs_unit_loc`` (the log-normal locations of the
local scales ``a_i, b_i``) and to ``μ`` of ŵ, once with batch norm in training mode (batch statistics: a conv whose
output is normalised is invariant to its per-channel scale, so the gradient is zero up to rounding) and once in
evaluation mode (running statistics: the scale matters). Output: ``results/bmr_quality/horseshoe_bn_gradients.csv``.

Usage::

    python scripts/horseshoe_bn_gradients.py [--out results/bmr_quality]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from monai.networks.nets import UNet
from torch import nn

from monai_bayes.layers import HorseshoeBayesLayer
from monai_bayes.networks import to_horseshoe_bayes

REPO = Path(__file__).resolve().parents[1]


def gradients(net: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, float]]:
    """``{layer: (mean |dL/d hs_unit_loc|, mean |dL/d μ|)}`` for one sample with ``net`` in ``mode``."""
    net.train(mode == "train")
    net.zero_grad()
    torch.manual_seed(1)
    nn.functional.cross_entropy(net(x), y).backward()
    return {
        name: (float(m.hs_unit_loc.grad.abs().mean()), float(m.weight.grad.abs().mean()))
        for name, m in net.named_modules()
        if isinstance(m, HorseshoeBayesLayer)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "results" / "bmr_quality"))
    args = ap.parse_args()
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1, norm="batch")
    to_horseshoe_bayes(net)
    x = torch.randn(4, 1, 32, 32)
    y = (torch.rand(4, 32, 32) > 0.9).long()
    train, evaluate = gradients(net, "train", x, y), gradients(net, "eval", x, y)
    rows = [
        {
            "layer": name,
            "followed by batch norm": "no" if name.endswith(("residual", "model.2.1.conv.unit0.conv")) else "yes",
            "train: |dL/d loc(a,b)|": f"{train[name][0]:.1e}",
            "eval: |dL/d loc(a,b)|": f"{evaluate[name][0]:.1e}",
            "train: |dL/d mu|": f"{train[name][1]:.1e}",
        }
        for name in train
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "horseshoe_bn_gradients.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
