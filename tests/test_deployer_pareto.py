"""The deployer's Pareto front and figure (``monai_bayes.visualize``) against a brute-force dominance check."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from monai_bayes.visualize import pareto_front, plot_deployer_pareto


def _brute_force(cost, quality):
    ok = [i for i in range(len(cost)) if np.isfinite(cost[i]) and np.isfinite(quality[i])]
    return sorted(
        (
            i
            for i in ok
            if not any(
                cost[j] <= cost[i] and quality[j] >= quality[i] and (cost[j], quality[j]) != (cost[i], quality[i])
                for j in ok
            )
        ),
        key=lambda i: cost[i],
    )


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(50):
        cost = rng.integers(1, 6, 7).astype(float).tolist()
        quality = rng.integers(0, 5, 7).astype(float).tolist()
        cost[0] = float("nan")
        assert pareto_front(cost, quality) == _brute_force(cost, quality)
    assert pareto_front([1.0, 2.0, 3.0], [0.5, 0.7, 0.6]) == [0, 1]


def test_plot_writes_a_byte_stable_png(tmp_path):
    table = tmp_path / "t.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "Dice", "ms per 128² patch", "MB on disk"])
        for name, d, ms, mb in itertools.islice(
            zip("abc", ("0.5 ± 0.1", "0.6 ± 0.2", "0.4"), ("10", "80", "—"), ("1.0", "5.0", "0.2")), 3
        ):
            w.writerow([name, d, ms, mb])
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_deployer_pareto([table], a)
    plot_deployer_pareto([table], b)
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("method,Dice\nx,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ms per 128² patch"):
        plot_deployer_pareto([bad], a)
