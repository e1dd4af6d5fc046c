"""One BMR pruning pass over 10 M weights with whichever ``monai_bayes`` is first on the path (issue 17, point 1).

Run it alternately against an older checkout to compare versions side by side::

    git archive 9e9753b monai_bayes | tar -x -C /tmp/bmr_old
    for i in 1 2; do PYTHONPATH=/tmp/bmr_old python benchmarks/bench_bmr_pass_versions.py old
                     python benchmarks/bench_bmr_pass_versions.py new; done

Prints the median of 3 calls of ``bmr_masks`` and of ``bmr_prune`` (a fresh copy each) on a flat MLP of
10 × ``Linear(1000, 1000)`` with σ_w = softplus(U(−7, −3)), 2 threads, and the pruned fraction.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch
from torch import nn

import monai_bayes
from monai_bayes.reduction import bmr_masks, bmr_prune, to_flat_bayes


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "current"
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = to_flat_bayes(nn.Sequential(*[nn.Linear(1000, 1000) for _ in range(10)]), gamma0=0.1, sigma_init=0.01)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_rho"):
                p.uniform_(-7.0, -3.0)
    copies = [copy.deepcopy(net) for _ in range(3)]
    masks_t, prune_t, fraction = [], [], 0.0
    for _ in range(3):
        start = time.perf_counter()
        bmr_masks(net)
        masks_t.append(time.perf_counter() - start)
        target = copies.pop()
        start = time.perf_counter()
        fraction = bmr_prune(target).report.fraction
        prune_t.append(time.perf_counter() - start)
    print(
        f"{label} {monai_bayes.__file__} masks {statistics.median(masks_t):.3f} "
        f"prune {statistics.median(prune_t):.3f} fraction {fraction:.4f}"
    )


if __name__ == "__main__":
    main()
