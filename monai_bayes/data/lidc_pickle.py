"""The widely shared LIDC 128² crop pickle (probabilistic U-Net literature), read safely.

The file (often ``data_lidc.pickle``) is a dict ``{key: {"image": (128, 128) float, "masks": [4 ×
(128, 128)], "series_uid": str}}`` — one entry per nodule slice, four rater masks each (empty
where a rater did not mark the nodule). Python's ``pickle`` can run arbitrary code while loading,
so it is **never** loaded with ``pickle.load``: :class:`RestrictedUnpickler` allows only the
globals needed to rebuild builtin containers and plain numpy arrays, and refuses everything else
with :class:`~monai_bayes.data.errors.UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from monai_bayes.data.errors import DataFormatError, OnError, SkipReport, UnsafePickleError, check_on_error
from monai_bayes.data.lidc import DATALIST_NAME, REPORT_NAME, LidcPatch, _datalist, _safe, write_patch_cache
from monai_bayes.data.splits import assign_folds
from monai_bayes.utils.atomic import atomic_write_json, finished_cache, staging_dir

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "convert_lidc_pickle", "load_lidc_pickle", "safe_load_pickle"]

#: (module, name) pairs the unpickler may resolve: builtin containers / scalars and what numpy
#: needs to rebuild arrays, dtypes and scalars (``numpy.core`` is numpy 1's name of ``numpy._core``).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", n)
        for n in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "bytes",
            "bytearray",
            "str",
            "int",
            "float",
            "complex",
            "bool",
        )
    }
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    | {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    | {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
)
_PATIENT_RE = re.compile(r"LIDC-IDRI-\d{4}")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (containers and numpy arrays).

    Any other global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary classes —
    raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError`` and ``ValueError``) at the
    moment the pickle names it, so nothing is ever called. Object-dtype arrays are refused too.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not allowed (only builtin containers and numpy arrays are)"
            )
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core", "numpy._core", 1)
        obj = getattr(importlib.import_module(module), name)
        if obj is np.dtype:
            return _safe_dtype
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent IDs are not allowed")


def _safe_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise UnsafePickleError(f"object dtype {dt} is not allowed")
    return dt


def safe_load_pickle(source: str | os.PathLike[str] | bytes) -> Any:
    """Load a pickle (file path or bytes) with :class:`RestrictedUnpickler`."""
    if isinstance(source, bytes):
        return RestrictedUnpickler(io.BytesIO(source)).load()
    path = Path(source)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
            raise DataFormatError(f"not a readable pickle ({type(e).__name__}: {e})", path) from e


def _record(key: str, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFormatError(
            f"entry {key!r} must be a dict with image / masks / series_uid, found {type(value).__name__}", where
        )
    missing = [k for k in ("image", "masks") if k not in value]
    if missing:
        raise DataFormatError(f"entry {key!r} lacks {missing}; found keys {sorted(value)}", where)
    image = np.asarray(value["image"])
    masks = np.asarray(value["masks"])
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2 or not np.issubdtype(image.dtype, np.number):
        raise DataFormatError(
            f"entry {key!r}: image must be a numeric (H, W) array, found {image.dtype} {image.shape}", where
        )
    if masks.ndim != 3 or masks.shape[1:] != image.shape:
        raise DataFormatError(
            f"entry {key!r}: masks must be (R, {image.shape[0]}, {image.shape[1]}), found {masks.shape}", where
        )
    series = str(value.get("series_uid", "")) or None
    patient = value.get("patient_id")
    if patient is None:
        m = _PATIENT_RE.search(str(key))
        patient = m.group(0) if m else series
    if patient is None:
        raise DataFormatError(f"entry {key!r}: no patient_id, no LIDC-IDRI-NNNN in the key and no series_uid", where)
    return {
        "key": str(key),
        "image": image,
        "masks": (masks > 0).astype(np.uint8),
        "series_uid": series,
        "patient_id": str(patient),
    }


def load_lidc_pickle(
    path: str | os.PathLike[str], *, on_error: OnError = "raise", report: SkipReport | None = None
) -> list[dict[str, Any]]:
    """Read the LIDC crop pickle safely.

    Parameters
    ----------
    path
        The pickle (a dict of entries, or a list of entry dicts).
    on_error
        Malformed entries raise, or (``"skip"``) are recorded in ``report`` and left out.
    report
        Collects skipped entries.

    Returns
    -------
    list[dict]
        Per entry, in key order: ``key``, ``image`` ``(H, W)`` (as stored), ``masks`` ``(R, H, W)``
        uint8, ``series_uid``, ``patient_id`` (``LIDC-IDRI-NNNN`` from the key when present, else
        the series UID).

    Raises
    ------
    UnsafePickleError
        If the pickle names anything beyond containers and numpy arrays.
    DataFormatError
        Unreadable pickle or malformed entries.
    """
    on_error = check_on_error(on_error)
    report = report if report is not None else SkipReport()
    data = safe_load_pickle(path)
    if isinstance(data, dict):
        entries = sorted(data.items(), key=lambda kv: str(kv[0]))
    elif isinstance(data, list):
        entries = [(str(v.get("key", i)) if isinstance(v, dict) else str(i), v) for i, v in enumerate(data)]
    else:
        raise DataFormatError(f"top level must be a dict or list of entries, found {type(data).__name__}", path)
    out = []
    for key, value in entries:
        try:
            out.append(_record(str(key), value, str(path)))
        except DataFormatError as e:
            report.handle(on_error, f"{path}[{key!r}]", e)
    return out


def _to_unit(image: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Images already in [0, 1] stay; others are taken as HU and windowed."""
    image = image.astype(np.float32)
    if image.size and image.min() >= -1e-3 and image.max() <= 1.0 + 1e-3:
        return np.clip(image, 0, 1)
    lo, hi = hu_window
    return np.clip((image - lo) / (hi - lo), 0, 1).astype(np.float32)


def convert_lidc_pickle(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    num_folds: int = 4,
    seed: int = 0,
    hu_window: tuple[float, float] = (-1000.0, 400.0),
    on_error: OnError = "raise",
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Convert the crop pickle to the patch cache of :func:`~monai_bayes.data.lidc.prepare_lidc_dataset`.

    Images already in [0, 1] are kept; otherwise they are taken as HU and mapped with
    ``hu_window``. Folds are patient-level (patient from the key, else the series UID).

    Returns
    -------
    Path
        ``cache_dir/datalist.json`` (same schema as the raw-DICOM conversion; ``nodule_id`` is the
        pickle key, ``slice_index`` / ``z_mm`` are ``None``).
    """
    from monai_bayes.utils.progress import progress_bar

    path, cache_dir = Path(path), Path(cache_dir)
    config = {
        "kind": "lidc-pickle",
        "version": 1,
        "source": str(path.resolve()),
        "num_folds": int(num_folds),
        "seed": int(seed),
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
    }
    if not overwrite and (done := finished_cache(cache_dir, DATALIST_NAME)) is not None:
        with open(done, encoding="utf-8") as f:
            if json.load(f).get("config") == config:
                return done
        overwrite = (cache_dir / "patches").is_dir()
    report = SkipReport()
    records = load_lidc_pickle(path, on_error=on_error, report=report)
    if not records:
        raise DataFormatError("no usable entries", path)
    num_raters = max(len(r["masks"]) for r in records)
    with staging_dir(cache_dir, overwrite=overwrite) as tmp:
        items = []
        for i, r in enumerate(
            progress_bar(records, desc="LIDC pickle", unit="patch", enabled=None if show_progress else False)
        ):
            label = np.zeros((num_raters, *r["image"].shape), dtype=np.uint8)
            label[: len(r["masks"])] = r["masks"]
            patch = LidcPatch(
                image=_to_unit(r["image"], hu_window)[None],
                label=label,
                meta={
                    "patient_id": r["patient_id"],
                    "series_uid": r["series_uid"] or r["patient_id"],
                    "nodule_id": f"{_safe(r['key'])}_{i:06d}",
                    "slice_index": None,
                    "z_mm": None,
                    "key": r["key"],
                    "raters": [bool(m.any()) for m in label],
                    "file_stem": f"{i:06d}",
                },
            )
            items += write_patch_cache(tmp, [patch])
        assign_folds(items, num_folds=num_folds, seed=seed)
        atomic_write_json(tmp / REPORT_NAME, report.to_dict())
        atomic_write_json(tmp / DATALIST_NAME, _datalist("lidc-pickle", config, items, num_raters))
    return cache_dir / DATALIST_NAME
