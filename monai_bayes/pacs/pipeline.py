"""The research pipeline: DICOM series in → MC inference → SEG + Parametric Maps (+ NIfTI) → PACS.

:func:`run_pipeline` runs the stages below and reports each to ``on_stage`` (for progress display,
and for tests that interrupt a run at a precise point):

1. ``"bundle-loaded"`` -- the bundle's network, MC inferer and preprocessing are ready;
2. ``"input-read"``    -- the series is read and validated (from a folder, or QIDO-RS + WADO-RS);
3. ``"inference-done"``-- skipped when a complete result with the same fingerprint exists
   (``"result-reused"`` instead): a run interrupted after stage 4 does not compute again;
4. ``"outputs-written"`` -- the result folder is published atomically;
5. ``"queued"``        -- the DICOM objects are in the on-disk outbox (with a destination URL);
6. ``"delivered"`` or ``"delivery-pending"`` -- after one flush of the outbox for that URL
   (older pending entries for the same PACS are sent too).

Errors are :class:`~monai_bayes.pacs.errors.PacsError` subclasses carrying the CLI exit code.
Nothing is written before stage 4, so a bad input (unknown study, wrong modality, corrupt instance,
refused credentials) leaves no files behind.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from monai_bayes.data.dicom import DicomVolume, index_dicom_tree, read_dicom_series
from monai_bayes.data.errors import DicomSeriesError
from monai_bayes.pacs.bundle import InferenceBundle, configure_inferer, load_inference_bundle
from monai_bayes.pacs.client import SeriesInfo
from monai_bayes.pacs.credentials import ENV_URL
from monai_bayes.pacs.errors import (
    EXIT_OK,
    EXIT_PENDING,
    InputNotFoundError,
    InvalidInputError,
    PacsConfigError,
    PacsUnavailableError,
)
from monai_bayes.pacs.inference import predict_volume
from monai_bayes.pacs.outbox import FlushReport, Outbox
from monai_bayes.pacs.results import StoredResult, load_result, result_dir, write_result
from monai_bayes.pacs.settings import DicomInferenceSettings
from monai_bayes.pacs.transport import Transport, open_transport
from monai_bayes.pacs.transport import check_destination as check_url
from monai_bayes.pacs.uids import check_uid, result_fingerprint
from monai_bayes.utils.errors import summarize_errors

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "PipelineResult",
    "check_output_dir",
    "check_run_arguments",
    "check_volume_uids",
    "default_output_dir",
    "flush_outbox",
    "raise_for_status",
    "read_input_folder",
    "read_input_pacs",
    "run_pipeline",
]

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "monai_bayes_pacs"
ENV_OUTPUT_DIR = "MONAI_BAYES_PACS_OUTPUT"


def default_output_dir() -> Path:
    """``$MONAI_BAYES_PACS_OUTPUT`` or ``./monai_bayes_pacs``."""
    return Path(os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR)


@dataclass
class PipelineResult:
    """Outcome of one :func:`run_pipeline` call.

    Attributes
    ----------
    result
        The published result folder (manifest, DICOM and NIfTI files).
    reused
        True if an existing complete result was reused instead of computing it again.
    status
        ``"local"`` (no push requested), ``"delivered"`` or ``"pending"`` (kept in the outbox).
    entry_id
        Outbox entry of this result (``None`` without push).
    flush
        Report of the outbox flush (``None`` without push).
    timings_s
        Seconds per stage.
    """

    result: StoredResult
    reused: bool
    status: str
    entry_id: str | None = None
    flush: FlushReport | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """CLI exit status: 0 delivered / local; else the flush report's code (75 while pending)."""
        if self.status != "pending" or self.flush is None:
            return EXIT_OK
        return self.flush.exit_code if self.flush.exit_code != EXIT_OK else EXIT_PENDING


@summarize_errors("monai_bayes.pacs.raise_for_status")
def raise_for_status(outcome: PipelineResult) -> PipelineResult:
    """Return ``outcome`` if delivered (or local); raise the delivery error otherwise (for bundle runs)."""
    if outcome.exit_code == EXIT_OK:
        return outcome
    assert outcome.flush is not None
    err = outcome.flush.errors.get(outcome.entry_id or "")
    if err is not None:
        raise type(err)(f"{err} -- result kept in the outbox, entry {outcome.entry_id}")
    raise PacsUnavailableError(f"result kept in the outbox, entry {outcome.entry_id}")


# ------------------------------------------------------------------------------------- input
def _as_input_error(err: DicomSeriesError) -> InvalidInputError:
    return InvalidInputError(f"invalid input series: {err}")


def check_volume_uids(volume: DicomVolume) -> DicomVolume:
    """Check every UID of an input series before any of them names a folder, a URL or a reference.

    Parameters
    ----------
    volume : DicomVolume
        The series as read.

    Returns
    -------
    DicomVolume
        ``volume`` unchanged.

    Raises
    ------
    InvalidInputError
        (exit code 65) naming the attribute, the file and the value, if a Study / Series / Frame of
        Reference / SOP Instance UID is not a UID (digits and dots, at most 64 characters).
    """
    first = volume.files[0] if volume.files and volume.files[0] is not None else "the retrieved series"
    check_uid(volume.series_instance_uid, f"SeriesInstanceUID of {first}")
    if volume.study_instance_uid is not None:
        check_uid(volume.study_instance_uid, f"StudyInstanceUID of {first}")
    if volume.frame_of_reference_uid is not None:
        check_uid(volume.frame_of_reference_uid, f"FrameOfReferenceUID of {first}")
    for uid, src in zip(volume.sop_instance_uids, volume.files):
        check_uid(uid, f"SOPInstanceUID of {src if src is not None else 'a retrieved instance'}")
    return volume


def read_input_folder(
    folder: str | os.PathLike[str], settings: DicomInferenceSettings, series_instance_uid: str | None = None
) -> DicomVolume:
    """Read the series of ``folder`` (searched recursively; one series, or the one named).

    Raises
    ------
    InputNotFoundError
        Folder missing, holding no DICOM, or not holding the named series.
    InvalidInputError
        Several series and none named, a modality outside ``settings.modality``, or a series the
        reader rejects (corrupt file, gaps, inconsistent geometry ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder}: input folder not found")
    try:
        index = index_dicom_tree(folder)
    except DicomSeriesError as err:
        raise _as_input_error(err) from None
    if not index:
        raise InputNotFoundError(f"{folder}: no DICOM files found")
    if series_instance_uid is not None:
        if series_instance_uid not in index:
            raise InputNotFoundError(f"{folder}: no series {series_instance_uid} (found {sorted(index)})")
        entry = index[series_instance_uid]
    else:
        accepted = [e for e in index.values() if e.modality in settings.modality]
        if len(index) == 1:  # a single series: a wrong modality is reported as such below
            accepted = list(index.values())
        if len(accepted) != 1:
            found = ", ".join(f"{e.series_instance_uid} ({e.modality}, {len(e.files)} files)" for e in index.values())
            need = "/".join(settings.modality)
            raise InvalidInputError(
                f"{folder}: expected exactly one {need} series, found {len(accepted)}: {found}; name one with --series"
            )
        entry = accepted[0]
    if entry.modality not in settings.modality:
        raise InvalidInputError(
            f"series {entry.series_instance_uid} has Modality {entry.modality!r}; "
            f"expected {' or '.join(settings.modality)}"
        )
    try:
        volume = read_dicom_series(
            entry.files, expected_modality=settings.modality, max_voxels=settings.max_volume_voxels
        )
    except DicomSeriesError as err:
        raise _as_input_error(err) from None
    return check_volume_uids(volume)


def _select_series(series: list[SeriesInfo], study: str, wanted: str | None, modality: list[str]) -> SeriesInfo:
    if wanted is not None:
        match = [s for s in series if s.series_instance_uid == wanted]
        if not match:
            raise InputNotFoundError(f"series {wanted} not found in study {study}")
        chosen = match[0]
    else:
        accepted = [s for s in series if s.modality in modality]
        if len(series) == 1:  # a single series: a wrong modality is reported as such below
            accepted = series
        if len(accepted) != 1:
            found = ", ".join(f"{s.series_instance_uid} ({s.modality}, {s.num_instances} instances)" for s in series)
            raise InvalidInputError(
                f"study {study}: expected exactly one {'/'.join(modality)} series, found {len(accepted)} "
                f"among {found}; name one with --series"
            )
        chosen = accepted[0]
    if chosen.modality not in modality:
        raise InvalidInputError(
            f"series {chosen.series_instance_uid} has Modality {chosen.modality!r}; expected {' or '.join(modality)}"
        )
    return chosen


def read_input_pacs(
    client: Transport,
    study_instance_uid: str,
    settings: DicomInferenceSettings,
    series_instance_uid: str | None = None,
) -> DicomVolume:
    """Find (QIDO-RS / C-FIND) and retrieve (WADO-RS / C-GET / C-MOVE) the input series of a study, then read
    and validate it.

    Raises
    ------
    InputNotFoundError
        Unknown study or series.
    InvalidInputError
        Wrong modality, ambiguous series, or a series the reader rejects (corrupt instance ...).
    PacsAuthError, PacsUnavailableError
        See :class:`PacsClient`.
    """
    check_uid(study_instance_uid, "--study")
    series = client.search_series(study_instance_uid)
    chosen = _select_series(series, study_instance_uid, series_instance_uid, settings.modality)
    check_uid(chosen.series_instance_uid, f"SeriesInstanceUID found by QIDO-RS in study {study_instance_uid}")
    datasets = client.retrieve_series(study_instance_uid, chosen.series_instance_uid)
    if chosen.num_instances is not None and chosen.num_instances != len(datasets):
        logger.warning(
            "series %s: QIDO-RS reports %d instance(s), WADO-RS returned %d",
            chosen.series_instance_uid,
            chosen.num_instances,
            len(datasets),
        )
    try:
        volume = read_dicom_series(datasets, expected_modality=settings.modality, max_voxels=settings.max_volume_voxels)
    except DicomSeriesError as err:
        raise _as_input_error(err) from None
    check_volume_uids(volume)
    if volume.study_instance_uid != study_instance_uid:
        raise InvalidInputError(
            f"series {volume.series_instance_uid} belongs to study {volume.study_instance_uid}, "
            f"not {study_instance_uid}"
        )
    return volume


# ------------------------------------------------------------------------------------- run
def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check that ``path`` can be (or already is) a folder, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        Output or outbox folder (it need not exist yet).
    what : str
        Its role, for the message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    PacsConfigError
        (exit code 78) if ``path`` or one of its parents exists and is not a folder.
    """
    path = Path(path)
    for p in [path, *path.parents]:
        if p.exists():
            if not p.is_dir():
                raise PacsConfigError(
                    f"{what} {path}: {p} exists and is not a folder; choose another --output/--outbox"
                )
            break
    return path


def check_run_arguments(
    url: str | None,
    study: str | None,
    input_dir: str | os.PathLike[str] | None,
    series: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    outbox_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """Validate the arguments of a run before any work; return the checked URL (or ``None``).

    Parameters
    ----------
    url : str or None
        DICOMweb base URL.
    study, series : str or None
        Study / series UIDs given by the user.
    input_dir : str or os.PathLike or None
        Input folder (exactly one of ``study`` and ``input_dir``).
    output_dir, outbox_dir : str or os.PathLike or None
        Output and outbox folders (checked with :func:`check_output_dir`).

    Returns
    -------
    str or None
        The URL without a trailing slash.

    Raises
    ------
    PacsConfigError
        Wrong input combination, bad URL, output location that is not a folder (exit code 78).
    InvalidInputError
        A study / series argument that is not a UID (exit code 65).
    """
    if (study is None) == (input_dir is None):
        raise PacsConfigError("give exactly one input: a study UID (with a PACS URL) or an input folder")
    if study is not None and url is None:
        raise PacsConfigError(f"study {study}: a DICOMweb URL is needed to retrieve it (or a dicom://AE@host:port URL)")
    if study is not None:
        check_uid(study, "--study")
    if series is not None:
        check_uid(series, "--series")
    if output_dir is not None:
        check_output_dir(output_dir, "output folder")
    if outbox_dir is not None:
        check_output_dir(outbox_dir, "outbox folder")
    return check_url(url) if url is not None else None


@summarize_errors("monai_bayes.pacs.run_pipeline")
def run_pipeline(
    bundle: str | os.PathLike[str] | InferenceBundle,
    *,
    url: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    input_dir: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    outbox_dir: str | os.PathLike[str] | None = None,
    settings: DicomInferenceSettings | None = None,
    device: str | torch.device | None = None,
    push: bool = True,
    force: bool = False,
    netrc_file: str | None = None,
    client: Transport | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run the pipeline on one series.

    Parameters
    ----------
    bundle
        Bundle folder (or a loaded :class:`InferenceBundle`).
    url
        PACS URL, DICOMweb (``http(s)``) or DIMSE (``dicom[s]://AE@host:port``): source of a study
        input, destination of the results.
    study_instance_uid, series_instance_uid
        Study to read from ``url``; the series within it (default: its only series of an accepted
        modality).
    input_dir
        Alternative input: a folder holding the series (``series_instance_uid`` picks one of several).
    output_dir
        Result root (default :func:`default_output_dir`).
    outbox_dir
        Outbox folder (default ``<output_dir>/outbox``).
    settings
        Pipeline settings (default: the bundle's ``inference_dicom.json``, else the defaults).
    device
        Torch device override for the network (bundle folders only).
    push
        Send the results to ``url`` (STOW-RS through the outbox). Without ``url`` nothing is sent.
    force
        Recompute even if a complete result with the same fingerprint exists.
    netrc_file
        Explicit netrc file for the credentials.
    client
        A ready :class:`~monai_bayes.pacs.transport.Transport` for ``url`` (default: built from ``settings``).
    on_stage
        Called with each stage name (see the module docstring).

    Returns
    -------
    PipelineResult

    Notes
    -----
    An error is summarised in one line on stderr before it propagates (unless the caller reports
    it, as the CLI does): under ``monai.bundle run`` that line comes before MONAI's tracebacks.
    """
    notify = on_stage or (lambda stage: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir()
    outbox_dir = Path(outbox_dir) if outbox_dir is not None else output_dir / "outbox"
    url = check_run_arguments(url, study_instance_uid, input_dir, series_instance_uid, output_dir, outbox_dir)
    outbox = Outbox(outbox_dir)

    if isinstance(bundle, InferenceBundle):
        loaded = bundle
        settings = settings or loaded.settings
        configure_inferer(loaded.inferer, settings.num_samples, settings.seed)
    else:
        loaded = load_inference_bundle(
            bundle,
            device=device,
            num_samples=settings.num_samples if settings else None,
            seed=settings.seed if settings else None,
        )
        settings = settings or loaded.settings
        timings["bundle"] = time.perf_counter() - t0
    notify("bundle-loaded")

    def client_for(u: str) -> Transport:
        if client is not None and u == client.url:
            return client
        return open_transport(u, settings, netrc_file=netrc_file)

    t = time.perf_counter()
    if study_instance_uid is not None:
        assert url is not None
        src_client = client_for(url)
        try:
            volume = read_input_pacs(src_client, study_instance_uid, settings, series_instance_uid)
        finally:
            if src_client is not client:
                src_client.close()
    else:
        assert input_dir is not None
        volume = read_input_folder(input_dir, settings, series_instance_uid)
    timings["input"] = time.perf_counter() - t
    logger.info(
        "input series %s of study %s: %d slice(s) of %dx%d, spacing %s mm",
        volume.series_instance_uid,
        volume.study_instance_uid,
        *volume.shape,
        tuple(round(s, 3) for s in volume.spacing),
    )
    notify("input-read")

    fingerprint = result_fingerprint(
        volume.series_instance_uid, volume.sop_instance_uids, loaded.model_dict(), settings.content_dict()
    )
    target = result_dir(output_dir, volume.series_instance_uid, fingerprint)
    existing = None if force else load_result(target, fingerprint)
    if existing is not None:
        logger.info("reusing result %s (fingerprint %s)", target, fingerprint[:16])
        stored, reused = existing, True
        notify("result-reused")
    else:
        t = time.perf_counter()
        prediction = predict_volume(volume, loaded, settings)
        timings["inference"] = time.perf_counter() - t
        notify("inference-done")
        t = time.perf_counter()
        stored = write_result(
            output_dir, volume, prediction, loaded, settings, fingerprint, timings=timings, replace=target.exists()
        )
        timings["write"] = time.perf_counter() - t
        reused = False
    notify("outputs-written")

    if not push or url is None:
        timings["total"] = time.perf_counter() - t0
        return PipelineResult(stored, reused, "local", timings_s=timings)

    entry = outbox.add(stored, url)
    notify("queued")
    t = time.perf_counter()
    report = outbox.flush(client_for, url=url)
    timings["deliver"] = time.perf_counter() - t
    delivered = entry.entry_id in report.sent
    notify("delivered" if delivered else "delivery-pending")
    if not delivered:
        logger.warning(
            "result %s kept in the outbox %s (entry %s); send it later with 'monai-bayes pacs flush-outbox'",
            fingerprint[:16],
            outbox.root,
            entry.entry_id,
        )
    timings["total"] = time.perf_counter() - t0
    return PipelineResult(
        stored, reused, "delivered" if delivered else "pending", entry.entry_id, report, timings_s=timings
    )


def flush_outbox(
    outbox_dir: str | os.PathLike[str],
    *,
    url: str | None = None,
    settings: DicomInferenceSettings | None = None,
    netrc_file: str | None = None,
) -> FlushReport:
    """Deliver the pending entries of an outbox queued for the configured PACS, once each.

    Parameters
    ----------
    outbox_dir : str or os.PathLike
        Outbox folder.
    url : str or None
        The configured PACS (default ``$MONAI_BAYES_PACS_URL``). Only entries queued for exactly
        this URL are sent: the URL written in an entry is never trusted on its own.
    settings : DicomInferenceSettings or None
        Timeouts, retries and TLS settings (default :class:`DicomInferenceSettings`).
    netrc_file : str or None
        Explicit netrc file for the credentials.

    Returns
    -------
    FlushReport
        Delivered, pending (including corrupt entries) and other-destination entry ids.

    Raises
    ------
    PacsConfigError
        Without a URL (exit code 78).
    """
    settings = settings or DicomInferenceSettings()
    url = url or os.environ.get(ENV_URL) or None
    if url is None:
        raise PacsConfigError(
            f"flush-outbox needs the PACS URL (--url or {ENV_URL}): entries are sent only to the configured PACS"
        )
    url = check_url(url)
    check_output_dir(outbox_dir, "outbox folder")
    outbox = Outbox(outbox_dir)
    report = outbox.flush(lambda u: open_transport(u, settings, netrc_file=netrc_file), url=url)
    logger.info("outbox %s: %d entry(ies) delivered, %d pending", outbox.root, len(report.sent), len(report.pending))
    if report.other_destinations:
        logger.info(
            "outbox %s: %d entry(ies) queued for other URLs left alone", outbox.root, len(report.other_destinations)
        )
    return report
