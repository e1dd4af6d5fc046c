"""A receiving DICOM node: C-STORE SCP → durable spool → bundle inference → results to a PACS.

:class:`Listener` is what ``monai-bayes pacs listen`` runs. A PACS (or router) sends a study to its AE
title; the listener

1. **accepts** associations only from AE titles on ``allowed_ae_titles`` (others are rejected by
   pynetdicom during association negotiation), and only storage SOP classes of the accepted input
   modalities (``settings.modality``, e.g. CT);
2. **spools** each instance durably before answering success: ``<spool>/incoming/<study>/<sop>.dcm``
   is written to a temporary name, ``fsync``-ed and renamed, so an instance the sender saw stored is
   never lost, even on ``kill -9`` or power loss;
3. **closes a study** when no instance arrived for ``quiet_s`` seconds, or when it holds
   ``expected_instances`` instances: ``incoming/<study>`` is renamed to ``ready/<study>`` (one atomic
   step) and queued;
4. **processes** ready studies one at a time, in one worker thread, with
   :func:`~monai_bayes.pacs.pipeline.run_pipeline` (the bundle is loaded once), delivering the SEG
   and Parametric Maps through the outbox to ``destination`` (DICOMweb or ``dicom://`` DIMSE) with
   its exactly-once semantics; the results reference the received study, so they land in it;
5. **reports** each study in ``<spool>/status/<study>.json`` (state ``receiving`` → ``queued`` →
   ``processing`` → ``delivered`` / ``pending`` / ``failed``, attempts, result folder, outbox entry,
   error) and one log line.

**Restart.** The spool is the truth: on start, every study in ``ready/`` is queued again (an
interrupted ``processing`` counts one more attempt; its result is reused if it was written, and the
outbox never delivers one result twice), and every study in ``incoming/`` resumes its quiet timer.
A study whose status says ``delivered`` for exactly the spooled instances is not processed again.

**Bounded.** When ``max_queue`` studies are closed but not yet processed, instances of *new*
studies are refused with status ``0xA700`` (out of resources), so the sender keeps them and can
retry; instances of studies already being received are still accepted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import queue
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_bayes.pacs.bundle import InferenceBundle
from monai_bayes.pacs.dimse import storage_sop_classes
from monai_bayes.pacs.errors import PacsConfigError, PacsError
from monai_bayes.pacs.pipeline import run_pipeline
from monai_bayes.pacs.settings import DicomInferenceSettings
from monai_bayes.pacs.transport import check_ae_title, check_destination
from monai_bayes.pacs.uids import is_valid_uid
from monai_bayes.utils.atomic import atomic_path, atomic_write_json, fsync_dir

__all__ = ["STUDY_STATES", "Listener", "StudyStatus"]

logger = logging.getLogger(__name__)

#: States of a study in its status file, in order.
STUDY_STATES = ("receiving", "queued", "processing", "delivered", "pending", "failed")

_STATUS_FORMAT = "monai_bayes.pacs.listener-status"
_OUT_OF_RESOURCES = 0xA700
_CANNOT_UNDERSTAND = 0xC000
_SUCCESS = 0x0000


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class StudyStatus:
    """Content of ``<spool>/status/<study>.json``.

    Attributes
    ----------
    study_instance_uid : str
        The study.
    state : str
        One of :data:`STUDY_STATES`.
    instances : int
        Instances spooled for the processed batch.
    instances_digest : str or None
        SHA-256 of the sorted SOP Instance UIDs processed (a restart skips a study delivered for
        exactly these instances).
    attempts : int
        Processing attempts (an interrupted attempt counts).
    result_dir, outbox_entry, destination, error : str or None
        Result folder, outbox entry id, destination URL, last error.
    updated : str
        ISO time of the last change.
    history : list of str
        ``"<time> <state>"`` lines.
    """

    study_instance_uid: str
    state: str = "receiving"
    instances: int = 0
    instances_digest: str | None = None
    attempts: int = 0
    result_dir: str | None = None
    outbox_entry: str | None = None
    destination: str | None = None
    error: str | None = None
    updated: str = field(default_factory=_now)
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _STATUS_FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyStatus:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def _spooled(folder: Path) -> list[Path]:
    """The complete instances of a spool folder (``<SOPInstanceUID>.dcm``; not the hidden temporary files)."""
    return [p for p in folder.glob("*.dcm") if not p.name.startswith(".")]


def _remove_partial_writes(folder: Path) -> int:
    """Delete temporary files a killed process left in a spool folder (hidden ``.*`` names); return how many."""
    partial = [p for p in folder.rglob(".*") if p.is_file()]
    for p in partial:
        p.unlink()
    return len(partial)


def _digest(sop_uids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(sop_uids)).encode()).hexdigest()


class Listener:
    """The receiving node (see the module docstring).

    Parameters
    ----------
    bundle : InferenceBundle
        The loaded bundle (network, MC inferer, preprocessing, settings).
    ae_title : str
        This node's AE title (the called AE of incoming associations).
    port : int
        TCP port to listen on (0: any free port, see :attr:`port` after :meth:`start`).
    spool : str or os.PathLike
        Spool folder (created; the truth across restarts).
    destination : str
        Where results go: DICOMweb root or ``dicom[s]://AE@host:port``.
    allowed_ae_titles : sequence of str
        Calling AE titles accepted; associations from any other are rejected.
    bind : str
        Address to listen on (default ``""``: all interfaces).
    quiet_s : float
        A study is complete when no instance arrived for this long.
    expected_instances : int or None
        A study is complete as soon as it holds this many instances.
    max_queue : int
        Most studies waiting (closed, not processed); instances of new studies beyond it are refused.
    settings : DicomInferenceSettings or None
        Pipeline settings (default: the bundle's).
    output_dir, outbox_dir : str or os.PathLike or None
        Result root (default ``<spool>/results``) and outbox (default ``<output_dir>/outbox``).
    ssl_context : ssl.SSLContext or None
        TLS for incoming associations (see :func:`~monai_bayes.pacs.dimse.server_ssl_context`).
    netrc_file : str or None
        netrc for a DICOMweb destination's credentials.
    poll_s : float
        How often the quiet timers are checked.

    Raises
    ------
    PacsConfigError
        Bad AE titles, destination, port, counts or times.
    """

    def __init__(
        self,
        bundle: InferenceBundle,
        *,
        ae_title: str,
        port: int,
        spool: str | os.PathLike[str],
        destination: str,
        allowed_ae_titles: Sequence[str],
        bind: str = "",
        quiet_s: float = 10.0,
        expected_instances: int | None = None,
        max_queue: int = 16,
        settings: DicomInferenceSettings | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        outbox_dir: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        netrc_file: str | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.bundle = bundle
        self.ae_title = check_ae_title(ae_title, "--ae-title")
        if not allowed_ae_titles:
            raise PacsConfigError("--allow: name at least one calling AE title allowed to send to this node")
        self.allowed = [check_ae_title(a, "--allow") for a in allowed_ae_titles]
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise PacsConfigError(f"--port must be a TCP port (0-65535), got {port!r}")
        self.port = port
        self.bind = bind
        self.destination = check_destination(destination)
        if not quiet_s > 0:
            raise PacsConfigError(f"--quiet must be > 0 seconds, got {quiet_s!r}")
        if expected_instances is not None and expected_instances < 1:
            raise PacsConfigError(f"--expected-instances must be >= 1, got {expected_instances!r}")
        if max_queue < 1:
            raise PacsConfigError(f"--max-queue must be >= 1, got {max_queue}")
        self.quiet_s = float(quiet_s)
        self.expected_instances = expected_instances
        self.max_queue = max_queue
        self.settings = settings or bundle.settings
        self.spool = Path(spool)
        self.output_dir = Path(output_dir) if output_dir is not None else self.spool / "results"
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else self.output_dir / "outbox"
        self.ssl_context = ssl_context
        self.netrc_file = netrc_file
        self.poll_s = poll_s
        self.incoming, self.ready, self.status_dir = (self.spool / n for n in ("incoming", "ready", "status"))
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._processing: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._waiting = 0  # closed studies not yet finished (queued or processing)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.on_state: Callable[[str, str], None] | None = None

    # ----------------------------------------------------------------------------- status
    def status_path(self, study_instance_uid: str) -> Path:
        """``<spool>/status/<study>.json``."""
        return self.status_dir / f"{study_instance_uid}.json"

    def read_status(self, study_instance_uid: str) -> StudyStatus:
        """The study's status (a fresh ``receiving`` one if none or unreadable)."""
        try:
            data = json.loads(self.status_path(study_instance_uid).read_text(encoding="utf-8"))
            return StudyStatus.from_dict(data)
        except (OSError, ValueError, TypeError):
            return StudyStatus(study_instance_uid)

    def _set_state(self, status: StudyStatus, state: str, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(status, k, v)
        status.state = state
        status.updated = _now()
        status.history.append(f"{status.updated} {state}")
        atomic_write_json(self.status_path(status.study_instance_uid), status.to_dict(), indent=2, durable=True)
        if self.on_state is not None:
            self.on_state(status.study_instance_uid, state)

    # ----------------------------------------------------------------------------- receiving
    def _on_store(self, event: Any) -> int:
        """C-STORE handler: spool the instance durably, then answer success."""
        try:
            ds = event.dataset
        except Exception as err:  # pynetdicom decodes lazily; a broken data set lands here
            logger.warning("C-STORE from %s: undecodable data set (%s)", event.assoc.requestor.ae_title, err)
            return _CANNOT_UNDERSTAND
        study, sop = str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
        if not (is_valid_uid(study) and is_valid_uid(sop)):
            logger.warning("C-STORE: refused an instance without valid Study / SOP Instance UIDs")
            return _CANNOT_UNDERSTAND
        with self._lock:
            if study not in self._last_seen and self._waiting >= self.max_queue:
                logger.warning("C-STORE: queue full (%d studies waiting); refused study %s", self._waiting, study)
                return _OUT_OF_RESOURCES
            new = study not in self._last_seen
            self._last_seen[study] = time.monotonic()
        folder = self.incoming / study
        target = folder / f"{sop}.dcm"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, durable=True) as tmp:
            tmp.write_bytes(event.encoded_dataset())
        with self._lock:
            self._last_seen[study] = time.monotonic()
            self._count[study] = len(_spooled(folder))
        if new:
            status = self.read_status(study)
            if status.state != "receiving":
                status.history.append(f"{_now()} new batch after {status.state}")
            self._set_state(status, "receiving", error=None)
            logger.info("study %s: receiving from %s", study, event.assoc.requestor.ae_title)
        return _SUCCESS

    def _close_due(self) -> None:
        """Move complete studies from ``incoming/`` to ``ready/`` and queue them."""
        now = time.monotonic()
        with self._lock:
            due = [
                s
                for s, t in self._last_seen.items()
                if now - t >= self.quiet_s
                or (self.expected_instances is not None and self._count.get(s, 0) >= self.expected_instances)
            ]
        for study in due:
            self._close(study)

    def _close(self, study: str) -> None:
        src, dst = self.incoming / study, self.ready / study
        with self._lock:
            if study in self._processing:  # late instances: a new batch once the running one is done
                self._last_seen[study] = time.monotonic()
                return
            self._last_seen.pop(study, None)
            self._count.pop(study, None)
            if dst.exists():  # a batch of the same study waits: merge the new instances into it
                for f in _spooled(src):
                    os.replace(f, dst / f.name)
                shutil.rmtree(src, ignore_errors=True)
                fsync_dir(dst)
                return
            self.ready.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            fsync_dir(self.ready)
            fsync_dir(self.incoming)
            self._waiting += 1
        n = len(_spooled(dst))
        self._set_state(self.read_status(study), "queued", instances=n)
        logger.info("study %s: complete (%d instance(s)), queued", study, n)
        self._queue.put(study)

    # ----------------------------------------------------------------------------- processing
    def _process(self, study: str) -> None:
        folder = self.ready / study
        status = self.read_status(study)
        with self._lock:  # from here on, late instances wait in incoming/ (see _close)
            self._processing.add(study)
            sops = sorted(p.stem for p in _spooled(folder))
        digest = _digest(sops)
        if status.state == "delivered" and status.instances_digest == digest:
            logger.info("study %s: already delivered for these %d instance(s); not processed again", study, len(sops))
        else:
            self._set_state(status, "processing", attempts=status.attempts + 1, instances=len(sops), error=None)
            try:
                outcome = run_pipeline(
                    self.bundle,
                    url=self.destination,
                    input_dir=folder,
                    output_dir=self.output_dir,
                    outbox_dir=self.outbox_dir,
                    settings=self.settings,
                    netrc_file=self.netrc_file,
                )
            except PacsError as err:
                self._set_state(status, "failed", error=str(err))
                logger.error("study %s: failed (%s)", study, err)
            else:
                delivered = outcome.status == "delivered"
                problem = outcome.flush.errors.get(outcome.entry_id or "") if outcome.flush else None
                self._set_state(
                    status,
                    "delivered" if delivered else "pending",
                    instances_digest=digest,
                    result_dir=str(outcome.result.directory),
                    outbox_entry=outcome.entry_id,
                    destination=self.destination,
                    error=None if delivered else str(problem or "delivery pending"),
                )
                logger.info(
                    "study %s: %s %d instance(s) to %s (attempt %d, result %s, %s)",
                    study,
                    "delivered" if delivered else "kept in the outbox",
                    len(outcome.result.instances),
                    self.destination,
                    status.attempts,
                    outcome.result.directory.name,
                    "reused" if outcome.reused else "computed",
                )
        shutil.rmtree(folder, ignore_errors=True)
        fsync_dir(self.ready)
        with self._lock:
            self._processing.discard(study)
            self._waiting -= 1

    def _worker(self) -> None:
        while not self._stop.is_set():
            study = self._queue.get()
            if study is None:
                return
            try:
                self._process(study)
            except Exception:  # keep the node alive; the study stays in ready/ for the next start
                logger.exception("study %s: internal error; kept in the spool for the next start", study)
                with self._lock:
                    self._processing.discard(study)
                    self._waiting -= 1

    def _monitor(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._close_due()

    # ----------------------------------------------------------------------------- life cycle
    def recover(self) -> list[str]:
        """Queue the studies left in ``ready/`` and resume the timers of ``incoming/`` (restart).

        Returns
        -------
        list of str
            The studies queued again, oldest first.
        """
        requeued = []
        for folder in (self.incoming, self.ready):
            if folder.is_dir() and (n := _remove_partial_writes(folder)):
                logger.warning("spool %s: removed %d partial write(s) of an interrupted run", folder, n)
        if self.ready.is_dir():
            for p in sorted(self.ready.iterdir(), key=lambda p: p.stat().st_mtime):
                if p.is_dir() and is_valid_uid(p.name):
                    with self._lock:
                        self._waiting += 1
                    self._queue.put(p.name)
                    requeued.append(p.name)
        if self.incoming.is_dir():
            for p in self.incoming.iterdir():
                if p.is_dir() and not _spooled(p):
                    shutil.rmtree(p)  # only partial writes were in it
                elif p.is_dir() and is_valid_uid(p.name):
                    with self._lock:
                        self._last_seen[p.name] = time.monotonic()
                        self._count[p.name] = len(_spooled(p))
        if requeued:
            logger.info("spool %s: %d study(ies) queued again after a restart", self.spool, len(requeued))
        return requeued

    def start(self) -> None:
        """Recover the spool, start the workers, the quiet-timer monitor and the C-STORE SCP."""
        from pynetdicom import AE, evt

        from monai_bayes.pacs.dimse import VERIFICATION

        for d in (self.incoming, self.ready, self.status_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._threads.append(threading.Thread(target=self._worker, name="listener-worker", daemon=True))
        self._threads.append(threading.Thread(target=self._monitor, name="listener-monitor", daemon=True))
        for t in self._threads:
            t.start()
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = list(self.allowed)
        ae.require_called_aet = True
        ae.add_supported_context(VERIFICATION)
        for uid in storage_sop_classes(self.settings.modality):
            ae.add_supported_context(uid)
        ae.acse_timeout = self.settings.connect_timeout_s
        ae.dimse_timeout = self.settings.read_timeout_s
        ae.network_timeout = self.settings.read_timeout_s
        try:
            self._server = ae.start_server(
                (self.bind, self.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
                ssl_context=self.ssl_context,
            )
        except OSError as err:
            self.stop()
            raise PacsConfigError(f"cannot listen on {self.bind or '*'}:{self.port} ({err})") from None
        self.port = int(self._server.server_address[1])
        logger.info(
            "listening as %s on %s:%d (allowed: %s) -> %s",
            self.ae_title,
            self.bind or "*",
            self.port,
            ", ".join(self.allowed),
            self.destination,
        )

    def idle(self) -> bool:
        """True when nothing is being received, queued or processed."""
        with self._lock:
            return not self._last_seen and self._waiting == 0

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until :meth:`idle` (or ``timeout_s``); return whether it became idle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(self.poll_s)
        return self.idle()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop receiving, let the workers finish their current study, and stop the threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout_s)
        self._threads = []

    def serve_forever(self) -> None:
        """:meth:`start`, then run until SIGINT / SIGTERM (then :meth:`stop`)."""
        import signal

        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        self.start()
        try:
            stopped.wait()
        finally:
            logger.info("stopping: the study being processed is finished, queued ones stay in the spool")
            self.stop()
