"""Multi-rater dictionary transforms.

Multi-rater labels carry the raters as channels: ``(R, H, W[, D])``, one binary mask per rater
(empty where a rater did not mark the structure). These transforms reduce them:

* :class:`RandRaterd` — one rater drawn at random per call (training on LIDC, seed 000 §3.3);
* :class:`MajorityVoted` — the majority vote (over all raters, or over the readers who marked
  the nodule: pylidc's ``consensus(clevel=0.5)``);
* :class:`RaterMeand` — the mean over raters (a soft label in [0, 1]).

Keep all raters for evaluation by copying the stack first, e.g.
``CopyItemsd(keys="label", names="raters")`` (MONAI), then reducing ``"label"``.

They accept numpy arrays and torch tensors (``MetaTensor`` metadata is preserved) and output the
same type with one channel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import TransformBackends

__all__ = ["MajorityVoted", "RandRaterd", "RaterMeand"]

NdarrayOrTensor = np.ndarray | torch.Tensor


def _check(x: Any, key: Hashable, name: str) -> None:
    if not isinstance(x, np.ndarray | torch.Tensor):
        raise TypeError(f"{name}: data[{key!r}] must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name}: data[{key!r}] must be (R, *spatial) with raters first, got shape {tuple(x.shape)}")


class RandRaterd(Randomizable, MapTransform):
    """Keep one randomly drawn rater channel: ``(R, *spatial)`` → ``(1, *spatial)``.

    The same rater is used for every key of one call. Seed with ``set_random_state(seed)`` (or a
    MONAI ``Compose`` / ``Dataset`` that seeds its transforms).

    Parameters
    ----------
    keys
        Keys of multi-rater arrays (rater dimension first).
    nonempty_only
        Draw only among raters whose mask (in the first key) is not empty; falls back to all
        raters when every mask is empty. Default ``False``: all ``R`` raters are equally likely,
        as in the LIDC protocol where an empty mask is a rater's "no nodule here".
    rater_key
        If set, the drawn rater index is stored under this key.
    allow_missing_keys
        Don't raise when a key is absent.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012  # as Transform.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        nonempty_only: bool = False,
        rater_key: str | None = "rater_index",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.nonempty_only = nonempty_only
        self.rater_key = rater_key
        self._index = 0

    def randomize(self, data: Sequence[int]) -> None:
        """Draw the rater index among the candidate indices ``data``."""
        self._index = int(data[self.R.randint(len(data))])

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d: dict[Hashable, Any] = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        first = d[keys[0]]
        _check(first, keys[0], type(self).__name__)
        n = int(first.shape[0])
        candidates = list(range(n))
        if self.nonempty_only:
            flat = first.reshape(n, -1)
            nonempty = [i for i in range(n) if bool((flat[i] != 0).any())]
            candidates = nonempty or candidates
        self.randomize(candidates)
        i = self._index
        for key in keys:
            _check(d[key], key, type(self).__name__)
            if int(d[key].shape[0]) != n:
                raise ValueError(f"RandRaterd: data[{key!r}] has {d[key].shape[0]} raters, data[{keys[0]!r}] has {n}")
            d[key] = d[key][i : i + 1]
        if self.rater_key is not None:
            d[self.rater_key] = i
        return d


class MajorityVoted(MapTransform):
    """Majority vote over raters: ``(R, *spatial)`` → ``(1, *spatial)``.

    A pixel is foreground when the fraction of raters marking it is ``> threshold`` (``>=`` with
    ``inclusive=True``). With four raters and the defaults, 3 or 4 votes are needed (a 2–2 tie is
    background); raters who did not mark the structure vote background.

    With ``readers_key`` the fraction is taken over the channels that ``data[readers_key]`` flags
    (per channel: this reader marked the nodule, e.g. the ``readers`` entry of the LIDC patch
    cache), not over all ``R``: ``MajorityVoted(threshold=0.5, inclusive=True,
    readers_key="readers")`` is pylidc's ``consensus(anns, clevel=0.5)``, where a nodule marked by
    one reader keeps that reader's mask and one marked by two keeps their union. A sample without
    any flagged reader gives an empty mask.

    Parameters
    ----------
    keys
        Multi-rater keys.
    threshold
        Vote fraction in [0, 1].
    inclusive
        Count a fraction equal to ``threshold`` as foreground.
    readers_key
        Key of a length-``R`` sequence of bools (which channels are readers of the structure);
        ``None`` counts all ``R`` channels.
    readers_fallback
        What to do when ``readers_key`` is absent from a sample: ``None`` raises; ``"nonempty"``
        counts the channels whose mask is non-empty in this sample (the only reader information
        of the LIDC crop pickle and of caches written before the ``readers`` entry existed).
    allow_missing_keys
        Don't raise when a key is absent.

    Raises
    ------
    KeyError
        ``readers_key`` is set but absent from the data and there is no ``readers_fallback``.
    ValueError
        ``data[readers_key]`` does not have one entry per channel.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012  # as Transform.backend

    def __init__(
        self,
        keys: KeysCollection = "label",
        threshold: float = 0.5,
        inclusive: bool = False,
        readers_key: str | None = None,
        readers_fallback: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if readers_fallback not in (None, "nonempty"):
            raise ValueError(f"readers_fallback must be None or 'nonempty', got {readers_fallback!r}")
        self.threshold = threshold
        self.inclusive = inclusive
        self.readers_key = readers_key
        self.readers_fallback = readers_fallback

    def _weights(self, d: Mapping[Hashable, Any], x: NdarrayOrTensor) -> np.ndarray:
        """``(R,)`` float: 1 for the channels that vote."""
        n = int(x.shape[0])
        if self.readers_key is None:
            return np.ones(n)
        if self.readers_key not in d:
            if self.readers_fallback == "nonempty":
                flat = x.reshape(n, -1)
                return np.array([bool((flat[i] != 0).any()) for i in range(n)], dtype=np.float64)
            raise KeyError(f"MajorityVoted: readers_key {self.readers_key!r} is not in the data (keys {list(d)})")
        flags = np.asarray(
            d[self.readers_key].cpu() if isinstance(d[self.readers_key], torch.Tensor) else d[self.readers_key]
        ).reshape(-1)
        if len(flags) != n:
            raise ValueError(
                f"MajorityVoted: data[{self.readers_key!r}] has {len(flags)} entries, expected one per rater ({n})"
            )
        return flags.astype(bool).astype(np.float64)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d: dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            _check(x, key, type(self).__name__)
            w = self._weights(d, x)
            total = max(float(w.sum()), 1.0)
            if isinstance(x, torch.Tensor):
                wt = torch.as_tensor(w, dtype=torch.float32, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
                frac = ((x != 0).float() * wt).sum(dim=0, keepdim=True) / total
                vote = frac >= self.threshold if self.inclusive else frac > self.threshold
                d[key] = vote.to(x.dtype)
            else:
                frac = ((x != 0) * w.reshape(-1, *([1] * (x.ndim - 1)))).sum(axis=0, keepdims=True) / total
                vote = frac >= self.threshold if self.inclusive else frac > self.threshold
                d[key] = vote.astype(x.dtype)
        return d


class RaterMeand(MapTransform):
    """Mean over raters, a soft label: ``(R, *spatial)`` → ``(1, *spatial)`` float32 in [0, 1].

    Parameters
    ----------
    keys
        Multi-rater keys (binary masks; non-zero counts as foreground).
    allow_missing_keys
        Don't raise when a key is absent.
    """

    backend: list[TransformBackends] = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012  # as Transform.backend

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d: dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            _check(x, key, type(self).__name__)
            if isinstance(x, torch.Tensor):
                d[key] = (x != 0).float().mean(dim=0, keepdim=True)
            else:
                d[key] = (x != 0).mean(axis=0, keepdims=True).astype(np.float32)
        return d
