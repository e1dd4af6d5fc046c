"""Synthetic data written in the real on-disk formats — the built-in default data (seeded).

* :func:`write_lidc_cases` — CT series (DICOM) + LIDC reader XML with four simulated readers;
* :func:`write_isic_cases` — ISIC 2018 Task 1 JPEG / PNG folders;
* :func:`write_chestmnist_npz` — a MedMNIST ChestMNIST ``.npz`` with long-tailed labels;
* ``prepare_synthetic_*`` — write, then convert with the *real* readers into the training cache
  (what the bundles call when no real data is configured).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai_bayes.data.synthetic.chestmnist import (
    CHESTMNIST_CLASS_COUNTS,
    CHESTMNIST_PREVALENCE,
    fit_label_copula,
    sample_chestmnist_labels,
    write_chestmnist_npz,
)
from monai_bayes.data.synthetic.isic import make_isic_image, write_isic_cases
from monai_bayes.data.synthetic.lidc import ReaderModel, SyntheticLidcCase, load_lidc_manifest, write_lidc_cases

__all__ = [
    "CHESTMNIST_CLASS_COUNTS",
    "CHESTMNIST_PREVALENCE",
    "ReaderModel",
    "SyntheticLidcCase",
    "fit_label_copula",
    "load_lidc_manifest",
    "make_isic_image",
    "prepare_synthetic_chestmnist",
    "prepare_synthetic_isic",
    "prepare_synthetic_lidc",
    "sample_chestmnist_labels",
    "write_chestmnist_npz",
    "write_isic_cases",
    "write_lidc_cases",
]


def prepare_synthetic_lidc(
    cache_dir: str | os.PathLike[str],
    num_cases: int = 20,
    seed: int = 0,
    *,
    synth_kwargs: dict[str, Any] | None = None,
    **prepare_kwargs: Any,
) -> Path:
    """Write synthetic LIDC cases and convert them with the real reader.

    Parameters
    ----------
    cache_dir
        Gets ``lidc_raw/`` (DICOM + XML + ground truth, :func:`write_lidc_cases`) and
        ``lidc_patches/`` (the patch cache, :func:`~monai_bayes.data.lidc.prepare_lidc_dataset`).
        Both steps reuse finished output with the same settings.
    num_cases, seed
        Number of patients and seed (also the fold seed unless ``seed`` is in ``prepare_kwargs``).
    synth_kwargs
        Further arguments of :func:`write_lidc_cases` (e.g. ``shape``).
    **prepare_kwargs
        Arguments of :func:`~monai_bayes.data.lidc.prepare_lidc_dataset` (``patch_size``,
        ``pixel_spacing_mm``, ``num_folds``, ``show_progress`` …). The reader conventions default
        to :data:`~monai_bayes.data.synthetic.lidc.SYNTHETIC_READER_CONVENTIONS` (those the
        generator's outlines are written for), not to pylidc's.

    Returns
    -------
    Path
        The datalist JSON of the patch cache.
    """
    from monai_bayes.data.lidc import prepare_lidc_dataset
    from monai_bayes.data.synthetic.lidc import SYNTHETIC_READER_CONVENTIONS

    root = Path(cache_dir)
    write_lidc_cases(root / "lidc_raw", num_cases, seed, **(synth_kwargs or {}))
    prepare_kwargs.setdefault("seed", seed)
    for key, value in SYNTHETIC_READER_CONVENTIONS.items():
        prepare_kwargs.setdefault(key, value)
    return prepare_lidc_dataset(root / "lidc_raw", root / "lidc_patches", **prepare_kwargs)


def prepare_synthetic_isic(
    cache_dir: str | os.PathLike[str],
    num_cases: int = 40,
    seed: int = 0,
    *,
    synth_kwargs: dict[str, Any] | None = None,
    **prepare_kwargs: Any,
) -> Path:
    """Write synthetic ISIC data (``cache_dir/isic_raw``) and convert it with
    :func:`~monai_bayes.data.isic.prepare_isic_dataset` (``cache_dir/isic_cache``); returns the
    datalist path.
    """
    from monai_bayes.data.isic import prepare_isic_dataset

    root = Path(cache_dir)
    write_isic_cases(root / "isic_raw", num_cases, seed, **(synth_kwargs or {}))
    prepare_kwargs.setdefault("seed", seed)
    return prepare_isic_dataset(root / "isic_raw", root / "isic_cache", **prepare_kwargs)


def prepare_synthetic_chestmnist(
    cache_dir: str | os.PathLike[str],
    num_train: int = 2000,
    num_val: int = 300,
    num_test: int = 600,
    *,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """Write (once) ``cache_dir/chestmnist_synth_<size>_s<seed>_<n>-<n>-<n>.npz`` and return its
    path; an existing file of that name is validated and reused.
    """
    from monai_bayes.data.chestmnist import load_chestmnist

    path = Path(cache_dir) / f"chestmnist_synth_{size}_s{seed}_{num_train}-{num_val}-{num_test}.npz"
    if path.is_file():
        load_chestmnist(path)
        return path
    return write_chestmnist_npz(path, num_train, num_val, num_test, size=size, seed=seed)
