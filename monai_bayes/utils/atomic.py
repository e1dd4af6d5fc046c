"""Write-to-temporary-then-rename helpers, so that no reader ever sees a half-written file or cache.

A cache folder counts as *finished* only when its marker file (the datalist / manifest) exists;
the folder is built under a hidden temporary name next to its final place and renamed into place
in one step at the end. A failure removes the temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "atomic_save_npy", "atomic_write_json", "atomic_write_text", "finished_cache", "staging_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed onto ``path`` when the block succeeds.

    For writers that want a file name (``torch.save``, ``Figure.savefig``, ``nib.save``, ...): the
    temporary name keeps ``path``'s suffixes, so format detection by extension still works. A
    failure removes the temporary file and leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and an atomic rename."""
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


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
