"""Synthetic LIDC writer: determinism, independence of cases, DICOM identity tags, XML variants."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest

from monai_bayes.data import LIDCReader
from monai_bayes.data.synthetic import load_lidc_manifest, write_lidc_cases
from monai_bayes.data.synthetic.lidc import SYNTHETIC_READER_CONVENTIONS

SHAPE = (12, 96, 96)


def _digest(case) -> str:
    h = hashlib.sha256()
    for f in [*case.dicom_files, case.xml_path, case.ground_truth]:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def test_deterministic_and_case_independent(tmp_path: Path) -> None:
    a = write_lidc_cases(tmp_path / "a", num_cases=2, seed=4, shape=SHAPE)
    b = write_lidc_cases(tmp_path / "b", num_cases=1, seed=4, shape=SHAPE)
    c = write_lidc_cases(tmp_path / "c", num_cases=1, seed=5, shape=SHAPE)
    assert _digest(a[0]) == _digest(b[0])
    assert _digest(a[0]) != _digest(c[0])
    assert a[0].series_instance_uid == b[0].series_instance_uid != c[0].series_instance_uid
    again = write_lidc_cases(tmp_path / "a", num_cases=2, seed=4, shape=SHAPE)  # finished: reused
    assert [x.xml_path for x in again] == [x.xml_path for x in a]
    with pytest.raises(FileExistsError):
        write_lidc_cases(tmp_path / "a", num_cases=3, seed=4, shape=SHAPE)


def test_valid_ct_image_storage_with_patient_identity(lidc_small_raw: Path) -> None:
    case = load_lidc_manifest(lidc_small_raw)[0]
    ds = pydicom.dcmread(case.dicom_files[0])
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.Modality == "CT" and ds.PatientID == case.patient_id and str(ds.PatientName).startswith("SYNTHETIC^")
    for kw in (
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "SeriesNumber",
        "InstanceNumber",
        "FrameOfReferenceUID",
        "SliceThickness",
        "RescaleType",
    ):
        assert ds.get(kw) not in (None, ""), kw
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in case.dicom_files}) == len(case.dicom_files)


def test_xml_without_namespace_reads_alike(tmp_path: Path) -> None:
    cases = write_lidc_cases(tmp_path / "raw", num_cases=1, seed=8, shape=(16, 128, 128), xml_namespace=None)
    assert 'xmlns="' not in cases[0].xml_path.read_text()
    reader = LIDCReader(tmp_path / "raw", **SYNTHETIC_READER_CONVENTIONS)
    scan = reader.read_scan(reader.index()[0])
    assert len(scan.nodules) == len(cases[0].nodules)
