"""Shared synthetic datasets for the data tests (written once per session, small and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_bayes.data.lidc import prepare_lidc_dataset
from monai_bayes.data.synthetic import write_lidc_cases
from monai_bayes.data.synthetic.lidc import SYNTHETIC_READER_CONVENTIONS

#: Small volumes keep the suite fast; the anatomy shrinks to fit the field of view.
TEST_SHAPE = (24, 160, 160)
NUM_CASES = 20
SEED = 5


@pytest.fixture(scope="session")
def lidc_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic LIDC cases (DICOM + XML + ground truth)."""
    root = tmp_path_factory.mktemp("lidc") / "raw"
    write_lidc_cases(root, num_cases=NUM_CASES, seed=SEED, shape=TEST_SHAPE)
    return root


@pytest.fixture(scope="session")
def lidc_cache(lidc_raw: Path) -> Path:
    """The 20 cases converted by the real reader (native spacing, 64² patches), under the conventions the
    generator writes its outlines for."""
    return prepare_lidc_dataset(
        lidc_raw,
        lidc_raw.parent / "cache",
        patch_size=64,
        seed=SEED,
        show_progress=False,
        **SYNTHETIC_READER_CONVENTIONS,
    )


@pytest.fixture(scope="session")
def lidc_small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny cases to corrupt in the bad-input tests (copy before modifying)."""
    root = tmp_path_factory.mktemp("lidc_small") / "raw"
    write_lidc_cases(root, num_cases=3, seed=11, shape=(16, 128, 128))
    return root
