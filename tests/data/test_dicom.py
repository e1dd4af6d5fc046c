"""DICOM series reader: cross-checked against SimpleITK and MONAI, and its validation errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 (the usual alias)
from pydicom.data import get_testdata_file

from monai_bayes.data import DicomSeriesError, read_dicom_series
from monai_bayes.data.dicom import index_dicom_tree
from monai_bayes.data.synthetic import load_lidc_manifest


@pytest.fixture()
def series(lidc_small_raw: Path, tmp_path: Path) -> Path:
    """A private copy of one synthetic series (DICOM + XML) to modify."""
    case = load_lidc_manifest(lidc_small_raw)[0]
    dst = tmp_path / "series"
    shutil.copytree(case.series_dir, dst)
    return dst


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _z_sorted_files(folder: Path) -> list[Path]:
    return sorted(
        _files(folder), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
    )


def test_volume_matches_pydicom_headers_and_pixels(lidc_small_raw: Path) -> None:
    case = load_lidc_manifest(lidc_small_raw)[0]
    vol = read_dicom_series(case.series_dir)
    assert vol.shape == case.shape
    assert vol.spacing == pytest.approx(case.spacing)
    assert list(vol.sop_instance_uids) == case.sop_instance_uids  # sorted by z, ascending
    assert np.all(np.diff(vol.z_positions) > 0)
    for k in (0, vol.shape[0] // 2, vol.shape[0] - 1):
        ds = pydicom.dcmread(case.dicom_files[k])
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[k], hu)
    assert vol.array.dtype == np.float32
    assert vol.array.min() >= -1024 and vol.array.max() > 0  # HU, not stored values
    assert vol.study_instance_uid == case.study_instance_uid
    assert vol.series_instance_uid == case.series_instance_uid
    assert vol.frame_of_reference_uid == case.frame_of_reference_uid
    assert vol.patient_id == case.patient_id
    assert [p.suffix for p in vol.ignored_files] == [".xml"]
    assert "PixelData" not in vol.datasets[0]


def test_volume_matches_simpleitk(lidc_small_raw: Path) -> None:
    case = load_lidc_manifest(lidc_small_raw)[1]
    vol = read_dicom_series(case.series_dir)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case.series_dir)))
    img = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).astype(np.float32), vol.array)
    assert img.GetSpacing() == pytest.approx(vol.spacing[::-1])
    assert img.GetOrigin() == pytest.approx(tuple(vol.origin))
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction, atol=1e-6)


def test_volume_matches_monai_loadimage(lidc_small_raw: Path, tmp_path: Path) -> None:
    """MONAI returns (x, y, z) in RAS; map every voxel through both affines and compare."""
    from monai.transforms import LoadImage

    case = load_lidc_manifest(lidc_small_raw)[2]
    vol = read_dicom_series(case.series_dir)
    for f in case.dicom_files:  # MONAI reads a folder of DICOM files only
        shutil.copy(f, tmp_path / f.name)
    img = LoadImage(reader="PydicomReader", image_only=True)(str(tmp_path))
    data = np.asarray(img)
    assert data.shape == vol.shape[::-1]
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    # voxel index of MONAI -> LPS mm -> our (x, y, z) index
    m = np.linalg.inv(vol.affine) @ ras_to_lps @ np.asarray(img.affine, dtype=float)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij"), -1).reshape(-1, 3)
    ours = np.rint(np.c_[idx, np.ones(len(idx))] @ m.T)[:, :3].astype(int)  # (x, y, z)
    np.testing.assert_array_equal(data[tuple(idx.T)], vol.array[ours[:, 2], ours[:, 1], ours[:, 0]])


def test_pydicom_bundled_real_ct() -> None:
    path = get_testdata_file("CT_small.dcm")
    vol = read_dicom_series(path)
    ds = pydicom.dcmread(path)
    assert vol.shape == (1, 128, 128)
    np.testing.assert_array_equal(vol.array[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert vol.spacing == pytest.approx((5.0, 0.661468, 0.661468))  # single slice: SliceThickness
    assert vol.patient_id == "1CT1"


def test_in_memory_datasets_any_order(lidc_small_raw: Path) -> None:
    case = load_lidc_manifest(lidc_small_raw)[0]
    ref = read_dicom_series(case.series_dir)
    datasets = [pydicom.dcmread(f) for f in case.dicom_files]
    rng = np.random.default_rng(0)
    shuffled = [datasets[i] for i in rng.permutation(len(datasets))]
    for ds in shuffled[:3]:
        del ds.file_meta  # as built in memory, e.g. from DICOMweb JSON + bulk data
    vol = read_dicom_series(shuffled)
    np.testing.assert_array_equal(vol.array, ref.array)
    assert vol.sop_instance_uids == ref.sop_instance_uids
    assert vol.files == (None,) * len(datasets)
    assert "PixelData" in vol.datasets[0]  # the caller's objects are not stripped


def test_index_dicom_tree_groups_series(lidc_small_raw: Path) -> None:
    index = index_dicom_tree(lidc_small_raw)
    cases = load_lidc_manifest(lidc_small_raw)
    assert set(index) == {c.series_instance_uid for c in cases}
    for c in cases:
        assert sorted(index[c.series_instance_uid].files) == sorted(c.dicom_files)
        assert index[c.series_instance_uid].modality == "CT"


# --- bad input ------------------------------------------------------------------------------


def test_corrupt_file_named(series: Path) -> None:
    bad = _files(series)[3]
    bad.write_bytes(b"this is not DICOM" * 10)
    with pytest.raises(DicomSeriesError, match=bad.name) as e:
        read_dicom_series(series)
    assert "not a valid DICOM" in str(e.value)


def test_truncated_file_named(series: Path) -> None:
    bad = _files(series)[5]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 3000])
    with pytest.raises(DicomSeriesError, match=bad.name):
        read_dicom_series(series)


def test_missing_slice(series: Path) -> None:
    files = _z_sorted_files(series)
    files[len(files) // 2].unlink()
    with pytest.raises(DicomSeriesError, match=r"missing 1 slice\(s\)"):
        read_dicom_series(series)


def test_inconsistent_spacing(series: Path) -> None:
    f = _z_sorted_files(series)[4]
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.4 * float(ds.SliceThickness)
    ds.save_as(f)
    with pytest.raises(DicomSeriesError, match="inconsistent slice spacing"):
        read_dicom_series(series)


def test_duplicate_position(series: Path) -> None:
    files = _z_sorted_files(series)
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = pydicom.dcmread(files[3]).ImagePositionPatient
    ds.save_as(files[2])
    with pytest.raises(DicomSeriesError, match="duplicate slice position"):
        read_dicom_series(series)


def test_non_ct_series(series: Path) -> None:
    for f in _files(series):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    with pytest.raises(DicomSeriesError, match="expected Modality CT, found 'MR'"):
        read_dicom_series(series)
    assert read_dicom_series(series, expected_modality=None).modality == "MR"


def test_mixed_series(series: Path) -> None:
    f = _files(series)[1]
    ds = pydicom.dcmread(f)
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(f)
    with pytest.raises(DicomSeriesError, match="mixed series"):
        read_dicom_series(series)


def test_inconsistent_orientation_and_size(series: Path) -> None:
    f = _files(series)[2]
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    ds.save_as(f)
    with pytest.raises(DicomSeriesError, match="ImageOrientationPatient"):
        read_dicom_series(series)


def test_missing_geometry_tag(series: Path) -> None:
    f = _files(series)[0]
    ds = pydicom.dcmread(f)
    del ds.PixelSpacing
    ds.save_as(f)
    with pytest.raises(DicomSeriesError, match="missing required attribute PixelSpacing"):
        read_dicom_series(series)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("x")
    with pytest.raises(DicomSeriesError, match="no DICOM files"):
        read_dicom_series(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_dicom_series(tmp_path / "absent")


def test_highdicom_accepts_series_as_seg_source(lidc_small_raw: Path) -> None:
    """The PACS pipeline builds DICOM SEG on top of these datasets."""
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    case = load_lidc_manifest(lidc_small_raw)[0]
    vol = read_dicom_series(case.series_dir)  # headers only: no PixelData kept
    mask = np.load(case.ground_truth)["reader_labels"].max(axis=0) > 0
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=list(vol.datasets),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="monai_bayes",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    assert seg.PatientID == case.patient_id and seg.StudyInstanceUID == case.study_instance_uid
    assert seg.NumberOfFrames == int(mask.any(axis=(1, 2)).sum())
