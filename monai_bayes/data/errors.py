"""Errors and the skip report shared by the dataset readers.

Every reader validates its input and raises a :class:`DataFormatError` (a :class:`ValueError`) that
names the offending file or field, what was expected and what was found. Dataset conversions take
``on_error="raise" | "skip"``; with ``"skip"`` the failing item is left out and recorded in a
:class:`SkipReport`, which the conversion writes next to its datalist (``report.json``).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

__all__ = [
    "DataFormatError",
    "DicomSeriesError",
    "LidcXmlError",
    "OnError",
    "SkipReport",
    "UnsafePickleError",
    "check_on_error",
]

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


class DataFormatError(ValueError):
    """Input data that does not have the expected on-disk format.

    Parameters
    ----------
    message
        What was expected and what was found.
    path
        The offending file or folder, if any; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class DicomSeriesError(DataFormatError):
    """A DICOM file or series failed validation (corrupt file, mixed series, gaps, wrong modality…)."""


class LidcXmlError(DataFormatError):
    """An LIDC reader XML file could not be interpreted, or does not match its CT series."""


class UnsafePickleError(pickle.UnpicklingError, DataFormatError):
    """A pickle asked for a global that the restricted unpickler does not allow."""


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument and return it."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error  # type: ignore[return-value]  # checked to be one of OnError's values just above


@dataclass
class SkipReport:
    """Items left out (``on_error="skip"``) and warnings collected during a conversion.

    Attributes
    ----------
    skipped
        One dict per skipped item: ``{"item": <file or id>, "reason": <message>}``.
    warnings
        Non-fatal oddities (e.g. an ROI matched to its slice by z position because its SOP UID was
        absent), same layout.
    """

    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, item: Any, reason: str | BaseException) -> None:
        """Record a skipped item and log it."""
        self.skipped.append({"item": str(item), "reason": str(reason)})
        logger.warning("skipped %s: %s", item, reason)

    def warn(self, item: Any, message: str) -> None:
        """Record a non-fatal warning and log it at debug level."""
        self.warnings.append({"item": str(item), "message": message})
        logger.debug("%s: %s", item, message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what ``report.json`` holds)."""
        return {"skipped": list(self.skipped), "warnings": list(self.warnings)}

    def handle(self, on_error: OnError, item: Any, error: BaseException) -> None:
        """Re-raise ``error`` when ``on_error == "raise"``, else record ``item`` as skipped."""
        if on_error == "raise":
            raise error
        self.skip(item, error)
