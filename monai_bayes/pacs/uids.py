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
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["UID_SCHEME_VERSION", "derive_uid", "result_fingerprint"]

#: Version of the fingerprint / UID derivation; part of every fingerprint.
UID_SCHEME_VERSION = 1

#: Namespace of the name-based UUIDs (itself uuid5 of the URL namespace and the package name).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/monai_bayes/pacs")


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
