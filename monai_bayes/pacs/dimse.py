"""DIMSE client (pynetdicom): C-ECHO, C-FIND, C-GET / C-MOVE of a series, C-STORE of results.

:class:`DimseClient` speaks the classic DICOM network services to the peer of a
``dicom://AE_TITLE@host:port`` URL (``dicoms://`` for TLS) and answers the same
:class:`~monai_bayes.pacs.transport.Transport` protocol as the DICOMweb :class:`PacsClient`, so the
pipeline and the outbox (exactly-once delivery) are shared:

* **Associations** are opened per operation with ``connect_timeout_s`` as the TCP / ACSE timeout and
  ``read_timeout_s`` as the DIMSE / network timeout. A refused connection, a timeout or an aborted
  association is retried with the :class:`~monai_bayes.pacs.client.RetryPolicy` (bounded, exponential
  backoff), then raises :class:`~monai_bayes.pacs.errors.PacsUnavailableError`. An association the peer
  *rejects* (unknown calling / called AE title) raises :class:`~monai_bayes.pacs.errors.PacsAuthError`
  at once: retrying cannot help.
* **Retrieve** uses C-GET (instances come back on the same association: no port to open, no
  registration of this node at the PACS beyond its AE title) or C-MOVE (the PACS opens an association
  to this node's storage SCP on ``move_port``: the PACS must know ``ae_title`` with this host and port).
* **Store** sends every instance with C-STORE and succeeds only if each got a success or warning
  status. The outbox re-sends an entry after a crash; the deterministic SOP Instance UIDs make the
  PACS keep one copy (a PACS that refuses a duplicate with an error status is reported as such).
* **TLS** (``dicoms://``): the peer's certificate is verified against ``ca_bundle`` (else the
  system's trust store) and its host name checked; ``tls_cert`` / ``tls_key`` add a client
  certificate for mutual TLS. pynetdicom runs TLS through :mod:`ssl`, nothing else is needed.

Log records carry UIDs, AE titles, hosts and status codes only.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_bayes.pacs.client import RetryPolicy, SeriesInfo, resolve_ca_bundle
from monai_bayes.pacs.errors import (
    InputNotFoundError,
    PacsAuthError,
    PacsConfigError,
    PacsError,
    PacsRequestError,
    PacsTLSError,
)
from monai_bayes.pacs.transport import DimseAddress, check_ae_title, parse_dimse_url

__all__ = [
    "DEFAULT_AE_TITLE",
    "RETRIEVE_METHODS",
    "DimseClient",
    "StudyInfo",
    "client_ssl_context",
    "server_ssl_context",
    "storage_sop_classes",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_AE_TITLE = "MONAI_BAYES"
RETRIEVE_METHODS = ("get", "move")

_SUCCESS = 0x0000
_PENDING = (0xFF00, 0xFF01)
#: C-STORE warning statuses (coercion, elements discarded, data set does not match SOP class): stored.
_STORE_WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)

#: Storage SOP classes proposed (with the SCP role) for C-GET, per input Modality.
_STORAGE_BY_MODALITY = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"),
    "PT": ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130"),
}
_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

VERIFICATION = "1.2.840.10008.1.1"
#: Study Root Query/Retrieve Information Model FIND / MOVE / GET.
FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"


def storage_sop_classes(modalities: Sequence[str]) -> list[str]:
    """Storage SOP Class UIDs of the accepted input modalities (CT, MR, PT; others: CT's).

    Parameters
    ----------
    modalities : sequence of str
        Accepted Modality values (``settings.modality``).

    Returns
    -------
    list of str
        SOP Class UIDs, without repetition.
    """
    out: list[str] = []
    for m in modalities:
        for uid in _STORAGE_BY_MODALITY.get(m, _STORAGE_BY_MODALITY["CT"]):
            if uid not in out:
                out.append(uid)
    return out


@dataclass(frozen=True)
class StudyInfo:
    """A study found by C-FIND (no patient attributes kept).

    Attributes
    ----------
    study_instance_uid : str
        Study Instance UID.
    study_date : str or None
        Study Date (``YYYYMMDD``).
    study_description : str or None
        Study Description.
    modalities : tuple of str
        Modalities in Study.
    num_series : int or None
        Number of Study Related Series.
    """

    study_instance_uid: str
    study_date: str | None
    study_description: str | None
    modalities: tuple[str, ...]
    num_series: int | None


def client_ssl_context(
    ca_bundle: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """TLS context of an association requestor: verifies the peer; optional client certificate.

    Parameters
    ----------
    ca_bundle : str or os.PathLike or None
        PEM of trusted CAs (see :func:`~monai_bayes.pacs.client.resolve_ca_bundle`; default: the
        system's trust store).
    cert, key : str or os.PathLike or None
        Client certificate chain and private key (PEM) for mutual TLS.

    Returns
    -------
    ssl.SSLContext
        Certificate and host-name verification on (they cannot be switched off).

    Raises
    ------
    PacsConfigError
        Missing or unreadable CA bundle / certificate / key.
    """
    verify = resolve_ca_bundle(ca_bundle)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if verify is True else str(verify))
        if cert is not None:
            ctx.load_cert_chain(str(cert), None if key is None else str(key))
    except (OSError, ssl.SSLError) as err:
        raise PacsConfigError(f"DIMSE TLS: cannot load certificates ({err})") from None
    return ctx


def server_ssl_context(
    cert: str | os.PathLike[str], key: str | os.PathLike[str], client_ca: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """TLS context of an association acceptor (the listener); ``client_ca`` requires client certificates.

    Parameters
    ----------
    cert, key : str or os.PathLike
        Server certificate chain and private key (PEM).
    client_ca : str or os.PathLike or None
        PEM of the CAs whose client certificates are accepted; given: a client without one is refused.

    Returns
    -------
    ssl.SSLContext
        The server context.

    Raises
    ------
    PacsConfigError
        Missing or unreadable certificate / key / CA file.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise PacsConfigError(f"listener TLS: cannot load certificates ({err})") from None
    return ctx


def _status_of(status: Dataset | None) -> int | None:
    """The Status value of a DIMSE response (``None``: no response, i.e. timeout or abort)."""
    if status is None or "Status" not in status:
        return None
    return int(status.Status)


class _AssociationLostError(Exception):
    """Transient: the association could not be established, was aborted, or timed out."""


class DimseClient:
    """The DIMSE peer of ``url`` (``dicom[s]://AE_TITLE@host:port``).

    Parameters
    ----------
    url : str
        Peer address; its user part is the called AE title.
    ae_title : str
        This node's (calling) AE title; the C-MOVE destination too.
    connect_timeout_s : float
        TCP connection and association negotiation timeout.
    read_timeout_s : float
        DIMSE / network timeout of each message.
    retry : RetryPolicy or None
        Bounded retries of transient failures (default :class:`RetryPolicy`).
    retrieve : str
        ``"get"`` (C-GET) or ``"move"`` (C-MOVE to this node's storage SCP on ``move_port``).
    move_port : int or None
        Port of the temporary storage SCP receiving C-MOVE sub-operations (``"move"`` only).
    move_bind : str
        Address that SCP listens on (default all interfaces: the PACS connects to it).
    ca_bundle, tls_cert, tls_key : str or None
        TLS trust anchors and client certificate (``dicoms://`` only; see :func:`client_ssl_context`).
    modalities : sequence of str
        Accepted input modalities: the storage SOP classes proposed for C-GET / accepted for C-MOVE.

    Raises
    ------
    PacsConfigError
        Bad URL, AE title, retrieve method, missing ``move_port`` for C-MOVE, unreadable TLS files.
    """

    def __init__(
        self,
        url: str,
        *,
        ae_title: str = DEFAULT_AE_TITLE,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        retry: RetryPolicy | None = None,
        retrieve: str = "get",
        move_port: int | None = None,
        move_bind: str = "",
        ca_bundle: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        modalities: Sequence[str] = ("CT",),
    ) -> None:
        self.address: DimseAddress = parse_dimse_url(url)
        self.url = self.address.url
        self.ae_title = check_ae_title(ae_title, "ae_title (--ae-title)")
        if retrieve not in RETRIEVE_METHODS:
            raise PacsConfigError(f"dimse_retrieve must be one of {RETRIEVE_METHODS}, got {retrieve!r}")
        if retrieve == "move" and move_port is None:
            raise PacsConfigError("dimse_retrieve 'move' needs move_port (--move-port): the PACS sends to that port")
        self.retrieve = retrieve
        self.move_port = move_port
        self.move_bind = move_bind
        self.modalities = list(modalities)
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.retry = retry or RetryPolicy()
        self._tls = client_ssl_context(ca_bundle, tls_cert, tls_key) if self.address.tls else None

    @classmethod
    def from_settings(cls, url: str, settings: Any) -> DimseClient:
        """Client with the AE title, timeouts, retries, retrieve method and TLS of a :class:`DicomInferenceSettings`."""
        return cls(
            url,
            ae_title=settings.ae_title,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            retry=RetryPolicy(settings.max_attempts, settings.backoff_s, settings.max_backoff_s),
            retrieve=settings.dimse_retrieve,
            move_port=settings.move_port,
            ca_bundle=settings.ca_bundle,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            modalities=settings.modality,
        )

    def close(self) -> None:
        """Nothing to release: associations are opened and released per operation."""

    def __enter__(self) -> DimseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- association
    def _application_entity(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        ae.connection_timeout = self.connect_timeout_s
        ae.acse_timeout = self.connect_timeout_s
        ae.dimse_timeout = self.read_timeout_s
        ae.network_timeout = self.read_timeout_s
        return ae

    @contextmanager
    def _association(
        self,
        what: str,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        scp_roles: Sequence[str] = (),
        handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
    ) -> Iterator[Any]:
        """An established association proposing ``contexts`` (released on exit, aborted on error)."""
        from pynetdicom import build_role

        ae = self._application_entity()
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, list(syntaxes))
        roles = [build_role(uid, scp_role=True) for uid in scp_roles]
        a = self.address
        tls_args = (self._tls, a.host) if self._tls is not None else None
        try:
            assoc = ae.associate(
                a.host,
                a.port,
                ae_title=a.ae_title,
                ext_neg=roles or None,
                evt_handlers=list(handlers),
                tls_args=tls_args,
            )
        except ssl.SSLError as err:  # raised by the socket wrapper before any DICOM byte
            raise PacsConfigError(
                f"{what}: TLS with {self.url} failed ({err}); check --ca-bundle / certificates"
            ) from None
        if assoc.is_rejected:
            raise PacsAuthError(
                f"{what}: {self.url} rejected the association from AE title {self.ae_title!r} "
                f"(is this node registered at the PACS with that AE title, and is the called AE {a.ae_title!r} right?)"
            )
        if not assoc.is_established:
            if self._tls is not None:
                self._diagnose_tls(what)
            raise _AssociationLostError("association not established (peer unreachable, aborted or timed out)")
        try:
            yield assoc
        except BaseException:
            if assoc.is_established:
                assoc.abort()
            raise
        if assoc.is_established:
            assoc.release()

    def _diagnose_tls(self, what: str) -> None:
        """After a failed TLS association: raise :class:`PacsTLSError` if the TLS handshake is the cause.

        pynetdicom logs handshake failures and reports only "not established"; one bare handshake
        with the same context tells a certificate problem (not retried) from an unreachable peer.
        """
        import socket

        assert self._tls is not None
        a = self.address
        try:
            with (
                socket.create_connection((a.host, a.port), timeout=self.connect_timeout_s) as sock,
                self._tls.wrap_socket(sock, server_hostname=a.host),
            ):
                return
        except ssl.SSLError as err:
            raise PacsTLSError(
                f"{what}: TLS with {self.url} failed: {getattr(err, 'verify_message', None) or err.reason or err}. "
                "If the PACS uses an internal certificate authority, pass its PEM file with --ca-bundle "
                "(setting ca_bundle); a PACS requiring client certificates needs --tls-cert / --tls-key"
            ) from None
        except OSError:
            return  # unreachable: the caller retries

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with the retry policy; transient failures are retried, the rest raised."""
        attempt = 0
        while True:  # ends by returning, raising, or RetryPolicy.after_failure giving up
            attempt += 1
            try:
                return fn()
            except _AssociationLostError as err:
                last = str(err)
            except (ConnectionError, TimeoutError, OSError) as err:
                if isinstance(err, PacsError):
                    raise
                last = f"{type(err).__name__}: {err}"
            self.retry.after_failure(attempt, what, self.url, last)

    # ----------------------------------------------------------------------------- C-ECHO
    def ping(self) -> None:
        """C-ECHO (Verification); raises :class:`PacsError` unless the peer answers success."""

        def echo() -> None:
            with self._association("C-ECHO", [(VERIFICATION, _TRANSFER_SYNTAXES)]) as assoc:
                code = _status_of(assoc.send_c_echo())
                if code is None:
                    raise _AssociationLostError("no C-ECHO response")
                if code != _SUCCESS:
                    raise PacsRequestError(f"C-ECHO: {self.url} answered status {code:#06x}")

        self._call("C-ECHO", echo)

    # ----------------------------------------------------------------------------- C-FIND
    def _find(self, what: str, query: Dataset) -> list[Dataset]:

        def find() -> list[Dataset]:
            found: list[Dataset] = []
            with self._association(what, [(FIND_MODEL, _TRANSFER_SYNTAXES)]) as assoc:
                for status, identifier in assoc.send_c_find(query, FIND_MODEL):
                    code = _status_of(status)
                    if code is None:
                        raise _AssociationLostError(f"no {what} response")
                    if code in _PENDING:
                        if identifier is not None:
                            found.append(identifier)
                    elif code != _SUCCESS:
                        raise PacsRequestError(f"{what}: {self.url} answered status {code:#06x}")
            return found

        return self._call(what, find)

    def find_studies(
        self,
        *,
        study_instance_uid: str | None = None,
        patient_id: str | None = None,
        study_date: str | None = None,
    ) -> list[StudyInfo]:
        """C-FIND at STUDY level (Study Root) by study UID and/or patient ID + study date (or range).

        Parameters
        ----------
        study_instance_uid : str or None
            Study Instance UID.
        patient_id : str or None
            Patient ID (matched exactly, or with ``*`` / ``?`` wildcards).
        study_date : str or None
            ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``.

        Returns
        -------
        list of StudyInfo
            The matches (no patient attributes).

        Raises
        ------
        PacsConfigError
            If no key is given.
        """
        if not (study_instance_uid or patient_id or study_date):
            raise PacsConfigError("C-FIND needs a study UID, a patient ID or a study date")
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study_instance_uid or ""
        q.PatientID = patient_id or ""
        q.StudyDate = study_date or ""
        q.StudyDescription = ""
        q.ModalitiesInStudy = ""
        q.NumberOfStudyRelatedSeries = ""
        out = []
        for ds in self._find("C-FIND studies", q):
            mods = ds.get("ModalitiesInStudy") or []
            mods = [mods] if isinstance(mods, str) else list(mods)
            n = ds.get("NumberOfStudyRelatedSeries")
            out.append(
                StudyInfo(
                    study_instance_uid=str(ds.StudyInstanceUID),
                    study_date=str(ds.StudyDate) if ds.get("StudyDate") else None,
                    study_description=str(ds.StudyDescription) if ds.get("StudyDescription") else None,
                    modalities=tuple(str(m) for m in mods),
                    num_series=int(n) if n not in (None, "") else None,
                )
            )
        return out

    def search_series(self, study_instance_uid: str) -> list[SeriesInfo]:
        """C-FIND at SERIES level: the series of a study.

        Raises
        ------
        InputNotFoundError
            If the study has no series on the peer.
        """
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_instance_uid
        q.SeriesInstanceUID = ""
        q.Modality = ""
        q.SeriesNumber = ""
        q.NumberOfSeriesRelatedInstances = ""
        found = self._find(f"C-FIND series of study {study_instance_uid}", q)
        if not found:
            raise InputNotFoundError(f"study {study_instance_uid} not found on {self.url} (C-FIND found no series)")
        out = []
        for ds in found:
            n, num = ds.get("NumberOfSeriesRelatedInstances"), ds.get("SeriesNumber")
            out.append(
                SeriesInfo(
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    modality=str(ds.Modality) if ds.get("Modality") else None,
                    num_instances=int(n) if n not in (None, "") else None,
                    series_number=int(num) if num not in (None, "") else None,
                )
            )
        return out

    # ----------------------------------------------------------------------------- C-GET / C-MOVE
    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        """Every instance of a series, by C-GET or C-MOVE (``retrieve``), pixel data included.

        Parameters
        ----------
        study_instance_uid, series_instance_uid : str
            The series.

        Returns
        -------
        list of Dataset
            The received instances (with their file meta information).

        Raises
        ------
        InputNotFoundError
            If no instance came back.
        PacsRequestError
            If the peer reports failed sub-operations.
        """
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_instance_uid
        q.SeriesInstanceUID = series_instance_uid
        what = f"C-{self.retrieve.upper()} series {series_instance_uid}"
        received: dict[str, Dataset] = {}
        lock = threading.Lock()

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            if str(ds.get("SeriesInstanceUID", "")) != series_instance_uid:
                return 0xA900  # "data set does not match SOP class": not what was asked for
            with lock:
                received[str(ds.SOPInstanceUID)] = ds
            return _SUCCESS

        def attempt() -> list[Dataset]:
            received.clear()
            if self.retrieve == "get":
                self._c_get(what, q, on_store, self.modalities)
            else:
                self._c_move(what, q, on_store, self.modalities)
            return list(received.values())

        datasets = self._call(what, attempt)
        if not datasets:
            raise InputNotFoundError(f"{what}: no instances retrieved from {self.url}")
        logger.info("retrieved series %s by %s: %d instance(s)", series_instance_uid, what[:6], len(datasets))
        return datasets

    def _check_retrieve_responses(self, what: str, responses: Any) -> None:
        for status, _identifier in responses:
            code = _status_of(status)
            if code is None:
                raise _AssociationLostError(f"no {what} response")
            if code in _PENDING:
                continue
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
            if code != _SUCCESS or failed:
                raise PacsRequestError(
                    f"{what}: {self.url} answered status {code:#06x} ({failed} failed sub-operation(s))"
                )

    def _c_get(self, what: str, q: Dataset, on_store: Callable[[Any], int], modalities: Sequence[str]) -> None:
        from pynetdicom import evt

        storage = storage_sop_classes(modalities)
        contexts = [(GET_MODEL, _TRANSFER_SYNTAXES)] + [(uid, _TRANSFER_SYNTAXES) for uid in storage]
        with self._association(what, contexts, scp_roles=storage, handlers=[(evt.EVT_C_STORE, on_store)]) as assoc:
            self._check_retrieve_responses(what, assoc.send_c_get(q, GET_MODEL))

    def _c_move(self, what: str, q: Dataset, on_store: Callable[[Any], int], modalities: Sequence[str]) -> None:
        from pynetdicom import evt

        scp = self._application_entity()
        for uid in storage_sop_classes(modalities):
            scp.add_supported_context(uid, _TRANSFER_SYNTAXES)
        scp.require_calling_aet = []  # any: the PACS may use another AE title for sub-operations
        assert self.move_port is not None
        try:
            server = scp.start_server(
                (self.move_bind, self.move_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
            )
        except OSError as err:
            raise PacsConfigError(f"{what}: cannot listen on port {self.move_port} for C-MOVE ({err})") from None
        try:
            with self._association(what, [(MOVE_MODEL, _TRANSFER_SYNTAXES)]) as assoc:
                self._check_retrieve_responses(what, assoc.send_c_move(q, self.ae_title, MOVE_MODEL))
        finally:
            server.shutdown()

    # ----------------------------------------------------------------------------- C-STORE
    def store(self, datasets: Sequence[Dataset], study_instance_uid: str) -> None:
        """C-STORE ``datasets`` (study ``study_instance_uid``) on one association.

        Succeeds only if every instance got a success or warning status.

        Raises
        ------
        PacsRequestError
            If the peer refused an instance (naming it and the status) or no context was accepted.
        PacsAuthError, PacsUnavailableError
            Association rejected / peer unreachable after the retries.
        """
        what = f"C-STORE {len(datasets)} instance(s) to study {study_instance_uid}"
        contexts: dict[str, list[str]] = {}
        for ds in datasets:
            syntaxes = contexts.setdefault(str(ds.SOPClassUID), [])
            meta = getattr(ds, "file_meta", None)
            for ts in [meta.get("TransferSyntaxUID") if meta is not None else None, *_TRANSFER_SYNTAXES]:
                if ts is not None and str(ts) not in syntaxes:
                    syntaxes.append(str(ts))

        def send() -> None:
            with self._association(what, list(contexts.items())) as assoc:
                for ds in datasets:
                    try:
                        status = assoc.send_c_store(ds)
                    except ValueError as err:  # no accepted presentation context for it
                        raise PacsRequestError(
                            f"{what}: {self.url} accepts no context for {ds.SOPInstanceUID} ({err})"
                        ) from None
                    code = _status_of(status)
                    if code is None:
                        raise _AssociationLostError(f"no C-STORE response for {ds.SOPInstanceUID}")
                    if code != _SUCCESS and code not in _STORE_WARNINGS:
                        raise PacsRequestError(f"{what}: {self.url} refused {ds.SOPInstanceUID} (status {code:#06x})")
                    logger.info("stored %s (C-STORE status %#06x)", ds.SOPInstanceUID, code)

        self._call(what, send)
