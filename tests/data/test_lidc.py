"""LIDC raw reader: round trip against the generator's ground truth, folds, caching, bad input."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage, stats

from monai_bayes.data import (
    DicomSeriesError,
    LIDCReader,
    LidcXmlError,
    get_fold_split,
    patient_folds,
    prepare_lidc_dataset,
)
from monai_bayes.data.synthetic import load_lidc_manifest
from monai_bayes.data.synthetic.lidc import SYNTHETIC_READER_CONVENTIONS


def _load(datalist: Path) -> dict:
    return json.loads(datalist.read_text())


def _crop(a: np.ndarray, centre: list[int], size: int) -> np.ndarray:
    r0, c0 = centre[0] - size // 2, centre[1] - size // 2
    pad = np.pad(a, size)
    return pad[r0 + size : r0 + 2 * size, c0 + size : c0 + 2 * size]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def _nodule_of(case, item: dict) -> int:
    """Generator nodule index of a patch, via the readers' XML nodule IDs (must agree)."""
    found = set()
    for r, nid in item["reader_nodule_ids"].items():
        for n in case.nodules:
            if n["reader_nodule_ids"].get(r) == nid:
                found.add(n["index"])
    assert len(found) == 1, f"readers' annotations of {item['nodule_id']} map to generator nodules {found}"
    return found.pop()


# --- acceptance 1: round trip ------------------------------------------------------------------


def test_round_trip_rater_masks_exact(lidc_raw: Path, lidc_cache: Path) -> None:
    cases = {c.patient_id: c for c in load_lidc_manifest(lidc_raw)}
    data = _load(lidc_cache)
    items = data["training"]
    size = data["config"]["patch_size"]
    assert data["num_raters"] == 4
    seen: set[tuple[str, int, int, int]] = set()
    dices = []
    gts = {pid: np.load(c.ground_truth)["reader_labels"] for pid, c in cases.items()}
    for it in items:
        case = cases[it["patient_id"]]
        n = _nodule_of(case, it)
        label = np.load(lidc_cache.parent / it["label"])
        image = np.load(lidc_cache.parent / it["image"])
        assert label.shape == (4, size, size) and label.dtype == np.uint8
        assert image.shape == (1, size, size) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        gt = gts[it["patient_id"]][:, it["slice_index"]] == n + 1
        for r in range(4):
            expected = _crop(gt[r], it["centre_rc"], size)
            np.testing.assert_array_equal(label[r].astype(bool), expected, err_msg=f"{it['nodule_id']} rater {r}")
            dices.append(_dice(label[r].astype(bool), expected))
            if gt[r].any():
                seen.add((it["patient_id"], n, it["slice_index"], r))
        assert it["raters"] == [bool(label[r].any()) for r in range(4)]
    assert min(dices) >= 0.99
    # every annotated (nodule, slice, reader) of the ground truth is in some patch
    for pid, gt in gts.items():
        for r, k in zip(*np.nonzero(gt.reshape(gt.shape[0], gt.shape[1], -1).any(axis=2))):
            for n in np.unique(gt[r, k]):
                if n:
                    assert (pid, int(n) - 1, int(k), int(r)) in seen


def test_nodules_and_readers_grouped_like_the_generator(lidc_raw: Path, lidc_cache: Path) -> None:
    cases = {c.patient_id: c for c in load_lidc_manifest(lidc_raw)}
    by_nodule = defaultdict(set)
    for it in _load(lidc_cache)["training"]:
        by_nodule[it["nodule_id"]].add((it["patient_id"], _nodule_of(cases[it["patient_id"]], it), it["num_readers"]))
    assert all(len(v) == 1 for v in by_nodule.values())
    got = {next(iter(v))[:2]: next(iter(v))[2] for v in by_nodule.values()}
    expected = {(c.patient_id, n["index"]): len(n["readers"]) for c in cases.values() for n in c.nodules}
    assert got == expected
    assert min(expected.values()) < 4  # some nodules are missed by some readers


def test_resampled_patches_keep_physical_size(lidc_raw: Path) -> None:
    reader = LIDCReader(lidc_raw, **SYNTHETIC_READER_CONVENTIONS)
    scan = reader.read_scan(reader.index()[0])
    from monai_bayes.data.lidc import extract_patches

    native = extract_patches(scan, patch_size=64)
    fine = extract_patches(scan, patch_size=128, pixel_spacing_mm=scan.volume.spacing[1] / 2)
    assert len(native) == len(fine)
    for a, b in zip(native, fine):
        assert a.meta["nodule_id"] == b.meta["nodule_id"] and b.label.shape == (4, 128, 128)
        for r in range(4):
            if a.label[r].sum() >= 20:
                assert b.label[r].sum() / 4 == pytest.approx(a.label[r].sum(), rel=0.2)
        assert b.image.min() >= 0 and b.image.max() <= 1


# --- realism: where readers disagree -----------------------------------------------------------


def test_disagreement_concentrates_at_boundaries(lidc_cache: Path) -> None:
    near, total = 0, 0
    for it in _load(lidc_cache)["training"]:
        label = np.load(lidc_cache.parent / it["label"]).astype(bool)
        marking = label[label.reshape(4, -1).any(axis=1)]
        if len(marking) < 2:
            continue
        votes = marking.sum(axis=0)
        disagree = (votes > 0) & (votes < len(marking))
        consensus = votes * 2 > len(marking)
        if not consensus.any():
            consensus = votes > 0
        dist = np.minimum(ndimage.distance_transform_edt(consensus), ndimage.distance_transform_edt(~consensus))
        near += int((dist[disagree] <= 3).sum())
        total += int(disagree.sum())
    assert total > 0
    assert near / total >= 0.95


def test_agreement_grows_with_nodule_size(lidc_raw: Path, lidc_cache: Path) -> None:
    cases = {c.patient_id: c for c in load_lidc_manifest(lidc_raw)}
    stacks, radius = defaultdict(list), {}
    for it in _load(lidc_cache)["training"]:
        stacks[it["nodule_id"]].append(np.load(lidc_cache.parent / it["label"]).astype(bool))
        radius[it["nodule_id"]] = cases[it["patient_id"]].nodules[_nodule_of(cases[it["patient_id"]], it)]["radius_mm"]
    agreement = {}
    for nid, slices in stacks.items():
        lab = np.stack(slices, axis=1).reshape(4, -1)
        ious = []
        for a, b in combinations(range(4), 2):
            union = (lab[a] | lab[b]).sum()
            ious.append(1.0 if union == 0 else (lab[a] & lab[b]).sum() / union)
        agreement[nid] = float(np.mean(ious))
    ids = sorted(agreement)
    rho = stats.spearmanr([radius[i] for i in ids], [agreement[i] for i in ids]).statistic
    assert rho > 0.3
    small = [agreement[i] for i in ids if radius[i] < 4]
    large = [agreement[i] for i in ids if radius[i] >= 8]
    assert np.mean(small) < np.mean(large)


# --- acceptance 3: patient-level folds ---------------------------------------------------------


def test_patient_level_folds(lidc_cache: Path) -> None:
    data = _load(lidc_cache)
    items = data["training"]
    fold_of: dict[str, set[int]] = defaultdict(set)
    for it in items:
        fold_of[it["patient_id"]].add(it["fold"])
    assert all(len(f) == 1 for f in fold_of.values())
    assert {next(iter(f)) for f in fold_of.values()} == {0, 1, 2, 3}
    counts = defaultdict(int)
    for it in items:
        counts[it["patient_id"]] += 1
    assert patient_folds(counts, 4, seed=data["seed"]) == {p: next(iter(f)) for p, f in fold_of.items()}
    for k in range(4):
        train, val = get_fold_split(lidc_cache, k)
        assert len(train) + len(val) == len(items)
        assert not {i["patient_id"] for i in train} & {i["patient_id"] for i in val}
        assert 0.1 < len(val) / len(items) < 0.4
        assert Path(val[0]["image"]).is_absolute() and Path(val[0]["label"]).is_file()


def test_patient_folds_seeded_and_order_free() -> None:
    ids = [f"P{i:03d}" for i in range(30) for _ in range(i % 5 + 1)]
    a = patient_folds(ids, 4, seed=1)
    assert a == patient_folds(list(reversed(ids)), 4, seed=1)
    assert a != patient_folds(ids, 4, seed=2)
    sizes = np.bincount([a[i] for i in ids])
    assert sizes.max() - sizes.min() <= 5
    with pytest.warns(UserWarning, match="some folds stay empty"):
        assert sorted(patient_folds(["a", "b", "b"], 4).values()) == [0, 1]


# --- caching -----------------------------------------------------------------------------------


def test_finished_cache_is_reused(lidc_raw: Path, lidc_cache: Path) -> None:
    before = lidc_cache.stat().st_mtime_ns
    again = prepare_lidc_dataset(
        lidc_raw, lidc_cache.parent, patch_size=64, seed=5, show_progress=False, **SYNTHETIC_READER_CONVENTIONS
    )
    assert again == lidc_cache and lidc_cache.stat().st_mtime_ns == before


def test_unrelated_folder_is_not_overwritten(lidc_small_raw: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_lidc_dataset(lidc_small_raw, tmp_path, show_progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_progress_bar_and_monai_loading(
    lidc_small_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from monai_bayes.data import RandRaterd

    prepare_lidc_dataset(lidc_small_raw, tmp_path / "log", patch_size=32, show_progress=True)
    assert "LIDC scans" not in capsys.readouterr().err  # not a terminal (a log file): no bar
    monkeypatch.setattr("monai_bayes.utils.progress.stderr_is_terminal", lambda: True)
    dl = prepare_lidc_dataset(lidc_small_raw, tmp_path / "c", patch_size=32, show_progress=True)
    assert "LIDC scans" in capsys.readouterr().err
    train, _ = get_fold_split(dl, 0)
    keys = ["image", "label"]
    tf = Compose([LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys, channel_dim=0), RandRaterd("label")])
    tf.set_random_state(0)
    item = Dataset(train, tf)[0]
    assert tuple(item["image"].shape) == (1, 32, 32) and tuple(item["label"].shape) == (1, 32, 32)
    assert 0 <= item["rater_index"] < 4


# --- acceptance 5: bad input -------------------------------------------------------------------


@pytest.fixture()
def raw_copy(lidc_small_raw: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "raw"
    shutil.copytree(lidc_small_raw, dst)
    return dst


def _no_leftovers(parent: Path) -> bool:
    return not any(p.name.startswith(".") and ".tmp-" in p.name for p in parent.iterdir())


def _case(raw: Path, i: int):
    return load_lidc_manifest(raw)[i]


def _fails_cleanly(raw: Path, cache: Path, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        prepare_lidc_dataset(raw, cache, show_progress=False)
    assert not cache.exists() and _no_leftovers(cache.parent)


def _skip_report(raw: Path, cache: Path) -> tuple[dict, dict]:
    dl = prepare_lidc_dataset(raw, cache, on_error="skip", show_progress=False)
    return _load(dl), json.loads((cache / "report.json").read_text())


def test_corrupt_dicom(raw_copy: Path, tmp_path: Path) -> None:
    bad = _case(raw_copy, 0).dicom_files[4]
    bad.write_bytes(bad.read_bytes()[:600])
    _fails_cleanly(raw_copy, tmp_path / "cache", DicomSeriesError, bad.name)
    data, report = _skip_report(raw_copy, tmp_path / "cache2")
    assert any(bad.name in s["item"] or bad.name in s["reason"] for s in report["skipped"])
    assert _case(raw_copy, 0).patient_id not in {i["patient_id"] for i in data["training"]}
    assert len({i["patient_id"] for i in data["training"]}) == 2


def _edit_first_roi(xml: Path, uid: str | None = None, z: str | None = None) -> None:
    text = xml.read_text()
    start = text.index("<roi>")
    head, tail = text[:start], text[start:]
    if uid is not None:
        a = tail.index("<imageSOP_UID>") + len("<imageSOP_UID>")
        tail = tail[:a] + uid + tail[tail.index("</imageSOP_UID>") :]
    if z is not None:
        a = tail.index("<imageZposition>") + len("<imageZposition>")
        tail = tail[:a] + z + tail[tail.index("</imageZposition>") :]
    xml.write_text(head + tail)


def test_absent_sop_uid_falls_back_to_z(raw_copy: Path, tmp_path: Path) -> None:
    _edit_first_roi(_case(raw_copy, 1).xml_path, uid="1.2.3.999")
    data, report = _skip_report(raw_copy, tmp_path / "cache")
    assert not report["skipped"]
    assert any("matched by imageZposition" in w["message"] for w in report["warnings"])
    assert len({i["patient_id"] for i in data["training"]}) == 3


def test_absent_sop_uid_and_z(raw_copy: Path, tmp_path: Path) -> None:
    case = _case(raw_copy, 1)
    _edit_first_roi(case.xml_path, uid="1.2.3.999", z="9999.0")
    _fails_cleanly(raw_copy, tmp_path / "cache", LidcXmlError, r"imageSOP_UID 1\.2\.3\.999 is not an instance")
    data, report = _skip_report(raw_copy, tmp_path / "cache2")
    assert len(report["skipped"]) == 1 and "1.2.3.999" in report["skipped"][0]["reason"]
    assert case.patient_id not in {i["patient_id"] for i in data["training"]}


def test_non_ct_series_named_by_xml(raw_copy: Path, tmp_path: Path) -> None:
    case = _case(raw_copy, 2)
    for f in case.dicom_files:
        ds = pydicom.dcmread(f)
        ds.Modality = "CR"
        ds.save_as(f)
    _fails_cleanly(raw_copy, tmp_path / "cache", DicomSeriesError, "Modality 'CR', expected 'CT'")
    data, report = _skip_report(raw_copy, tmp_path / "cache2")
    assert len(report["skipped"]) == 1
    assert case.patient_id not in {i["patient_id"] for i in data["training"]}


def test_missing_slices(raw_copy: Path, tmp_path: Path) -> None:
    case = _case(raw_copy, 0)
    case.dicom_files[len(case.dicom_files) // 2].unlink()
    _fails_cleanly(raw_copy, tmp_path / "cache", DicomSeriesError, "missing 1 slice")
    _, report = _skip_report(raw_copy, tmp_path / "cache2")
    assert "missing 1 slice" in report["skipped"][0]["reason"]


def test_cxr_xml_is_skipped_with_report(raw_copy: Path, tmp_path: Path) -> None:
    (raw_copy / "cxr.xml").write_text(
        '<?xml version="1.0"?><IdriReadMessage xmlns="http://www.nih.gov/idri"><ResponseHeader>'
        "<SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader></IdriReadMessage>"
    )
    dl = prepare_lidc_dataset(raw_copy, tmp_path / "cache", show_progress=False)  # not an error
    report = json.loads((dl.parent / "report.json").read_text())
    assert any("IdriReadMessage" in s["reason"] for s in report["skipped"])


def test_xml_for_absent_series(raw_copy: Path, tmp_path: Path) -> None:
    case = _case(raw_copy, 0)
    shutil.rmtree(case.series_dir.parent)  # the series is gone, keep its XML elsewhere
    case.xml_path.parent.mkdir(parents=True)
    shutil.copy(_case(raw_copy, 1).xml_path, case.xml_path)
    text = case.xml_path.read_text().replace(_case(raw_copy, 1).series_instance_uid, "1.2.3.4.5")
    case.xml_path.write_text(text)
    _fails_cleanly(raw_copy, tmp_path / "cache", LidcXmlError, "no DICOM series with it")
