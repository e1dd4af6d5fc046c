"""Deterministic identity of a result: fingerprint and derived DICOM UIDs.

The *fingerprint* is the SHA-256 of a canonical JSON document holding

* the source: Series Instance UID and the SOP Instance UIDs in slice order;
* the model: checkpoint hash, ``inference.json`` hash, MC samples ``S``, seed, activation;
* the settings that change the written objects (:meth:`DicomInferenceSettings.content_dict`);
* :data:`UID_SCHEME_VERSION` (bumped when the written objects change incompatibly).

Every Series / SOP Instance UID written derives from it: ``2.25.<integer>`` UIDs (PS3.5 B.2) whose
integer is a name-based (SHA-1, version 5) UUID of the fingerprint and a role such as
``"seg-instance"``. Running the
same input with the same model and settings therefore writes objects with the same UIDs, and a PACS
that receives them again keeps one copy (re-sending is idempotent). Device, batch size, timeouts or
the output folder do not enter the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from monai_bayes.pacs.errors import InvalidInputError

__all__ = ["MAX_UID_LENGTH", "UID_SCHEME_VERSION", "check_uid", "derive_uid", "is_valid_uid", "result_fingerprint"]

#: Version of the fingerprint / UID derivation; part of every fingerprint.
UID_SCHEME_VERSION = 1

#: Namespace of the name-based UUIDs (itself uuid5 of the URL namespace and the package name).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/monai_bayes/pacs")

#: Longest UID the UI value representation allows (PS3.5 §6.2).
MAX_UID_LENGTH = 64
#: UI character repertoire: numeric components separated by dots (PS3.5 §9.1). Leading zeros in a
#: component, which the standard forbids but some archives write, are accepted: they cannot change
#: a path or a URL.
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(value: object) -> bool:
    """True if ``value`` is a string of the UI value representation (digits and dots, at most 64).

    Parameters
    ----------
    value : object
        Candidate UID.

    Returns
    -------
    bool
        Whether it can safely name a folder, a URL path segment or a DICOM reference.
    """
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _UID_RE.fullmatch(value) is not None


def check_uid(value: object, what: str) -> str:
    """Return ``value`` if it is a valid UID (see :func:`is_valid_uid`), else raise.

    UIDs from input data name result folders and go into DICOMweb URLs: a UID such as
    ``../../x`` or ``/tmp/x`` must never get that far.

    Parameters
    ----------
    value : object
        Candidate UID.
    what : str
        Which attribute of which object, for the message (e.g. ``"SeriesInstanceUID of <file>"``).

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    InvalidInputError
        (exit code 65) naming ``what``, the expected form and the value received.
    """
    if not is_valid_uid(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80] + "...")
        raise InvalidInputError(
            f"{what}: expected a DICOM UID (digits and dots, at most {MAX_UID_LENGTH} characters), got {shown}"
        )
    return str(value)


def result_fingerprint(
    series_instance_uid: str,
    sop_instance_uids: Sequence[str],
    model: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> str:
    """Hex SHA-256 identifying a result.

    Parameters
    ----------
    series_instance_uid
        Source series.
    sop_instance_uids
        Source instances in slice order.
    model
        Model identity (checkpoint / config hashes, ``S``, seed, activation ...); JSON-serialisable.
    settings
        Content settings; JSON-serialisable.
    """
    doc = {
        "scheme": UID_SCHEME_VERSION,
        "source": {"series": str(series_instance_uid), "instances": [str(u) for u in sop_instance_uids]},
        "model": dict(model),
        "settings": dict(settings),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def derive_uid(fingerprint: str, role: str) -> str:
    """A ``2.25.`` UID determined by ``fingerprint`` and ``role`` (e.g. ``"seg-series"``)."""
    if not fingerprint or not role:
        raise ValueError(f"derive_uid needs a fingerprint and a role, got {fingerprint!r}, {role!r}")
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'v{UID_SCHEME_VERSION}/{fingerprint}/{role}').int}"
