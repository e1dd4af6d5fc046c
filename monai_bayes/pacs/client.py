"""DICOMweb client with bounded retries, timeouts and clear errors (QIDO-RS, WADO-RS, STOW-RS).

:class:`PacsClient` wraps :class:`dicomweb_client.DICOMwebClient` on a :mod:`requests` session that

* authenticates with the credentials of :mod:`monai_bayes.pacs.credentials` (environment / netrc),
* ignores proxy variables and netrc lookups of the environment (``trust_env = False``: traffic goes
  exactly where the URL says, credentials only from the sources documented there),
* verifies TLS certificates against ``ca_bundle`` (a hospital's internal CA), else the standard
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` variables, else certifi; a failed verification is
  not retried and raises :class:`~monai_bayes.pacs.errors.PacsTLSError` saying what failed,
* refuses to send credentials over plain ``http://`` to a host other than loopback unless
  ``allow_insecure_http`` (then it warns),
* applies ``(connect, read)`` timeouts to every request,
* retries connection errors, timeouts and HTTP 5xx / 408 / 429 up to ``max_attempts`` times with
  exponential backoff ``min(backoff_s · 2^k, max_backoff_s)``, then raises
  :class:`~monai_bayes.pacs.errors.PacsUnavailableError`; 401 / 403 raise
  :class:`~monai_bayes.pacs.errors.PacsAuthError` at once, other 4xx
  :class:`~monai_bayes.pacs.errors.PacsRequestError`; an answer that is not DICOMweb (e.g. an
  HTML login page with HTTP 200) raises :class:`~monai_bayes.pacs.errors.PacsProtocolError`
  naming its content type.

Log records carry UIDs, URLs (without credentials) and status codes only.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pydicom.dataset import Dataset

from monai_bayes.pacs.credentials import Credentials, check_url, resolve_credentials
from monai_bayes.pacs.errors import (
    InputNotFoundError,
    PacsAuthError,
    PacsConfigError,
    PacsProtocolError,
    PacsRequestError,
    PacsTLSError,
    PacsUnavailableError,
)

__all__ = ["PacsClient", "RetryPolicy", "SeriesInfo", "is_loopback_host", "resolve_ca_bundle"]

#: Standard variables naming a CA bundle (requests / curl); honoured although ``trust_env`` is off.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_STATUS = frozenset({408, 429})
#: STOW-RS FailureReason "Duplicate SOP Instance" (0111H): the PACS already has it -> success.
_DUPLICATE_SOP_INSTANCE = 0x0111


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff.

    Attributes
    ----------
    max_attempts
        Tries per request (>= 1), the first included.
    backoff_s
        Sleep before the second try; doubled for every further try.
    max_backoff_s
        Upper bound of one sleep.
    sleep
        The sleep function (tests pass a recorder).
    """

    max_attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return float(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))

    def after_failure(self, attempt: int, what: str, url: str, reason: str) -> None:
        """Log and back off after failed try ``attempt`` (1-based), or give up after the last one.

        Parameters
        ----------
        attempt : int
            The try that failed.
        what : str
            The operation, for the log line and the error (e.g. ``"STOW-RS"``, ``"C-FIND"``).
        url : str
            The peer.
        reason : str
            Why the try failed.

        Raises
        ------
        PacsUnavailableError
            When ``attempt`` was the last of :attr:`max_attempts`.
        """
        if attempt >= self.max_attempts:
            raise PacsUnavailableError(
                f"{what}: {url} unreachable or failing ({reason}) after {self.max_attempts} attempt(s)"
            )
        delay = self.delay(attempt)
        logger.warning(
            "%s: %s from %s (attempt %d/%d); retrying in %.2g s", what, reason, url, attempt, self.max_attempts, delay
        )
        self.sleep(delay)


@dataclass(frozen=True)
class SeriesInfo:
    """A series found by QIDO-RS (no patient attributes kept)."""

    series_instance_uid: str
    modality: str | None
    num_instances: int | None
    series_number: int | None


def _status(err: requests.HTTPError) -> int:
    return int(err.response.status_code) if err.response is not None else 0


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``).

    Parameters
    ----------
    host : str or None
        Host name or IP address of a URL.

    Returns
    -------
    bool
        Whether traffic to it stays on this machine.
    """
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_ca_bundle(ca_bundle: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> str | bool:
    """The ``verify`` value of the HTTP session: a CA bundle path, or ``True`` (certifi's bundle).

    Parameters
    ----------
    ca_bundle : str or os.PathLike or None
        Explicit PEM file (or folder of hashed certificates); wins over the environment.
    env : Mapping or None
        Environment to read ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` from (default ``os.environ``).

    Returns
    -------
    str or bool
        The path to use, or ``True``. Never ``False``: verification cannot be switched off.

    Raises
    ------
    PacsConfigError
        If the named file does not exist (naming the setting or variable it came from).
    """
    env = os.environ if env is None else env
    source, path = "ca_bundle (--ca-bundle)", ca_bundle
    if path is None:
        for name in CA_BUNDLE_VARIABLES:
            if env.get(name):
                source, path = f"${name}", env[name]
                break
    if path is None or str(path) == "":
        return True
    p = Path(path).expanduser()
    if not p.exists():
        raise PacsConfigError(f"{source}: CA bundle {p} not found; expected a PEM file of trusted certificates")
    return str(p)


def _tls_reason(err: BaseException) -> str:
    """The informative part of an SSL error (e.g. ``certificate verify failed: self-signed certificate``)."""
    text = str(err)
    m = re.search(r"(certificate verify failed[^')\]\"]*)", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"SSLError\((.*)", text)
    return (m.group(1) if m else text)[:200]


class PacsClient:
    """A DICOMweb server at ``url`` (the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``).

    Parameters
    ----------
    url
        DICOMweb base URL, without credentials.
    credentials
        ``"auto"`` (environment, then netrc; see :func:`resolve_credentials`), explicit
        :class:`Credentials`, or ``None`` for anonymous access.
    netrc_file
        Explicit netrc file for ``"auto"``.
    connect_timeout_s, read_timeout_s
        Per-request timeouts.
    retry
        Retry policy (default :class:`RetryPolicy`).
    session
        A requests session to use (its auth / headers are replaced as configured here).
    ca_bundle
        CA bundle for ``https://`` (see :func:`resolve_ca_bundle`).
    allow_insecure_http
        Allow credentials over ``http://`` to a non-loopback host (a warning is logged).

    Raises
    ------
    PacsConfigError
        Bad URL, missing CA bundle, or credentials over plain http off loopback without
        ``allow_insecure_http``.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | str | None = "auto",
        netrc_file: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        if credentials == "auto":
            credentials = resolve_credentials(self.url, netrc_file=netrc_file)
        elif credentials is not None and not isinstance(credentials, Credentials):
            raise TypeError(f"credentials must be 'auto', Credentials or None, got {type(credentials).__name__}")
        self.credentials_source = credentials.source if credentials is not None else "anonymous"
        parts = urlsplit(self.url)
        if credentials is not None and parts.scheme == "http" and not is_loopback_host(parts.hostname):
            if not allow_insecure_http:
                raise PacsConfigError(
                    f"refusing to send credentials ({self.credentials_source}) over plain http to {parts.hostname}: "
                    "anyone on the network path could read them. Use https://, or pass --allow-insecure-http "
                    "(setting allow_insecure_http) if the network is trusted"
                )
            logger.warning("sending credentials over plain http to %s (allow_insecure_http is set)", parts.hostname)
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.trust_env = False
        self.session.verify = resolve_ca_bundle(ca_bundle)
        self.last_content_type: str | None = None
        self.session.hooks["response"].append(self._remember_response)
        self.session.auth = None
        if credentials is not None and credentials.kind == "basic":
            self.session.auth = (credentials.username, credentials.secret)
        elif credentials is not None and credentials.kind == "bearer":
            self.session.headers["Authorization"] = f"Bearer {credentials.secret}"
        self._client = DICOMwebClient(
            self.url, session=self.session, timeout=(float(connect_timeout_s), float(read_timeout_s))
        )
        self._client.set_http_retry_params(retry=False)  # retries are ours: bounded, logged, one policy
        logger.debug("DICOMweb %s (credentials: %s)", self.url, self.credentials_source)

    @classmethod
    def from_settings(cls, url: str, settings: Any, netrc_file: str | None = None) -> PacsClient:
        """Client with the timeouts / retries / TLS settings of a :class:`DicomInferenceSettings`."""
        return cls(
            url,
            netrc_file=netrc_file,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            retry=RetryPolicy(settings.max_attempts, settings.backoff_s, settings.max_backoff_s),
            ca_bundle=settings.ca_bundle,
            allow_insecure_http=settings.allow_insecure_http,
        )

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: keep the last answer's content type for error messages."""
        self.last_content_type = response.headers.get("Content-Type")

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- retry core
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the retry policy; map transport / HTTP failures to :class:`PacsError`."""
        attempt = 0
        while True:  # ends by returning, raising, or RetryPolicy.after_failure giving up
            attempt += 1
            last = ""
            self.last_content_type = None
            try:
                return fn()
            except requests.exceptions.SSLError as err:
                raise PacsTLSError(
                    f"{what}: TLS with {self.url} failed: {_tls_reason(err)}. If the PACS uses an internal "
                    "certificate authority, pass its PEM file with --ca-bundle (setting ca_bundle) or "
                    "REQUESTS_CA_BUNDLE; verification itself cannot be switched off"
                ) from None
            except requests.HTTPError as err:
                status = _status(err)
                if status in (401, 403):
                    reason = "credentials refused" if status == 401 else "access forbidden"
                    source = (
                        "no credentials configured"
                        if self.credentials_source == "anonymous"
                        else f"credentials from {self.credentials_source}"
                    )
                    raise PacsAuthError(
                        f"{what}: {reason} by {self.url} (HTTP {status}; {source}). "
                        "Check MONAI_BAYES_PACS_USER / MONAI_BAYES_PACS_PASSWORD (or MONAI_BAYES_PACS_TOKEN, ~/.netrc)"
                    ) from None
                if status < 500 and status not in _RETRY_STATUS:
                    raise PacsRequestError(f"{what}: {self.url} answered HTTP {status}", status=status) from None
                last = f"HTTP {status}"
            except (requests.ConnectionError, requests.Timeout) as err:
                last = f"{type(err).__name__}"
            except (ValueError, KeyError) as err:  # JSONDecodeError, malformed multipart, missing headers
                content_type = self.last_content_type or "none"
                raise PacsProtocolError(
                    f"{what}: {self.url} answered with Content-Type {content_type!r}, not DICOMweb "
                    f"({type(err).__name__}); is a login page or proxy in the way?"
                ) from None
            self.retry.after_failure(attempt, what, self.url, last)

    # ----------------------------------------------------------------------------- QIDO-RS
    def ping(self) -> None:
        """Check that the server answers QIDO-RS with these credentials (raises :class:`PacsError`)."""
        self._call("QIDO-RS ping", lambda: self._client.search_for_studies(limit=1))

    def search_series(self, study_instance_uid: str) -> list[SeriesInfo]:
        """The series of a study.

        Raises
        ------
        InputNotFoundError
            If the study does not exist (empty answer or HTTP 404).
        """
        what = f"QIDO-RS series of study {study_instance_uid}"
        fields = ["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"]
        try:
            found = self._call(what, lambda: self._client.search_for_series(study_instance_uid, fields=fields))
        except PacsRequestError as err:
            if err.status != 404:
                raise
            found = []
        if not found:
            raise InputNotFoundError(f"study {study_instance_uid} not found on {self.url} (QIDO-RS found no series)")
        out = []
        for item in found:
            try:
                ds = Dataset.from_json(item)
                n = ds.get("NumberOfSeriesRelatedInstances")
                num = ds.get("SeriesNumber")
                info = SeriesInfo(
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    modality=str(ds.Modality) if ds.get("Modality") else None,
                    num_instances=int(n) if n not in (None, "") else None,
                    series_number=int(num) if num not in (None, "") else None,
                )
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise PacsProtocolError(
                    f"{what}: {self.url} answered a series record that is not DICOM JSON ({type(err).__name__}: {err})"
                ) from None
            out.append(info)
        return out

    def search_instances(self, study_instance_uid: str, series_instance_uid: str | None = None) -> list[Dataset]:
        """QIDO-RS instances of a study (or one of its series), as datasets of the returned attributes."""
        what = f"QIDO-RS instances of study {study_instance_uid}"
        found = self._call(
            what,
            lambda: self._client.search_for_instances(
                study_instance_uid, series_instance_uid, fields=["SOPClassUID", "SeriesInstanceUID"]
            ),
        )
        return [Dataset.from_json(item) for item in found]

    # ----------------------------------------------------------------------------- WADO-RS
    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        """WADO-RS retrieve of every instance of a series (Part 10 datasets, pixel data included)."""
        what = f"WADO-RS series {series_instance_uid}"
        datasets = self._call(what, lambda: self._client.retrieve_series(study_instance_uid, series_instance_uid))
        if not datasets:
            raise InputNotFoundError(f"{what}: no instances retrieved from {self.url}")
        logger.info("retrieved series %s: %d instance(s)", series_instance_uid, len(datasets))
        return list(datasets)

    def retrieve_instance(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> Dataset:
        """WADO-RS retrieve of one instance."""
        return self._call(
            f"WADO-RS instance {sop_instance_uid}",
            lambda: self._client.retrieve_instance(study_instance_uid, series_instance_uid, sop_instance_uid),
        )

    # ----------------------------------------------------------------------------- STOW-RS
    def store(self, datasets: Sequence[Dataset], study_instance_uid: str) -> None:
        """STOW-RS ``datasets`` into study ``study_instance_uid``; succeeds only if every instance
        was stored (or was already there).

        Raises
        ------
        PacsRequestError
            If the server reports failed instances or omits some from its answer.
        PacsAuthError, PacsUnavailableError
            See :meth:`_call`.
        """
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        what = f"STOW-RS {len(uids)} instance(s) to study {study_instance_uid}"
        answer = self._call(what, lambda: self._client.store_instances(list(datasets), study_instance_uid))
        answer = answer if answer is not None else Dataset()
        failed, duplicates = {}, set()
        for item in answer.get("FailedSOPSequence", []):
            uid, reason = str(item.get("ReferencedSOPInstanceUID", "?")), int(item.get("FailureReason", 0) or 0)
            if reason == _DUPLICATE_SOP_INSTANCE:
                duplicates.add(uid)
            else:
                failed[uid] = reason
        if failed:
            detail = ", ".join(f"{uid} (FailureReason {reason:#06x})" for uid, reason in failed.items())
            raise PacsRequestError(f"{what}: the server refused {detail}")
        stored = {str(item.get("ReferencedSOPInstanceUID")) for item in answer.get("ReferencedSOPSequence", [])}
        missing = [u for u in uids if u not in stored and u not in duplicates]
        if missing:
            raise PacsRequestError(f"{what}: the server's answer does not confirm {missing}")
        for u in uids:
            logger.info("stored %s", u)
