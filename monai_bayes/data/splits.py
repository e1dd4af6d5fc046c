"""Seeded, patient-level splits and datalist helpers.

Folds are *bags of patients*: every item of a patient lands in the same fold, so no patient is
ever on both sides of a train / validation split. Fold ``k`` of a ``K``-fold datalist is the
validation (test) bag of split ``k``; the other ``K - 1`` bags are its training set (0.75 / 0.25
for the 4 bags of the LIDC protocol, seed 000 §3).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "assign_folds",
    "get_fold_split",
    "load_datalist",
    "patient_folds",
    "resolve_paths",
    "split_by_sizes",
]

#: Item keys that hold file paths (resolved against the datalist folder when loading).
PATH_KEYS = ("image", "label")


def patient_folds(patients: Iterable[str] | Mapping[str, int], num_folds: int = 4, seed: int = 0) -> dict[str, int]:
    """Assign each patient to one of ``num_folds`` bags, balancing the number of items per bag.

    Patients are shuffled with ``numpy.random.default_rng(seed)``, then assigned greedily, largest
    first, to the bag holding the fewest items so far (ties: lowest bag index). The result depends
    only on the set of patients, their item counts and the seed — not on input order.

    Parameters
    ----------
    patients
        One patient ID per item (repeats count items), or a ``{patient_id: item_count}`` mapping.
    num_folds
        Number of bags ``K >= 2``.
    seed
        Seed of the shuffle.

    Returns
    -------
    dict
        ``{patient_id: fold}`` with folds in ``0 .. K-1`` (with fewer patients than folds, a
        warning is issued and some folds stay empty).
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    counts = dict(patients) if isinstance(patients, Mapping) else dict(Counter(patients))
    ids = sorted(counts)
    if len(ids) < num_folds:
        warnings.warn(
            f"only {len(ids)} patients for {num_folds} patient-level folds; some folds stay empty", stacklevel=2
        )
    rng = np.random.default_rng(seed)
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    order = sorted(range(len(shuffled)), key=lambda i: (-counts[shuffled[i]], i))
    load = [0] * num_folds
    size = [0] * num_folds
    out: dict[str, int] = {}
    for i in order:
        pid = shuffled[i]
        k = min(range(num_folds), key=lambda f: (load[f], size[f], f))
        out[pid] = k
        load[k] += counts[pid]
        size[k] += 1
    return out


def assign_folds(
    items: Sequence[dict[str, Any]], num_folds: int = 4, seed: int = 0, group_key: str = "patient_id"
) -> list[dict[str, Any]]:
    """Set ``item["fold"]`` for every item by :func:`patient_folds` on ``item[group_key]`` (in place)."""
    folds = patient_folds([str(it[group_key]) for it in items], num_folds=num_folds, seed=seed)
    for it in items:
        it["fold"] = folds[str(it[group_key])]
    return list(items)


def split_by_sizes(ids: Sequence[str], sizes: Sequence[float], seed: int = 0) -> list[list[str]]:
    """Shuffle ``ids`` (seeded) and cut them into parts proportional to ``sizes``.

    Every part with a positive size gets at least one id when there are enough ids.
    """
    ids = sorted(ids)
    n = len(ids)
    w = np.asarray(sizes, dtype=float)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"sizes must be non-negative with a positive sum, got {list(sizes)}")
    counts = np.floor(w / w.sum() * n).astype(int)
    for i in np.flatnonzero((counts == 0) & (w > 0)):
        if counts.sum() < n:
            counts[i] = 1
    while counts.sum() < n:
        counts[int(np.argmax(w / w.sum() * n - counts))] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    perm = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for c in counts:
        parts.append([ids[i] for i in perm[start : start + c]])
        start += c
    return parts


def load_datalist(datalist: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """Load a datalist JSON file (or accept an already loaded dict); returns (dict, its folder)."""
    if isinstance(datalist, Mapping):
        return dict(datalist), None
    path = Path(datalist)
    with open(path, encoding="utf-8") as f:
        return json.load(f), path.parent


def resolve_paths(items: Iterable[Mapping[str, Any]], base_dir: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """Copies of ``items`` with relative ``image`` / ``label`` paths joined to ``base_dir``.

    :func:`monai.data.load_decathlon_datalist` does this for datalist *files*; it is not used here
    because it also rewrites every other string field that happens to name an existing path under
    ``base_dir`` (its ``check_path=True`` for non-image keys; our items carry patient and case ids that
    must stay as written), normalises the paths, and cannot take an already loaded datalist dict.
    """
    out = []
    for it in items:
        it = dict(it)
        if base_dir is not None:
            for k in PATH_KEYS:
                if isinstance(it.get(k), str) and not os.path.isabs(it[k]):
                    it[k] = str(Path(base_dir) / it[k])
        out.append(it)
    return out


def get_fold_split(
    datalist: str | os.PathLike[str] | Mapping[str, Any],
    fold: int,
    *,
    key: str = "training",
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation items of one fold of a datalist with per-item ``fold`` keys.

    Parameters
    ----------
    datalist
        Path of a datalist JSON written by a ``prepare_*`` function, or the loaded dict.
    fold
        Validation bag ``0 .. num_folds-1``.
    key
        Top-level list holding the items.
    base_dir
        Folder that relative paths refer to (default: the datalist's folder).

    Returns
    -------
    (train, val)
        Lists of item dicts with absolute ``image`` / ``label`` paths; ``val`` holds the items of
        bag ``fold``, ``train`` all others.
    """
    data, folder = load_datalist(datalist)
    items = data.get(key)
    if items is None:
        raise KeyError(f"datalist has no {key!r} list; keys: {sorted(data)}")
    folds = sorted({int(it["fold"]) for it in items if "fold" in it})
    if not folds:
        raise ValueError(f"datalist items under {key!r} carry no 'fold' key")
    if fold not in folds:
        raise ValueError(f"fold must be one of {folds}, got {fold}")
    items = resolve_paths(items, base_dir if base_dir is not None else folder)
    train = [it for it in items if int(it["fold"]) != fold]
    val = [it for it in items if int(it["fold"]) == fold]
    return train, val
