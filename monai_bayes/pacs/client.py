"""DICOMweb client with bounded retries, timeouts and clear errors (QIDO-RS, WADO-RS, STOW-RS).

:class:`PacsClient` wraps :class:`dicomweb_client.DICOMwebClient` on a :mod:`requests` session that

* authenticates with the credentials of :mod:`monai_bayes.pacs.credentials` (environment / netrc),
* ignores proxy variables and netrc lookups of the environment (``trust_env = False``: traffic goes
  exactly where the URL says, credentials only from the sources documented there),
* applies ``(connect, read)`` timeouts to every request,
* retries connection errors, timeouts and HTTP 5xx / 408 / 429 up to ``max_attempts`` times with
  exponential backoff ``min(backoff_s · 2^k, max_backoff_s)``, then raises
  :class:`~monai_bayes.pacs.errors.PacsUnavailableError`; 401 / 403 raise
  :class:`~monai_bayes.pacs.errors.PacsAuthError` at once, other 4xx
  :class:`~monai_bayes.pacs.errors.PacsRequestError`.

Log records carry UIDs, URLs (without credentials) and status codes only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from pydicom.dataset import Dataset

from monai_bayes.pacs.credentials import Credentials, check_url, resolve_credentials
from monai_bayes.pacs.errors import (
    InputNotFoundError,
    PacsAuthError,
    PacsRequestError,
    PacsUnavailableError,
)

__all__ = ["PacsClient", "RetryPolicy", "SeriesInfo"]

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


@dataclass(frozen=True)
class SeriesInfo:
    """A series found by QIDO-RS (no patient attributes kept)."""

    series_instance_uid: str
    modality: str | None
    num_instances: int | None
    series_number: int | None


def _status(err: requests.HTTPError) -> int:
    return int(err.response.status_code) if err.response is not None else 0


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
    ) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        if credentials == "auto":
            credentials = resolve_credentials(self.url, netrc_file=netrc_file)
        elif credentials is not None and not isinstance(credentials, Credentials):
            raise TypeError(f"credentials must be 'auto', Credentials or None, got {type(credentials).__name__}")
        self.credentials_source = credentials.source if credentials is not None else "anonymous"
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.session.trust_env = False
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
        """Client with the timeouts / retries of a :class:`DicomInferenceSettings`."""
        return cls(
            url,
            netrc_file=netrc_file,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            retry=RetryPolicy(settings.max_attempts, settings.backoff_s, settings.max_backoff_s),
        )

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
        last: str = ""
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return fn()
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
            if attempt < self.retry.max_attempts:
                delay = self.retry.delay(attempt)
                logger.warning(
                    "%s: %s from %s (attempt %d/%d); retrying in %.2g s",
                    what,
                    last,
                    self.url,
                    attempt,
                    self.retry.max_attempts,
                    delay,
                )
                self.retry.sleep(delay)
        raise PacsUnavailableError(
            f"{what}: {self.url} unreachable or failing ({last}) after {self.retry.max_attempts} attempt(s)"
        )

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
            ds = Dataset.from_json(item)
            n = ds.get("NumberOfSeriesRelatedInstances")
            num = ds.get("SeriesNumber")
            out.append(
                SeriesInfo(
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    modality=str(ds.Modality) if ds.get("Modality") else None,
                    num_instances=int(n) if n not in (None, "") else None,
                    series_number=int(num) if num not in (None, "") else None,
                )
            )
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
