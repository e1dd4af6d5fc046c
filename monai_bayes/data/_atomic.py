"""Write-to-temporary-then-rename helpers, so that no reader ever sees a half-written cache.

A cache folder counts as *finished* only when its marker file (the datalist / manifest) exists;
the folder is built under a hidden temporary name next to its final place and renamed into place
in one step at the end. A failure removes the temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_save_npy", "atomic_write_json", "finished_cache", "staging_dir"]


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def finished_cache(folder: str | os.PathLike[str], marker: str) -> Path | None:
    """Return ``folder/marker`` if the cache folder is finished (its marker file exists), else ``None``."""
    p = Path(folder) / marker
    return p if p.is_file() else None


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` when the block succeeds.

    Parameters
    ----------
    final
        Where the finished folder must end up. If it exists it must be empty, unless ``overwrite``.
    overwrite
        Replace an existing non-empty ``final`` folder (it is removed only after the new one is
        complete).

    Yields
    ------
    Path
        The temporary folder to fill. It is deleted if the block raises.

    Notes
    -----
    If another process completes ``final`` while this one is building it (e.g. every DDP rank
    preparing the same cache), the first one to finish wins and later ones discard their copy.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final}: exists and is not a folder")
    occupied = final.is_dir() and any(final.iterdir())
    if occupied and not overwrite:
        raise FileExistsError(
            f"{final}: folder exists, is not empty and holds no finished cache with the same settings; "
            "pass overwrite=True (or --overwrite) to replace it, or choose another folder"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.is_dir() and not any(final.iterdir()):
            final.rmdir()
        if not final.exists():
            os.replace(tmp, final)
        elif not occupied:
            # another process (e.g. another DDP rank) finished the same folder meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
