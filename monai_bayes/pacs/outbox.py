"""On-disk outbox of results waiting for delivery (STOW-RS or C-STORE: any :class:`Transport`).

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
* **Trusted only as far as checked.** An entry is sent only to the PACS URL the flush is given
  (``--url`` / ``MONAI_BAYES_PACS_URL``), never to the URL written in ``entry.json``; its files
  must be plain ``.dcm`` names inside the entry folder; its id must match its URL and result.
  Entries that fail these checks (or are symbolic links, or unreadable) are reported as failed
  (exit 65) and never sent; queuing the same result again replaces such an entry. The outbox is
  created owner-only (folders ``0700``, files ``0600``).
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
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from monai_bayes.pacs.errors import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNAVAILABLE,
    OutboxEntryError,
    PacsAuthError,
    PacsConfigError,
    PacsError,
    PacsRequestError,
    PacsUnavailableError,
)
from monai_bayes.pacs.results import StoredResult
from monai_bayes.pacs.transport import Transport
from monai_bayes.pacs.transport import check_destination as check_url
from monai_bayes.pacs.uids import is_valid_uid
from monai_bayes.utils.atomic import (
    PRIVATE_FILE_MODE,
    atomic_write_json,
    make_private_dir,
    publish_dir,
    restrict_tree,
    scratch_dir,
)

__all__ = ["FlushReport", "Outbox", "OutboxEntry"]

logger = logging.getLogger(__name__)

ENTRY_NAME = "entry.json"
ENTRY_FORMAT = "monai_bayes.pacs.outbox-entry"
_ENTRY_KEYS = frozenset(
    {
        "format",
        "entry_id",
        "url",
        "study_instance_uid",
        "fingerprint",
        "instances",
        "created",
        "attempts",
        "last_attempt",
        "last_error",
    }
)
_INSTANCE_KEYS = frozenset({"file", "sop_instance_uid", "series_instance_uid", "sop_class_uid"})
_REPAIR_HINT = "remove the folder, or queue the result again (re-run the same input) to replace it"


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
    """What a flush did.

    Attributes
    ----------
    sent : list of str
        Entry ids delivered.
    pending : list of str
        Entry ids still waiting (failed this time, or refused as corrupt).
    errors : dict
        Entry id (or folder name of a corrupt entry) -> the error met.
    other_destinations : list of str
        Entry ids queued for another URL than the flush's: not tried.
    """

    sent: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    errors: dict[str, PacsError] = field(default_factory=dict)
    other_destinations: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if nothing is pending; 77 if credentials were refused; the code of another
        non-transient error (e.g. 65 for a refused instance); else 75 (PACS unavailable, retry later).
        """
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


_PLAIN_DCM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.dcm")


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
        """Queue ``result``'s DICOM files for ``url`` (idempotent: an existing entry is returned).

        Parameters
        ----------
        result : StoredResult
            A published result.
        url : str
            Destination URL (DICOMweb or DIMSE).

        Returns
        -------
        OutboxEntry
            The queued entry. A corrupt entry of the same id is replaced.
        """
        url = check_url(url)
        eid = self.entry_id(url, result.fingerprint)
        final = self.pending_dir / eid
        broken = False
        if final.exists() or final.is_symlink():
            try:
                return self._load(final)
            except OutboxEntryError as err:
                logger.warning("replacing corrupt outbox entry %s (%s)", eid, err)
                broken = True
        make_private_dir(self.pending_dir)
        with scratch_dir(self.root, eid, private=True) as tmp:
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
            atomic_write_json(tmp / ENTRY_NAME, entry.to_dict(), indent=2, sort_keys=True, durable=True)
            restrict_tree(tmp)
            publish_dir(tmp, final, complete=ENTRY_NAME, replace=broken, durable=True)
        entry = self._load(final)
        logger.info(
            "queued %d instance(s) of study %s in outbox entry %s", len(instances), entry.study_instance_uid, eid
        )
        return entry

    def _load(self, directory: Path) -> OutboxEntry:
        """Read and check the entry in ``directory``; raise :class:`OutboxEntryError` if it cannot be trusted."""
        where = f"outbox entry {directory}"
        if directory.is_symlink():
            raise OutboxEntryError(f"{where} is a symbolic link; refused ({_REPAIR_HINT})")
        path = directory / ENTRY_NAME
        if path.is_symlink() or not path.is_file():
            raise OutboxEntryError(f"{where} has no regular {ENTRY_NAME}; refused ({_REPAIR_HINT})")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise OutboxEntryError(f"{where}: unreadable {ENTRY_NAME} ({err}); {_REPAIR_HINT}") from None
        return _parse_entry(d, directory, where)

    def scan(self, url: str | None = None) -> tuple[list[OutboxEntry], dict[str, OutboxEntryError]]:
        """Pending entries (oldest first; only those for ``url`` if given) and the corrupt ones.

        Parameters
        ----------
        url : str or None
            Keep only entries queued for this URL (corrupt entries are always returned).

        Returns
        -------
        tuple
            ``(entries, corrupt)``: the readable entries and ``{folder name: error}``.
        """
        if not self.pending_dir.is_dir():
            return [], {}
        found, corrupt = [], {}
        for p in sorted(self.pending_dir.iterdir()):
            if not (p.is_dir() or p.is_symlink()):
                continue
            try:
                found.append(self._load(p))
            except OutboxEntryError as err:
                corrupt[p.name] = err
        if url is not None:
            url = check_url(url)
            found = [e for e in found if e.url == url]
        return sorted(found, key=lambda e: (e.created, e.entry_id)), corrupt

    def entries(self, url: str | None = None) -> list[OutboxEntry]:
        """Pending entries (oldest first), optionally only those for ``url``; corrupt ones left out."""
        return self.scan(url)[0]

    def sent_entries(self) -> list[dict[str, Any]]:
        """The ``sent.jsonl`` records (one per delivery)."""
        if not self.sent_log.is_file():
            return []
        with open(self.sent_log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    # ----------------------------------------------------------------------------- flush
    @contextmanager
    def _locked(self) -> Iterator[None]:
        make_private_dir(self.root)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "a+") as f:
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
        fd = os.open(self.sent_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _send(self, entry: OutboxEntry, client: Transport) -> None:
        entry.attempts += 1
        entry.last_attempt = _now()
        try:
            datasets = [_read_outbox_file(p) for p in entry.files()]
            client.store(datasets, entry.study_instance_uid)
        except PacsError as err:
            entry.last_error = str(err)
            atomic_write_json(
                entry.directory / ENTRY_NAME,
                entry.to_dict(),
                indent=2,
                sort_keys=True,
                durable=True,
                mode=PRIVATE_FILE_MODE,
            )
            raise
        self._record_sent(entry)
        shutil.rmtree(entry.directory)
        logger.info("outbox entry %s delivered to %s (%d instance(s))", entry.entry_id, entry.url, len(entry.instances))

    def flush(self, client_for: Callable[[str], Transport], url: str) -> FlushReport:
        """Try to deliver every pending entry queued for ``url`` once.

        Parameters
        ----------
        client_for : callable
            Returns the client of ``url`` (called at most once).
        url : str
            The configured PACS: only entries queued for exactly this URL are sent, so an entry
            planted with another URL never receives the credentials. Entries for other URLs are
            listed in :attr:`FlushReport.other_destinations` and left alone.

        Returns
        -------
        FlushReport
            Corrupt entries count as pending, with an :class:`OutboxEntryError` (exit code 65).
        """
        url = check_url(url)
        report = FlushReport()
        with self._locked():
            entries, corrupt = self.scan()
            for name, err in corrupt.items():
                logger.warning("%s", err)
                report.pending.append(name)
                report.errors[name] = err
            client: Transport | None = None
            blocked: PacsError | None = None
            try:
                for entry in entries:
                    if entry.url != url:
                        report.other_destinations.append(entry.entry_id)
                        continue
                    if blocked is not None:
                        report.pending.append(entry.entry_id)
                        report.errors[entry.entry_id] = blocked
                        continue
                    try:
                        client = client or client_for(url)
                        self._send(entry, client)
                        report.sent.append(entry.entry_id)
                    except PacsError as err:
                        logger.warning("outbox entry %s not delivered: %s", entry.entry_id, err)
                        report.pending.append(entry.entry_id)
                        report.errors[entry.entry_id] = err
                        if isinstance(err, PacsUnavailableError | PacsAuthError | PacsConfigError):
                            blocked = err
            finally:
                if client is not None:
                    client.close()
        return report


def _parse_entry(d: Any, directory: Path, where: str) -> OutboxEntry:
    """Check the content of an ``entry.json`` against its folder; see :meth:`Outbox._load`."""

    def bad(what: str) -> OutboxEntryError:
        return OutboxEntryError(f"{where}: {what}; refused ({_REPAIR_HINT})")

    if not isinstance(d, dict) or d.get("format") != ENTRY_FORMAT:
        raise bad(f"{ENTRY_NAME} is not a {ENTRY_FORMAT} document")
    if set(d) != _ENTRY_KEYS:
        raise bad(f"{ENTRY_NAME} keys {sorted(d)} differ from the expected {sorted(_ENTRY_KEYS)}")
    try:
        url = check_url(d["url"])
    except PacsConfigError as err:
        raise bad(f"invalid url ({err})") from None
    fingerprint = d["fingerprint"]
    if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        raise bad(f"fingerprint must be 64 hex digits, got {fingerprint!r}")
    if d["entry_id"] != directory.name or d["entry_id"] != Outbox.entry_id(url, fingerprint):
        raise bad(f"entry_id {d['entry_id']!r} does not match its folder and its url + fingerprint")
    if not is_valid_uid(d["study_instance_uid"]):
        raise bad(f"study_instance_uid {d['study_instance_uid']!r} is not a UID")
    instances = d["instances"]
    if not isinstance(instances, list) or not instances:
        raise bad("instances must be a non-empty list")
    for k, inst in enumerate(instances):
        if not isinstance(inst, dict) or set(inst) != _INSTANCE_KEYS:
            raise bad(f"instances[{k}] must have exactly the keys {sorted(_INSTANCE_KEYS)}")
        name = inst["file"]
        if not isinstance(name, str) or not _PLAIN_DCM.fullmatch(name):
            raise bad(f"instances[{k}].file {name!r} is not a plain .dcm file name inside the entry")
        file = directory / name
        if file.is_symlink() or not file.is_file():
            raise bad(f"instances[{k}].file {name!r} is not a regular file of the entry")
        for key in ("sop_instance_uid", "series_instance_uid", "sop_class_uid"):
            if not is_valid_uid(inst[key]):
                raise bad(f"instances[{k}].{key} {inst[key]!r} is not a UID")
    attempts = d["attempts"]
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise bad(f"attempts must be an int >= 0, got {attempts!r}")
    for key in ("created", "last_attempt", "last_error"):
        if d[key] is not None and not isinstance(d[key], str):
            raise bad(f"{key} must be a string or null")
    if d["created"] is None:
        raise bad("created is missing")
    fields = {k: v for k, v in d.items() if k != "format"}
    return OutboxEntry(directory=directory, **fields)
