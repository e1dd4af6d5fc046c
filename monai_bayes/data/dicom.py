"""Generic, validating reader for single-frame DICOM image series (CT first of all).

:func:`read_dicom_series` turns a folder, a list of files or a list of in-memory pydicom datasets
(e.g. retrieved over DICOMweb) into a :class:`DicomVolume`: the rescaled volume (HU for CT) as a
``(Z, Y, X)`` float32 array with slices sorted by their position along the slice normal, the
geometry (spacing, origin, direction cosines, affine) and the per-slice identifiers (SOP Instance
UIDs, datasets) in the same order.

Every check that fails raises :class:`~monai_bayes.data.errors.DicomSeriesError` (a ``ValueError``)
naming the file and what was expected: unreadable / truncated file, missing geometry tags, mixed
series, unexpected modality, multi-frame objects, inconsistent size / orientation / pixel spacing,
duplicate positions, missing slices (gaps along the normal), uneven spacing and tilted stacks.

:func:`index_dicom_tree` reads only the headers of every DICOM file under a folder and groups the
files by Series Instance UID (used to pair LIDC XML files with their CT series).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian

from monai_bayes.data.errors import DicomSeriesError, SkipReport

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DicomSeriesIndex",
    "DicomVolume",
    "index_dicom_tree",
    "is_dicom_file",
    "read_dicom_series",
]

logger = logging.getLogger(__name__)

#: Slice-spacing tolerance: a step counts as regular if it is within max(ABS, REL · median step).
SPACING_ABS_TOL_MM = 0.01
SPACING_REL_TOL = 0.02
#: Maximal difference between direction cosines of two slices of one series.
ORIENTATION_TOL = 1e-3
#: Default largest volume :func:`read_dicom_series` allocates (Z · Y · X voxels): 512 × 512 × 2048,
#: 2 GiB as float32. Checked from the headers, before any pixel memory is allocated.
DEFAULT_MAX_VOXELS = 512 * 512 * 2048
#: Errors a damaged header can raise while pydicom parses a value lazily: pydicom raises many types
#: (ValueError, struct errors, its own BytesLengthException, NotImplementedError for unknown VRs ...).
_HEADER_ERRORS = (Exception,)

_HEADER_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "Modality",
    "ImagePositionPatient",
    "InstanceNumber",
    "NumberOfFrames",
)


@dataclass
class DicomVolume:
    """A validated image series as a volume.

    Attributes
    ----------
    array
        ``(Z, Y, X)`` float32: slice, row, column. Stored values after the modality LUT (rescale
        slope / intercept), i.e. Hounsfield units for CT. Slice ``0`` has the smallest position
        along :attr:`normal`.
    spacing
        ``(dz, dy, dx)`` in mm: distance between slice centres (from the positions, not
        SliceThickness), between rows (PixelSpacing[0]) and between columns (PixelSpacing[1]).
    origin
        ``(3,)`` ImagePositionPatient of slice 0 (centre of its first pixel), LPS patient mm.
    direction
        ``(3, 3)`` unit vectors as *columns*: the LPS direction of increasing column index ``x``
        (ImageOrientationPatient[:3]), row index ``y`` (IOP[3:]) and slice index ``z`` (normal).
    positions
        ``(Z, 3)`` ImagePositionPatient of every slice, LPS mm, in array order.
    sop_instance_uids
        SOP Instance UID of every slice, in array order.
    datasets
        The pydicom datasets in array order. Read from files they carry no PixelData unless
        ``keep_pixel_data=True``; in-memory datasets are the caller's own objects.
    files
        The file of each slice in array order (``None`` for in-memory datasets).
    study_instance_uid, series_instance_uid, frame_of_reference_uid, patient_id, modality
        Shared identifiers of the series (``None`` when absent).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    positions: np.ndarray
    sop_instance_uids: tuple[str, ...]
    datasets: tuple[Dataset, ...]
    files: tuple[Path | None, ...]
    study_instance_uid: str | None
    series_instance_uid: str
    frame_of_reference_uid: str | None
    patient_id: str | None
    modality: str | None
    ignored_files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` size of :attr:`array`."""
        return tuple(self.array.shape)

    @property
    def normal(self) -> np.ndarray:
        """``(3,)`` unit slice normal (row direction × column direction), LPS."""
        return self.direction[:, 2]

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` matrix mapping a homogeneous voxel index ``(x, y, z, 1)`` (column, row, slice;
        note: the reverse of the array's axis order) to LPS patient coordinates in mm.
        """
        dz, dy, dx = self.spacing
        a = np.eye(4)
        a[:3, :3] = self.direction * np.array([dx, dy, dz])[None, :]
        a[:3, 3] = self.origin
        return a

    @property
    def z_positions(self) -> np.ndarray:
        """``(Z,)`` patient z coordinate (ImagePositionPatient[2]) of each slice in mm; this is what
        LIDC XML calls ``imageZposition``.
        """
        return self.positions[:, 2]

    def index_of_sop_uid(self, uid: str) -> int | None:
        """Slice index of a SOP Instance UID, or ``None`` if the series has no such instance."""
        try:
            return self.sop_instance_uids.index(uid.strip())
        except ValueError:
            return None

    def index_of_z(self, z: float, tolerance_mm: float | None = None) -> int | None:
        """Index of the slice whose patient z is nearest to ``z`` (mm), or ``None`` if the nearest
        is further than ``tolerance_mm`` (default: a quarter of the slice spacing).
        """
        tol = 0.25 * self.spacing[0] if tolerance_mm is None else tolerance_mm
        dist = np.abs(self.z_positions - float(z))
        i = int(np.argmin(dist))
        return i if dist[i] <= tol else None


@dataclass
class DicomSeriesIndex:
    """Files of one series found by :func:`index_dicom_tree` (headers only, unsorted)."""

    series_instance_uid: str
    files: list[Path] = field(default_factory=list)
    modality: str | None = None
    patient_id: str | None = None
    study_instance_uid: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uids: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# file discovery


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a DICOM Part 10 file (``DICM`` magic at byte 128) or ends in ``.dcm``."""
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _list_dicom_files(folder: Path, recursive: bool) -> tuple[list[Path], list[Path]]:
    """Split the files of ``folder`` into (DICOM candidates, ignored others); hidden files skipped."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in it if p.is_file() and not p.name.startswith("."))
    dicom: list[Path] = []
    other: list[Path] = []
    for p in files:
        (dicom if is_dicom_file(p) else other).append(p)
    return dicom, other


def index_dicom_tree(
    root: str | os.PathLike[str], report: SkipReport | None = None, show_progress: bool = False
) -> dict[str, DicomSeriesIndex]:
    """Group every DICOM file under ``root`` by Series Instance UID, reading headers only.

    Parameters
    ----------
    root
        Folder searched recursively.
    report
        Unreadable files are recorded here as skipped; without a report they raise.
    show_progress
        Show a progress bar while reading headers (on a terminal only).

    Returns
    -------
    dict
        ``{series_uid: DicomSeriesIndex}``.
    """
    from monai_bayes.utils.progress import progress_bar

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    files, _ = _list_dicom_files(root, recursive=True)
    out: dict[str, DicomSeriesIndex] = {}
    for p in progress_bar(files, desc="indexing DICOM", unit="file", enabled=None if show_progress else False):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
            uid = str(ds.SeriesInstanceUID)
        except Exception as e:  # pydicom raises many types on corrupt input
            err = DicomSeriesError(f"cannot read DICOM header ({type(e).__name__}: {e})", p)
            if report is None:
                raise err from e
            report.skip(p, err)
            continue
        entry = out.setdefault(uid, DicomSeriesIndex(series_instance_uid=uid))
        entry.files.append(p)
        entry.sop_instance_uids.append(str(ds.get("SOPInstanceUID", "")))
        entry.modality = entry.modality or ds.get("Modality")
        entry.patient_id = entry.patient_id or ds.get("PatientID")
        entry.study_instance_uid = entry.study_instance_uid or ds.get("StudyInstanceUID")
        entry.sop_class_uid = entry.sop_class_uid or ds.get("SOPClassUID")
    return out


# ---------------------------------------------------------------------------------------------
# reading and validation


def _read_one(p: Path) -> Dataset:
    try:
        return pydicom.dcmread(p)
    except InvalidDicomError as e:
        raise DicomSeriesError(f"not a valid DICOM Part 10 file ({e})", p) from e
    except Exception as e:
        raise DicomSeriesError(f"cannot read DICOM file, corrupt or truncated? ({type(e).__name__}: {e})", p) from e


def _label(src: Path | None, ds: Dataset) -> str:
    return str(src) if src is not None else f"dataset SOPInstanceUID={ds.get('SOPInstanceUID', '?')}"


def _require(ds: Dataset, keyword: str, where: str, n: int | None = None) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DicomSeriesError(f"missing required attribute {keyword}", where)
    if n is not None and len(value) != n:
        raise DicomSeriesError(f"{keyword} must have {n} values, found {len(value)}: {value}", where)
    return value


def _collect(
    sources: str | os.PathLike[str] | Dataset | Iterable[str | os.PathLike[str] | Dataset], recursive: bool
) -> tuple[list[tuple[Path | None, Dataset | None]], list[Path]]:
    """Normalise the accepted inputs to (file, in-memory dataset) pairs plus ignored files."""
    if isinstance(sources, Dataset):
        sources = [sources]
    elif isinstance(sources, str | os.PathLike):
        p = Path(sources)
        if p.is_dir():
            files, ignored = _list_dicom_files(p, recursive)
            if not files:
                raise DicomSeriesError("folder holds no DICOM files", p)
            return [(f, None) for f in files], ignored
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        sources = [p]
    items: list[tuple[Path | None, Dataset | None]] = []
    for s in sources:
        if isinstance(s, Dataset):
            items.append((None, s))
        elif isinstance(s, str | os.PathLike):
            if not Path(s).is_file():
                raise FileNotFoundError(f"{s}: no such file")
            items.append((Path(s), None))
        else:
            raise TypeError(f"sources must hold paths or pydicom Datasets, got {type(s).__name__}")
    if not items:
        raise DicomSeriesError("no DICOM input given")
    return items, []


def _check_modality(ds: Dataset, expected: str | Sequence[str] | None, where: str) -> None:
    if expected is None:
        return
    allowed = {expected} if isinstance(expected, str) else set(expected)
    modality = ds.get("Modality")
    if modality not in allowed:
        raise DicomSeriesError(f"expected Modality {' or '.join(sorted(allowed))}, found {modality!r}", where)


def _geometry(ds: Dataset, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    iop = np.asarray(_require(ds, "ImageOrientationPatient", where, 6), dtype=float)
    ipp = np.asarray(_require(ds, "ImagePositionPatient", where, 3), dtype=float)
    ps = np.asarray(_require(ds, "PixelSpacing", where, 2), dtype=float)
    rows, cols = int(_require(ds, "Rows", where)), int(_require(ds, "Columns", where))
    if np.any(ps <= 0):
        raise DicomSeriesError(f"PixelSpacing must be positive, found {list(ps)}", where)
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-2 or abs(np.linalg.norm(c) - 1) > 1e-2 or abs(r @ c) > 1e-2:
        raise DicomSeriesError(f"ImageOrientationPatient must be two orthonormal vectors, found {list(iop)}", where)
    return iop, ipp, ps, (rows, cols)


def _check_positions(pos: np.ndarray, labels: list[str], spacing_hint: float | None) -> float:
    """Validate sorted positions along the normal; return the slice spacing (mm)."""
    if len(pos) == 1:
        return float(spacing_hint) if spacing_hint else 1.0
    d = np.diff(pos)
    for i in np.flatnonzero(d < SPACING_ABS_TOL_MM):
        raise DicomSeriesError(
            f"duplicate slice position {pos[i]:.3f} mm along the normal (also in {labels[i]}); "
            "expected one slice per position",
            labels[i + 1],
        )
    step = float(np.median(d))
    tol = max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * step)
    for i in np.flatnonzero(np.abs(d - step) > tol):
        ratio = d[i] / step
        k = round(ratio)
        if k >= 2 and abs(ratio - k) * step <= tol:
            msg = (
                f"missing {k - 1} slice(s) between positions {pos[i]:.3f} and {pos[i + 1]:.3f} mm "
                f"(expected a slice every {step:.3f} mm; gap between {labels[i]} and {labels[i + 1]})"
            )
        else:
            msg = (
                f"inconsistent slice spacing: {d[i]:.3f} mm between {labels[i]} and {labels[i + 1]}, "
                f"expected {step:.3f} ± {tol:.3f} mm"
            )
        raise DicomSeriesError(msg)
    return step


def read_dicom_series(
    sources: str | os.PathLike[str] | Dataset | Iterable[str | os.PathLike[str] | Dataset],
    expected_modality: str | Sequence[str] | None = "CT",
    *,
    recursive: bool = False,
    keep_pixel_data: bool = False,
    dtype: Any = np.float32,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
) -> DicomVolume:
    """Read and validate one single-frame DICOM series into a :class:`DicomVolume`.

    Parameters
    ----------
    sources
        A folder (its DICOM files; other files such as LIDC ``.xml`` are ignored), one file, or a
        sequence of files and/or in-memory ``pydicom.Dataset`` objects (e.g. from DICOMweb).
    expected_modality
        Required Modality (``"CT"`` by default; a sequence allows several; ``None`` accepts any).
    recursive
        Search sub-folders of a folder source as well.
    keep_pixel_data
        Keep PixelData in the datasets read from files (default drops it after decoding to save
        memory; the decoded values are in :attr:`DicomVolume.array`).
    dtype
        Output dtype of the volume (float32 default).
    max_voxels
        Largest volume accepted (Z · Y · X), checked from the headers before allocating; ``None``
        for no limit.

    Returns
    -------
    DicomVolume
        Volume ``(Z, Y, X)`` after the modality LUT (HU for CT), slices sorted along the normal.

    Raises
    ------
    DicomSeriesError
        (a ``ValueError``) naming the file and what was expected, for: unreadable / corrupt /
        truncated files, missing geometry attributes, mixed Series Instance UIDs, a modality other
        than ``expected_modality``, multi-frame objects, differing Rows/Columns, orientation or
        pixel spacing, duplicate positions, missing slices, uneven spacing, tilted (sheared) stacks,
        pixel data shorter than Rows x Columns needs, a volume above ``max_voxels``, non-finite
        values after the modality LUT (e.g. ``RescaleSlope`` NaN).
    FileNotFoundError
        If a path does not exist.
    """
    items, ignored = _collect(sources, recursive)
    try:
        return _read_series(items, ignored, expected_modality, keep_pixel_data, dtype, max_voxels)
    except DicomSeriesError:
        raise
    except Exception as e:  # a damaged value pydicom parses lazily somewhere below: still a data error
        raise DicomSeriesError(f"unreadable DICOM input ({type(e).__name__}: {e})") from e


def _read_series(
    items: list[tuple[Path | None, Dataset | None]],
    ignored: list[Path],
    expected_modality: str | Sequence[str] | None,
    keep_pixel_data: bool,
    dtype: Any,
    max_voxels: int | None,
) -> DicomVolume:
    """:func:`read_dicom_series` on collected inputs, without the last-resort error mapping."""
    datasets: list[Dataset] = []
    files: list[Path | None] = []
    for path, ds in items:
        datasets.append(_read_one(cast(Path, path)) if ds is None else ds)  # _collect: no dataset => a file
        files.append(path)
    labels = [_label(f, d) for f, d in zip(files, datasets)]

    # --- shared identity and per-slice geometry
    ref = datasets[0]
    try:
        series_uid = str(_require(ref, "SeriesInstanceUID", labels[0]))
    except _HEADER_ERRORS as e:
        raise DicomSeriesError(f"unreadable SeriesInstanceUID ({type(e).__name__}: {e})", labels[0]) from e
    iops, ipps = [], []
    iop0 = ps0 = size0 = None
    for ds, lab in zip(datasets, labels):
        try:
            _check_modality(ds, expected_modality, lab)
            uid = str(_require(ds, "SeriesInstanceUID", lab))
            if uid != series_uid:
                raise DicomSeriesError(
                    f"mixed series: expected SeriesInstanceUID {series_uid} (of {labels[0]}), found {uid}", lab
                )
            _require(ds, "SOPInstanceUID", lab)
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                raise DicomSeriesError("multi-frame object; expected one slice per instance", lab)
            iop, ipp, ps, size = _geometry(ds, lab)
        except DicomSeriesError:
            raise
        except _HEADER_ERRORS as e:
            raise DicomSeriesError(f"unreadable header value ({type(e).__name__}: {e})", lab) from e
        if iop0 is None:
            iop0, ps0, size0 = iop, ps, size
        assert iop0 is not None and ps0 is not None  # set from the first slice
        if size != size0:
            raise DicomSeriesError(f"Rows x Columns {size} differs from {size0} of {labels[0]}", lab)
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise DicomSeriesError(f"ImageOrientationPatient {list(iop)} differs from {list(iop0)} of {labels[0]}", lab)
        if np.max(np.abs(ps - ps0)) > 1e-4 * float(np.max(ps0)) + 1e-6:
            raise DicomSeriesError(f"PixelSpacing {list(ps)} differs from {list(ps0)} of {labels[0]}", lab)
        iops.append(iop)
        ipps.append(ipp)
    assert iop0 is not None and ps0 is not None and size0 is not None
    row_dir, col_dir = iop0[:3] / np.linalg.norm(iop0[:3]), iop0[3:] / np.linalg.norm(iop0[3:])
    normal = np.cross(row_dir, col_dir)
    ipp_arr = np.asarray(ipps)

    # --- sort along the normal, check the stack
    proj = ipp_arr @ normal
    order = np.argsort(proj, kind="stable")
    pos = proj[order]
    sorted_labels = [labels[i] for i in order]
    if not np.all(np.isfinite(ipp_arr)) or not np.all(np.isfinite(np.asarray(iops))) or not np.all(np.isfinite(ps0)):
        raise DicomSeriesError("non-finite ImagePositionPatient / ImageOrientationPatient / PixelSpacing", labels[0])
    try:
        hint = ref.get("SpacingBetweenSlices") or ref.get("SliceThickness")
        hint_mm = float(hint) if hint else None
    except _HEADER_ERRORS:
        hint_mm = None
    if hint_mm is not None and not (np.isfinite(hint_mm) and hint_mm > 0):
        hint_mm = None
    dz = _check_positions(pos, sorted_labels, hint_mm)
    inplane = ipp_arr[order] @ np.stack([row_dir, col_dir], axis=1)  # (Z, 2) offsets within the plane
    drift = np.abs(inplane - inplane[0]).max(axis=1)
    tol = 0.1 * float(np.min(ps0))
    for i in np.flatnonzero(drift > tol):
        raise DicomSeriesError(
            f"slice origin shifted by {drift[i]:.3f} mm within the image plane relative to {sorted_labels[0]} "
            "(tilted / sheared stack); expected slices stacked along the normal",
            sorted_labels[i],
        )

    # --- size checks from the headers, before any pixel memory is allocated
    num_voxels = len(order) * size0[0] * size0[1]
    if size0[0] < 1 or size0[1] < 1:
        raise DicomSeriesError(f"Rows x Columns must be positive, found {size0}", labels[0])
    if max_voxels is not None and num_voxels > max_voxels:
        raise DicomSeriesError(
            f"volume of {len(order)} x {size0[0]} x {size0[1]} = {num_voxels} voxels exceeds the maximum of "
            f"{max_voxels} (max_voxels / max_volume_voxels)",
            labels[0],
        )
    for ds, lab in zip(datasets, labels):
        _check_pixel_length(ds, size0, lab)

    # --- pixels, rescaled
    vol = np.empty((len(order), *size0), dtype=dtype)
    for k, i in enumerate(order):
        ds, lab = datasets[i], labels[i]
        try:
            with _pydicom_errors_at_debug():
                values = apply_modality_lut(_pixel_array(ds), ds)
        except Exception as e:
            raise DicomSeriesError(
                f"cannot decode pixel data, truncated or corrupt? ({type(e).__name__}: {e})", lab
            ) from e
        if values.shape != size0:
            raise DicomSeriesError(f"pixel data of shape {values.shape}, expected (Rows, Columns) = {size0}", lab)
        if not np.all(np.isfinite(values)):
            raise DicomSeriesError(
                "non-finite values after the modality LUT (RescaleSlope "
                f"{ds.get('RescaleSlope')!r}, RescaleIntercept {ds.get('RescaleIntercept')!r}); "
                "expected finite numbers",
                lab,
            )
        vol[k] = values
        if files[i] is not None and not keep_pixel_data and "PixelData" in ds:
            del ds.PixelData

    sorted_ds = tuple(datasets[i] for i in order)
    return DicomVolume(
        array=vol,
        spacing=(float(dz), float(ps0[0]), float(ps0[1])),
        origin=ipp_arr[order[0]].copy(),
        direction=np.stack([row_dir, col_dir, normal], axis=1),
        positions=ipp_arr[order].copy(),
        sop_instance_uids=tuple(str(d.SOPInstanceUID) for d in sorted_ds),
        datasets=sorted_ds,
        files=tuple(files[i] for i in order),
        study_instance_uid=_opt_str(ref, "StudyInstanceUID"),
        series_instance_uid=series_uid,
        frame_of_reference_uid=_opt_str(ref, "FrameOfReferenceUID"),
        patient_id=_opt_str(ref, "PatientID"),
        modality=_opt_str(ref, "Modality"),
        ignored_files=tuple(ignored),
    )


_NATIVE_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian (inflated on reading)
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    }
)


def _check_pixel_length(ds: Dataset, size: tuple[int, int], where: str) -> None:
    """Refuse native (uncompressed) pixel data shorter than ``Rows x Columns`` needs, before decoding."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and str(syntax) not in _NATIVE_SYNTAXES:
        return  # encapsulated: the decoder checks the frame; the volume size was bounded above
    try:
        data = ds.get("PixelData")
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except _HEADER_ERRORS as e:
        raise DicomSeriesError(f"unreadable pixel description ({type(e).__name__}: {e})", where) from e
    if data is None:
        raise DicomSeriesError("missing PixelData", where)
    if bits not in (8, 16, 32, 64) or samples != 1:
        raise DicomSeriesError(
            f"expected a grey-scale image with BitsAllocated 8/16/32/64, found BitsAllocated {bits}, "
            f"SamplesPerPixel {samples}",
            where,
        )
    need = size[0] * size[1] * bits // 8
    if len(data) < need:
        raise DicomSeriesError(
            f"cannot decode pixel data: PixelData holds {len(data)} bytes, but Rows x Columns = "
            f"{size[0]} x {size[1]} at {bits} bits needs "
            f"{need}; truncated or wrong Rows/Columns",
            where,
        )


class _DeferToDebug(logging.Filter):
    """Logging filter that re-logs pydicom's records at DEBUG on our logger (with any traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger.debug("pydicom: %s", record.getMessage(), exc_info=record.exc_info)
        return False


@contextlib.contextmanager
def _pydicom_errors_at_debug() -> Iterator[None]:
    """While decoding pixels, pydicom's own error logs (full tracebacks) go to DEBUG: the failure is
    reported once, as the :class:`DicomSeriesError` the caller raises.
    """
    # logger filters do not see records propagated from child loggers: filter every pydicom logger
    names = ["pydicom", *(n for n in list(logging.Logger.manager.loggerDict) if n.startswith("pydicom."))]
    targets = [logging.getLogger(n) for n in names]
    flt = _DeferToDebug()
    for t in targets:
        t.addFilter(flt)
    try:
        yield
    finally:
        for t in targets:
            t.removeFilter(flt)


def _pixel_array(ds: Dataset) -> np.ndarray:
    """Stored pixel values; datasets without file meta (built in memory) are taken as native
    little-endian, i.e. uncompressed.
    """
    if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) is not None:
        return ds.pixel_array
    tmp = copy.copy(ds)
    tmp.file_meta = FileMetaDataset()
    tmp.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return tmp.pixel_array


def _opt_str(ds: Dataset, keyword: str) -> str | None:
    v = ds.get(keyword)
    return None if v is None or v == "" else str(v)
