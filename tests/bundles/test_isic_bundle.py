"""The ISIC 2018 sparse-Bayes bundle end to end on tiny synthetic data (issue 6, point 1)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.bundle import RunLayout, run_config, run_pipeline

ISIC_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "isic_sparse_bayes"

TINY_ISIC = {
    "num_cases": 12,
    "image_size": [64, 64],
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 1,
    "deterministic_epochs": 1,
    "bayes_epochs": 1,
    "batch_size": 4,
    "num_samples": 2,
    "eval_samples": 3,
    "device": "cpu",
}


@pytest.mark.slow
def test_isic_pipeline_and_inference(tmp_path):
    bundle = tmp_path / "isic_sparse_bayes"
    shutil.copytree(ISIC_BUNDLE, bundle, symlinks=True)  # copied alone: no link may point out of it
    overrides = dict(TINY_ISIC, runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    summary = run_pipeline(bundle, overrides)
    assert summary["num_cases"] > 0 and np.isfinite(summary["metrics"]["IoU"]["mean"])
    # the official ISIC 2018 score per image: the image's IoU if >= 0.65, else 0 (empty ground truth scored)
    layout = RunLayout(tmp_path / "runs", "sparse_bayes", 0.01)
    with open(layout.eval_dir / "per_case.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    iou = np.array([float(r["IoU"]) for r in rows])
    thresholded = np.array([float(r["ThresholdedJaccard"]) for r in rows])
    np.testing.assert_allclose(thresholded, np.where(iou >= 0.65, iou, 0.0), atol=1e-6)
    assert summary["metrics"]["ThresholdedJaccard"]["mean"] == pytest.approx(thresholded.mean(), abs=1e-6)
    assert 0.0 <= summary["metrics"]["ECE_pooled"]["mean"] <= 1.0
    assert set(summary["metric_definitions"]) >= {"ThresholdedJaccard", "ECE", "ECE_pooled", "IoU", "Dice"}
    assert summary["metrics"]["GED_rater_diversity"]["mean"] == pytest.approx(0.0)  # one mask per image
    images = tmp_path / "new_images"  # the held-out images (the cache folder also holds the label files)
    images.mkdir()
    for item in datalist_items_of(bundle, overrides)[:4]:
        shutil.copy(item["image"], images)
    run_config(bundle, ["inference"], dict(overrides, dataset_dir=str(images), output_dir=str(layout.inference_dir)))
    names = {p.name.rsplit("_", 1)[-1] for p in layout.inference_dir.glob("*.nii.gz")}
    assert names == {"mask.nii.gz", "lesion.nii.gz", "total.nii.gz", "aleatoric.nii.gz", "epistemic.nii.gz"}


def datalist_items_of(bundle: Path, overrides: dict) -> list:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "common.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser.get_parsed_content("eval_items")


def test_shared_step_configs_are_real_copies_of_the_lidc_ones():
    """Real files (a zipped bundle keeps them), byte-equal to the LIDC sources; the ISIC-specific ones differ."""
    lidc = ISIC_BUNDLE.parent / "lidc_sparse_bayes" / "configs"
    for name in ("train_deterministic", "select", "train", "evaluate", "pipeline", "sweep"):
        copy = ISIC_BUNDLE / "configs" / f"{name}.json"
        assert not copy.is_symlink() and copy.read_bytes() == (lidc / f"{name}.json").read_bytes(), name
    for name in ("common", "inference", "metadata"):
        assert (ISIC_BUNDLE / "configs" / f"{name}.json").read_bytes() != (lidc / f"{name}.json").read_bytes()
