"""ISIC 2018 Task 1: official layout, reader, cache, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_bayes.data import DataFormatError, ISICDataset, find_isic_pairs, prepare_isic_dataset
from monai_bayes.data.synthetic import prepare_synthetic_isic, write_isic_cases


@pytest.fixture(scope="module")
def isic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isic") / "raw"
    write_isic_cases(root, num_cases=20, seed=0, size_range=(96, 128))
    return root


def test_official_layout_and_dataset(isic_raw: Path) -> None:
    pairs = find_isic_pairs(isic_raw)
    assert pairs["official"]
    sizes = {s: len(pairs[s]) for s in ("training", "validation", "test")}
    assert sizes == {"training": 14, "validation": 1, "test": 5}  # 2594 : 100 : 1000
    first = pairs["training"][0]
    assert Path(first["image"]).name == f"{first['case_id']}.jpg"
    assert Path(first["label"]).name == f"{first['case_id']}_segmentation.png"
    mask = np.asarray(Image.open(first["label"]))
    assert set(np.unique(mask)) <= {0, 255}
    ds = ISICDataset(isic_raw, "training")
    item = ds[0]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == np.float32
    assert item["label"].shape == (1, 224, 224) and set(np.unique(item["label"])) <= {0, 1}
    assert 0.02 < item["label"].mean() < 0.6


def test_prepare_cache(isic_raw: Path, tmp_path: Path) -> None:
    dl = prepare_isic_dataset(isic_raw, tmp_path / "cache", size=(64, 64), show_progress=False)
    data = json.loads(dl.read_text())
    assert data["official_split"] and len(data["training"]) == 14 and len(data["test"]) == 5
    img = np.load(dl.parent / data["validation"][0]["image"])
    assert img.shape == (3, 64, 64) and img.min() >= 0 and img.max() <= 1
    before = dl.stat().st_mtime_ns
    assert prepare_isic_dataset(isic_raw, tmp_path / "cache", size=(64, 64), show_progress=False) == dl
    assert dl.stat().st_mtime_ns == before


def test_image_without_mask(isic_raw: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(isic_raw, raw)
    victim = next((raw / "ISIC2018_Task1_Training_GroundTruth").glob("*.png"))
    victim.unlink()
    cid = victim.name.replace("_segmentation.png", "")
    with pytest.raises(DataFormatError, match=f"no mask {cid}_segmentation.png"):
        prepare_isic_dataset(raw, tmp_path / "cache", show_progress=False)
    assert not (tmp_path / "cache").exists()
    dl = prepare_isic_dataset(raw, tmp_path / "cache", on_error="skip", show_progress=False)
    data = json.loads(dl.read_text())
    report = json.loads((dl.parent / "report.json").read_text())
    assert len(data["training"]) == 13 and cid in report["skipped"][0]["item"]


def test_flat_folder_is_split_by_seed(isic_raw: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in isic_raw.rglob("ISIC_*"):
        shutil.copy(p, flat / p.name)
    a, b = find_isic_pairs(flat, seed=1), find_isic_pairs(flat, seed=1)
    assert not a["official"] and a == b
    assert sum(len(a[s]) for s in ("training", "validation", "test")) == 20
    assert a != find_isic_pairs(flat, seed=2)


def test_prepare_synthetic_isic(tmp_path: Path) -> None:
    dl = prepare_synthetic_isic(
        tmp_path, num_cases=6, synth_kwargs={"size_range": (64, 80)}, size=(32, 32), show_progress=False
    )
    assert len(json.loads(dl.read_text())["training"]) >= 1
