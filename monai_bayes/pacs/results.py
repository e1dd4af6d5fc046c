"""On-disk results: one folder per (source series, fingerprint), written atomically.

Layout under the output folder::

    results/<SeriesInstanceUID>/<fingerprint[:16]>/
        manifest.json                 # written last; source UIDs, model, settings, instances, files
        dicom/seg.dcm                 # DICOM Segmentation
        dicom/pm_<map>.dcm            # DICOM Parametric Maps (one per uncertainty map)
        nifti/segmentation.nii.gz     # uint8 mask       (X, Y, Z[, K])  RAS+
        nifti/probability.nii.gz      # float32 mean p   (X, Y, Z[, K])
        nifti/<map>.nii.gz            # float32 nats     (X, Y, Z[, U])

A result is built in ``.staging/`` and renamed into place in one step, files fsynced first
(:mod:`monai_bayes.utils.atomic`): a result folder either is complete (with its manifest) or does
not exist, whatever happens mid-run. Folders are created owner-only (``0700``), files ``0600``;
the folder names come from validated UIDs and are checked to stay inside the output folder.
:func:`load_result` finds a complete result again, so a run interrupted after inference reuses it
instead of computing it again. Manifests carry UIDs, never patient names or IDs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_bayes._version import __version__
from monai_bayes.data.dicom import DicomVolume
from monai_bayes.pacs.bundle import InferenceBundle
from monai_bayes.pacs.errors import InvalidInputError
from monai_bayes.pacs.inference import Prediction
from monai_bayes.pacs.settings import DicomInferenceSettings
from monai_bayes.pacs.uids import check_uid, derive_uid
from monai_bayes.pacs.writers import MapSpec, build_parametric_map, build_segmentation, write_nifti
from monai_bayes.utils.atomic import (
    atomic_write_json,
    make_private_dir,
    publish_dir,
    restrict_tree,
    scratch_dir,
)
from monai_bayes.utils.files import lies_inside

__all__ = [
    "MANIFEST_NAME",
    "ResultInstance",
    "StoredResult",
    "load_result",
    "result_dir",
    "write_result",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "monai_bayes.pacs.result"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ResultInstance:
    """One DICOM object of a result."""

    file: str  # relative to the result folder
    kind: str  # "segmentation" | "parametric_map"
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    map: str | None = None  # uncertainty kind for parametric maps

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class StoredResult:
    """A complete result folder and its manifest."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def study_instance_uid(self) -> str:
        return str(self.manifest["source"]["study_instance_uid"])

    @property
    def instances(self) -> list[ResultInstance]:
        return [ResultInstance(**d) for d in self.manifest["dicom"]]

    @property
    def nifti(self) -> dict[str, Path]:
        return {k: self.directory / v for k, v in self.manifest.get("nifti", {}).items()}

    def dicom_files(self) -> list[Path]:
        return [self.directory / i.file for i in self.instances]


def result_dir(output_dir: str | os.PathLike[str], series_instance_uid: str, fingerprint: str) -> Path:
    """Folder of the result with this source series and fingerprint.

    Parameters
    ----------
    output_dir : str or os.PathLike
        Output root.
    series_instance_uid : str
        Source series; must be a valid UID (it names a folder).
    fingerprint : str
        Hex result fingerprint (its first 16 characters name the folder).

    Returns
    -------
    Path
        ``output_dir/results/<series_instance_uid>/<fingerprint[:16]>``.

    Raises
    ------
    InvalidInputError
        If the UID is not a UID, the fingerprint not hexadecimal, or the folder would not lie
        inside ``output_dir/results`` (exit code 65).
    """
    check_uid(series_instance_uid, "SeriesInstanceUID of the input series")
    if not re.fullmatch(r"[0-9a-f]{16,}", str(fingerprint)):
        raise InvalidInputError(f"result fingerprint must be hexadecimal, got {fingerprint!r}")
    root = Path(output_dir) / "results"
    final = root / series_instance_uid / fingerprint[:16]
    inside_output(final, root)
    return final


def inside_output(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Return ``path`` if, with ``..`` and symbolic links resolved, it lies inside ``root``.

    Parameters
    ----------
    path, root : str or os.PathLike
        Candidate output path and the folder it must stay in.

    Returns
    -------
    Path
        ``path`` unchanged.

    Raises
    ------
    InvalidInputError
        If ``path`` escapes ``root`` (exit code 65: the name came from the input data).
    """
    if not lies_inside(path, root):
        raise InvalidInputError(f"output path {path} would lie outside the output folder {root}; refused")
    return Path(path)


def load_result(directory: str | os.PathLike[str], fingerprint: str | None = None) -> StoredResult | None:
    """The complete result in ``directory``, or ``None`` (absent, incomplete, other fingerprint)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("ignoring unreadable result manifest %s (%s)", path, err)
        return None
    if manifest.get("format") != MANIFEST_FORMAT or (fingerprint and manifest.get("fingerprint") != fingerprint):
        return None
    result = StoredResult(directory, manifest)
    missing = [p for p in [*result.dicom_files(), *result.nifti.values()] if not p.is_file()]
    if missing:
        logger.warning("ignoring result %s: missing files %s", directory, [str(p) for p in missing])
        return None
    return result


def map_specs(settings: DicomInferenceSettings, prediction: Prediction) -> list[MapSpec]:
    """Parametric Maps to write: one per requested kind (softmax) or per kind and segment (sigmoid)."""
    specs = []
    for kind in settings.uncertainty_maps:
        U = prediction.uncertainty[kind].shape[0]
        if U == 1:
            specs.append(MapSpec(kind, 0, ""))
        else:
            specs.extend(MapSpec(kind, u, f"_{u + 1}") for u in range(U))
    return specs


def _source_dict(volume: DicomVolume) -> dict[str, Any]:
    return {
        "study_instance_uid": volume.study_instance_uid,
        "series_instance_uid": volume.series_instance_uid,
        "frame_of_reference_uid": volume.frame_of_reference_uid,
        "modality": volume.modality,
        "sop_instance_uids": list(volume.sop_instance_uids),
        "shape_zyx": list(volume.shape),
        "spacing_zyx_mm": list(volume.spacing),
        "affine_lps": np.asarray(volume.affine).tolist(),
    }


def write_result(
    output_dir: str | os.PathLike[str],
    volume: DicomVolume,
    prediction: Prediction,
    bundle: InferenceBundle,
    settings: DicomInferenceSettings,
    fingerprint: str,
    timings: dict[str, float] | None = None,
    replace: bool = False,
) -> StoredResult:
    """Build the DICOM objects (and NIfTI files) of a prediction and publish them atomically.

    Parameters
    ----------
    output_dir
        Output root; the result goes to :func:`result_dir`.
    volume, prediction
        Source series and its prediction on the same grid.
    bundle, settings
        Model identity and output settings.
    fingerprint
        :func:`~monai_bayes.pacs.uids.result_fingerprint` of this result; every UID derives from it.
    timings
        Seconds per stage, recorded in the manifest.
    replace
        Replace an existing result folder of the same fingerprint (recomputation).

    Returns
    -------
    StoredResult
        The published result (an identical result published meanwhile by another run is returned
        instead).
    """
    if volume.study_instance_uid is None:
        raise ValueError(f"series {volume.series_instance_uid} has no StudyInstanceUID; cannot reference it")
    output_dir = Path(output_dir)
    final = result_dir(output_dir, volume.series_instance_uid, fingerprint)
    seg_series = derive_uid(fingerprint, "seg-series")
    pm_series = derive_uid(fingerprint, "pm-series")
    make_private_dir(output_dir / "results")
    with scratch_dir(output_dir, fingerprint[:16], private=True) as tmp:
        (tmp / "dicom").mkdir()
        instances: list[ResultInstance] = []
        seg = build_segmentation(
            volume,
            prediction.probability,
            prediction.mask,
            bundle,
            settings,
            series_instance_uid=seg_series,
            sop_instance_uid=derive_uid(fingerprint, "seg-instance"),
        )
        seg.save_as(tmp / "dicom" / "seg.dcm", enforce_file_format=True)
        instances.append(
            ResultInstance("dicom/seg.dcm", "segmentation", str(seg.SOPClassUID), str(seg.SOPInstanceUID), seg_series)
        )
        for number, spec in enumerate(map_specs(settings, prediction), start=1):
            name = f"pm_{spec.kind}{spec.suffix}.dcm"
            pm = build_parametric_map(
                volume,
                prediction.uncertainty[spec.kind][spec.channel],
                spec,
                bundle,
                settings,
                series_instance_uid=pm_series,
                sop_instance_uid=derive_uid(fingerprint, f"pm-instance:{spec.kind}{spec.suffix}"),
                instance_number=number,
            )
            pm.save_as(tmp / "dicom" / name, enforce_file_format=True)
            instances.append(
                ResultInstance(
                    f"dicom/{name}", "parametric_map", str(pm.SOPClassUID), str(pm.SOPInstanceUID), pm_series, spec.kind
                )
            )
        nifti: dict[str, str] = {}
        if settings.write_nifti:
            (tmp / "nifti").mkdir()
            arrays = {"segmentation": prediction.mask, "probability": prediction.probability, **prediction.uncertainty}
            for key, array in arrays.items():
                write_nifti(tmp / "nifti" / f"{key}.nii.gz", array, volume)
                nifti[key] = f"nifti/{key}.nii.gz"
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "fingerprint": fingerprint,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "software": f"monai_bayes {__version__}",
            "source": _source_dict(volume),
            "model": bundle.model_dict(),
            "settings": settings.content_dict(),
            "mode": prediction.mode,
            "segments": [s.label for s in settings.segments],
            "foreground_voxels": [int(m.sum()) for m in prediction.mask],
            "dicom": [i.to_dict() for i in instances],
            "nifti": nifti,
            "timings_s": {k: round(v, 3) for k, v in (timings or {}).items()},
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest, indent=2, sort_keys=True, durable=True)
        restrict_tree(tmp)
        make_private_dir(final.parent)
        if not publish_dir(tmp, final, complete=MANIFEST_NAME, replace=replace, durable=True):
            logger.info("result %s was published meanwhile by another run; using it", final)
    result = load_result(final, fingerprint)
    if result is None:
        raise RuntimeError(f"{final}: result folder incomplete right after publishing")
    logger.info(
        "result %s: SEG %s, %d parametric map(s) in series %s",
        final,
        instances[0].sop_instance_uid,
        len(instances) - 1,
        pm_series,
    )
    return result
