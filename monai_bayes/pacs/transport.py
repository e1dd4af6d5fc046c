"""One transport abstraction for the pipeline and the outbox: DICOMweb or DIMSE, chosen by the URL.

A destination (or source) is a URL:

* ``http(s)://host[:port]/dicom-web`` -- DICOMweb (QIDO-RS / WADO-RS / STOW-RS, :class:`PacsClient`);
* ``dicom://AE_TITLE@host:port`` -- classic DICOM network services (C-FIND / C-GET or C-MOVE /
  C-STORE, :class:`~monai_bayes.pacs.dimse.DimseClient`); ``dicoms://`` is the same over TLS.

Both clients answer the :class:`Transport` protocol, so :func:`~monai_bayes.pacs.pipeline.run_pipeline`
and :class:`~monai_bayes.pacs.outbox.Outbox` (exactly-once delivery) are the same code for both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydicom.dataset import Dataset

from monai_bayes.pacs.client import SeriesInfo
from monai_bayes.pacs.credentials import check_url
from monai_bayes.pacs.errors import PacsConfigError

__all__ = [
    "DIMSE_SCHEMES",
    "DimseAddress",
    "Transport",
    "check_ae_title",
    "check_destination",
    "is_dimse_url",
    "open_transport",
    "parse_dimse_url",
]

#: URL schemes of a DIMSE peer: plain TCP and TLS.
DIMSE_SCHEMES = ("dicom", "dicoms")

#: AE title: 1-16 characters of the default character repertoire, no backslash, not all spaces.
_AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")


class Transport(Protocol):
    """What the pipeline and the outbox need from a PACS connection (DICOMweb or DIMSE)."""

    url: str

    def ping(self) -> None:
        """Check that the peer answers (raises :class:`~monai_bayes.pacs.errors.PacsError`)."""

    def search_series(self, study_instance_uid: str) -> list[SeriesInfo]:
        """The series of a study (raises ``InputNotFoundError`` for an unknown study)."""

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        """Every instance of a series, pixel data included."""

    def store(self, datasets: Sequence[Dataset], study_instance_uid: str) -> None:
        """Store ``datasets``; succeed only if the peer confirmed every instance."""

    def close(self) -> None:
        """Release the connection."""


def check_ae_title(value: Any, what: str) -> str:
    """Validate an AE title (1-16 printable ASCII characters, no backslash, not only spaces).

    Parameters
    ----------
    value : Any
        The AE title as given.
    what : str
        Where it came from (setting or option name), for the message.

    Returns
    -------
    str
        The AE title without surrounding spaces.

    Raises
    ------
    PacsConfigError
        If it is not a valid AE title.
    """
    if not isinstance(value, str) or not _AE_TITLE.fullmatch(value) or not value.strip():
        raise PacsConfigError(
            f"{what}: {value!r} is not an AE title (1-16 printable ASCII characters, no backslash, not only spaces)"
        )
    return value.strip()


@dataclass(frozen=True)
class DimseAddress:
    """A DIMSE peer: its AE title, host and port, and whether the association uses TLS.

    Attributes
    ----------
    ae_title : str
        Called AE title of the peer.
    host : str
        Host name or IP address.
    port : int
        TCP port (1-65535).
    tls : bool
        ``dicoms://``: the association runs over TLS.
    """

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """The canonical URL, ``dicom[s]://AE@host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'dicoms' if self.tls else 'dicom'}://{self.ae_title}@{host}:{self.port}"


def is_dimse_url(url: str) -> bool:
    """True for a ``dicom://`` or ``dicoms://`` URL."""
    return isinstance(url, str) and urlsplit(url.strip()).scheme in DIMSE_SCHEMES


def parse_dimse_url(url: str) -> DimseAddress:
    """Parse ``dicom[s]://AE_TITLE@host:port``.

    Parameters
    ----------
    url : str
        The DIMSE URL.

    Returns
    -------
    DimseAddress
        The peer.

    Raises
    ------
    PacsConfigError
        Missing AE title, host or port, a path, a password, or an invalid AE title.
    """
    example = "dicom://ORTHANC@127.0.0.1:4242"
    parts = urlsplit(url.strip())
    if parts.scheme not in DIMSE_SCHEMES:
        raise PacsConfigError(f"DIMSE URL {url!r}: expected dicom:// or dicoms://, e.g. {example}")
    if parts.password is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PacsConfigError(f"DIMSE URL {url!r}: expected exactly AE_TITLE@host:port, e.g. {example}")
    if not parts.username:
        raise PacsConfigError(f"DIMSE URL {url!r}: the called AE title is missing, e.g. {example}")
    try:
        port = parts.port
    except ValueError as err:
        raise PacsConfigError(f"DIMSE URL {url!r}: invalid port ({err})") from None
    if not parts.hostname or port is None:
        raise PacsConfigError(f"DIMSE URL {url!r}: host and port are required, e.g. {example}")
    ae = check_ae_title(parts.username, f"called AE title of {url!r}")
    return DimseAddress(ae, parts.hostname, port, parts.scheme == "dicoms")


def check_destination(url: str) -> str:
    """Validate a PACS URL of either transport and return its canonical form.

    Parameters
    ----------
    url : str
        ``http(s)://...`` (DICOMweb root) or ``dicom[s]://AE@host:port`` (DIMSE).

    Returns
    -------
    str
        The DICOMweb URL without a trailing slash, or the canonical DIMSE URL.

    Raises
    ------
    PacsConfigError
        If the URL is neither.
    """
    if is_dimse_url(url):
        return parse_dimse_url(url).url
    return check_url(url)


def open_transport(url: str, settings: Any, netrc_file: str | None = None) -> Transport:
    """The client for ``url`` with the timeouts, retries and TLS options of ``settings``.

    Parameters
    ----------
    url : str
        DICOMweb or DIMSE URL (see the module docstring).
    settings : DicomInferenceSettings
        Transport settings (timeouts, retries, CA bundle, AE title, retrieve method).
    netrc_file : str or None
        netrc file for DICOMweb credentials (DIMSE has none).

    Returns
    -------
    Transport
        A :class:`PacsClient` or a :class:`~monai_bayes.pacs.dimse.DimseClient`.
    """
    if is_dimse_url(url):
        from monai_bayes.pacs.dimse import DimseClient

        return DimseClient.from_settings(url, settings)
    from monai_bayes.pacs.client import PacsClient

    return PacsClient.from_settings(url, settings, netrc_file=netrc_file)
