"""The written objects: SEG / Parametric Map content, geometry, dciodvfy validity, NIfTI orientation."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from monai_bayes.data import read_dicom_series
from monai_bayes.pacs import DicomInferenceSettings, derive_uid, run_pipeline

pytestmark = pytest.mark.pacs  # dciodvfy


@pytest.fixture(scope="module")
def local_run(tiny_bundle, ct_series, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    outcome = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=out, push=False)
    volume = read_dicom_series(ct_series.folder)
    return outcome, volume


def _positions_by_source(ds: pydicom.Dataset) -> dict[str, list[float]]:
    """Per frame: referenced source SOP Instance UID -> the frame's ImagePositionPatient."""
    out = {}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out[str(src)] = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
    return out


def _check_references(ds: pydicom.Dataset, volume) -> None:
    assert ds.StudyInstanceUID == volume.study_instance_uid
    assert ds.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_instance_uid
    referenced = {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(volume.sop_instance_uids)
    positions = _positions_by_source(ds)
    assert positions, "no frames"
    for uid, ipp in positions.items():
        k = volume.sop_instance_uids.index(uid)
        np.testing.assert_allclose(ipp, volume.positions[k], atol=1e-4)
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing], volume.spacing[1:])
    np.testing.assert_allclose(
        [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient], [1, 0, 0, 0, 1, 0]
    )
    assert ds.SOPInstanceUID != ds.SeriesInstanceUID
    assert ds.SeriesInstanceUID not in (volume.series_instance_uid,)


def test_segmentation_content_and_geometry(local_run, read_nifti, dciodvfy, ct_series):
    outcome, volume = local_run
    result = outcome.result
    seg_file = result.directory / "dicom" / "seg.dcm"
    dciodvfy(seg_file)
    ds = pydicom.dcmread(seg_file)
    _check_references(ds, volume)
    assert ds.PatientID == ct_series.patient_id  # patient / study copied from the source
    assert ds.SeriesInstanceUID == derive_uid(result.fingerprint, "seg-series")
    assert ds.SOPInstanceUID == derive_uid(result.fingerprint, "seg-instance")
    assert ds.SegmentationType == "BINARY" and ds.Modality == "SEG"
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == "nodule"
    algo = segment.SegmentAlgorithmName
    assert "monai_bayes" in algo and "sparse_bayes" in algo and "r_bayes=0.25" in algo, algo
    ident = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert ident.AlgorithmName == algo and ident.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # AI
    assert "r_bayes=0.25" in str(ident.AlgorithmParameters) and "num_samples=4" in str(ident.AlgorithmParameters)
    assert ds.DeviceSerialNumber == result.manifest["model"]["checkpoint_sha256"][:32]

    seg = hd.seg.segread(seg_file)
    mask = seg.get_pixels_by_source_instance(list(volume.sop_instance_uids), assert_missing_frames_are_empty=True)
    mask = mask[..., 0].astype(bool)
    nifti = read_nifti(result.nifti["segmentation"]).astype(bool)
    np.testing.assert_array_equal(mask, nifti)
    # the hand-set network thresholds at -300 HU: the mask is the body, not everything / nothing
    assert 0.05 < mask.mean() < 0.95
    assert np.mean(mask == (volume.array > -300)) > 0.97
    assert result.manifest["foreground_voxels"] == [int(mask.sum())]


@pytest.mark.parametrize("kind", ["total_entropy", "mutual_information"])
def test_parametric_maps_content_and_geometry(local_run, read_nifti, dciodvfy, kind):
    outcome, volume = local_run
    result = outcome.result
    path = result.directory / "dicom" / f"pm_{kind}.dcm"
    dciodvfy(path)
    ds = pydicom.dcmread(path)
    _check_references(ds, volume)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert ds.SeriesInstanceUID == derive_uid(result.fingerprint, "pm-series")
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = rwvm.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("{nat}", "UCUM")
    quantity = rwvm.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert quantity.CodingSchemeDesignator == "99MONAIBAYES"
    assert ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality == "U"

    pm = hd.pm.ParametricMap.from_dataset(ds)
    values = pm.get_pixels_by_source_instance(list(volume.sop_instance_uids), dtype=np.float32)
    nifti = read_nifti(result.nifti[kind])
    np.testing.assert_array_equal(values, nifti)
    assert values.min() >= 0 and values.max() <= np.log(2) + 1e-5
    assert values.max() > 1e-3, "the partial-Bayes conv must give some uncertainty at the threshold"


def test_uncertainty_decomposition_in_nifti(local_run, read_nifti):
    result = local_run[0].result
    total = read_nifti(result.nifti["total_entropy"])
    mi = read_nifti(result.nifti["mutual_information"])
    aleatoric = read_nifti(result.nifti["aleatoric_entropy"])
    np.testing.assert_allclose(total, mi + aleatoric, atol=1e-5)
    p = read_nifti(result.nifti["probability"])
    assert p.min() >= 0 and p.max() <= 1
    # uncertainty concentrates where p is near the threshold
    near = np.abs(p - 0.5) < 0.2
    assert total[near].mean() > 5 * total[~near].mean()


def test_nifti_affine_matches_simpleitk(local_run, ct_series):
    import nibabel as nib
    import SimpleITK as sitk  # noqa: N813 - the usual alias

    result = local_run[0].result
    img = nib.load(str(result.nifti["segmentation"]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in sorted(ct_series.files)])
    ref = reader.Execute()
    ref_files = reader.GetFileNames()
    assert img.shape == ref.GetSize()  # (X, Y, Z)
    flip = np.array([-1.0, -1.0, 1.0])  # LPS (ITK) -> RAS (NIfTI)
    for index in [(0, 0, 0), (63, 0, 0), (0, 63, 11), (10, 20, 5)]:
        itk_point = np.array(ref.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(img.affine @ [*index, 1], [*(flip * itk_point), 1], atol=1e-4)
    assert len(ref_files) == 12
    assert img.header.get_qform(coded=True)[1] == 1 and img.header.get_sform(coded=True)[1] == 1


def test_fractional_segmentation(tiny_bundle, ct_series, tmp_path, read_nifti, dciodvfy):
    settings = DicomInferenceSettings(segmentation_type="fractional", uncertainty_maps=["mutual_information"])
    result = run_pipeline(
        tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, settings=settings
    ).result
    seg_file = result.directory / "dicom" / "seg.dcm"
    dciodvfy(seg_file)
    ds = pydicom.dcmread(seg_file)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "PROBABILITY"
    assert [i.map for i in result.instances] == [None, "mutual_information"]
    volume = read_dicom_series(ct_series.folder)
    seg = hd.seg.segread(seg_file)
    frac = seg.get_pixels_by_source_instance(list(volume.sop_instance_uids), assert_missing_frames_are_empty=True)
    prob = read_nifti(result.nifti["probability"])
    np.testing.assert_allclose(frac[..., 0], prob, atol=0.5 / 255 + 1e-6)


def test_sigmoid_two_segments(bundle_factory, ct_series, tmp_path, read_nifti, dciodvfy):
    from monai_bayes.pacs import SegmentSpec

    bundle = bundle_factory(tmp_path / "sigmoid_bundle", activation="sigmoid")
    air = {"value": "39607008", "scheme": "SCT", "meaning": "Lung"}
    settings = DicomInferenceSettings(
        segments=[SegmentSpec(label="body", class_index=0), {"label": "air", "class_index": 1, "type": air}]
    )
    result = run_pipeline(
        bundle, input_dir=ct_series.folder, output_dir=tmp_path / "out", push=False, settings=settings
    ).result
    kinds = [(i.kind, i.map) for i in result.instances]
    assert kinds == [
        ("segmentation", None),
        ("parametric_map", "total_entropy"),
        ("parametric_map", "total_entropy"),
        ("parametric_map", "mutual_information"),
        ("parametric_map", "mutual_information"),
    ]
    for path in result.dicom_files():
        dciodvfy(path)
    seg = hd.seg.segread(result.directory / "dicom" / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["body", "air"]
    volume = read_dicom_series(ct_series.folder)
    masks = seg.get_pixels_by_source_instance(list(volume.sop_instance_uids), assert_missing_frames_are_empty=True)
    nifti = read_nifti(result.nifti["segmentation"]).astype(bool)  # (K, Z, Y, X)
    np.testing.assert_array_equal(np.moveaxis(masks, -1, 0).astype(bool), nifti)
    assert not np.any(nifti[0] & nifti[1]), "body and air are complementary here"
    labels = {pydicom.dcmread(p).ContentLabel for p in result.dicom_files()[1:]}
    assert labels == {"TOTAL_ENTROPY_1", "TOTAL_ENTROPY_2", "MUTUAL_INFO_1", "MUTUAL_INFO_2"}


def test_volumetric_bundle_matches_slicewise(bundle_factory, ct_series, tmp_path, local_run, read_nifti, dciodvfy):
    bundle = bundle_factory(tmp_path / "bundle3d", spatial_dims=3)
    result = run_pipeline(bundle, input_dir=ct_series.folder, output_dir=tmp_path / "out", push=False).result
    assert result.manifest["mode"] == "3d"
    dciodvfy(result.directory / "dicom" / "seg.dcm")
    mask3d = read_nifti(result.nifti["segmentation"]).astype(bool)
    mask2d = read_nifti(local_run[0].result.nifti["segmentation"]).astype(bool)
    assert np.mean(mask3d == mask2d) > 0.99  # same centre-tap filter, other noise draws


def test_result_folder_layout(local_run):
    result = local_run[0].result
    files = sorted(str(p.relative_to(result.directory)) for p in result.directory.rglob("*") if p.is_file())
    assert files == [
        "dicom/pm_mutual_information.dcm",
        "dicom/pm_total_entropy.dcm",
        "dicom/seg.dcm",
        "manifest.json",
        "nifti/aleatoric_entropy.nii.gz",
        "nifti/mutual_information.nii.gz",
        "nifti/probability.nii.gz",
        "nifti/segmentation.nii.gz",
        "nifti/total_entropy.nii.gz",
    ]
    text = (result.directory / "manifest.json").read_text()
    source = pydicom.dcmread(next(Path(local_run[1].files[0]).parent.glob("*.dcm")), stop_before_pixels=True)
    assert str(source.PatientID) not in text and str(source.PatientName) not in text
