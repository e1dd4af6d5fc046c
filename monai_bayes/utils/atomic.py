"""Write-to-temporary-then-rename helpers: the one place where the package writes files atomically.

Two guarantees are on offer:

* **Atomic** (always): a reader never sees a half-written file or folder. Files are written under
  a temporary name next to their final place and renamed with :func:`os.replace`; folders are
  built under a temporary name (:func:`staging_dir`, :func:`scratch_dir`) and renamed into place
  in one step (:func:`publish_dir`). A failure removes the temporary file or folder.
* **Durable** (``durable=True``): the data is on stable storage before the rename is visible, and
  the rename itself is flushed (``fsync`` of the file, then of its folder). The PACS results and
  outbox use it, since a power cut there must not lose a result a PACS may already have been told
  about; training logs and caches do not need it.

``mode`` options create files / folders with restricted permissions from the start (e.g.
``0o600`` / ``0o700`` for data that holds patient images), rather than tightening them later.

A cache folder counts as *finished* only when its marker file (the datalist / manifest) exists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "atomic_path",
    "atomic_save_npy",
    "atomic_write_json",
    "atomic_write_text",
    "finished_cache",
    "fsync_dir",
    "fsync_tree",
    "make_private_dir",
    "publish_dir",
    "restrict_tree",
    "scratch_dir",
    "staging_dir",
]

logger = logging.getLogger(__name__)

#: Permissions of folders / files that may hold patient data (owner only).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename or a new file in it) to stable storage.

    Parameters
    ----------
    path : str or os.PathLike
        The folder. File systems that refuse ``fsync`` on folders are tolerated.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """``fsync`` every file under ``root`` and every folder, ``root`` included.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to flush (e.g. a staged result, before :func:`publish_dir` renames it).
    """
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def restrict_tree(
    root: str | os.PathLike[str], dir_mode: int = PRIVATE_DIR_MODE, file_mode: int = PRIVATE_FILE_MODE
) -> None:
    """Set the permissions of every folder (``dir_mode``) and file (``file_mode``) under ``root``.

    Symbolic links are left alone (their targets are not ours to change).

    Parameters
    ----------
    root : str or os.PathLike
        Folder whose tree to restrict (``root`` itself included).
    dir_mode, file_mode : int
        Permission bits, default owner-only ``0o700`` / ``0o600``.
    """
    os.chmod(root, dir_mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, dir_mode)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, file_mode)


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) with owner-only permissions; an existing folder keeps its own.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to create.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    NotADirectoryError
        If ``path`` exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a folder")
    for p in reversed([path, *path.parents]):
        if not p.exists():
            p.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = False, mode: int | None = None) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; renamed onto ``path`` when the block succeeds.

    For writers that want a file name (``torch.save``, ``Figure.savefig``, ``nib.save``, ...): the
    temporary name keeps ``path``'s suffixes, so format detection by extension still works. A
    failure removes the temporary file and leaves ``path`` untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Final file.
    durable : bool
        ``fsync`` the file before the rename and its folder after it.
    mode : int or None
        Permission bits the file gets before it becomes visible (``None``: the umask's default).

    Yields
    ------
    Path
        The temporary file name to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)]
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, durable: bool = False, mode: int | None = None
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename.

    Parameters
    ----------
    path : str or os.PathLike
        Final file.
    text : str
        Content.
    durable, mode
        See :func:`atomic_path`.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path, durable=durable, mode=mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int = 1,
    sort_keys: bool = False,
    durable: bool = False,
    mode: int | None = None,
) -> Path:
    """Write ``obj`` as JSON (plus a final newline) to ``path`` through a temporary file and an atomic rename.

    Parameters
    ----------
    path : str or os.PathLike
        Final file.
    obj : Any
        JSON-serialisable content.
    indent : int
        Indentation of the JSON text.
    sort_keys : bool
        Sort object keys (stable text for manifests that are compared or hashed).
    durable, mode
        See :func:`atomic_path`.

    Returns
    -------
    Path
        ``path``.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_text(path, text, durable=durable, mode=mode)


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` (no pickled objects) through a temporary file and an atomic rename.

    Parameters
    ----------
    path : str or os.PathLike
        Final ``.npy`` file.
    array : numpy.ndarray
        Any shape and numeric dtype.

    Returns
    -------
    Path
        ``path``.
    """
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
    final : str or os.PathLike
        Where the finished folder must end up. If it exists it must be empty, unless ``overwrite``.
    overwrite : bool
        Replace an existing non-empty ``final`` folder (it is removed only after the new one is
        complete).

    Yields
    ------
    Path
        The temporary folder to fill. It is deleted if the block raises.

    Raises
    ------
    FileExistsError
        If ``final`` is a file, or a non-empty folder without ``overwrite``.

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_scratch(stage_root: Path) -> None:
    """Remove scratch folders left by processes that no longer run (crashed runs)."""
    if not stage_root.is_dir():
        return
    for p in stage_root.iterdir():
        try:
            pid = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            logger.debug("removing stale staging folder %s", p)
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(root: str | os.PathLike[str], tag: str, *, private: bool = False) -> Iterator[Path]:
    """A fresh folder ``root/.staging/<tag>-<pid>-<random>``, removed when the block ends.

    The place where several results of one output root are built side by side before
    :func:`publish_dir` moves each to its final name (on the same file system, so the move is one
    rename). Folders left by crashed processes (whose pid no longer runs) are removed on entry.

    Parameters
    ----------
    root : str or os.PathLike
        Output root; ``.staging/`` is created inside it.
    tag : str
        A plain name (no path separators) that starts the scratch folder's name.
    private : bool
        Create ``.staging/`` and the scratch folder owner-only (``0o700``).

    Yields
    ------
    Path
        The scratch folder (whatever is still in it at the end is removed).

    Raises
    ------
    ValueError
        If ``tag`` is not a plain name.
    """
    if not tag or Path(tag).name != tag or tag in (".", ".."):
        raise ValueError(f"scratch folder tag must be a plain name, got {tag!r}")
    stage_root = Path(root) / ".staging"
    if private:
        make_private_dir(stage_root)
    else:
        stage_root.mkdir(parents=True, exist_ok=True)
    _clean_stale_scratch(stage_root)
    tmp = stage_root / f"{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=PRIVATE_DIR_MODE if private else 0o777)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            stage_root.rmdir()  # only when empty: no other run is staging here


def publish_dir(
    tmp: str | os.PathLike[str],
    final: str | os.PathLike[str],
    *,
    complete: str,
    replace: bool = False,
    durable: bool = True,
) -> bool:
    """Rename the built folder ``tmp`` to ``final`` in one step.

    Parameters
    ----------
    tmp : str or os.PathLike
        The finished folder (e.g. from :func:`scratch_dir`), on the same file system as ``final``.
    final : str or os.PathLike
        Its published name; its parent is created if needed.
    complete : str
        Marker file of a complete folder: if the rename fails because ``final`` appeared meanwhile
        and holds this file, another process published the same content first.
    replace : bool
        Move an existing ``final`` aside first (it is deleted after the rename).
    durable : bool
        ``fsync`` every file and folder of ``tmp`` before the rename and ``final``'s parent after it.

    Returns
    -------
    bool
        ``True`` if ``tmp`` was published; ``False`` if a complete ``final`` published by another
        process was kept instead.
    """
    tmp, final = Path(tmp), Path(final)
    if durable:
        fsync_tree(tmp)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if replace and (final.exists() or final.is_symlink()):
        old = tmp.with_name(tmp.name + "-replaced")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if (final / complete).is_file():
            return False
        raise
    finally:
        if old is not None:
            if old.is_symlink() or not old.is_dir():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
    if durable:
        fsync_dir(final.parent)
    return True
