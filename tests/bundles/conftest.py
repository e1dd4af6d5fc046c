"""Tiny settings for running the LIDC bundle configs in tests (seconds, not minutes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIDC_BUNDLE = REPO / "bundles" / "lidc_sparse_bayes"

#: config overrides that make every step run in seconds on CPU
TINY = {
    "num_cases": 4,
    "synth_kwargs": {"shape": [16, 96, 96]},
    "patch_size": 32,
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 1,
    "deterministic_epochs": 1,
    "bayes_epochs": 1,
    "batch_size": 4,
    "num_samples": 2,
    "eval_samples": 3,
    "val_samples": 2,
    "val_interval": 1,
    "ensemble_size": 2,
    "device": "cpu",
}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One synthetic LIDC cache for all bundle tests."""
    return tmp_path_factory.mktemp("lidc_cache")


@pytest.fixture
def lidc_bundle(tmp_path) -> Path:
    """A copy of the LIDC bundle (configs, docs) in a temporary folder, so runs never write into the repo."""
    target = tmp_path / "lidc_sparse_bayes"
    shutil.copytree(LIDC_BUNDLE, target, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval"))
    return target


@pytest.fixture
def tiny(data_cache) -> dict:
    return dict(TINY, cache_dir=str(data_cache))
