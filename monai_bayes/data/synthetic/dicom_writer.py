"""Write a volume as a standard CT Image Storage series (one Part 10 file per slice)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["CTSeriesInfo", "deterministic_uid", "format_ds", "write_ct_series"]

#: Stored value = HU - intercept; unsigned 12-bit range like most CT scanners.
RESCALE_INTERCEPT = -1024.0
MAX_STORED = 4095


def deterministic_uid(*parts: Any) -> str:
    """A valid DICOM UID derived from ``parts`` (same parts → same UID)."""
    return str(generate_uid(entropy_srcs=["monai_bayes.synthetic", *map(str, parts)]))


def format_ds(x: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS) for ``x``."""
    for digits in range(6, -1, -1):
        s = f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"
        if s == "-0":
            s = "0"
        if len(s) <= 16:
            return s
    raise ValueError(f"cannot format {x} as DICOM DS")


@dataclass
class CTSeriesInfo:
    """Identity and acquisition attributes of a synthetic CT series."""

    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    patient_age: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    series_number: int
    study_description: str = "CT CHEST (synthetic)"
    series_description: str = "Axial lung (synthetic)"
    patient_position: str = "FFS"


def _base_dataset(
    info: CTSeriesInfo, rows: int, cols: int, pixel_spacing: tuple[float, float], thickness: float
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "monai_bayes"
    ds.InstitutionName = "Synthetic Data Institute"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = info.series_description
    ds.ManufacturerModelName = "SyntheticCT"
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.patient_birth_date
    ds.PatientSex = info.patient_sex
    ds.PatientAge = info.patient_age
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data, no real patient"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = format_ds(thickness)
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = info.patient_position
    ds.StudyInstanceUID = info.study_instance_uid
    ds.SeriesInstanceUID = info.series_instance_uid
    ds.StudyID = info.study_id
    ds.SeriesNumber = info.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = info.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [format_ds(pixel_spacing[0]), format_ds(pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.RescaleIntercept = format_ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def write_ct_series(
    hu: np.ndarray,
    out_dir: str | os.PathLike[str],
    info: CTSeriesInfo,
    *,
    spacing: tuple[float, float, float],
    origin: Sequence[float] | np.ndarray,
    head_first_numbering: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> tuple[list[Path], list[str], list[float]]:
    """Write ``hu`` as one CT Image Storage file per slice.

    Parameters
    ----------
    hu
        ``(Z, Y, X)`` Hounsfield units; slice ``k`` lies at patient z = ``origin[2] + k * dz``.
        Values are rounded and clipped to [-1024, 3071] HU (stored = HU + 1024, uint16).
    out_dir
        Folder for the files ``1-001.dcm`` …, numbered by InstanceNumber.
    info
        Patient / study / series identity.
    spacing
        ``(dz, dy, dx)`` mm; ``dz`` is also written as SliceThickness.
    origin
        ``(x, y, z)`` LPS mm of the first pixel of slice 0.
    head_first_numbering
        Number instances from the highest z down (as in many LIDC series) instead of upwards.
    extra
        Further attributes set on every slice (keyword → value).

    Returns
    -------
    (files, sop_uids, z_positions)
        Per slice ``k`` of ``hu`` (array order): file path, SOP Instance UID, patient z in mm.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nz, rows, cols = hu.shape
    dz, dy, dx = spacing
    stored = np.clip(np.rint(np.asarray(hu, dtype=np.float64) - RESCALE_INTERCEPT), 0, MAX_STORED).astype(np.uint16)
    ds = _base_dataset(info, rows, cols, (dy, dx), dz)  # one dataset, updated per slice
    ds.InstanceCreationDate = dt.datetime(2000, 1, 1).strftime("%Y%m%d")
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MONAI_BAYES"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    files, uids, zs = [], [], []
    for k in range(nz):
        instance = (nz - k) if head_first_numbering else (k + 1)
        sop_uid = deterministic_uid(info.series_instance_uid, "slice", k)
        z = float(origin[2]) + k * dz
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [format_ds(origin[0]), format_ds(origin[1]), format_ds(z)]
        ds.SliceLocation = format_ds(z)
        ds.PixelData = stored[k].tobytes()
        path = out / f"1-{instance:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        uids.append(sop_uid)
        zs.append(float(format_ds(z)))
    return files, uids, zs
