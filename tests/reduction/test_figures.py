"""The BMR figures (seed 002 Fig. 1–3, sparsity vs Dice) from result CSVs: written, byte-stable, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from monai_bayes.reduction import figures


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


TABLES = {
    "plot_training_curves": [
        {"method": m, "epoch": e, "pruned": "0", "Dice": 0.5 + e / 100, "GED": 0.4, "ECE": 0.01, "NLL": 0.02}
        for m in ("MAP", "BMR-S&S")
        for e in (1, 2)
    ],
    "plot_pruned_per_layer": [
        {"layer": "model.0", "entries": 10, "pass 1": "0.500", "pass 2": "0.700"},
        {"layer": "total", "entries": 10, "pass 1": "0.500", "pass 2": "0.700"},
    ],
    "plot_abs_mean_cdf": [
        {"method": m, "layer": "model.0", "threshold": t, "fraction <= threshold": f}
        for m in ("BMR-S&S", "Tiered-FF")
        for t, f in ((0.001, 0.2), (0.1, 0.9))
    ],
    "plot_sparsity_quality": [
        {"method": m, "pruned": p, "Dice": 0.6 - p / 2} for m in ("magnitude", "snr") for p in (0.5, 0.9)
    ],
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_figure_is_written_and_byte_stable(tmp_path, name):
    table = _csv(tmp_path / "t.csv", TABLES[name])
    plot = getattr(figures, name)
    plot([table], tmp_path / "a.png")
    plot([table], tmp_path / "b.png")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data == (tmp_path / "b.png").read_bytes()


def test_missing_column_names_the_file(tmp_path):
    table = _csv(tmp_path / "bad.csv", [{"method": "MAP", "epoch": 1}])
    with pytest.raises(ValueError, match=r"bad\.csv: missing columns \['Dice', 'ECE', 'NLL'\]"):
        figures.plot_training_curves([table], tmp_path / "x.png")
