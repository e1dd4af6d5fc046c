"""The ChestMNIST bundle end to end at tiny size: five methods, pruning sweep, seed-003 tables and figures."""

from __future__ import annotations

import csv
import importlib
import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run

from monai_bayes.bundle import ChestMNISTPipeline, chestmnist_file
from monai_bayes.data.synthetic import write_chestmnist_npz
from monai_bayes.workflows.classification import load_classification_data

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "chestmnist_bayes"

TINY = {
    "num_train": 120,
    "num_val": 10,
    "num_test": 60,
    "num_runs": 2,
    "width": 4,
    "deterministic_epochs": 1,
    "bayes_epochs": 1,
    "batch_size": 32,
    "ensemble_size": 2,
    "eval_samples": 2,
    "sparsities": [0.0, 0.5, 0.9],
}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _run(bundle: Path, tmp_path: Path, **overrides: object) -> None:
    run(
        config_file=str(bundle / "configs" / "pipeline.json"),
        bundle_root=str(bundle),
        runs_dir=str(tmp_path / "runs"),
        cache_dir=str(tmp_path / "cache"),
        results_dir=str(tmp_path / "results" / "tiny"),
        **overrides,
    )


@pytest.mark.slow
def test_chestmnist_pipeline_tiny(tmp_path: Path) -> None:
    bundle = tmp_path / "chestmnist_bayes"
    shutil.copytree(BUNDLE, bundle)  # the bundle alone, copied out of the repository
    _run(bundle, tmp_path, **TINY)
    results = tmp_path / "results" / "tiny"
    methods = _rows(results / "methods.csv")
    assert [r["method"] for r in methods] == ["deterministic", "sparse_bayes", "full_bayes", "mc_dropout", "ensemble"]
    for r in methods:
        assert 0 <= float(r["mAP"]) <= 1 and 0 <= float(r["ECE"]) <= 1
    assert float(methods[0]["mean MI (nats)"]) == 0  # one deterministic sample: no epistemic part
    mean_ap = _rows(results / "mean_ap.csv")
    assert {r["model"] for r in mean_ap} == {"deterministic", "sparse_bayes (posterior mean)"}
    for r in mean_ap:  # every pruned model reached the requested sparsity (to the 4th decimal)
        assert abs(float(r["sparsity reached"]) - float(r["sparsity"])) < 1e-3
    assert len(_rows(results / "pairs.csv")) == 14 * 13 // 2
    assert next(r["term"] for r in _rows(results / "fcd_ols.csv")) == "intercept"
    pies = _rows(results / "pie_counts.csv")
    assert sum(float(r["PIEs"]) for r in pies) == pytest.approx(1.0, abs=2e-3)
    provenance = json.loads((results / "provenance.json").read_text())
    assert set(provenance) == {"command", "commit", "seed", "machine", "date", "notes"}
    report = (results / "report.md").read_text()
    assert "<!-- results-table: tiny/mean_ap.csv -->" in report
    # the figures regenerate from the CSVs alone, byte-stable
    figures = json.loads((results / "figures.json").read_text())
    assert len(figures) == 6
    for fig in figures:
        module, name = fig["function"].split(":")
        plot = getattr(importlib.import_module(module), name)
        inputs = [tmp_path / i for i in fig["inputs"]]
        out = tmp_path / fig["output"]
        out.parent.mkdir(parents=True, exist_ok=True)
        plot(inputs, out)
        first = out.read_bytes()
        plot(inputs, out)
        assert out.read_bytes() == first and first[:4] == b"\x89PNG"


def test_settings_are_validated_before_training(tmp_path: Path) -> None:
    bundle = tmp_path / "chestmnist_bayes"
    shutil.copytree(BUNDLE, bundle)
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the library's error in "Failed to evaluate"
        _run(bundle, tmp_path, num_trian=10)
    causes = []
    err: BaseException | None = info.value
    while err is not None:
        causes.append(str(err))
        err = err.__cause__
    assert any("unknown setting(s) ['num_trian']" in c for c in causes)
    with pytest.raises(ValueError, match="num_runs must be >= 2"):
        ChestMNISTPipeline(num_runs=1)
    with pytest.raises(ValueError, match="pie_sparsity"):
        ChestMNISTPipeline(sparsities=(0.0, 0.5), pie_sparsity=0.9)
    with pytest.raises(ValueError, match="method"):
        ChestMNISTPipeline(methods=("deterministic", "sparse_bayse"))
    assert not (tmp_path / "runs").exists()


def test_medmnist_file_names_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"chestmnist_64\.npz"):
        chestmnist_file(tmp_path, 64)
    with pytest.raises(ValueError, match="MedMNIST sizes"):
        chestmnist_file(tmp_path, 32)
    write_chestmnist_npz(tmp_path / "chestmnist_64.npz", 20, 5, 10, size=64)
    data = load_classification_data(chestmnist_file(tmp_path, 64), max_items=8)
    assert tuple(data.images["train"].shape) == (8, 1, 64, 64) and tuple(data.labels["test"].shape) == (8, 14)
    assert float(data.images["train"].max()) <= 1.0 and np.isin(data.labels["val"].numpy(), (0, 1)).all()


def test_metadata_has_the_schema_keys() -> None:
    zoo = runpy.run_path(str(Path(__file__).with_name("test_model_zoo.py")))  # the model-zoo test's key lists
    SCHEMA_20220324, SCHEMA_20220324_REQUIRED = zoo["SCHEMA_20220324"], zoo["SCHEMA_20220324_REQUIRED"]
    TENSOR_FORMAT_REQUIRED = zoo["TENSOR_FORMAT_REQUIRED"]
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith(SCHEMA_20220324) and meta["version"] in meta["changelog"]
    assert not [k for k in SCHEMA_20220324_REQUIRED if k not in meta]
    for section in ("inputs", "outputs"):
        for fmt in meta["network_data_format"][section].values():
            assert not [k for k in TENSOR_FORMAT_REQUIRED if k not in fmt]
    assert (BUNDLE / "LICENSE").is_file()
