"""Credentials for the DICOMweb server: environment variables or ``~/.netrc``, never the URL.

Resolution order (first match wins):

1. ``MONAI_BAYES_PACS_TOKEN`` -- an OAuth2 / bearer token sent as ``Authorization: Bearer …``;
2. ``MONAI_BAYES_PACS_USER`` and ``MONAI_BAYES_PACS_PASSWORD`` -- HTTP basic authentication (both
   must be set);
3. the ``machine`` entry of the URL's host in the netrc file (``$NETRC`` or ``~/.netrc``, or the
   file passed explicitly);
4. none (anonymous requests).

Credentials are never logged, echoed or written to disk by this package: :class:`Credentials`
hides the secret in its ``repr``, errors name the variable or file but not its value, and URLs
with embedded ``user:password@`` are refused (they leak into shell history and process lists).
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from monai_bayes.pacs.errors import PacsConfigError

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_URL",
    "ENV_USER",
    "Credentials",
    "check_url",
    "redact_url",
    "resolve_credentials",
]

logger = logging.getLogger(__name__)

ENV_URL = "MONAI_BAYES_PACS_URL"
ENV_USER = "MONAI_BAYES_PACS_USER"
ENV_PASSWORD = "MONAI_BAYES_PACS_PASSWORD"
ENV_TOKEN = "MONAI_BAYES_PACS_TOKEN"


@dataclass(frozen=True)
class Credentials:
    """Resolved credentials; ``secret`` is excluded from ``repr`` so it cannot leak into logs.

    Attributes
    ----------
    kind
        ``"basic"`` (username + password) or ``"bearer"`` (token in ``secret``).
    username
        User name for basic authentication (empty for bearer tokens).
    secret
        Password or token.
    source
        Where they came from, safe to log: ``"environment"`` or ``"netrc:<path>"``.
    """

    kind: str
    username: str
    secret: str = field(repr=False)
    source: str = ""


def redact_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, safe for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """Validate a DICOMweb base URL (``http(s)://host[:port]/path``) and return it without a
    trailing slash.

    Raises
    ------
    PacsConfigError
        If the scheme is not http/https, the host is missing, or credentials are embedded.
    """
    if not isinstance(url, str) or not url.strip():
        raise PacsConfigError("the DICOMweb URL is empty; expected e.g. http://127.0.0.1:8042/dicom-web")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise PacsConfigError(f"DICOMweb URL {redact_url(url)!r}: expected an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise PacsConfigError(
            f"DICOMweb URL {redact_url(url)!r} embeds credentials; remove them and set {ENV_USER} / "
            f"{ENV_PASSWORD} (or {ENV_TOKEN}) or a ~/.netrc entry instead"
        )
    if not parts.hostname:
        raise PacsConfigError(f"DICOMweb URL {url!r} has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise PacsConfigError(f"DICOMweb URL {url!r}: invalid port ({err})") from None
    return url.rstrip("/")


def _netrc_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise PacsConfigError(f"{p}: netrc file not found")
        return p
    if env.get("NETRC"):
        p = Path(env["NETRC"]).expanduser()
        return p if p.is_file() else None
    home = env.get("HOME")
    p = Path(home) / ".netrc" if home else Path("~/.netrc").expanduser()
    return p if p.is_file() else None


def warn_if_shared(path: Path) -> bool:
    """Log a warning if the credentials file ``path`` is readable or writable by group or others.

    Parameters
    ----------
    path : Path
        A netrc file.

    Returns
    -------
    bool
        True if a warning was logged (mode has bits in ``0o077``).
    """
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return False
    if mode & 0o077:
        logger.warning(
            "%s holds credentials but is accessible by group/others (mode %04o); run: chmod 600 %s",
            path,
            mode,
            path,
        )
        return True
    return False


def _from_netrc(path: Path, host: str) -> Credentials | None:
    warn_if_shared(path)
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as err:
        # the parser's message can quote a token of the file (a password): report the line only
        raise PacsConfigError(f"{path}: cannot parse netrc file (line {err.lineno})") from None
    except OSError as err:
        raise PacsConfigError(f"{path}: cannot read netrc file ({err.strerror})") from None
    if auth is None:
        return None
    login, _account, password = auth
    return Credentials("basic", login or "", password or "", source=f"netrc:{path}")


def resolve_credentials(
    url: str,
    *,
    env: Mapping[str, str] | None = None,
    netrc_file: str | os.PathLike[str] | None = None,
) -> Credentials | None:
    """Find the credentials for ``url`` (see the module docstring for the order).

    Parameters
    ----------
    url
        DICOMweb base URL; its host name selects the netrc ``machine``.
    env
        Environment to read (default ``os.environ``).
    netrc_file
        Explicit netrc file (must exist); default ``$NETRC`` or ``~/.netrc`` if present.

    Returns
    -------
    Credentials or None
        ``None`` for anonymous access.

    Raises
    ------
    PacsConfigError
        If only one of user / password is set, or the netrc file is unreadable.
    """
    env = os.environ if env is None else env
    token = env.get(ENV_TOKEN, "")
    if token:
        return Credentials("bearer", "", token, source="environment")
    user, password = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise PacsConfigError(f"{missing} is not set; set both {ENV_USER} and {ENV_PASSWORD}, or neither")
        return Credentials("basic", user, password, source="environment")
    path = _netrc_path(netrc_file, env)
    host = urlsplit(url).hostname or ""
    return _from_netrc(path, host) if path is not None else None
