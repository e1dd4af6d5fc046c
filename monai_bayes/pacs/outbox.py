"""On-disk outbox of results waiting for STOW-RS delivery.

Layout::

    <outbox>/pending/<entry_id>/entry.json   # destination URL (no credentials), study UID, instances,
                                             # attempts, last error
    <outbox>/pending/<entry_id>/*.dcm        # ready-to-send DICOM files (hard links or copies)
    <outbox>/sent.jsonl                      # one line per delivered entry (UIDs and time only)
    <outbox>/.lock                           # held while flushing (one flusher at a time)

Semantics:

* **Durable.** An entry is staged and renamed into ``pending/`` in one step; it leaves ``pending/``
  only after the PACS confirmed every instance, and the confirmation is logged in ``sent.jsonl``
  first. A crash at any point leaves the entry either pending (it is sent again) or delivered.
* **Exactly once at the PACS.** An entry id is derived from the destination and the result
  fingerprint, so queuing the same result twice keeps one entry; the instances carry deterministic
  UIDs, so even a re-send after a crash between the PACS's confirmation and the removal of the entry
  leaves one copy on the PACS (STOW-RS of an existing SOP Instance UID stores nothing new).
* **Bounded.** Each flush tries each entry once (with the client's bounded retries); an entry whose
  PACS is unavailable or refuses the credentials stays pending for the next flush, and the other
  entries for that PACS are not tried in the same flush.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from monai_bayes.pacs.client import PacsClient
from monai_bayes.pacs.errors import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNAVAILABLE,
    PacsAuthError,
    PacsConfigError,
    PacsError,
    PacsRequestError,
    PacsUnavailableError,
)
from monai_bayes.pacs.results import StoredResult, atomic_write_json, fsync_tree, staging

__all__ = ["FlushReport", "Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

ENTRY_NAME = "entry.json"
ENTRY_FORMAT = "monai_bayes.pacs.outbox-entry"


@dataclass
class OutboxEntry:
    """A pending delivery (the content of ``entry.json`` plus its folder)."""

    directory: Path
    entry_id: str
    url: str
    study_instance_uid: str
    fingerprint: str
    instances: list[dict[str, str]]
    created: str
    attempts: int = 0
    last_attempt: str | None = None
    last_error: str | None = None

    def files(self) -> list[Path]:
        return [self.directory / i["file"] for i in self.instances]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENTRY_FORMAT,
            "entry_id": self.entry_id,
            "url": self.url,
            "study_instance_uid": self.study_instance_uid,
            "fingerprint": self.fingerprint,
            "instances": self.instances,
            "created": self.created,
            "attempts": self.attempts,
            "last_attempt": self.last_attempt,
            "last_error": self.last_error,
        }


@dataclass
class FlushReport:
    """What a flush did: entry ids sent, still pending, and the errors met (entry id -> message)."""

    sent: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    errors: dict[str, PacsError] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 if nothing is pending; 77 if credentials were refused; the code of another
        non-transient error (e.g. 65 for a refused instance); else 75 (PACS unavailable, retry later)."""
        if not self.pending:
            return EXIT_OK
        codes = {e.exit_code for e in self.errors.values()}
        if EXIT_AUTH in codes:
            return EXIT_AUTH
        hard = sorted(codes - {EXIT_UNAVAILABLE})
        return hard[0] if hard else EXIT_PENDING


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_outbox_file(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types on damaged files
        raise PacsRequestError(f"{path}: outbox file unreadable ({type(err).__name__}: {err})") from None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class Outbox:
    """The outbox folder ``root`` (created on first use).

    Parameters
    ----------
    root
        Outbox folder.
    lock_timeout_s
        How long :meth:`flush` waits for another flusher to finish before giving up.
    """

    def __init__(self, root: str | os.PathLike[str], lock_timeout_s: float = 60.0) -> None:
        self.root = Path(root)
        self.pending_dir = self.root / "pending"
        self.sent_log = self.root / "sent.jsonl"
        self.lock_timeout_s = lock_timeout_s

    # ----------------------------------------------------------------------------- queue
    @staticmethod
    def entry_id(url: str, fingerprint: str) -> str:
        """Id of the entry delivering result ``fingerprint`` to ``url``."""
        return hashlib.sha256(f"{url}\n{fingerprint}".encode()).hexdigest()[:24]

    def add(self, result: StoredResult, url: str) -> OutboxEntry:
        """Queue ``result``'s DICOM files for ``url`` (idempotent: an existing entry is returned)."""
        eid = self.entry_id(url, result.fingerprint)
        final = self.pending_dir / eid
        existing = self._load(final)
        if existing is not None:
            return existing
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        with staging(self.root, eid) as tmp:
            instances = []
            for inst in result.instances:
                name = Path(inst.file).name
                _link_or_copy(result.directory / inst.file, tmp / name)
                instances.append(
                    {
                        "file": name,
                        "sop_instance_uid": inst.sop_instance_uid,
                        "series_instance_uid": inst.series_instance_uid,
                        "sop_class_uid": inst.sop_class_uid,
                    }
                )
            entry = OutboxEntry(tmp, eid, url, result.study_instance_uid, result.fingerprint, instances, _now())
            atomic_write_json(tmp / ENTRY_NAME, entry.to_dict())
            fsync_tree(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if self._load(final) is None:
                    raise
        entry = self._load(final)
        if entry is None:
            raise RuntimeError(f"{final}: outbox entry incomplete right after queuing")
        logger.info(
            "queued %d instance(s) of study %s in outbox entry %s", len(instances), entry.study_instance_uid, eid
        )
        return entry

    def _load(self, directory: Path) -> OutboxEntry | None:
        path = directory / ENTRY_NAME
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("ignoring unreadable outbox entry %s (%s)", path, err)
            return None
        if d.get("format") != ENTRY_FORMAT:
            return None
        d.pop("format")
        return OutboxEntry(directory=directory, **d)

    def entries(self, url: str | None = None) -> list[OutboxEntry]:
        """Pending entries (oldest first), optionally only those for ``url``."""
        if not self.pending_dir.is_dir():
            return []
        found = [e for p in sorted(self.pending_dir.iterdir()) if p.is_dir() and (e := self._load(p)) is not None]
        if url is not None:
            found = [e for e in found if e.url == url.rstrip("/")]
        return sorted(found, key=lambda e: (e.created, e.entry_id))

    def sent_entries(self) -> list[dict[str, Any]]:
        """The ``sent.jsonl`` records (one per delivery)."""
        if not self.sent_log.is_file():
            return []
        with open(self.sent_log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    # ----------------------------------------------------------------------------- flush
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise PacsConfigError(
                            f"{self.root}: another process is flushing this outbox (waited {self.lock_timeout_s:g} s)"
                        ) from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _record_sent(self, entry: OutboxEntry) -> None:
        record = {
            "entry_id": entry.entry_id,
            "url": entry.url,
            "study_instance_uid": entry.study_instance_uid,
            "fingerprint": entry.fingerprint,
            "sop_instance_uids": [i["sop_instance_uid"] for i in entry.instances],
            "sent": _now(),
            "attempts": entry.attempts,
        }
        with open(self.sent_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _send(self, entry: OutboxEntry, client: PacsClient) -> None:
        entry.attempts += 1
        entry.last_attempt = _now()
        try:
            datasets = [_read_outbox_file(p) for p in entry.files()]
            client.store(datasets, entry.study_instance_uid)
        except PacsError as err:
            entry.last_error = str(err)
            atomic_write_json(entry.directory / ENTRY_NAME, entry.to_dict())
            raise
        self._record_sent(entry)
        shutil.rmtree(entry.directory)
        logger.info("outbox entry %s delivered to %s (%d instance(s))", entry.entry_id, entry.url, len(entry.instances))

    def flush(self, client_for: Callable[[str], PacsClient], url: str | None = None) -> FlushReport:
        """Try to deliver every pending entry (or those for ``url``) once.

        Parameters
        ----------
        client_for
            Returns the client of a destination URL (called once per URL).
        url
            Only flush entries queued for this URL.

        Returns
        -------
        FlushReport
        """
        report = FlushReport()
        with self._locked():
            clients: dict[str, PacsClient] = {}
            blocked: dict[str, PacsError] = {}
            try:
                for entry in self.entries(url):
                    if entry.url in blocked:
                        report.pending.append(entry.entry_id)
                        report.errors[entry.entry_id] = blocked[entry.url]
                        continue
                    try:
                        client = clients.get(entry.url) or clients.setdefault(entry.url, client_for(entry.url))
                        self._send(entry, client)
                        report.sent.append(entry.entry_id)
                    except PacsError as err:
                        logger.warning("outbox entry %s not delivered: %s", entry.entry_id, err)
                        report.pending.append(entry.entry_id)
                        report.errors[entry.entry_id] = err
                        if isinstance(err, PacsUnavailableError | PacsAuthError | PacsConfigError):
                            blocked[entry.url] = err
            finally:
                for c in clients.values():
                    c.close()
        return report
