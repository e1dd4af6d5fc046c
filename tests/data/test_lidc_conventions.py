"""LIDC conventions of the raw reader on a hand-built CT + XML whose answers are known.

The scan: 5 slices of 40 x 40 pixels. Reading sessions:

* reader 0 outlines two adjacent squares ``A`` (rows 5-9, cols 5-9) and ``B`` (rows 5-9,
  cols 11-15) on slice 2;
* readers 1 and 2 outline one square ``AB`` (rows 5-9, cols 5-15) around both, and squares
  ``C1`` (rows 20-26, cols 3-9) / ``C2`` (rows 21-27, cols 3-9) on slice 1: nodule ``C`` has two
  readers;
* reader 3 only marks a "nodule < 3 mm" (one point, row 33 col 33, no characteristics).

Every outline lists each border pixel as a vertex, so the masks are known by hand: pylidc's rule
keeps the strict interior (a 5 x 5 square gives 3 x 3), the "outline" rule the whole square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_bayes.data import LIDCReader, MajorityVoted
from monai_bayes.data.lidc import extract_patches
from monai_bayes.data.raster import points_in_polygon_mpl, rasterize_rois_pylidc
from monai_bayes.data.synthetic.dicom_writer import CTSeriesInfo, deterministic_uid, write_ct_series
from monai_bayes.data.synthetic.lidc import _write_xml

SHAPE = (5, 40, 40)


def _square(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Border pixels of the square rows r0..r1, cols c0..c1, clockwise, as (x, y) = (col, row)."""
    top = [(c, r0) for c in range(c0, c1 + 1)]
    right = [(c1, r) for r in range(r0 + 1, r1 + 1)]
    bottom = [(c, r1) for c in range(c1 - 1, c0 - 1, -1)]
    left = [(c0, r) for r in range(r1 - 1, r0, -1)]
    return np.array(top + right + bottom + left)


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros(SHAPE[1:], bool)
    m[r0 : r1 + 1, c0 : c1 + 1] = True
    return m


CHARS = {"subtlety": 4, "texture": 5, "malignancy": 3}


def _nodule(nid: str, k: int, xy: np.ndarray, small: bool = False) -> dict:
    return {"id": nid, "characteristics": {} if small else CHARS, "rois": {k: [(xy, True)]}}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hand") / "LIDC-HAND-0001"
    series = root / "study" / "series"
    info = CTSeriesInfo(
        patient_id="LIDC-HAND-0001",
        patient_name="HAND^BUILT",
        patient_birth_date="19500101",
        patient_sex="F",
        patient_age="055Y",
        study_instance_uid=deterministic_uid("hand", "study"),
        series_instance_uid=deterministic_uid("hand", "series"),
        frame_of_reference_uid=deterministic_uid("hand", "frame"),
        study_date="20050101",
        study_time="120000",
        accession_number="HAND1",
        study_id="1",
        series_number=1,
    )
    hu = np.full(SHAPE, -800.0)
    _, uids, zs = write_ct_series(hu, series, info, spacing=(2.5, 0.7, 0.7), origin=(-14.0, -14.0, -100.0))
    sessions = [
        {
            "radiologist": "r0",
            "nodules": [_nodule("A", 2, _square(5, 9, 5, 9)), _nodule("B", 2, _square(5, 9, 11, 15))],
        },
        {
            "radiologist": "r1",
            "nodules": [_nodule("AB", 2, _square(5, 9, 5, 15)), _nodule("C1", 1, _square(20, 26, 3, 9))],
        },
        {
            "radiologist": "r2",
            "nodules": [_nodule("AB", 2, _square(5, 9, 5, 15)), _nodule("C2", 1, _square(21, 27, 3, 9))],
        },
        {"radiologist": "r3", "nodules": [_nodule("tiny", 3, np.array([[33, 33]]), small=True)]},
    ]
    for s in sessions:
        s["non_nodules"] = []
    _write_xml(
        series / "069.xml", "http://www.nih.gov", info.study_instance_uid, info.series_instance_uid, sessions, uids, zs
    )
    return root.parent


def _scan(raw: Path, **kwargs):
    reader = LIDCReader(raw, **kwargs)
    return reader.read_scan(reader.index()[0])


def _channel(scan, nodule: int, reader: int, k: int) -> np.ndarray:
    a = scan.nodules[nodule].annotations.get(reader)
    return np.zeros(SHAPE[1:], bool) if a is None or k not in a.masks else a.masks[k]


def _by_readers(scan) -> dict[frozenset, object]:
    return {frozenset(n.annotations): n for n in scan.nodules}


def test_default_masks_leave_the_outline_out(raw: Path) -> None:
    scan = _scan(raw)
    nod_c = _by_readers(scan)[frozenset({1, 2})]
    np.testing.assert_array_equal(nod_c.annotations[1].masks[1], _box(21, 25, 4, 8))  # 7x7 square -> 5x5
    nod_ab = _by_readers(scan)[frozenset({0, 1, 2})]
    np.testing.assert_array_equal(nod_ab.annotations[1].masks[2], _box(6, 8, 6, 14))


def test_outline_rule_keeps_the_outline(raw: Path) -> None:
    scan = _scan(raw, mask_rule="outline", grouping="distance")
    masks = {n.annotations[r].nodule_id: n.annotations[r].masks for n in scan.nodules for r in n.annotations}
    np.testing.assert_array_equal(masks["C1"][1], _box(20, 26, 3, 9))  # 49 voxels instead of 25
    np.testing.assert_array_equal(masks["A"][2], _box(5, 9, 5, 9))
    interior = _scan(raw, mask_rule="interior", grouping="distance")
    got = {n.annotations[r].nodule_id: n.annotations[r].masks for n in interior.nodules for r in n.annotations}
    np.testing.assert_array_equal(got["C1"][1], _box(21, 25, 4, 8))


def test_small_marks_left_out_by_default(raw: Path) -> None:
    assert all(3 not in n.annotations for n in _scan(raw).nodules)
    kept = _scan(raw, include_small=True)
    tiny = [n for n in kept.nodules if 3 in n.annotations]
    assert len(tiny) == 1 and set(tiny[0].annotations) == {3}
    assert tiny[0].annotations[3].masks == {}  # pylidc's rule: a one-vertex outline encloses nothing
    one_pixel = _scan(raw, include_small=True, mask_rule="outline", grouping="distance")
    tiny = next(n for n in one_pixel.nodules if 3 in n.annotations).annotations[3].masks
    assert list(tiny) == [3] and tiny[3].sum() == 1 and tiny[3][33, 33]


def test_pylidc_grouping_joins_a_lesion_one_reader_split(raw: Path) -> None:
    scan = _scan(raw)
    groups = sorted(sorted(n.annotations) for n in scan.nodules)
    assert groups == [[0, 1, 2], [1, 2]]
    ab = _by_readers(scan)[frozenset({0, 1, 2})]
    # reader 0's channel is the union of A and B: no region the others outlined shows reader 0 empty
    np.testing.assert_array_equal(ab.annotations[0].masks[2], _box(6, 8, 6, 8) | _box(6, 8, 12, 14))
    assert ab.annotations[0].nodule_id == "A+B"


def test_distance_grouping_splits_it(raw: Path) -> None:
    scan = _scan(raw, grouping="distance")
    ids = sorted(sorted(a.nodule_id for a in n.annotations.values()) for n in scan.nodules)
    assert ids == [["A", "AB", "AB"], ["B"], ["C1", "C2"]]


def test_consensus_over_the_readers_who_marked_the_nodule(raw: Path) -> None:
    scan = _scan(raw)
    patches = [p for p in extract_patches(scan, patch_size=16) if p.meta["readers"] == [False, True, True, False]]
    assert patches and all(p.meta["num_readers"] == 2 for p in patches)
    for p in patches:
        data = {"label": p.label, "readers": p.meta["readers"]}
        pylidc = MajorityVoted("label", threshold=0.5, inclusive=True, readers_key="readers")(data)["label"][0]
        marked = p.label[[1, 2]].astype(float)
        np.testing.assert_array_equal(pylidc.astype(bool), marked.mean(axis=0) >= 0.5)  # pylidc's consensus
        assert pylidc.sum() > 0
        old = MajorityVoted("label")(data)["label"][0]  # majority over four channels: 2 of 4 is not enough
        assert old.sum() == 0


def test_majority_readers_key_errors() -> None:
    lab = np.zeros((4, 3, 3), np.uint8)
    with pytest.raises(KeyError, match="readers"):
        MajorityVoted("label", readers_key="readers")({"label": lab})
    with pytest.raises(ValueError, match="one per rater"):
        MajorityVoted("label", readers_key="readers")({"label": lab, "readers": [True, False]})
    with pytest.raises(ValueError, match="readers_fallback"):
        MajorityVoted("label", readers_key="readers", readers_fallback="all")
    lab[1, 0, 0] = lab[2, 0, :2] = 1  # two non-empty channels: 1 of 2 marks (0, 1), 2 of 2 mark (0, 0)
    voted = MajorityVoted("label", threshold=0.5, inclusive=True, readers_key="readers", readers_fallback="nonempty")
    np.testing.assert_array_equal(voted({"label": lab})["label"][0], (lab[1] | lab[2]).astype(np.uint8))


def test_unknown_options_are_named(raw: Path) -> None:
    with pytest.raises(ValueError, match="mask_rule"):
        LIDCReader(raw, mask_rule="pylid")
    with pytest.raises(ValueError, match="grouping"):
        LIDCReader(raw, grouping="overlap")


def test_crossing_rule_equals_matplotlib() -> None:
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:24, 0:24]
    pts = np.c_[rows.ravel(), cols.ravel()]
    for n in (2, 3, 5, 8, 13):
        for _ in range(20):
            poly = rng.integers(2, 22, size=(n, 2))
            closed = np.vstack([poly, poly[:1]])
            ref = MplPath(closed, closed=True).contains_points(pts).reshape(24, 24)
            np.testing.assert_array_equal(points_in_polygon_mpl(poly, rows, cols), ref)
    # one vertex: matplotlib needs three path vertices, so nothing is inside
    assert not points_in_polygon_mpl(np.array([[5, 5]]), rows, cols).any()
    m = rasterize_rois_pylidc([(np.array([[5, 5]]), True)], (24, 24))
    assert not m.any()
