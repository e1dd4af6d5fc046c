"""The dataset caches' shared rules: names derived from data, reuse of a finished cache, rebuilds.

Every conversion (raw LIDC, LIDC crop pickle, ISIC) writes a cache folder with a marker file
(``datalist.json``) whose ``"config"`` records the settings it was built with. This module is the
one place that decides

* how a name taken from the data (patient id, series UID, pickle key, case id) becomes a file or
  folder name: :func:`safe_name` / :func:`short_uid` keep letters, digits, ``-``, ``_`` and ``.``
  only and never start with a dot, so no value in a data file can add a path separator, ``..``
  or an absolute path; :func:`inside` checks a final path stays in its cache folder;
* whether a finished cache with the same settings can be returned as it is (:func:`reusable_cache`);
* whether an existing folder may be replaced without ``overwrite`` (:func:`stale_cache_of_ours`):
  only an older cache of ours, never an unrelated folder.

Writing itself goes through :mod:`monai_bayes.utils.atomic` (``staging_dir``, ``atomic_save_npy``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from monai_bayes.data.errors import DataFormatError
from monai_bayes.utils.atomic import finished_cache
from monai_bayes.utils.files import lies_inside

__all__ = [
    "DATALIST_NAME",
    "MAX_NAME_LENGTH",
    "inside",
    "reusable_cache",
    "safe_name",
    "short_uid",
    "stale_cache_of_ours",
]

logger = logging.getLogger(__name__)

#: Marker file of a finished cache.
DATALIST_NAME = "datalist.json"
#: Longest file-name component :func:`safe_name` returns.
MAX_NAME_LENGTH = 96


def safe_name(name: object) -> str:
    """A file-name component for a value taken from the data.

    Characters other than letters, digits, ``-``, ``_`` and ``.`` become ``_``; a leading dot
    becomes ``_`` too (no hidden files, no ``.`` / ``..``); the result is cut to
    :data:`MAX_NAME_LENGTH` characters; an empty value becomes ``"unknown"``.

    Parameters
    ----------
    name : object
        Patient id, pickle key, case id, ... (converted with ``str``).

    Returns
    -------
    str
        A name that cannot leave the folder it is joined to.
    """
    text = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in str(name))
    if text.startswith("."):
        text = "_" + text[1:]
    return text[:MAX_NAME_LENGTH] or "unknown"


def short_uid(uid: object, length: int = 8) -> str:
    """The last ``length`` letters / digits of a UID (dots and anything else dropped).

    For a DICOM UID such as ``1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192``
    this is its last 8 digits, ``20603192``: short folder names that stay distinct within a patient.

    Parameters
    ----------
    uid : object
        Series (or other) UID, converted with ``str``.
    length : int
        Characters kept.

    Returns
    -------
    str
        ``length`` ASCII letters or digits at most, ``"unknown"`` if none.
    """
    kept = "".join(c for c in str(uid) if c.isascii() and c.isalnum())
    return kept[-length:] or "unknown"


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it lies inside ``root`` once ``..`` and symbolic links are resolved.

    Parameters
    ----------
    path, root : str or os.PathLike
        Candidate file and the folder it must stay in.

    Returns
    -------
    Path
        ``path`` unchanged.

    Raises
    ------
    DataFormatError
        If it would leave ``root``.
    """
    if not lies_inside(path, root):
        raise DataFormatError(f"derived path {path} would lie outside the cache folder; refused", root)
    return Path(path)


def reusable_cache(
    cache_dir: str | os.PathLike[str], config: dict[str, Any], marker: str = DATALIST_NAME
) -> Path | None:
    """The marker file of a finished cache in ``cache_dir`` built with exactly ``config``, else ``None``.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Cache folder.
    config : dict
        The settings of the conversion about to run (compared with the marker's ``"config"``).
    marker : str
        Marker file name.

    Returns
    -------
    Path or None
        ``cache_dir/marker`` when it can be reused as it is.
    """
    done = finished_cache(cache_dir, marker)
    if done is None:
        return None
    try:
        with open(done, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s: unreadable cache marker (%s); the cache is rebuilt", done, err)
        return None
    if isinstance(old, dict) and old.get("config") == config:
        logger.info("reusing finished cache %s", done)
        return done
    return None


def stale_cache_of_ours(cache_dir: str | os.PathLike[str], content: str, marker: str = DATALIST_NAME) -> bool:
    """True if ``cache_dir`` holds a finished cache of ours (marker file and ``content`` folder).

    Such a folder, built with other settings, may be rebuilt without ``overwrite``; any other
    non-empty folder may not (see :func:`~monai_bayes.utils.atomic.staging_dir`).

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Cache folder.
    content : str
        The cache's data sub-folder (``"patches"``, ``"images"``).
    marker : str
        Marker file name.

    Returns
    -------
    bool
        Whether it may be replaced.
    """
    stale = finished_cache(cache_dir, marker) is not None and (Path(cache_dir) / content).is_dir()
    if stale:
        logger.warning("%s holds a cache built with other settings; rebuilding it", cache_dir)
    return stale
