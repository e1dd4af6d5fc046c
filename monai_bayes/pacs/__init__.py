"""PACS research pipeline: DICOM in, DICOM SEG + uncertainty Parametric Maps out, DICOMweb round trip.

Needs the ``pacs`` extra (``pip install monai-bayes[pacs]``: highdicom, dicomweb-client, pynetdicom,
requests).

* :func:`run_pipeline` -- a CT series from a folder or a DICOMweb server (QIDO-RS / WADO-RS), MC
  inference of a bundle's network, DICOM Segmentation + Parametric Maps (total entropy, mutual
  information) + NIfTI written atomically, STOW-RS push through an on-disk :class:`Outbox`;
  The PACS URL picks the transport: ``http(s)://`` DICOMweb, ``dicom[s]://AE@host:port`` DIMSE
  (C-FIND, C-GET / C-MOVE, C-STORE; :class:`DimseClient`), both behind :class:`Transport`;
* :class:`Listener` -- a receiving node (C-STORE SCP, durable spool, inference on arrival);
* :mod:`monai_bayes.pacs.deploy` (extra ``deploy``, not imported here) -- a MONAI Deploy App SDK
  operator and example app;
* :func:`flush_outbox` -- deliver what an earlier run could not;
* :class:`PacsClient` -- DICOMweb with bounded retries, timeouts, credentials from the environment
  or netrc; :class:`DicomInferenceSettings` -- the bundle's ``inference_dicom.json`` settings;
* :func:`load_inference_bundle`, :func:`predict_volume`, :func:`build_segmentation`,
  :func:`build_parametric_map` -- the steps, usable on their own.

CLI: ``monai-bayes pacs run`` / ``flush-outbox`` / ``outbox`` / ``ping`` / ``find`` / ``listen`` / ``template``; see
``docs/pacs.md``.
"""

from monai_bayes.pacs import _requirements  # noqa: F401  (first: one line naming the missing extra)
from monai_bayes.pacs.bundle import InferenceBundle, load_inference_bundle
from monai_bayes.pacs.client import PacsClient, RetryPolicy, SeriesInfo
from monai_bayes.pacs.credentials import Credentials, redact_url, resolve_credentials
from monai_bayes.pacs.dimse import DimseClient, StudyInfo
from monai_bayes.pacs.errors import (
    BundleError,
    InputNotFoundError,
    InvalidInputError,
    PacsAuthError,
    PacsConfigError,
    PacsError,
    PacsRequestError,
    PacsUnavailableError,
)
from monai_bayes.pacs.inference import Prediction, predict_volume
from monai_bayes.pacs.listener import Listener, StudyStatus
from monai_bayes.pacs.outbox import FlushReport, Outbox, OutboxEntry
from monai_bayes.pacs.pipeline import (
    PipelineResult,
    flush_outbox,
    raise_for_status,
    read_input_folder,
    read_input_pacs,
    run_pipeline,
)
from monai_bayes.pacs.results import StoredResult, load_result
from monai_bayes.pacs.settings import CodeSpec, DicomInferenceSettings, SegmentSpec, template_text
from monai_bayes.pacs.transport import DimseAddress, Transport, check_destination, open_transport
from monai_bayes.pacs.uids import derive_uid, result_fingerprint
from monai_bayes.pacs.writers import build_parametric_map, build_segmentation, write_nifti

__all__ = [
    "BundleError",
    "CodeSpec",
    "Credentials",
    "DicomInferenceSettings",
    "DimseAddress",
    "DimseClient",
    "FlushReport",
    "InferenceBundle",
    "InputNotFoundError",
    "InvalidInputError",
    "Listener",
    "Outbox",
    "OutboxEntry",
    "PacsAuthError",
    "PacsClient",
    "PacsConfigError",
    "PacsError",
    "PacsRequestError",
    "PacsUnavailableError",
    "PipelineResult",
    "Prediction",
    "RetryPolicy",
    "SegmentSpec",
    "SeriesInfo",
    "StoredResult",
    "StudyInfo",
    "StudyStatus",
    "Transport",
    "build_parametric_map",
    "build_segmentation",
    "check_destination",
    "derive_uid",
    "flush_outbox",
    "load_inference_bundle",
    "load_result",
    "open_transport",
    "predict_volume",
    "raise_for_status",
    "read_input_folder",
    "read_input_pacs",
    "redact_url",
    "resolve_credentials",
    "result_fingerprint",
    "run_pipeline",
    "template_text",
    "write_nifti",
]
