"""Tiered-FF per-epoch Dice and horseshoe state from two ``bmr_experiment.py`` logs, side by side.

``bmr_experiment.py`` prints, after every Tiered-FF epoch, the bundle evaluator's scores and the mean posterior
σ of the log-normal unit scales (``scale log-sigma mean``) and of ŵ. This turns the lines of two runs (default:
the scales' σ trained at 10× the learning rate, like every ``*_rho``; mitigated: ``--hs-rho-lr 1e-4``) into
``results/bmr_quality/tiered_ff_diagnosis.csv``.

Usage::

    python scripts/bmr_tiered_log_table.py results/bmr_quality/logs/run2_default_tiered.log \
        results/bmr_quality/logs/run3.log
"""

from __future__ import annotations

import ast
import csv
import re
import sys
from pathlib import Path

LINE = re.compile(
    r"^tiered epoch (\d+): (\{.*?\}) pruned \S+ gamma_bar mean \S+ min \S+; scale log-sigma mean ([\d.]+); "
    r"sigma\(w_hat\) mean ([\d.]+)"
)


def parse(path: Path) -> dict[int, tuple[float, float, float]]:
    """``{epoch: (Dice, scale log-σ, σ of ŵ)}`` from a log."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        if m:
            scores = ast.literal_eval(m.group(2))
            out[int(m.group(1))] = (float(scores["Dice"]), float(m.group(3)), float(m.group(4)))
    return out


def main() -> None:
    default, mitigated = (parse(Path(p)) for p in sys.argv[1:3])
    rows = []
    for epoch in sorted(set(default) | set(mitigated)):
        d, m = default.get(epoch), mitigated.get(epoch)
        rows.append(
            {
                "epoch": epoch,
                "Dice (scale σ lr 1e-2)": f"{d[0]:.3f}" if d else "–",
                "scale log-σ (lr 1e-2)": f"{d[1]:.3f}" if d else "–",
                "Dice (scale σ lr 1e-4)": f"{m[0]:.3f}" if m else "–",
                "scale log-σ (lr 1e-4)": f"{m[1]:.3f}" if m else "–",
                "σ of ŵ (lr 1e-4 run)": f"{m[2]:.3f}" if m else "–",
            }
        )
    out = Path("results/bmr_quality/tiered_ff_diagnosis.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(out.read_text())


if __name__ == "__main__":
    main()
