"""DICOM Segmentation, DICOM Parametric Map and NIfTI outputs of a :class:`Prediction`.

* **SEG** (:func:`build_segmentation`) -- highdicom ``Segmentation``, binary (mask) or fractional
  (predictive mean probability, 8 bit, PROBABILITY). One frame per source slice and segment
  (frames without foreground left out if ``omit_empty_frames``), each with the source slice's
  Plane Position and a Derivation Image reference to it; the source series is referenced,
  Frame of Reference, patient and study are the source's. Each segment's Algorithm Identification
  names ``monai_bayes``, the method and ``r_bayes`` and lists S, seed, threshold and the
  checkpoint hash as parameters.
* **Parametric Map** (:func:`build_parametric_map`) -- highdicom ``ParametricMap`` of a 32-bit
  float uncertainty map, one frame per source slice, Real World Value Mapping in nats (UCUM
  ``{nat}``: the dimensionless unit annotated as natural unit of information) with a coded
  quantity from the private scheme ``99MONAIBAYES`` (``TOTENT`` predictive entropy, ``MUTINF``
  mutual information, ``ALEENT`` expected entropy), Frame Anatomy from the settings and a
  LINEAR_EXACT window over the value range.
* **NIfTI** (:func:`write_nifti`) -- the arrays in RAS+ orientation with the source affine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset

from monai_bayes._version import __version__
from monai_bayes.data.dicom import DicomVolume
from monai_bayes.pacs.bundle import InferenceBundle
from monai_bayes.pacs.settings import CodeSpec, DicomInferenceSettings

__all__ = [
    "QUANTITY_CODES",
    "UNIT_NAT",
    "MapSpec",
    "algorithm_name",
    "build_parametric_map",
    "build_segmentation",
    "nifti_affine",
    "write_nifti",
]

#: Private coding scheme of the uncertainty quantities.
CODING_SCHEME = "99MONAIBAYES"
#: kind -> (code value, code meaning, content label, short description)
QUANTITY_CODES: dict[str, tuple[str, str, str, str]] = {
    "total_entropy": ("TOTENT", "Predictive entropy", "TOTAL_ENTROPY", "total predictive entropy H[mean p]"),
    "mutual_information": ("MUTINF", "Mutual information", "MUTUAL_INFO", "mutual information (epistemic)"),
    "aleatoric_entropy": ("ALEENT", "Expected entropy", "ALEATORIC_ENT", "expected entropy E[H[p]] (aleatoric)"),
}
#: UCUM annotation for the natural unit of information.
UNIT_NAT = ("{nat}", "UCUM", "nat")


@dataclass(frozen=True)
class MapSpec:
    """One Parametric Map to write: which uncertainty map and which of its channels."""

    kind: str
    channel: int
    suffix: str  # "" for softmax (one map), "_<segment number>" for sigmoid


def _code(spec: CodeSpec):  # -> highdicom.sr.CodedConcept
    from highdicom.sr import CodedConcept

    return CodedConcept(spec.value, spec.scheme, spec.meaning)


def _lo(text: str) -> str:
    """Truncate to the 64 characters of a DICOM LO value."""
    return text[:64]


def algorithm_name(bundle: InferenceBundle) -> str:
    """``"monai_bayes <method> r_bayes=<r>"`` (LO, ≤ 64 characters)."""
    parts = ["monai_bayes", bundle.method or "mc"]
    if bundle.r_bayes is not None:
        parts.append(f"r_bayes={bundle.r_bayes:g}")
    return _lo(" ".join(parts))


def _model_phrase(bundle: InferenceBundle) -> str:
    r = f", r_bayes={bundle.r_bayes:g}" if bundle.r_bayes is not None else ""
    return f"S={bundle.num_samples}{r}"


def _equipment(bundle: InferenceBundle) -> dict[str, Any]:
    return {
        "manufacturer": "monai_bayes",
        "manufacturer_model_name": _lo(bundle.name),
        "software_versions": f"monai_bayes {__version__}",
        "device_serial_number": bundle.checkpoint_sha256[:32],
    }


def build_segmentation(
    volume: DicomVolume,
    probability: np.ndarray,
    mask: np.ndarray,
    bundle: InferenceBundle,
    settings: DicomInferenceSettings,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
):  # -> highdicom.seg.Segmentation
    """The DICOM Segmentation of one result.

    Parameters
    ----------
    volume
        Source series (its datasets in slice order; pixel data not needed).
    probability, mask
        ``(K, Z, Y, X)`` predictive mean probability (float, [0, 1]) and binary mask, one per
        segment of ``settings.segments``.
    bundle, settings
        Model identity and output settings (type, segments, anatomic region, series number).
    series_instance_uid, sop_instance_uid
        The (derived) UIDs.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    K = len(settings.segments)
    if probability.shape[0] != K or mask.shape[0] != K:
        raise ValueError(f"probability/mask need {K} segment channel(s), got {probability.shape[0]}/{mask.shape[0]}")
    params = {
        "method": str(bundle.method or "mc"),
        "r_bayes": "n/a" if bundle.r_bayes is None else f"{bundle.r_bayes:g}",
        "num_samples": str(bundle.num_samples),
        "seed": str(bundle.seed),
        "activation": bundle.activation,
        "threshold": f"{settings.threshold:g}",
        "checkpoint_sha256": bundle.checkpoint_sha256[:16],
    }
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name(bundle),
        family=codes.cid7162.ArtificialIntelligence,
        version=_lo(bundle.version),
        source=_lo(f"monai_bayes {__version__}, bundle {bundle.name}"),
        parameters=params,
    )
    region = [_code(settings.anatomic_region)] if settings.anatomic_region is not None else None
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=seg.label,
            segmented_property_category=_code(seg.category),
            segmented_property_type=_code(seg.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=region,
        )
        for i, seg in enumerate(settings.segments)
    ]
    fractional = settings.segmentation_type == "fractional"
    pixels = np.clip(probability, 0.0, 1.0).astype(np.float32) if fractional else mask.astype(np.uint8)
    pixels = np.moveaxis(pixels, 0, -1)  # (Z, Y, X, K): frames follow the source images
    if K == 1:
        pixels = pixels[..., 0]
    if fractional:
        what = f"MC predictive mean probability, {_model_phrase(bundle)}"
    else:
        what = f"MC mean probability >= {settings.threshold:g}, {_model_phrase(bundle)}"
    seg = hd.seg.Segmentation(
        source_images=list(volume.datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL
        if fractional
        else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=settings.series_number_seg,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_label="SEGMENTATION",
        content_description=_lo(what),
        content_creator_name=None,
        omit_empty_frames=settings.omit_empty_frames and bool(mask.any()),
        **_equipment(bundle),
    )
    seg.SeriesDescription = _lo(f"{settings.series_description} SEG {bundle.name}")
    return seg


def _frame_anatomy(settings: DicomInferenceSettings) -> Dataset | None:
    if settings.anatomic_region is None:
        return None
    item = Dataset()
    item.AnatomicRegionSequence = [_code(settings.anatomic_region)]
    item.FrameLaterality = settings.frame_laterality
    return item


def build_parametric_map(
    volume: DicomVolume,
    values: np.ndarray,
    spec: MapSpec,
    bundle: InferenceBundle,
    settings: DicomInferenceSettings,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
):  # -> highdicom.pm.ParametricMap
    """A DICOM Parametric Map of one uncertainty map.

    Parameters
    ----------
    volume
        Source series.
    values
        ``(Z, Y, X)`` float32 map in nats.
    spec
        Which map (``kind``) and channel; sets the coded quantity, labels and descriptions.
    bundle, settings
        Model identity and output settings.
    series_instance_uid, sop_instance_uid, instance_number
        Identity of the instance (all maps of a result share one series).
    """
    import highdicom as hd
    from highdicom.sr import CodedConcept

    code_value, code_meaning, label, description = QUANTITY_CODES[spec.kind]
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.shape != volume.shape:
        raise ValueError(f"{spec.kind} map has shape {values.shape}, expected the volume's {volume.shape}")
    lo, hi = float(min(0.0, values.min())), float(max(values.max(), 1e-6))
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label[:16],
        lut_explanation=_lo(f"{code_meaning} in nats"),
        unit=CodedConcept(*UNIT_NAT),
        value_range=(lo, hi),
        slope=1.0,
        intercept=0.0,
        quantity_definition=CodedConcept(code_value, CODING_SCHEME, code_meaning),
    )
    window = hd.VOILUTTransformation(window_center=(lo + hi) / 2, window_width=hi - lo, voi_lut_function="LINEAR_EXACT")
    pm = hd.pm.ParametricMap(
        source_images=list(volume.datasets),
        pixel_array=values,
        series_instance_uid=series_instance_uid,
        series_number=settings.series_number_pm,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_label=(label + spec.suffix)[:16],
        content_description=_lo(f"{description}, nats, {_model_phrase(bundle)}"),
        **_equipment(bundle),
    )
    anatomy = _frame_anatomy(settings)
    if anatomy is not None:
        pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    pm.SeriesDescription = _lo(f"{settings.series_description} uncertainty {bundle.name}")
    return pm


def nifti_affine(volume: DicomVolume) -> np.ndarray:
    """``(4, 4)`` RAS+ affine of the NIfTI arrays ``(X, Y, Z)``: the volume's LPS affine with x and
    y negated.
    """
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine


def write_nifti(path: str | os.PathLike[str], array: np.ndarray, volume: DicomVolume) -> Path:
    """Write ``array`` ``(Z, Y, X)`` or ``(C, Z, Y, X)`` as NIfTI ``(X, Y, Z[, C])`` in RAS+.

    ``bool`` arrays are stored as uint8, floats as float32; qform and sform are the scanner affine
    (code 1), units mm.
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    data = a.transpose(2, 1, 0) if a.ndim == 3 else a.transpose(3, 2, 1, 0)
    img = nib.Nifti1Image(np.ascontiguousarray(data), nifti_affine(volume))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    path = Path(path)
    nib.save(img, str(path))
    return path
