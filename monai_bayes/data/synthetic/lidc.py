"""Synthetic LIDC-IDRI: CT series as real DICOM plus LIDC reader XML, with known ground truth.

Each case is a chest CT phantom (:mod:`.ct_phantom`) with 1–4 nodules, written as a CT Image
Storage series, plus an LIDC ``LidcReadMessage`` XML with four simulated readers:

* **systematic bias** — each reader outlines consistently larger or smaller (a per-reader radius
  offset in mm, larger for the fuzzy ground-glass nodules) plus a per-nodule random offset;
* **boundary jitter** — smooth low-order wobble and per-vertex noise of the outline;
* **missed nodules** — the chance to mark a nodule falls with size and contrast (conspicuity),
  so small faint nodules often have fewer than four readers;
* **"nodule < 3 mm"** — a reader whose outline would be under 3 mm in diameter marks only the
  centre point, without characteristics (as in LIDC);
* **cavities** — some readers exclude a cavity with an ``inclusion=FALSE`` outline;
* **non-nodules** — calcified granulomas, marked by some readers as ``nonNodule``.

So inter-reader disagreement concentrates at nodule boundaries and on small nodules. Each reader's
mask per slice is the ground truth: the XML outline is traced from it, so the LIDC reader's
rasterisation returns it exactly (:mod:`monai_bayes.data.raster`).

Layout written under ``out_dir`` (like the TCIA download)::

    manifest.json                                   # written last; cases, UIDs, nodules, readers
    ground_truth/<patient_id>.npz                   # reader_labels (R,Z,Y,X), nodule_truth (Z,Y,X)
    <patient_id>/<study folder>/<series folder>/1-001.dcm … 0NN.xml
"""

from __future__ import annotations

import json
import multiprocessing
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from monai_bayes.data.lidc_xml import LIDC_NAMESPACE
from monai_bayes.data.raster import mask_to_outlines, rasterize_outline
from monai_bayes.data.synthetic.ct_phantom import ChestGeometry, NoduleSpec, make_chest_ct, sample_nodules
from monai_bayes.data.synthetic.dicom_writer import CTSeriesInfo, deterministic_uid, format_ds, write_ct_series
from monai_bayes.utils.atomic import atomic_write_json, finished_cache, staging_dir

__all__ = [
    "MANIFEST_NAME",
    "SYNTHETIC_READER_CONVENTIONS",
    "ReaderModel",
    "SyntheticLidcCase",
    "load_lidc_manifest",
    "write_lidc_cases",
]

MANIFEST_NAME = "manifest.json"
NUM_READERS = 4
#: :class:`~monai_bayes.data.lidc.LIDCReader` options under which the outlines written here read
#: back exactly as the simulated readers' masks: the outline pixels belong to the mask (they are
#: traced from it), "< 3 mm" marks are kept as one pixel, and nodules are grouped by overlap /
#: centroid distance, one annotation per reader (the generator's own grouping).
SYNTHETIC_READER_CONVENTIONS: dict[str, Any] = {"mask_rule": "outline", "include_small": True, "grouping": "distance"}


@dataclass
class ReaderModel:
    """Systematic behaviour of the simulated readers (one entry per reader).

    Attributes
    ----------
    bias_mm
        Radius offset (mm) added to every outline: > 0 over-, < 0 under-segmentation.
    jitter_mm
        Scale of the boundary jitter (mm).
    sensitivity
        Shift of the detection threshold (> 0: marks fainter nodules).
    cavity_exclusion
        Probability of excluding a cavity with an ``inclusion=FALSE`` outline.
    """

    bias_mm: list[float]
    jitter_mm: list[float]
    sensitivity: list[float]
    cavity_exclusion: list[float]

    @classmethod
    def sample(cls, seed: int, num_readers: int = NUM_READERS) -> ReaderModel:
        rng = np.random.default_rng([seed, 7919])
        base = np.linspace(-0.8, 0.8, num_readers)
        return cls(
            bias_mm=[float(v) for v in rng.permutation(base) * rng.uniform(0.8, 1.2, num_readers)],
            jitter_mm=[float(v) for v in rng.uniform(0.3, 0.7, num_readers)],
            sensitivity=[float(v) for v in rng.normal(0, 0.06, num_readers)],
            cavity_exclusion=[float(v) for v in rng.uniform(0.4, 0.9, num_readers)],
        )


@dataclass
class SyntheticLidcCase:
    """Where a written case lives and what it contains (paths absolute).

    Attributes
    ----------
    patient_id, study_instance_uid, series_instance_uid, frame_of_reference_uid
        DICOM identity.
    series_dir
        Folder with the slices and the XML.
    dicom_files
        Slice files in array order (ascending z).
    sop_instance_uids
        SOP Instance UIDs in array order.
    xml_path
        LIDC XML.
    ground_truth
        ``.npz`` with ``reader_labels`` ``(R, Z, Y, X)`` uint8 (nodule index + 1 in reader ``r``'s
        mask, 0 elsewhere; array order as the DICOM reader returns it) and ``nodule_truth``
        ``(Z, Y, X)`` uint8 (the phantom's own nodule extent).
    shape, spacing
        ``(Z, Y, X)`` and ``(dz, dy, dx)`` mm.
    nodules
        Per nodule: ``index``, ``centre_mm``, ``centre_voxel`` (z, y, x), ``radius_mm``, ``kind``,
        ``hu``, ``cavity_radius_mm``, ``readers`` (who marked it), ``small_readers`` (who marked it
        as < 3 mm), ``reader_nodule_ids`` (reader → XML noduleID).
    non_nodules
        Per calcified granuloma: ``centre_mm``, ``readers``.
    """

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    series_dir: Path
    dicom_files: list[Path]
    sop_instance_uids: list[str]
    xml_path: Path
    ground_truth: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    nodules: list[dict[str, Any]] = field(default_factory=list)
    non_nodules: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, root: Path) -> dict[str, Any]:
        d = asdict(self)
        for k in ("series_dir", "xml_path", "ground_truth"):
            d[k] = Path(d[k]).relative_to(root).as_posix()
        d["dicom_files"] = [Path(p).relative_to(root).as_posix() for p in self.dicom_files]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], root: Path) -> SyntheticLidcCase:
        d = dict(d)
        for k in ("series_dir", "xml_path", "ground_truth"):
            d[k] = root / d[k]
        d["dicom_files"] = [root / p for p in d["dicom_files"]]
        d["shape"], d["spacing"] = tuple(d["shape"]), tuple(d["spacing"])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# simulated readers


def _conspicuity(spec: NoduleSpec) -> float:
    size = np.clip(np.log(spec.radius / 2.0) / np.log(4.0), 0, 1)
    contrast = np.clip((spec.hu + 860.0) / 860.0, 0, 1)
    return float(0.6 * size + 0.4 * contrast)


def _detections(rng: np.random.Generator, spec: NoduleSpec, readers: ReaderModel) -> list[int]:
    c = _conspicuity(spec)
    p = [1.0 / (1.0 + np.exp(-(c - 0.3 + s) / 0.1)) for s in readers.sensitivity]
    marked = [r for r in range(len(p)) if rng.random() < p[r]]
    if not marked:  # a nodule in the XML has at least one reader
        marked = [int(np.argmax(np.asarray(p) + rng.uniform(0, 0.05, len(p))))]
    return marked


def _reader_masks(
    rng: np.random.Generator,
    spec: NoduleSpec,
    r: int,
    readers: ReaderModel,
    zs: np.ndarray,
    origin: np.ndarray,
    ps: float,
    hw: tuple[int, int],
) -> tuple[dict[int, np.ndarray], float]:
    """Reader ``r``'s masks ``{slice: (H, W) bool}`` for one nodule (before the < 3 mm rule) and
    the diameter (mm) the reader perceives (twice the largest cross-section radius).
    """
    ggo = spec.kind == "ground_glass"
    bias = readers.bias_mm[r] * (1.5 if ggo else 1.0) + rng.normal(0, 0.5 if ggo else 0.25)
    jit = readers.jitter_mm[r] * (1.5 if ggo else 1.0)
    radius = max(spec.radius + bias, 0.3)
    scale = radius / spec.radius
    cpx = (spec.centre[0] - origin[0]) / ps, (spec.centre[1] - origin[1]) / ps  # (col, row)
    excl_cavity = spec.cavity_radius > 0 and rng.random() < readers.cavity_exclusion[r]
    out: dict[int, np.ndarray] = {}
    diameter = 0.0
    for k, z in enumerate(zs):
        r_z = spec.radius_at(spec.centre[2] + (z - spec.centre[2]) / scale) * scale
        diameter = max(diameter, 2 * r_z)
        if r_z < 0.6 * ps:
            continue
        n = max(12, int(np.ceil(2 * np.pi * r_z / (0.7 * ps))))
        theta = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        rho = spec.rho(theta, r_z)
        for m in (1, 2, 3):
            rho = rho + rng.normal(0, jit * 0.6 / m) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
        rho = np.maximum(rho + rng.normal(0, jit * 0.25, n), 0.2 * r_z) / ps
        xy = np.stack([cpx[0] + rho * np.cos(theta), cpx[1] + rho * np.sin(theta)], axis=1)
        mask = np.zeros(hw, dtype=bool)
        c0, r0 = max(int(xy[:, 0].min()) - 2, 0), max(int(xy[:, 1].min()) - 2, 0)
        c1, r1 = min(int(xy[:, 0].max()) + 3, hw[1]), min(int(xy[:, 1].max()) + 3, hw[0])
        if c1 <= c0 or r1 <= r0:
            continue
        sub = rasterize_outline(xy - [c0, r0], (r1 - r0, c1 - c0))
        lab, nlab = ndimage.label(sub, structure=np.ones((3, 3)))
        if nlab == 0:
            continue
        if nlab > 1:
            sub = lab == 1 + int(np.argmax(ndimage.sum(sub, lab, range(1, nlab + 1))))
        sub = ndimage.binary_fill_holes(sub)
        if excl_cavity:
            rc = spec.cavity().radius_at(z)
            if rc > 0:
                rr, cc = np.ogrid[r0:r1, c0:c1]
                hole = np.hypot(cc - cpx[0], rr - cpx[1]) <= rc / ps
                hole &= ndimage.binary_erosion(sub, iterations=2)
                if hole.sum() >= 2:
                    sub &= ~hole
        mask[r0:r1, c0:c1] = sub
        out[k] = mask
    return out, diameter


def _apply_small_rule(
    masks: dict[int, np.ndarray],
    diameter: float,
    spec: NoduleSpec,
    zs: np.ndarray,
    origin: np.ndarray,
    ps: float,
    hw: tuple[int, int],
) -> tuple[dict[int, np.ndarray], bool]:
    """A nodule the reader sees under 3 mm becomes a single centre point (LIDC's < 3 mm mark)."""
    if diameter >= 3.0 and masks:
        return masks, False
    k = int(np.argmin(np.abs(zs - spec.centre[2])))
    col = int(np.clip(np.rint((spec.centre[0] - origin[0]) / ps), 0, hw[1] - 1))
    row = int(np.clip(np.rint((spec.centre[1] - origin[1]) / ps), 0, hw[0] - 1))
    m = np.zeros(hw, dtype=bool)
    m[row, col] = True
    return {k: m}, True


def _characteristics(rng: np.random.Generator, spec: NoduleSpec) -> dict[str, int]:
    c = _conspicuity(spec)
    lob = float(np.abs(spec.harmonics[:, 1]).sum()) if len(spec.harmonics) else 0.0

    def q(v: float) -> int:
        return int(np.clip(np.rint(v + rng.normal(0, 0.5)), 1, 5))

    return {
        "subtlety": q(1 + 4 * c),
        "internalStructure": 1,
        "calcification": 6,
        "sphericity": q(5 - 20 * lob),
        "margin": q(2 if spec.kind == "ground_glass" else 4),
        "lobulation": q(1 + 25 * lob),
        "spiculation": q(1.3),
        "texture": 2 if spec.kind == "ground_glass" else 5,
        "malignancy": q(1 + spec.radius / 4),
    }


# ---------------------------------------------------------------------------------------------
# XML


def _sub(parent: ET.Element, ns: str | None, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}" if ns else tag)
    if text is not None:
        el.text = str(text)
    return el


def _write_xml(
    path: Path,
    ns: str | None,
    study_uid: str,
    series_uid: str,
    sessions: list[dict[str, Any]],
    sop_uids: list[str],
    z_pos: list[float],
) -> None:
    if ns:
        ET.register_namespace("", ns)
    root = ET.Element(
        f"{{{ns}}}LidcReadMessage" if ns else "LidcReadMessage", {"uid": deterministic_uid(series_uid, "xml")}
    )
    hdr = _sub(root, ns, "ResponseHeader")
    for tag, val in (
        ("Version", "1.8.1"),
        ("MessageId", "1"),
        ("DateRequest", "2000-01-01"),
        ("TimeRequest", "00:00:00"),
        ("RequestingSite", "removed"),
        ("ServicingSite", "removed"),
        ("TaskDescription", "Second unblinded read"),
        ("CtImageFile", "removed"),
        ("SeriesInstanceUid", series_uid),
        ("DateService", "2000-01-01"),
        ("TimeService", "00:00:00"),
        ("ResponseDescription", "1 - Reading complete"),
        ("StudyInstanceUID", study_uid),
    ):
        _sub(hdr, ns, tag, val)
    for s in sessions:
        rs = _sub(root, ns, "readingSession")
        _sub(rs, ns, "annotationVersion", "3.12")
        _sub(rs, ns, "servicingRadiologistID", s["radiologist"])
        for nod in s["nodules"]:
            un = _sub(rs, ns, "unblindedReadNodule")
            _sub(un, ns, "noduleID", nod["id"])
            if nod["characteristics"]:
                ch = _sub(un, ns, "characteristics")
                for key, val in nod["characteristics"].items():
                    _sub(ch, ns, key, val)
            for k, outlines in sorted(nod["rois"].items()):
                for xy, inclusion in outlines:
                    roi = _sub(un, ns, "roi")
                    _sub(roi, ns, "imageZposition", format_ds(z_pos[k]))
                    _sub(roi, ns, "imageSOP_UID", sop_uids[k])
                    _sub(roi, ns, "inclusion", "TRUE" if inclusion else "FALSE")
                    pts = list(xy) + ([xy[0]] if len(xy) > 1 else [])  # closed, like the LIDC files
                    for x, y in pts:
                        em = _sub(roi, ns, "edgeMap")
                        _sub(em, ns, "xCoord", int(x))
                        _sub(em, ns, "yCoord", int(y))
        for nn in s["non_nodules"]:
            el = _sub(rs, ns, "nonNodule")
            _sub(el, ns, "nonNoduleID", nn["id"])
            _sub(el, ns, "imageZposition", format_ds(z_pos[nn["slice"]]))
            _sub(el, ns, "imageSOP_UID", sop_uids[nn["slice"]])
            loc = _sub(el, ns, "locus")
            _sub(loc, ns, "xCoord", nn["xy"][0])
            _sub(loc, ns, "yCoord", nn["xy"][1])
    ET.indent(root, space="  ")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


# ---------------------------------------------------------------------------------------------
# cases


def _series_info(seed: int, case: int, rng: np.random.Generator) -> CTSeriesInfo:
    pid = f"LIDC-SYN-{case + 1:04d}"
    year = int(rng.integers(1935, 1960))
    study_year = 2000 + int(rng.integers(0, 8))
    return CTSeriesInfo(
        patient_id=pid,
        patient_name=f"SYNTHETIC^CASE{case + 1:04d}",
        patient_birth_date=f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        patient_sex=str(rng.choice(["M", "F"])),
        patient_age=f"{study_year - year:03d}Y",
        study_instance_uid=deterministic_uid("lidc", seed, case, "study"),
        series_instance_uid=deterministic_uid("lidc", seed, case, "series"),
        frame_of_reference_uid=deterministic_uid("lidc", seed, case, "frame"),
        study_date=f"{study_year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        accession_number=f"SYN{seed % 1000:03d}{case + 1:05d}",
        study_id=str(case + 1),
        series_number=3000 + int(rng.integers(0, 999)),
        patient_position=str(rng.choice(["FFS", "HFS"])),
    )


@dataclass
class _Grid:
    """Voxel grid of one case: ``(Z, Y, X)`` size, in-plane spacing ``ps`` and slice spacing ``dz``
    (mm), origin ``(x, y, z)`` of voxel 0 and the slice z positions.
    """

    shape: tuple[int, int, int]
    ps: float
    dz: float
    origin: np.ndarray
    zs: np.ndarray

    @property
    def hw(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    def voxel(self, p: np.ndarray) -> list[float]:
        """``(z, y, x)`` voxel coordinates of the point ``p = (x, y, z)`` mm."""
        return [
            float((p[2] - self.origin[2]) / self.dz),
            float((p[1] - self.origin[1]) / self.ps),
            float((p[0] - self.origin[0]) / self.ps),
        ]


def _sample_grid(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: tuple[float, ...],
) -> _Grid:
    nz, ny, nx = shape
    ps = round(float(rng.uniform(*pixel_spacing_mm)), 3)
    dz = float(rng.choice(slice_spacing_mm))
    origin = np.array([-ps * (nx - 1) / 2, -ps * (ny - 1) / 2 + rng.uniform(-10, 10), -rng.uniform(100, 250)])
    origin = np.array([float(format_ds(v)) for v in origin])  # exactly what the DICOM header holds
    return _Grid(shape=shape, ps=ps, dz=dz, origin=origin, zs=origin[2] + np.arange(nz) * dz)


def _sample_lesions(
    rng: np.random.Generator,
    geom: ChestGeometry,
    grid: _Grid,
    nodules_per_case: tuple[int, int],
    radius_range_mm: tuple[float, float],
) -> tuple[list[NoduleSpec], list[NoduleSpec]]:
    """Nodules, and calcified granulomas (the non-nodules) kept clear of them."""
    z_range = (grid.zs[0], grid.zs[-1])
    num = int(rng.integers(nodules_per_case[0], nodules_per_case[1] + 1))
    specs = sample_nodules(rng, geom, z_range, num, radius_range_mm)
    calcified: list[NoduleSpec] = []
    for _ in range(int(rng.integers(0, 3))):
        cand = sample_nodules(rng, geom, z_range, 1, (1.5, 3.0), 0.0)
        if cand and all(np.linalg.norm(cand[0].centre - o.centre) > o.radius + 10 for o in specs + calcified):
            cand[0].hu, cand[0].kind, cand[0].cavity_radius = 500.0, "calcified", 0.0
            calcified.append(cand[0])
    return specs, calcified


def _simulate_reads(
    rng: np.random.Generator,
    specs: list[NoduleSpec],
    calcified: list[NoduleSpec],
    readers: ReaderModel,
    grid: _Grid,
    radiologist_ids: list[str],
) -> tuple[list[dict[str, Any]], np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """Every reader's marks.

    Returns
    -------
    (sessions, reader_labels, nodule_meta, non_nodule_meta)
        XML reading sessions; ``(R, Z, Y, X)`` uint8 ground truth (nodule index + 1); manifest
        records of the nodules and non-nodules.
    """
    R = len(radiologist_ids)
    reader_labels = np.zeros((R, *grid.shape), dtype=np.uint8)
    sessions: list[dict[str, Any]] = [{"radiologist": rid, "nodules": [], "non_nodules": []} for rid in radiologist_ids]
    nodule_meta = []
    for n, spec in enumerate(specs):
        marked = sorted(_detections(rng, spec, readers))
        meta: dict[str, Any] = {
            "index": n,
            "centre_mm": [float(v) for v in spec.centre],
            "centre_voxel": grid.voxel(spec.centre),
            "radius_mm": spec.radius,
            "kind": spec.kind,
            "hu": spec.hu,
            "cavity_radius_mm": spec.cavity_radius,
            "readers": [],
            "small_readers": [],
            "reader_nodule_ids": {},
        }
        for r in marked:
            masks, diameter = _reader_masks(rng, spec, r, readers, grid.zs, grid.origin, grid.ps, grid.hw)
            masks, small = _apply_small_rule(masks, diameter, spec, grid.zs, grid.origin, grid.ps, grid.hw)
            nid = f"Nodule {len(sessions[r]['nodules']) + 1:03d}"
            rois = {k: mask_to_outlines(m) for k, m in masks.items()}
            chars = {} if small else _characteristics(rng, spec)
            sessions[r]["nodules"].append({"id": nid, "characteristics": chars, "rois": rois})
            for k, m in masks.items():
                reader_labels[r, k][m] = n + 1
            meta["readers"].append(r)
            if small:
                meta["small_readers"].append(r)
            meta["reader_nodule_ids"][str(r)] = nid
        nodule_meta.append(meta)
    non_meta = []
    for j, spec in enumerate(calcified):
        k = int(np.argmin(np.abs(grid.zs - spec.centre[2])))
        _, row, col = grid.voxel(spec.centre)
        xy = [int(np.rint(col)), int(np.rint(row))]
        who = [r for r in range(R) if rng.random() < 0.5]
        for r in who:
            sessions[r]["non_nodules"].append({"id": f"Non-nodule {j + 1:03d}", "slice": k, "xy": xy})
        non_meta.append({"centre_mm": [float(v) for v in spec.centre], "readers": who})
    return sessions, reader_labels, nodule_meta, non_meta


def _write_case(
    root: Path,
    case: int,
    seed: int,
    readers: ReaderModel,
    shape: tuple[int, int, int],
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: tuple[float, ...],
    nodules_per_case: tuple[int, int],
    radius_range_mm: tuple[float, float],
    xml_namespace: str | None,
) -> SyntheticLidcCase:
    """Draw, render and write case ``case`` (its random stream is ``default_rng([seed, case])``)."""
    rng = np.random.default_rng([seed, case])
    info = _series_info(seed, case, rng)
    grid = _sample_grid(rng, shape, pixel_spacing_mm, slice_spacing_mm)
    geom = ChestGeometry.sample(rng, fov_mm=grid.ps * min(grid.hw))
    specs, calcified = _sample_lesions(rng, geom, grid, nodules_per_case, radius_range_mm)
    spacing = (grid.dz, grid.ps, grid.ps)
    hu, _, truth = make_chest_ct(rng, shape, spacing, grid.origin, geom, specs, calcified)
    radiologists = [f"anon-{deterministic_uid(seed, case, r)[-6:]}" for r in range(NUM_READERS)]
    sessions, reader_labels, nodule_meta, non_meta = _simulate_reads(rng, specs, calcified, readers, grid, radiologists)

    d = info.study_date
    study_dir = f"{d[4:6]}-{d[6:8]}-{d[:4]}-NA-SyntheticCT-{info.study_instance_uid[-5:]}"
    series_dir = root / info.patient_id / study_dir / f"{info.series_number}.000000-NA-{info.series_instance_uid[-5:]}"
    head_first = bool(rng.random() < 0.5)
    files, sop_uids, z_pos = write_ct_series(
        hu, series_dir, info, spacing=spacing, origin=grid.origin, head_first_numbering=head_first
    )
    xml_path = series_dir / f"{int(rng.integers(1, 999)):03d}.xml"
    _write_xml(xml_path, xml_namespace, info.study_instance_uid, info.series_instance_uid, sessions, sop_uids, z_pos)
    gt = root / "ground_truth" / f"{info.patient_id}.npz"
    gt.parent.mkdir(exist_ok=True)
    np.savez_compressed(gt, reader_labels=reader_labels, nodule_truth=truth)
    return SyntheticLidcCase(
        patient_id=info.patient_id,
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        frame_of_reference_uid=info.frame_of_reference_uid,
        series_dir=series_dir,
        dicom_files=files,
        sop_instance_uids=sop_uids,
        xml_path=xml_path,
        ground_truth=gt,
        shape=shape,
        spacing=spacing,
        nodules=nodule_meta,
        non_nodules=non_meta,
    )


def _write_case_star(args: tuple[Any, ...]) -> SyntheticLidcCase:
    return _write_case(*args)


def _num_workers(requested: int | None, num_tasks: int) -> int:
    """Worker processes: ``None`` → up to 4, one per CPU core; never more than the tasks."""
    if requested is None:
        requested = min(4, os.cpu_count() or 1)
    return max(1, min(int(requested), num_tasks))


def load_lidc_manifest(out_dir: str | os.PathLike[str]) -> list[SyntheticLidcCase]:
    """The cases recorded in ``out_dir/manifest.json`` by :func:`write_lidc_cases`."""
    root = Path(out_dir)
    with open(root / MANIFEST_NAME, encoding="utf-8") as f:
        data = json.load(f)
    return [SyntheticLidcCase.from_json(c, root) for c in data["cases"]]


def write_lidc_cases(
    out_dir: str | os.PathLike[str],
    num_cases: int = 20,
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = (40, 256, 256),
    pixel_spacing_mm: tuple[float, float] = (1.2, 1.45),
    slice_spacing_mm: tuple[float, ...] = (1.25, 2.0, 2.5),
    nodules_per_case: tuple[int, int] = (1, 4),
    radius_range_mm: tuple[float, float] = (2.0, 15.0),
    xml_namespace: str | None = LIDC_NAMESPACE,
    overwrite: bool = False,
    show_progress: bool = False,
    num_workers: int | None = 1,
) -> list[SyntheticLidcCase]:
    """Write ``num_cases`` synthetic LIDC cases (DICOM CT series + LIDC XML + ground truth).

    Deterministic: the same arguments give byte-identical files, and case ``i`` depends only on
    ``(seed, i)`` and the geometry arguments, not on ``num_cases``. Patients are ``LIDC-SYN-0001``…
    with synthetic names, birth dates, study dates and accession numbers; all UIDs derive from
    ``seed``.

    Parameters
    ----------
    out_dir
        Output folder (built under a temporary name and renamed when complete). If it already
        holds a finished set written with the same arguments, that set is returned unchanged.
    num_cases
        Number of patients (one CT series each).
    seed
        Seed of everything (reader behaviour, anatomy, nodules, noise, UIDs).
    shape
        ``(Z, Y, X)`` voxels of each series.
    pixel_spacing_mm
        Range of the in-plane spacing (drawn per case).
    slice_spacing_mm
        Choices of the slice spacing (= SliceThickness), drawn per case.
    nodules_per_case
        Inclusive range of the number of nodules per case.
    radius_range_mm
        Nodule radius range (log-uniform).
    xml_namespace
        Namespace of the XML (``None``: none, as in some old LIDC files).
    overwrite
        Replace an existing, different ``out_dir``.
    show_progress
        progress bar (drawn on a terminal only).
    num_workers
        Processes writing cases in parallel (``None``: one per CPU core, at most 4; ``0``/``1``:
        in this process, the default). Worker processes are *spawned* and import the package
        afresh (seconds each), so this pays off only for many or large cases on several cores.
        The output does not depend on it.

    Returns
    -------
    list[SyntheticLidcCase]
        Per case: patient/study/series/frame UIDs, series folder, slice files and SOP UIDs in
        array order, XML path, ground-truth ``.npz`` and the nodule list; also recorded in
        ``out_dir/manifest.json``.
    """
    from monai_bayes.utils.progress import progress_bar

    root = Path(out_dir)
    config = {
        "kind": "synthetic-lidc",
        "version": 1,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "shape": [int(v) for v in shape],
        "pixel_spacing_mm": [float(v) for v in pixel_spacing_mm],
        "slice_spacing_mm": [float(v) for v in slice_spacing_mm],
        "nodules_per_case": [int(v) for v in nodules_per_case],
        "radius_range_mm": [float(v) for v in radius_range_mm],
        "xml_namespace": xml_namespace,
    }
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (Z, Y, X) with every size >= 8, got {shape}")
    if (done := finished_cache(root, MANIFEST_NAME)) is not None and not overwrite:
        with open(done, encoding="utf-8") as f:
            if json.load(f).get("config") == config:
                return load_lidc_manifest(root)
    readers = ReaderModel.sample(seed)
    workers = _num_workers(num_workers, num_cases)
    with staging_dir(root, overwrite=overwrite) as tmp:
        args: list[tuple[Any, ...]] = [
            (
                tmp,
                i,
                seed,
                readers,
                tuple(shape),
                tuple(pixel_spacing_mm),
                tuple(slice_spacing_mm),
                tuple(nodules_per_case),
                tuple(radius_range_mm),
                xml_namespace,
            )
            for i in range(num_cases)
        ]
        bar = progress_bar(
            total=num_cases, desc="synthetic LIDC", unit="case", enabled=None if show_progress else False
        )
        if workers <= 1:
            cases = []
            for a in args:
                cases.append(_write_case(*a))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                cases = []
                for c in pool.map(_write_case_star, args):
                    cases.append(c)
                    bar.update()
        bar.close()
        manifest = {
            "config": config,
            "readers": asdict(readers),
            "num_readers": NUM_READERS,
            "cases": [c.to_json(tmp) for c in cases],
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
    return load_lidc_manifest(root)
