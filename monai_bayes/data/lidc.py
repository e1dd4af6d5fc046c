"""LIDC-IDRI from the raw download: CT series (DICOM) + reader XML → multi-rater 2D patches.

Pipeline
--------
1. :meth:`LIDCReader.index` finds every DICOM series under the root (headers only) and every
   ``*.xml`` file, and pairs each CT read (``LidcReadMessage``) with its series by
   SeriesInstanceUID. Chest-radiograph reads (``IdriReadMessage``), XML naming an absent or
   non-CT series, and CT series without XML are left out and listed in the report.
2. :meth:`LIDCReader.read_scan` reads the series with :func:`~monai_bayes.data.dicom.read_dicom_series`
   (HU, sorted slices), resolves every ROI to its slice — by ``imageSOP_UID``, else by
   ``imageZposition`` within a tolerance — and rasterises each reader's outlines
   (:mod:`~monai_bayes.data.raster`, holes subtracted).
3. :func:`cluster_annotations` groups the readers' annotations into nodules.

Conventions (defaults = pylidc's, so masks equal ``Annotation.boolean_mask()`` and the nodules
equal ``Scan.cluster_annotations()``; the older behaviours remain as named options):

==================  ==========================  ===============================================
option              default (pylidc)            alternative
==================  ==========================  ===============================================
``mask_rule``       ``"pylidc"``: inside the    ``"outline"``: the outline pixels belong to the
                    outline by matplotlib's     nodule (≈ 50 % more voxels on small nodules);
                    crossing rule, the outline  ``"interior"``: pixel-centre even–odd rule
                    points left out (LIDC puts  without the outline pixels
                    the outline just outside)
``include_small``   ``False``: "nodule < 3 mm"  ``True``: keep them as one-pixel masks
                    marks (no characteristics)
                    are left out
``grouping``        ``"pylidc"``: connected     ``"distance"``: overlap or centroid distance
                    components of "contour      <= ``cluster_distance_mm``, closest first, never
                    points within the slice     two annotations of one reader in a nodule
                    thickness (voxel index
                    units)", shrunk while a
                    group has > 4 annotations
==================  ==========================  ===============================================

The consensus of a nodule (pylidc's ``consensus(clevel=0.5)``) is the fraction of the readers who
marked it: each patch's ``readers`` entry lists them (see
:class:`~monai_bayes.data.transforms.MajorityVoted` with ``readers_key``).
4. :func:`extract_patches` cuts, for every slice of every nodule, a ``patch_size²`` patch centred on
   the centroid of the readers' union mask on that slice: image ``(1, P, P)`` float32 in [0, 1]
   (HU window), label ``(R, P, P)`` uint8 with one channel per reading session (empty where that
   reader did not mark the nodule).
5. :func:`prepare_lidc_dataset` writes the patches once as ``.npy`` files plus a JSON datalist
   with seeded patient-level folds; the cache is built in a temporary folder and renamed into
   place, and a finished cache with the same settings is reused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from scipy import ndimage

from monai_bayes.data.cache import DATALIST_NAME, inside, reusable_cache, safe_name, short_uid, stale_cache_of_ours
from monai_bayes.data.dicom import DicomSeriesIndex, DicomVolume, index_dicom_tree, read_dicom_series
from monai_bayes.data.errors import (
    DataFormatError,
    DicomSeriesError,
    LidcXmlError,
    OnError,
    SkipReport,
    check_on_error,
)
from monai_bayes.data.lidc_db import cluster_point_sets
from monai_bayes.data.lidc_xml import LidcReaderNodule, LidcReadMessage, parse_lidc_xml
from monai_bayes.data.raster import rasterize_rois, rasterize_rois_pylidc
from monai_bayes.data.splits import assign_folds
from monai_bayes.utils.atomic import atomic_save_npy, atomic_write_json, staging_dir

__all__ = [
    "DATALIST_NAME",
    "GROUPINGS",
    "MASK_RULES",
    "LIDCReader",
    "LidcNodule",
    "LidcPatch",
    "LidcScan",
    "LidcScanEntry",
    "ReaderAnnotation",
    "cluster_annotations",
    "extract_patches",
    "patch_datalist",
    "prepare_lidc_dataset",
    "write_patch_cache",
]

logger = logging.getLogger(__name__)

REPORT_NAME = "report.json"
CACHE_VERSION = 2
#: Default HU window mapped to [0, 1] (lung and soft tissue both visible).
DEFAULT_HU_WINDOW = (-1000.0, 400.0)
#: HU used outside the scanned field of view when a patch reaches past the image border.
PAD_HU = -1024.0
#: Rasterisation rules of the reader's outlines (see the module docstring).
MASK_RULES = ("pylidc", "outline", "interior")
#: Ways of grouping annotations into nodules (see :func:`cluster_annotations`).
GROUPINGS = ("pylidc", "distance")


def _check_option(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


@dataclass
class ReaderAnnotation:
    """One reader's outline of one nodule, resolved to slices of the volume.

    Attributes
    ----------
    reader_index
        Reading-session index (= label channel).
    nodule_id
        The reader's ``noduleID``.
    masks
        ``{slice index: (H, W) bool}`` on the full slice grid, only non-empty slices.
    is_small
        The reader marked a "nodule < 3 mm" (single point, no characteristics).
    characteristics
        Subtlety, malignancy… as integers (empty for small nodules).
    points
        ``(M, 3)`` int ``(row, column, slice)`` outline vertices (pylidc's ``contours_matrix``),
        used by ``grouping="pylidc"``; ``None`` when not recorded.
    """

    reader_index: int
    nodule_id: str
    masks: dict[int, np.ndarray]
    is_small: bool = False
    characteristics: dict[str, int] = field(default_factory=dict)
    points: np.ndarray | None = None
    _voxels: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def voxels(self) -> np.ndarray:
        """``(N, 3)`` int ``(z, y, x)`` indices of the annotated voxels (computed once)."""
        if self._voxels is None:
            parts = [np.c_[np.full(m.sum(), k), np.argwhere(m)] for k, m in sorted(self.masks.items())]
            self._voxels = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
        return self._voxels


@dataclass
class LidcNodule:
    """A nodule: the annotations of up to ``R`` readers grouped by :func:`cluster_annotations`."""

    index: int
    annotations: dict[int, ReaderAnnotation]

    @property
    def slices(self) -> list[int]:
        """Sorted slice indices where at least one reader outlined the nodule."""
        return sorted({k for a in self.annotations.values() for k in a.masks})

    @property
    def num_readers(self) -> int:
        """Number of readers who marked the nodule."""
        return len(self.annotations)


@dataclass
class LidcScan:
    """A CT series with its annotations grouped into nodules."""

    patient_id: str
    series_instance_uid: str
    study_instance_uid: str | None
    xml_path: Path
    volume: DicomVolume
    nodules: list[LidcNodule]
    num_readers: int


@dataclass
class LidcScanEntry:
    """An annotated CT series found by :meth:`LIDCReader.index`."""

    xml_path: Path
    series: DicomSeriesIndex
    message: LidcReadMessage


@dataclass
class LidcPatch:
    """One 2D multi-rater patch (what the cache stores per item).

    Attributes
    ----------
    image
        ``(1, P, P)`` float32 in [0, 1]: HU mapped linearly from ``hu_window``, clipped.
    label
        ``(R, P, P)`` uint8 {0, 1}: one channel per reader; all-zero where that reader did not
        outline the nodule on this slice.
    meta
        ``patient_id``, ``series_uid``, ``nodule_id``, ``slice_index``, ``z_mm``, ``sop_uid``,
        ``raters`` (per channel: outlined on this slice), ``num_readers`` (readers who marked the
        nodule), ``centre_rc`` (patch centre, pixels), ``pixel_spacing_mm``.
    """

    image: np.ndarray
    label: np.ndarray
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# clustering


def _centroid_mm(a: ReaderAnnotation, vol: DicomVolume) -> np.ndarray:
    zyx = a.voxels().mean(axis=0)
    return (vol.affine @ np.r_[zyx[::-1], 1.0])[:3]


def cluster_annotations(
    annotations: Sequence[ReaderAnnotation],
    volume: DicomVolume,
    cluster_distance_mm: float = 5.0,
    grouping: str = "pylidc",
    slice_thickness_mm: float | None = None,
) -> list[LidcNodule]:
    """Group readers' annotations of the same nodule.

    ``grouping="pylidc"`` (default) reproduces pylidc's ``Scan.cluster_annotations()``
    (:func:`~monai_bayes.data.lidc_db.cluster_point_sets` on the annotations' outline vertices,
    tolerance = the slice thickness); nodules come in pylidc's order (mean slice of the
    annotations' vertex centroids). Two annotations of one reader may then share a nodule, as in
    pylidc (a reader who split a lesion that the others outlined as one): that reader's channel
    is the union of both masks.

    ``grouping="distance"``: two annotations of different readers are *linked* at distance 0 if
    their masks share a voxel, else at the distance between their centroids (mm). Links up to
    ``cluster_distance_mm`` are merged in order of increasing distance (single linkage), skipping
    any merge that would put two annotations of the same reader into one nodule.

    Parameters
    ----------
    annotations
        All readers' annotations of one scan.
    volume
        The scan (for the voxel → mm mapping).
    cluster_distance_mm
        Largest centroid distance (mm) at which non-overlapping annotations still join
        (``grouping="distance"`` only).
    grouping
        ``"pylidc"`` or ``"distance"`` (:data:`GROUPINGS`).
    slice_thickness_mm
        Tolerance of ``grouping="pylidc"``; ``None``: the series' SliceThickness, else the slice
        spacing.

    Returns
    -------
    list[LidcNodule]
        Nodules indexed from 0; ``"distance"`` orders them by (first slice, centroid row,
        centroid column).

    Raises
    ------
    ValueError
        An unknown ``grouping``, or ``grouping="pylidc"`` with an annotation without ``points``.
    """
    _check_option(grouping, GROUPINGS, "grouping")
    if grouping == "pylidc":
        return _cluster_pylidc(annotations, volume, slice_thickness_mm)
    n = len(annotations)
    vox = [set(map(tuple, a.voxels().tolist())) for a in annotations]
    cent = [_centroid_mm(a, volume) for a in annotations]
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            if annotations[i].reader_index == annotations[j].reader_index:
                continue
            d = 0.0 if vox[i] & vox[j] else float(np.linalg.norm(cent[i] - cent[j]))
            if d <= cluster_distance_mm:
                pairs.append((d, i, j))
    parent = list(range(n))
    readers = [{a.reader_index} for a in annotations]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j in sorted(pairs):
        ri, rj = root(i), root(j)
        if ri == rj or readers[ri] & readers[rj]:
            continue
        parent[rj] = ri
        readers[ri] |= readers[rj]
    groups: dict[int, dict[int, ReaderAnnotation]] = {}
    for i, a in enumerate(annotations):
        groups.setdefault(root(i), {})[a.reader_index] = a

    def sort_key(g: dict[int, ReaderAnnotation]) -> tuple[float, ...]:
        v = np.concatenate([a.voxels() for a in g.values()])
        return (float(v[:, 0].min()), float(v[:, 1].mean()), float(v[:, 2].mean()))

    ordered = sorted(groups.values(), key=sort_key)
    return [LidcNodule(index=k, annotations=dict(sorted(g.items()))) for k, g in enumerate(ordered)]


def _slice_thickness(volume: DicomVolume) -> float:
    """SliceThickness (0018,0050) of the first slice (what pylidc stores), else the slice spacing."""
    ds = volume.datasets[0] if volume.datasets else None
    value = ds.get("SliceThickness", None) if ds is not None else None
    try:
        return float(value) if value not in (None, "") else float(volume.spacing[0])
    except (TypeError, ValueError):
        return float(volume.spacing[0])


def _merge(a: ReaderAnnotation, b: ReaderAnnotation) -> ReaderAnnotation:
    """One reader's two annotations of what the grouping calls one nodule: union of the masks."""
    masks = {k: m.copy() for k, m in a.masks.items()}
    for k, m in b.masks.items():
        masks[k] = masks[k] | m if k in masks else m
    pts = [p for p in (a.points, b.points) if p is not None]
    return ReaderAnnotation(
        reader_index=a.reader_index,
        nodule_id=f"{a.nodule_id}+{b.nodule_id}",
        masks=masks,
        is_small=a.is_small and b.is_small,
        characteristics=dict(a.characteristics or b.characteristics),
        points=np.concatenate(pts) if pts else None,
    )


def _cluster_pylidc(
    annotations: Sequence[ReaderAnnotation], volume: DicomVolume, slice_thickness_mm: float | None
) -> list[LidcNodule]:
    if any(a.points is None or len(a.points) == 0 for a in annotations):
        raise ValueError("grouping='pylidc' needs every annotation's outline points (ReaderAnnotation.points)")
    tol = _slice_thickness(volume) if slice_thickness_mm is None else float(slice_thickness_mm)
    groups = cluster_point_sets([a.points for a in annotations], tol)  # type: ignore[misc]  # points checked non-None above
    nodules = []
    for k, g in enumerate(groups):
        members: dict[int, ReaderAnnotation] = {}
        for i in g:
            a = annotations[i]
            if a.reader_index in members:
                logger.info(
                    "pylidc grouping joins annotations %s and %s of reader %d into one nodule; their masks are merged",
                    members[a.reader_index].nodule_id,
                    a.nodule_id,
                    a.reader_index,
                )
                a = _merge(members[a.reader_index], a)
            members[a.reader_index] = a
        nodules.append(LidcNodule(index=k, annotations=dict(sorted(members.items()))))
    return nodules


# ---------------------------------------------------------------------------------------------
# patches


def _window(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    lo, hi = hu_window
    if hi <= lo:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window}")
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _crop(slice_: np.ndarray, centre: tuple[int, int], size: int, fill: float) -> np.ndarray:
    """Integer crop ``size²`` with top-left at ``centre - size // 2``, padded with ``fill``."""
    h, w = slice_.shape
    r0, c0 = centre[0] - size // 2, centre[1] - size // 2
    out = np.full((size, size), fill, dtype=slice_.dtype)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, h), min(c0 + size, w)
    if re > rs and ce > cs:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = slice_[rs:re, cs:ce]
    return out


def _resample(
    slice_: np.ndarray, centre: tuple[int, int], size: int, step_rc: tuple[float, float], fill: float, order: int
) -> np.ndarray:
    """Sample ``size²`` points spaced ``step_rc`` native pixels around ``centre`` (same grid as
    :func:`_crop` when the step is 1).
    """
    offs = np.arange(size) - size // 2
    rr = centre[0] + offs[:, None] * step_rc[0]
    cc = centre[1] + offs[None, :] * step_rc[1]
    coords = np.stack(np.broadcast_arrays(rr, cc))
    return ndimage.map_coordinates(slice_.astype(np.float32), coords, order=order, mode="constant", cval=fill)


def extract_patches(
    scan: LidcScan,
    patch_size: int = 128,
    pixel_spacing_mm: float | None = None,
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    num_raters: int | None = None,
) -> list[LidcPatch]:
    """Cut one multi-rater patch per (nodule, slice).

    Parameters
    ----------
    scan
        A scan from :meth:`LIDCReader.read_scan`.
    patch_size
        Patch side ``P`` in pixels (128 in the literature).
    pixel_spacing_mm
        In-plane spacing of the patch (mm). ``None`` keeps the native grid (an exact crop); else
        the image is resampled linearly and each rater mask linearly then thresholded at 0.5.
    hu_window
        ``(low, high)`` HU mapped to [0, 1] (clipped).
    num_raters
        Label channels ``R`` (default ``scan.num_readers``).

    Returns
    -------
    list[LidcPatch]
        In nodule order, then slice order. The patch centre is the rounded centroid of the union
        of the readers' masks on that slice; pixels beyond the scan are filled with -1024 HU.
    """
    vol = scan.volume
    R = scan.num_readers if num_raters is None else num_raters
    _, dy, dx = vol.spacing
    step = None if pixel_spacing_mm is None else (pixel_spacing_mm / dy, pixel_spacing_mm / dx)
    out: list[LidcPatch] = []
    for nod in scan.nodules:
        nodule_id = f"{scan.patient_id}_{short_uid(scan.series_instance_uid)}_n{nod.index:02d}"
        for k in nod.slices:
            union = np.zeros(vol.shape[1:], dtype=bool)
            for a in nod.annotations.values():
                if k in a.masks:
                    union |= a.masks[k]
            centre = cast("tuple[int, int]", tuple(int(v) for v in np.rint(np.argwhere(union).mean(axis=0))))
            hu = vol.array[k]
            label = np.zeros((R, patch_size, patch_size), dtype=np.uint8)
            raters = [False] * R
            if step is None:
                img = _crop(hu, centre, patch_size, PAD_HU)
            else:
                img = _resample(hu, centre, patch_size, step, PAD_HU, order=1)
            for r, a in nod.annotations.items():
                if r >= R or k not in a.masks:
                    continue
                if step is None:
                    m = _crop(a.masks[k], centre, patch_size, False)
                else:
                    m = _resample(a.masks[k], centre, patch_size, step, 0.0, order=1) >= 0.5
                label[r] = m
                raters[r] = bool(m.any())
            out.append(
                LidcPatch(
                    image=_window(img, hu_window)[None],
                    label=label,
                    meta={
                        "patient_id": scan.patient_id,
                        "series_uid": scan.series_instance_uid,
                        "study_uid": scan.study_instance_uid,
                        "nodule_id": nodule_id,
                        "slice_index": int(k),
                        "z_mm": float(vol.z_positions[k]),
                        "sop_uid": vol.sop_instance_uids[k],
                        "raters": raters,
                        "readers": [r in nod.annotations for r in range(R)],
                        "num_readers": nod.num_readers,
                        "reader_nodule_ids": {str(r): a.nodule_id for r, a in nod.annotations.items()},
                        "small": [a.is_small for a in nod.annotations.values()],
                        "centre_rc": list(centre),
                        "pixel_spacing_mm": [float(dy), float(dx)] if step is None else [pixel_spacing_mm] * 2,
                    },
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# reader


class LIDCReader:
    """Reader for the raw LIDC-IDRI download (DICOM series + reader XML files).

    Parameters
    ----------
    root
        Folder holding the data, searched recursively, e.g. ``.../LIDC-IDRI`` of the TCIA download
        (``LIDC-IDRI-0001/<study>/<series>/*.dcm`` with the XML beside the slices). XML files may
        also live in a separate tree under ``root`` (the "LIDC XML only" archive).
    num_raters
        Label channels: the first ``num_raters`` reading sessions of each XML (LIDC has four).
    mask_rule
        ``"pylidc"`` (default; equals pylidc's ``boolean_mask``), ``"outline"`` (outline pixels
        included, this reader's behaviour before) or ``"interior"`` (see the module docstring
        and :mod:`~monai_bayes.data.raster`).
    z_tolerance_mm
        Largest distance between an ROI's ``imageZposition`` and a slice when matching by z
        (used when ``imageSOP_UID`` is absent from the series). Default: a quarter of the slice
        spacing.
    cluster_distance_mm, grouping
        See :func:`cluster_annotations` (default ``grouping="pylidc"``).
    include_small
        Keep "nodule < 3 mm" marks (single points, no characteristics) as one-pixel masks.
        Default ``False``: left out, as pylidc (whose database holds only nodules >= 3 mm).
    on_error
        ``"raise"`` on the first bad scan, or ``"skip"`` it and list it in :attr:`report`.
    show_progress
        progress bars (drawn on a terminal only).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        num_raters: int = 4,
        mask_rule: str = "pylidc",
        z_tolerance_mm: float | None = None,
        cluster_distance_mm: float = 5.0,
        include_small: bool = False,
        grouping: str = "pylidc",
        on_error: OnError = "raise",
        show_progress: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: LIDC root folder does not exist")
        self.num_raters = int(num_raters)
        self.mask_rule = _check_option(mask_rule, MASK_RULES, "mask_rule")
        self.grouping = _check_option(grouping, GROUPINGS, "grouping")
        self.z_tolerance_mm = z_tolerance_mm
        self.cluster_distance_mm = cluster_distance_mm
        self.include_small = include_small
        self.on_error = check_on_error(on_error)
        self.show_progress = show_progress
        self.report = SkipReport()
        self._entries: list[LidcScanEntry] | None = None

    # -- discovery
    def index(self) -> list[LidcScanEntry]:
        """Pair every CT read XML under the root with its DICOM series (cached after first call)."""
        if self._entries is not None:
            return self._entries
        series = index_dicom_tree(
            self.root, report=self.report if self.on_error == "skip" else None, show_progress=self.show_progress
        )
        xmls = sorted(p for p in self.root.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())
        entries: dict[str, LidcScanEntry] = {}
        for xml in xmls:
            try:
                msg = parse_lidc_xml(xml)
                if not msg.is_ct:
                    self.report.skip(xml, f"{msg.root_tag}: chest radiograph read, not a CT LidcReadMessage")
                    continue
                uid = msg.series_instance_uid
                assert uid is not None
                if uid in entries:
                    self.report.warn(xml, f"second XML for series {uid}; using {entries[uid].xml_path}")
                    continue
                s = series.get(uid)
                if s is None:
                    raise LidcXmlError(
                        f"names SeriesInstanceUid {uid}, but no DICOM series with it is under {self.root}", xml
                    )
                if s.modality != "CT":
                    raise DicomSeriesError(
                        f"series {uid} named by {xml.name} has Modality {s.modality!r}, expected 'CT'", s.files[0]
                    )
                entries[uid] = LidcScanEntry(xml_path=xml, series=s, message=msg)
            except DataFormatError as e:
                self.report.handle(self.on_error, xml, e)
        for uid, s in series.items():
            if uid not in entries and s.modality == "CT":
                self.report.warn(s.files[0].parent, f"CT series {uid} has no annotation XML; not used")
        self._entries = sorted(entries.values(), key=lambda e: (e.series.patient_id or "", str(e.xml_path)))
        return self._entries

    def __len__(self) -> int:
        return len(self.index())

    def __iter__(self) -> Iterator[LidcScan]:
        """Read every indexed scan (bad scans raise or are skipped per ``on_error``)."""
        for entry in self.index():
            scan = self.try_read_scan(entry)
            if scan is not None:
                yield scan

    def try_read_scan(self, entry: LidcScanEntry) -> LidcScan | None:
        """:meth:`read_scan`, returning ``None`` (and a report entry) on bad data when skipping."""
        try:
            return self.read_scan(entry)
        except DataFormatError as e:
            self.report.handle(self.on_error, entry.xml_path, e)
            return None

    # -- one scan
    def read_scan(self, entry: LidcScanEntry) -> LidcScan:
        """Read the CT volume and rasterise, resolve and cluster the readers' annotations."""
        vol = read_dicom_series(entry.series.files, expected_modality="CT")
        msg = entry.message
        if len(msg.sessions) > self.num_raters:
            self.report.warn(
                entry.xml_path, f"{len(msg.sessions)} reading sessions; keeping the first {self.num_raters}"
            )
        anns: list[ReaderAnnotation] = []
        for session in msg.sessions[: self.num_raters]:
            for nod in session.nodules:
                a = self._resolve(nod, vol, entry.xml_path)
                if a is not None:
                    anns.append(a)
        nodules = cluster_annotations(anns, vol, self.cluster_distance_mm, self.grouping) if anns else []
        return LidcScan(
            patient_id=vol.patient_id or entry.series.patient_id or short_uid(vol.series_instance_uid),
            series_instance_uid=vol.series_instance_uid,
            study_instance_uid=vol.study_instance_uid or msg.study_instance_uid,
            xml_path=entry.xml_path,
            volume=vol,
            nodules=nodules,
            num_readers=self.num_raters,
        )

    def _slice_of(self, roi: Any, vol: DicomVolume, where: str) -> int:
        k = vol.index_of_sop_uid(roi.sop_uid) if roi.sop_uid else None
        if k is not None:
            return k
        kz = vol.index_of_z(roi.z_position, self.z_tolerance_mm) if roi.z_position is not None else None
        if kz is None:
            near = (
                f"nearest slice {np.abs(vol.z_positions - roi.z_position).min():.3f} mm away"
                if roi.z_position is not None
                else "no imageZposition"
            )
            raise LidcXmlError(
                f"{where}: imageSOP_UID {roi.sop_uid} is not an instance of series {vol.series_instance_uid} "
                f"and imageZposition {roi.z_position} matches no slice ({near})"
            )
        if roi.sop_uid:
            self.report.warn(
                where, f"imageSOP_UID {roi.sop_uid} not in series; matched by imageZposition {roi.z_position}"
            )
        return kz

    def _resolve(self, nod: LidcReaderNodule, vol: DicomVolume, xml: Path) -> ReaderAnnotation | None:
        where = f"{xml} reader {nod.reader_index} nodule {nod.nodule_id}"
        if nod.is_small and not self.include_small:
            return None
        per_slice: dict[int, list[tuple[np.ndarray, bool]]] = {}
        h, w = vol.shape[1:]
        points = []
        for roi in nod.rois:
            k = self._slice_of(roi, vol, where)
            if np.any(roi.xy < -0.5) or np.any(roi.xy[:, 0] > w - 0.5) or np.any(roi.xy[:, 1] > h - 0.5):
                self.report.warn(where, f"outline on slice {k} reaches outside the {h}x{w} image; clipped")
            per_slice.setdefault(k, []).append((roi.xy, roi.inclusion))
            ij = np.rint(roi.xy[:, ::-1]).astype(np.int64)
            points.append(np.c_[ij, np.full(len(ij), k)])
        masks = {}
        for k, outlines in per_slice.items():
            if self.mask_rule == "pylidc":
                m = rasterize_rois_pylidc([(np.rint(xy[:, ::-1]), inc) for xy, inc in outlines], (h, w))
            else:
                m = rasterize_rois(outlines, (h, w), self.mask_rule == "outline")
            if m.any():
                masks[k] = m
        if not masks:
            if self.grouping != "pylidc":
                self.report.warn(where, "annotation rasterises to an empty mask; ignored")
                return None
            # pylidc keeps such annotations: the reader marked the nodule (counts in its consensus)
            self.report.warn(where, "annotation rasterises to an empty mask; kept as a reader of its nodule")
        return ReaderAnnotation(
            reader_index=nod.reader_index,
            nodule_id=nod.nodule_id,
            masks=masks,
            is_small=nod.is_small,
            characteristics=dict(nod.characteristics),
            points=np.concatenate(points),
        )


# ---------------------------------------------------------------------------------------------
# cache


def write_patch_cache(folder: Path, patches: Sequence[LidcPatch], subdir: str | None = None) -> list[dict[str, Any]]:
    """Save patches as ``<stem>_image.npy`` / ``<stem>_label.npy`` under
    ``folder/patches/<patient>/<series>/`` (stem ``n<nodule>_z<slice>``, or ``meta["file_stem"]``).

    Returns datalist items (the patch metadata plus ``image`` / ``label`` paths relative to
    ``folder``).
    """
    items = []
    for p in patches:
        m = p.meta
        rel = Path("patches") / safe_name(subdir or m["patient_id"]) / short_uid(m["series_uid"])
        inside(folder / rel, folder)
        (folder / rel).mkdir(parents=True, exist_ok=True)
        stem = safe_name(m.get("file_stem") or f"{m['nodule_id'].rsplit('_', 1)[-1]}_z{m['slice_index']:04d}")
        img, lab = rel / f"{stem}_image.npy", rel / f"{stem}_label.npy"
        atomic_save_npy(folder / img, p.image.astype(np.float32))
        atomic_save_npy(folder / lab, p.label.astype(np.uint8))
        items.append(
            {"image": img.as_posix(), "label": lab.as_posix(), **{k: v for k, v in m.items() if k != "file_stem"}}
        )
    return items


def prepare_lidc_dataset(
    raw_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    patch_size: int = 128,
    pixel_spacing_mm: float | None = None,
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    num_raters: int = 4,
    mask_rule: str = "pylidc",
    include_small: bool = False,
    grouping: str = "pylidc",
    cluster_distance_mm: float = 5.0,
    num_folds: int = 4,
    seed: int = 0,
    on_error: OnError = "raise",
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Convert a raw LIDC-IDRI folder to a cache of multi-rater 2D patches and a datalist.

    Parameters
    ----------
    raw_dir
        Root of the DICOM + XML download (see :class:`LIDCReader`).
    cache_dir
        Output folder; it gets ``datalist.json``, ``report.json`` and ``patches/``. A finished
        cache there with identical settings is reused as is.
    patch_size, pixel_spacing_mm, hu_window
        See :func:`extract_patches`.
    num_raters, mask_rule, include_small, grouping, cluster_distance_mm, on_error
        See :class:`LIDCReader` (defaults: pylidc's conventions).
    num_folds, seed
        Patient-level bags (:func:`~monai_bayes.data.splits.patient_folds`).
    overwrite
        Replace an existing cache built with other settings.
    show_progress
        progress bar over scans (drawn on a terminal only).

    Returns
    -------
    Path
        ``cache_dir/datalist.json``: ``{"name", "config", "num_folds", "seed", "num_raters",
        "training": [item...], "report": "report.json"}``; each item has ``image``
        (``(1, P, P)`` float32 .npy), ``label`` (``(R, P, P)`` uint8 .npy), ``fold``,
        ``patient_id``, ``series_uid``, ``nodule_id``, ``slice_index``, ``z_mm``, ``raters``….
    """
    from monai_bayes.utils.progress import progress_bar

    raw_dir, cache_dir = Path(raw_dir), Path(cache_dir)
    config = {
        "kind": "lidc-raw",
        "version": CACHE_VERSION,
        "raw_dir": str(raw_dir.resolve()),
        "patch_size": int(patch_size),
        "pixel_spacing_mm": pixel_spacing_mm,
        "hu_window": [float(hu_window[0]), float(hu_window[1])],
        "num_raters": int(num_raters),
        "mask_rule": str(mask_rule),
        "include_small": bool(include_small),
        "grouping": str(grouping),
        "cluster_distance_mm": float(cluster_distance_mm),
        "num_folds": int(num_folds),
        "seed": int(seed),
    }
    if not overwrite and (done := reusable_cache(cache_dir, config)) is not None:
        return done
    reader = LIDCReader(
        raw_dir,
        num_raters=num_raters,
        mask_rule=mask_rule,
        include_small=include_small,
        grouping=grouping,
        cluster_distance_mm=cluster_distance_mm,
        on_error=on_error,
        show_progress=show_progress,
    )
    entries = reader.index()
    if not entries:
        raise DataFormatError("no annotated CT series (DICOM + LidcReadMessage XML) found", raw_dir)
    with staging_dir(cache_dir, overwrite=True if overwrite else stale_cache_of_ours(cache_dir, "patches")) as tmp:
        items: list[dict[str, Any]] = []
        for entry in progress_bar(entries, desc="LIDC scans", unit="scan", enabled=None if show_progress else False):
            scan = reader.try_read_scan(entry)
            if scan is None:
                continue
            if not scan.nodules:
                reader.report.warn(entry.xml_path, "no nodule annotations; no patches")
                continue
            items += write_patch_cache(tmp, extract_patches(scan, patch_size, pixel_spacing_mm, hu_window, num_raters))
        if not items:
            raise DataFormatError("no patches extracted; see the skipped items", raw_dir)
        assign_folds(items, num_folds=num_folds, seed=seed)
        atomic_write_json(tmp / REPORT_NAME, reader.report.to_dict())
        atomic_write_json(tmp / DATALIST_NAME, patch_datalist("lidc", config, items, num_raters))
    return cache_dir / DATALIST_NAME


def patch_datalist(name: str, config: dict[str, Any], items: list[dict[str, Any]], num_raters: int) -> dict[str, Any]:
    """The ``datalist.json`` document of a multi-rater patch cache (raw LIDC and crop-pickle conversions).

    Parameters
    ----------
    name : str
        Dataset name (``"lidc"``, ``"lidc-pickle"``).
    config : dict
        Conversion settings (with ``num_folds`` and ``seed``); compared on reuse.
    items : list of dict
        Datalist items from :func:`write_patch_cache`, with folds assigned.
    num_raters : int
        Label channels R.

    Returns
    -------
    dict
        The document (MONAI decathlon-style ``"training"`` list plus the cache's metadata).
    """
    return {
        "name": name,
        "description": "multi-rater 2D patches; image (1,P,P) float32 in [0,1], label (R,P,P) uint8",
        "config": config,
        "num_folds": config["num_folds"],
        "seed": config["seed"],
        "num_raters": num_raters,
        "labels": {"0": "background", "1": "nodule"},
        "modality": {"0": "CT"},
        "numTraining": len(items),
        "report": REPORT_NAME,
        "training": items,
    }
