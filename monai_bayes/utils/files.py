"""Reading small result files; checking that a derived path stays inside its folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["lies_inside", "read_json_if_exists", "read_json_object"]


def read_json_if_exists(path: str | os.PathLike | None) -> Any:
    """The parsed JSON file at ``path``, or ``None`` if there is none.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A JSON file; ``None`` or a missing file give ``None``.

    Returns
    -------
    Any
        The parsed content, or ``None``.

    Raises
    ------
    ValueError
        Naming the file, if it exists but is not valid JSON.
    """
    if path is None or not Path(path).is_file():
        return None
    return _parse_json(path)


def _parse_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object (a dict at top level) in the file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        A JSON file, e.g. a bundle config.

    Returns
    -------
    dict
        The parsed object.

    Raises
    ------
    OSError
        If the file cannot be read.
    ValueError
        Naming the file, if it is not valid JSON or its top level is not an object.
    """
    data = _parse_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at top level, got {type(data).__name__}.")
    return data


def lies_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies inside ``root`` once ``..`` and symbolic links are resolved.

    Parameters
    ----------
    path, root : str or os.PathLike
        Candidate path (it need not exist) and the folder it must stay in.

    Returns
    -------
    bool
        ``True`` if the resolved ``path`` is ``root`` or below it.
    """
    return Path(path).resolve().is_relative_to(Path(root).resolve())
