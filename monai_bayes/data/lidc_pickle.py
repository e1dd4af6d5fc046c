"""The widely shared LIDC 128² crop pickle (probabilistic U-Net literature), read safely.

The file (often ``data_lidc.pickle``) is a dict ``{key: {"image": (128, 128) float, "masks": [4 ×
(128, 128)], "series_uid": str}}`` — one entry per nodule slice, four rater masks each (empty
where a rater did not mark the nodule). Python's ``pickle`` can run arbitrary code while loading,
so it is **never** loaded with ``pickle.load``: :class:`RestrictedUnpickler` allows only the
globals needed to rebuild builtin containers and plain numpy arrays, and refuses everything else
with :class:`~monai_bayes.data.errors.UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import builtins
import importlib
import io
import os
import pickle
import pickletools
import re
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np

from monai_bayes.data.cache import DATALIST_NAME, reusable_cache, safe_name, stale_cache_of_ours
from monai_bayes.data.errors import DataFormatError, OnError, SkipReport, UnsafePickleError, check_on_error
from monai_bayes.data.lidc import REPORT_NAME, LidcPatch, patch_datalist, write_patch_cache
from monai_bayes.data.splits import assign_folds
from monai_bayes.utils.atomic import atomic_write_json, staging_dir

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_ARRAY_ELEMENTS",
    "RestrictedUnpickler",
    "convert_lidc_pickle",
    "load_lidc_pickle",
    "safe_load_pickle",
]

#: Largest array the pickle may hold (elements): the documented layout is a (128, 128) image and
#: four (128, 128) masks per entry; this leaves room for 8 raters at 512² and refuses anything that
#: is not a crop (e.g. a 6000² "image").
MAX_ARRAY_ELEMENTS = 8 * 512 * 512

#: (module, name) pairs the unpickler may resolve: builtin containers / scalars and what numpy
#: needs to rebuild arrays, dtypes and scalars (``numpy.core`` is numpy 1's name of ``numpy._core``).
#: None of them is handed to the pickle as is where calling it could allocate memory of the
#: pickle's choosing: ``numpy.ndarray`` only marks an array for :func:`_reconstruct`, which returns
#: a placeholder filled from the pickled bytes with size checks (``_ArrayState``); ``_frombuffer``
#: and ``bytes`` / ``bytearray`` (``bytes(2**50)``!) are wrapped the same way.
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
            "float",
            "complex",
            "bool",
            "int",
        )
    }
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    | {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    | {(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")}
)
_PATIENT_RE = re.compile(r"LIDC-IDRI-\d{4}")
#: Longest str / bytes a builtin constructor may produce from a pickle (a crop entry's fields are short).
_MAX_BUILTIN_LENGTH = 1 << 20


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` inside the pickle: only :func:`_reconstruct` accepts it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("pickle calls numpy.ndarray directly (uninitialised memory of any size); refused")


_NDARRAY = _NdarrayMarker()


class _ArrayState:
    """Placeholder returned by :func:`_reconstruct`; numpy's pickle protocol then calls
    :meth:`__setstate__` with ``(version, shape, dtype, is_fortran, raw bytes)``.
    """

    array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError(f"array state must be a 4- or 5-tuple, got {type(state).__name__}")
        shape, dtype, is_fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if is_fortran else "C")


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise UnsafePickleError(f"array shape must be a tuple of at most 8 non-negative ints, got {shape!r}"[:200])
    count = 1
    for n in shape:
        count *= n
    if count > MAX_ARRAY_ELEMENTS:
        raise UnsafePickleError(
            f"array of shape {shape} has {count} elements, more than the {MAX_ARRAY_ELEMENTS} a crop entry may hold"
        )
    return shape


_DTYPE_NAME = re.compile(r"[?bBhHiIlLqQefdgFDG]|[biufc][0-9]{1,2}|[SUV][0-9]{1,4}")


class _DtypeSpec:
    """Stands for a pickled ``numpy.dtype``: numpy's ``dtype.__setstate__`` trusts its state (element
    size, alignment, fields) and a damaged state corrupts memory, so the state is checked here and
    the dtype built from a plain type code and a byte order only.
    """

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(name, str) or not _DTYPE_NAME.fullmatch(name):
            raise UnsafePickleError(
                f"dtype {name!r} is not allowed: only plain numeric / string type codes (no object dtype)"[:200]
            )
        self.name = name
        self.byteorder: str | None = None
        self.elsize = -1

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise UnsafePickleError(f"unexpected dtype state {state!r}"[:200])
        _, byteorder, subarray, names, fields, elsize, alignment, flags = state[:8]
        if byteorder not in ("<", ">", "|", "=") or (subarray, names, fields) != (None, None, None):
            raise UnsafePickleError(f"only plain (unstructured) dtypes are allowed, got state {state!r}"[:200])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (elsize, alignment, flags)):
            raise UnsafePickleError(f"unexpected dtype state {state!r}"[:200])
        self.byteorder, self.elsize = byteorder, elsize

    def resolve(self) -> np.dtype:
        """The checked :class:`numpy.dtype`."""
        dt = np.dtype(self.name)
        if self.byteorder in ("<", ">") and dt.itemsize > 1:
            dt = dt.newbyteorder(cast(Literal["<", ">"], self.byteorder))
        if self.elsize not in (-1, dt.itemsize) or dt.itemsize == 0:
            raise UnsafePickleError(f"dtype {self.name} with element size {self.elsize} is not allowed")
        return dt


def _as_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, _DtypeSpec):
        return dtype.resolve()
    raise UnsafePickleError(f"array dtype must be a pickled numpy dtype, got {type(dtype).__name__}")


def _scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` from a checked dtype and exactly ``itemsize`` bytes."""
    dt = _as_dtype(dtype)
    if isinstance(data, str):
        data = data.encode("latin-1")
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes) or len(data) != dt.itemsize or dt.itemsize == 0:
        raise UnsafePickleError(f"scalar of {dt} needs {dt.itemsize} bytes of data")
    return np.frombuffer(data, dtype=dt)[0].copy()


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: Literal["C", "F"]) -> np.ndarray:
    """An array rebuilt from the pickle's own bytes: nothing is allocated beyond what the file holds."""
    shape = _check_shape(shape)
    dtype = _as_dtype(dtype)
    if dtype.hasobject or dtype.itemsize == 0:
        raise UnsafePickleError(f"array dtype must be a plain numpy dtype, got {dtype!r}"[:200])
    if isinstance(raw, str):  # protocol 0/1 pickles store the bytes as a latin-1 string
        raw = raw.encode("latin-1")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise UnsafePickleError(f"array data must be bytes, got {type(raw).__name__}")
    # an immutable copy: a numpy view exporting a mutable buffer that a reference cycle (e.g. an
    # error's traceback) outlives crashes the interpreter when the collector frees the buffer first
    raw = bytes(raw)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != need:
        raise UnsafePickleError(f"array data holds {len(raw)} bytes; shape {shape} of {dtype} needs {need}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayState:
    if subtype is not _NDARRAY:
        raise UnsafePickleError("numpy _reconstruct of anything but a plain ndarray is not allowed")
    return _ArrayState()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Literal["C", "F"]) -> np.ndarray:
    return _array_from_bytes(buf, dtype, shape, "F" if order == "F" else "C")


def _bounded(kind: type) -> Any:
    """``bytes`` / ``bytearray`` / ``str`` / ``int`` refusing huge objects built from a number or a long string."""

    def build(*args: Any, **kwargs: Any) -> Any:
        sized = args and isinstance(args[0], int) and not isinstance(args[0], bool) and kind in (bytes, bytearray)
        if sized and not 0 <= args[0] <= _MAX_BUILTIN_LENGTH:
            raise UnsafePickleError(f"pickle asks for {kind.__name__}({args[0]}); refused")
        if args and isinstance(args[0], str | bytes | bytearray) and len(args[0]) > _MAX_BUILTIN_LENGTH:
            raise UnsafePickleError(f"pickle asks for {kind.__name__} of a {len(args[0])}-character value; refused")
        return kind(*args, **kwargs)

    return build


_REPLACEMENTS: dict[str, Any] = {
    "ndarray": _NDARRAY,
    "dtype": _DtypeSpec,
    "scalar": _scalar,
    "_reconstruct": _reconstruct,
    "_frombuffer": _frombuffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (containers and numpy arrays).

    Any other global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, arbitrary classes —
    raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError`` and ``ValueError``) at the
    moment the pickle names it, so nothing is ever called. Arrays are rebuilt from the pickle's
    bytes with shape, dtype and size checks (at most :data:`MAX_ARRAY_ELEMENTS` elements); object
    dtypes and direct ``ndarray(...)`` calls are refused. Use :func:`safe_load_pickle`, which also
    replaces the placeholders by the arrays.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not allowed (only builtin containers and numpy arrays are)"
            )
        if name in _REPLACEMENTS:
            return _REPLACEMENTS[name]
        if module == "builtins" and name in ("bytes", "bytearray", "str", "int"):
            return _bounded(getattr(builtins, name))
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core", "numpy._core", 1)
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent IDs are not allowed")


#: Opcodes a crop pickle never needs: out-of-band buffers (protocol 5), persistent ids, the copyreg
#: extension registry. (In-band protocol-5 arrays use BYTEARRAY8, whose length the scan checks.)
_REFUSED_OPCODES = frozenset({"NEXT_BUFFER", "READONLY_BUFFER", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4"})


class _CappedReader(io.RawIOBase):
    """Reads from ``f`` but never asks for more than the ``size - position`` bytes that exist, so a
    forged length field cannot make the reader allocate (``f.read(2**62)``).
    """

    def __init__(self, f: Any, size: int) -> None:
        self.f, self.remaining, self.size = f, size, size

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size - self.remaining

    def read(self, n: int = -1) -> bytes:
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.f.read(n)
        self.remaining -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self.f.readline(self.remaining if size is None or size < 0 else min(size, self.remaining))
        self.remaining -= len(line)
        return line


def _prescan(f: Any, size: int) -> None:
    """Walk the opcodes once before unpickling: refuse :data:`_REFUSED_OPCODES` and out-of-sequence memo
    indices (``LONG_BINPUT 2**32-1`` makes the C unpickler allocate a 32 GiB memo), and fail
    (``ValueError``) on any length field that claims more bytes than the file holds, before the C
    unpickler allocates them.
    """
    memo = 0
    for op, arg, pos in pickletools.genops(cast(IO[bytes], _CappedReader(f, size))):  # reads like a binary file
        if op.name in _REFUSED_OPCODES:
            raise UnsafePickleError(f"pickle opcode {op.name} at byte {pos} is not allowed in a crop pickle")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            # a pickler numbers memo slots in order; the C unpickler sizes its memo to the index asked for
            if not isinstance(arg, int) or not 0 <= arg <= memo:
                raise UnsafePickleError(f"memo index {arg} at byte {pos} is out of sequence (expected <= {memo})")
            memo += 1
        elif op.name == "MEMOIZE":
            memo += 1


def _resolve_arrays(obj: Any, depth: int = 0) -> Any:
    """Replace every :class:`_ArrayState` placeholder in the loaded containers by its array."""
    if depth > 64:
        raise UnsafePickleError("containers nested more than 64 levels deep")
    if isinstance(obj, _ArrayState):
        if obj.array is None:
            raise UnsafePickleError("array placeholder without data (no __setstate__)")
        return obj.array
    if isinstance(obj, _DtypeSpec):
        return obj.resolve()
    if isinstance(obj, dict):
        return type(obj)((_resolve_arrays(k, depth + 1), _resolve_arrays(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_resolve_arrays(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve_arrays(v, depth + 1) for v in obj)
    if isinstance(obj, set | frozenset):
        return type(obj)(_resolve_arrays(v, depth + 1) for v in obj)
    return obj


def safe_load_pickle(source: str | os.PathLike[str] | bytes) -> Any:
    """Load a pickle (file path or bytes) with :class:`RestrictedUnpickler`.

    Parameters
    ----------
    source : str or os.PathLike or bytes
        The pickle file, or its content.

    Returns
    -------
    Any
        The unpickled containers, numpy arrays in place of the pickled ones.

    Raises
    ------
    UnsafePickleError
        A global outside :data:`ALLOWED_GLOBALS`, an object dtype, an array or buffer beyond the
        size caps, a direct ``ndarray`` call.
    DataFormatError
        Any other failure (truncated file, huge length fields, ``MemoryError``, over-long ints,
        nesting too deep ...), naming the file.
    """
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            _prescan(f, size)
            f.seek(0)
            data = RestrictedUnpickler(f).load()
        return _resolve_arrays(data)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{label}: {e}") from None
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror or e})", label) from None
    except (Exception, RecursionError) as e:  # pickle raises many types on damaged / hostile input
        raise DataFormatError(f"not a readable pickle ({type(e).__name__}: {str(e)[:200]})", label) from None


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
    if not overwrite and (done := reusable_cache(cache_dir, config)) is not None:
        return done
    overwrite = overwrite or stale_cache_of_ours(cache_dir, "patches")
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
                    "nodule_id": f"{safe_name(r['key'])}_{i:06d}",
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
        atomic_write_json(tmp / DATALIST_NAME, patch_datalist("lidc-pickle", config, items, num_raters))
    return cache_dir / DATALIST_NAME
