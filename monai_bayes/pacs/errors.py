"""Errors of the PACS pipeline and the process exit codes they map to.

Every error the pipeline raises on purpose is a :class:`PacsError` carrying an ``exit_code`` that
follows the BSD ``sysexits.h`` convention, so that schedulers (cron, Airflow, a hospital's job
runner) can tell a bad input from a PACS outage without parsing messages:

=====  ==========================  ======================================================
code   name                        meaning
=====  ==========================  ======================================================
0      OK                          everything computed and delivered (or nothing to push)
1      —                           unexpected internal error (a bug: please report it)
2      —                           command-line usage error (argparse)
65     EX_DATAERR                  the input series is not usable (wrong modality, corrupt
                                   instance, inconsistent geometry, invalid UID, non-finite
                                   values, too large), or an outbox entry is corrupt
66     EX_NOINPUT                  study / series / folder not found
69     EX_UNAVAILABLE              PACS unreachable or failing (5xx) after bounded retries,
                                   before any result was computed
75     EX_TEMPFAIL                 results computed and saved, delivery pending in the outbox
76     EX_PROTOCOL                 the PACS answered something that is not DICOMweb (e.g. an
                                   HTML login page with HTTP 200)
77     EX_NOPERM                   authentication / authorisation refused (HTTP 401 / 403)
78     EX_CONFIG                   bundle, settings, URL, output folder or TLS set-up invalid
                                   (e.g. certificate verification failed)
=====  ==========================  ======================================================

Messages name the offending thing (UID, file, setting) and what was expected; they never contain
credentials, and they name patients only by the UIDs of their data.
"""

from __future__ import annotations

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFIG",
    "EXIT_DATA",
    "EXIT_INTERNAL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_PROTOCOL",
    "EXIT_UNAVAILABLE",
    "BundleError",
    "InputNotFoundError",
    "InvalidInputError",
    "OutboxEntryError",
    "PacsAuthError",
    "PacsConfigError",
    "PacsError",
    "PacsProtocolError",
    "PacsRequestError",
    "PacsTLSError",
    "PacsUnavailableError",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_DATA = 65
EXIT_NOT_FOUND = 66
EXIT_UNAVAILABLE = 69
EXIT_PENDING = 75
EXIT_PROTOCOL = 76
EXIT_AUTH = 77
EXIT_CONFIG = 78


class PacsError(Exception):
    """Base class of the pipeline's errors; ``exit_code`` is the CLI's exit status for it."""

    exit_code: int = EXIT_INTERNAL


class PacsConfigError(PacsError, ValueError):
    """Invalid settings, URL or credentials configuration (not the credentials' values)."""

    exit_code = EXIT_CONFIG


class BundleError(PacsConfigError):
    """A bundle folder that does not follow the inference contract (missing file, key, bad value)."""


class InputNotFoundError(PacsError, LookupError):
    """The requested study / series / folder does not exist (on the PACS or on disk)."""

    exit_code = EXIT_NOT_FOUND


class InvalidInputError(PacsError, ValueError):
    """The input series exists but cannot be used (wrong modality, corrupt instance, bad geometry)."""

    exit_code = EXIT_DATA


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401) or the operation (HTTP 403)."""

    exit_code = EXIT_AUTH


class PacsUnavailableError(PacsError, ConnectionError):
    """The PACS could not be reached, timed out or answered 5xx / 429 / 408 on every attempt."""

    exit_code = EXIT_UNAVAILABLE


class PacsRequestError(PacsError):
    """The PACS rejected a request for a reason retrying does not fix (other 4xx, failed STOW items).

    ``status`` is the HTTP status code when there was one.
    """

    exit_code = EXIT_DATA

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PacsProtocolError(PacsError):
    """The server answered, but not with DICOMweb (e.g. HTTP 200 with an HTML login page of a proxy)."""

    exit_code = EXIT_PROTOCOL


class PacsTLSError(PacsConfigError):
    """The server's TLS certificate could not be verified (unknown CA, wrong host name, expired).

    Not retried: it does not heal by waiting. The fix is a CA bundle (``ca_bundle`` /
    ``--ca-bundle`` / ``REQUESTS_CA_BUNDLE``) or a correct server certificate.
    """


class OutboxEntryError(PacsError):
    """An outbox entry that cannot be trusted or read (corrupt ``entry.json``, foreign file paths,
    symbolic link, mismatching id); it is never sent, and reported until it is replaced or removed.
    """

    exit_code = EXIT_DATA
