"""The tutorial notebooks run (quick settings, as CI runs them) and print and write what they claim (issue 6, 12).

Each notebook is executed in a fresh kernel; then its printed outputs and the files it wrote are checked
against independent computations: the number of Bayesian weights against ``⌊r·N + 1/2⌋`` of the
candidate count, the entropy decomposition total = aleatoric + epistemic, the sweep's full-Bayes /
partial-Bayes / ensemble parameter counts against each other.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))
PNG = b"\x89PNG\r\n\x1a\n"


def _k(r_bayes: float, total: int) -> int:
    """k = ⌊r·N + 1/2⌋, at least 1 -- written here independently of monai_bayes.selection."""
    return max(1, math.floor(r_bayes * total + 0.5))


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _cell(book: nbformat.NotebookNode, marker: str) -> nbformat.NotebookNode:
    cells = [c for c in book.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"expected one code cell containing {marker!r}"
    return cells[0]


def _images(book: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code" for o in c.outputs)


def check_quick_start(book: nbformat.NotebookNode, work: Path) -> None:
    from monai.networks.nets import UNet

    from monai_bayes.networks import candidate_parameters

    shapes = re.search(r"(\d+) training patches, (\d+) test patches; label shape torch.Size\(\[(\d+), 64, 64\]\)",
                       _text(_cell(book, "training patches")))  # fmt: skip
    assert shapes and int(shapes[1]) > 0 and int(shapes[2]) > 0 and int(shapes[3]) > 1, "patches with all raters"
    total_line = _text(_cell(book, "format_selection_report")).strip().splitlines()[-1].split()
    assert total_line[0] == "total"
    bayes, params = int(total_line[1]), int(total_line[2])
    assert bayes == _k(0.01, params)  # the recipe made 1 % of the conv weights Bayesian
    demo = UNet(2, 1, 2, channels=(8, 16), strides=(2,))
    count = sum(p.numel() for p in candidate_parameters(demo).values())
    printed = int(_text(_cell(book, "Bayesian weights (each has a rho)")).split()[0])
    assert printed == _k(0.01, count)
    entropies = json.loads(_text(_cell(book, "uncertainty_maps(probs)")).split(":", 1)[1].strip())
    total, aleatoric, epistemic = entropies
    assert 0 <= aleatoric <= total <= math.log(2) + 1e-4 and epistemic >= 0
    assert abs(total - aleatoric - epistemic) <= 2e-4  # printed with 4 decimals
    assert (work / "quick_start_cases.png").read_bytes()[:8] == PNG
    assert _images(book) == 1


def check_lidc_bundle(book: nbformat.NotebookNode, work: Path) -> None:
    from monai_bayes.bundle import RunLayout

    layout = RunLayout(work / "runs", method="sparse_bayes", r_bayes=0.01)
    rows = json.loads(layout.selection_report.read_text())
    bayes, params = sum(r["num_bayes"] for r in rows), sum(r["num_params"] for r in rows)
    assert bayes == _k(0.01, params)
    summary = json.loads((layout.eval_dir / "summary.json").read_text())
    assert summary["costs"]["train"]["parameters"]["bayesian"] == bayes
    printed = _text(_cell(book, 'summary["metrics"]'))
    dice = float(re.search(r"^Dice\s+([0-9.]+) ±", printed, re.M)[1])
    assert dice == pytest.approx(summary["metrics"]["Dice"]["mean"], abs=5e-5) and 0 <= dice <= 1
    assert f"Bayesian parameters: {bayes} of" in printed
    n_cases = int(re.search(r"^(\d+) cases;", _text(_cell(book, "publish_model(bundle, layout)")), re.M)[1])
    assert n_cases >= 1 and n_cases == len(list(layout.inference_dir.glob("*_total.nii.gz")))
    assert _images(book) == 2  # cases.png and reliability.png


def check_sweep(book: nbformat.NotebookNode, work: Path) -> None:
    with open(work / "runs" / "sweep" / "table.csv", newline="") as fh:
        rows = {row["run"]: row for row in csv.DictReader(fh)}
    by_method = {row["method"]: row for row in rows.values()}
    assert set(by_method) == {"sparse_bayes", "full_bayes", "ensemble", "deterministic"}
    full = int(by_method["full_bayes"]["params_bayesian"])
    assert int(by_method["sparse_bayes"]["params_bayesian"]) == _k(0.01, full)  # same candidates, 1 % of them
    assert int(by_method["ensemble"]["params_total"]) == 2 * int(by_method["deterministic"]["params_total"])
    printed = _text(_cell(book, "run_sweep("))  # the table (also in the sweep's log lines)
    assert all(f"| {run} |" in printed for run in rows)
    assert _images(book) == 1


def check_bmr(book: nbformat.NotebookNode, work: Path) -> None:
    import torch
    from monai.networks.nets import UNet

    from monai_bayes.networks import candidate_parameters

    rows = dict(re.findall(r"^(.+?)\s+pruned\s+([0-9.]+)\s+Dice", _text(_cell(book, "bmr_masks(one)")), re.M))
    bmr = float(rows["BMR, one pass"])
    assert float(rows["flat, unpruned"]) == 0.0 and 0.0 < bmr < 1.0
    for method in ("magnitude", "snr", "random"):  # ablations prune the same number of weights
        assert float(rows[f"{method}, same count"]) == pytest.approx(bmr, abs=1e-3)
    loop = _text(_cell(book, "train_bmr("))
    passes = [float(v) for v in re.findall(r"^pass \d+: ([0-9.]+) pruned", loop, re.M)]
    final = float(re.search(r"^final: ([0-9.]+) pruned", loop, re.M)[1])
    assert len(passes) == 3 and passes == sorted(passes) and final == passes[-1]  # masks only grow
    sizes = re.search(
        r"compact ([0-9,]+) B vs dense ([0-9,]+) B \(ratio ([0-9.]+)\)", _text(_cell(book, "save_compact("))
    )
    compact, dense = (int(sizes[i].replace(",", "")) for i in (1, 2))
    assert float(sizes[3]) == pytest.approx(compact / dense, abs=1e-3)
    # the exported posterior-mean UNet holds exact zeros at (at least) every pruned candidate weight
    state = torch.load(work / "bmr_unet_mean.pt", weights_only=True)
    names = candidate_parameters(UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1))
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    assert zeros / sum(state[n].numel() for n in names) >= final - 1e-3


def check_pruning(book: nbformat.NotebookNode, work: Path) -> None:
    import numpy as np

    pattern = r"requested 0.37, reached ([0-9.]+) of (\d+) prunable weights"
    reached = re.search(pattern, _text(_cell(book, "pruned_copy(")))
    n = int(reached[2])
    assert float(reached[1]) == pytest.approx(round(0.37 * n) / n, abs=1e-6)  # exactly round(k N) zeros
    pies = re.search(r"PIEs: (\d+) of (\d+) test images", _text(_cell(book, "analyze_pruning(")))
    assert int(pies[1]) == math.ceil(0.05 * int(pies[2]))  # the bottom 5 %
    # the printed OLS coefficients are those of an independent least-squares fit to the written pairs table
    with open(work / "results" / "tutorial" / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    d = np.array([float(r["|LogFreqDiff|"]) for r in rows])
    q = np.array([float(r["IoU^(1/4)"]) for r in rows])
    y = np.array([float(r["FCD"]) for r in rows])
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(d), d, q, d * q]), y, rcond=None)[0]
    text = _text(_cell(book, "analyze_pruning("))
    printed = [float(v) for v in re.findall(r"^OLS .+?: (-?[0-9.]+) \(SE", text, re.M)]
    np.testing.assert_allclose(printed, coef, rtol=1e-2, atol=1e-3)  # pairs.csv holds 6 significant digits
    assert (work / "forgettability.png").read_bytes()[:8] == PNG and _images(book) >= 1


def check_edge(book: nbformat.NotebookNode, work: Path) -> None:
    text = _text(_cell(book, "collector.step(step)"))
    collected = re.search(r"collected (\d+) samples in (\d+) steps \((\d+) cycles\)", text)
    assert int(collected[1]) == 2 * int(collected[3])  # two samples at the end of each cycle
    printed = dict(re.findall(r"^(\w+)\s+sparsity [0-9.]+:\s+([0-9,]+) B", _text(_cell(book, "save_samples(")), re.M))
    sizes = {k: int(v.replace(",", "")) for k, v in printed.items()}
    for layout, size in sizes.items():  # the printed bytes are the files' sizes
        assert (work / f"samples_{layout}.pt").stat().st_size == size
    assert sizes["shared_sparse"] < sizes["coo"] < sizes["dense"]
    export = _text(_cell(book, "export_onnx("))
    assert float(re.search(r"max \|onnx - torch\| = ([0-9.e+-]+)", export)[1]) <= 1e-4
    assert (work / "tiny_mc_dropout_s8.onnx").is_file()
    distil = _text(_cell(book, "train_student("))
    scores = dict(re.findall(r"^(teacher|student)\s+Dice ([0-9.]+)", distil, re.M))
    assert set(scores) == {"teacher", "student"} and all(0.0 <= float(v) <= 1.0 for v in scores.values())
    assert -1.0 <= float(re.search(r"total-uncertainty maps: (-?[0-9.]+)", distil)[1]) <= 1.0
    assert float(re.search(r"teacher at S = 8: ([0-9.]+)x faster", distil)[1]) > 1.0  # one pass beats 8 samples


def check_bn3_nested(book: nbformat.NotebookNode, work: Path) -> None:
    from monai.networks.nets import UNet

    cut = re.findall(r"^width (\d+)/(\d+): (\d+) parameters, max \|extracted - masked\| (\S+)$",
                     _text(_cell(book, "extract_width(")), re.M)  # fmt: skip
    groups = int(cut[0][1])
    assert [int(w) for w, *_ in cut] == list(range(1, groups + 1))
    for w, _, params, difference in cut:
        # the extracted width-w network is a plain MONAI UNet with w/G of every layer's channels
        narrow = UNet(2, 1, 2, channels=tuple(c * int(w) // groups for c in (8, 16, 32)), strides=(2, 2),
                      num_res_units=1, norm="batch")  # fmt: skip
        assert int(params) == sum(p.numel() for p in narrow.parameters())
        assert float(difference) < 1e-4  # it computes what the masked nested network computes
    with open(work / "bn3_sweep" / "width_sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bn3 = {(int(r["width"]), int(r["samples"])): r for r in rows if r["method"] == "BN3"}
    assert set(bn3) == {(w, s) for w in range(1, groups + 1) for s in (1, 4, 16)}
    assert all(float(r["sample_diversity_mean"]) == 0 for r in rows if r["samples"] == "1")
    printed = re.findall(r"^BN3\s+(\d+)/\d+\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$",
                         _text(_cell(book, "evaluate_width_sweep(")), re.M)  # fmt: skip
    assert len(printed) == len(bn3)
    for w, s, ged, hm_iou, _ in printed:
        row = bn3[(int(w), int(s))]
        assert float(ged) == pytest.approx(float(row["ged_mean"]), abs=6e-4)
        assert float(hm_iou) == pytest.approx(float(row["hm_iou_mean"]), abs=6e-4)
    assert (work / "bn3_sweep" / "width_sweep_ged.png").read_bytes()[:8] == PNG and _images(book) == 1


CHECKS: dict[str, Callable[[nbformat.NotebookNode, Path], None]] = {
    "01_quick_start": check_quick_start,
    "02_lidc_bundle": check_lidc_bundle,
    "03_r_bayes_sweep": check_sweep,
    "04_bmr": check_bmr,
    "05_pruning_impact": check_pruning,
    "06_edge": check_edge,
    "07_bn3_nested": check_bn3_nested,
}


def test_tutorials_are_stored_executed_and_each_has_checks():
    """Committed with their outputs (scripts/execute_tutorials.py), in order, with small figures."""
    assert {p.stem for p in TUTORIALS} == set(CHECKS)
    for path in TUTORIALS:
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        counts = [c.execution_count for c in code]
        assert counts == list(range(1, len(code) + 1)), f"{path.name}: run python scripts/execute_tutorials.py"
        assert "executed_with" in book.metadata.get("monai_bayes", {}), f"{path.name}: not written by the script"
        assert not any(o.output_type == "error" for c in code for o in c.outputs), f"{path.name}: a cell failed"
        for cell in code:
            for output in cell.outputs:
                png = output.get("data", {}).get("image/png", "")
                assert len(base64.b64decode(png)) <= 150 * 1024, f"{path.name}: PNG output over 150 KiB"
    assert sum(p.stat().st_size for p in TUTORIALS) < 2 * 1024 * 1024


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_its_outputs_hold(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_BAYES_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("MONAI_BAYES_TUTORIAL_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    CHECKS[path.stem](book, tmp_path)
