"""Fused CPU kernel for the shared GED / HM-IoU pass: exact binary check + bit packing + AND / popcount counts.

For binary masks the Gram matrix ``X Xᵀ`` of a case's S + R masks is a matrix of intersection counts (sizes on
its diagonal). :func:`fused_gram` computes it in about one read of the data, with numba kernels:

1. :func:`_pack_rows` reads every value once, as the unsigned integer of its bit pattern (float32 as uint32,
   bool as uint8, ...), checks it and packs it into 64-bit words: bit ``t`` of word ``w`` is set iff value
   ``64 w + t`` is exactly 1. The check is exact on the bit patterns: a value passes iff it is 1 or all its bits
   other than the sign bit are 0 (floats: ±0; integers have no sign mask, so only 0 passes), i.e. exactly the
   values 0, −0.0 and 1 that the torch path accepts (:func:`monai_bayes.metrics.overlap._binary_deviation`).
   Unlike that one, it needs no argument about rounding and also rejects subnormals when denormals are flushed
   to zero. Bool masks are not checked (every bool is 0 or 1). 1-byte values (bool, uint8, int8) go through
   :func:`_pack_byte_rows`, the same rule eight values per 64-bit step.
2. :func:`_pair_counts` ANDs the packed rows of every pair of masks of a case and counts the set bits
   (S + R ≤ a few dozen masks: a few hundred pairs × N / 64 words, small next to the packing pass).

The counts are exact integers (int64), identical to the rounded float32 products of the torch path.

numba is optional (extra ``fast``): without it, or for inputs the kernels do not take (not on CPU, a dtype
outside :data:`BIT_PATTERNS`, voxels that are not unit-stride), :func:`fused_gram` returns None and the torch
path runs. The kernels are compiled on first use (once per integer width, about a second each; see
docs/fast_mc.md for the measured time) and cached on disk by numba where a cache directory is writable;
an unwritable cache only disables caching, and any failure to compile disables the fused path with one
warning.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["BIT_PATTERNS", "FusedGram", "available", "compile_seconds", "fused_gram", "supports"]


class _Pattern(NamedTuple):
    """How a dtype's values are read by the packing kernel."""

    word: torch.dtype  #: integer dtype of the same size, the values' bit patterns are read as
    one: int  #: bit pattern of the value 1
    free_bits: int  #: bits that may be set in an accepted 0 (the sign bit of floats): ``value & ~free_bits == 0``


def _float_pattern(dtype: torch.dtype, word: torch.dtype) -> _Pattern:
    bits = 8 * torch.empty((), dtype=dtype).element_size()
    one = int(torch.ones((), dtype=dtype).view(word).item()) % 2**bits
    return _Pattern(word, one, 1 << (bits - 1))


#: dtypes the fused kernel takes, each with its packing rule. Every word dtype is read as unsigned in the
#: kernel (numpy view), so sign bits are plain bits. Bool values need no check (``free_bits`` = all bits: torch
#: stores every bool as the byte 0 or 1; other bytes, which only a raw memory view could create, are not checked).
BIT_PATTERNS: dict[torch.dtype, _Pattern] = {
    torch.bool: _Pattern(torch.uint8, 1, 0xFF),
    torch.uint8: _Pattern(torch.uint8, 1, 0),
    torch.int8: _Pattern(torch.uint8, 1, 0),
    torch.int16: _Pattern(torch.int16, 1, 0),
    torch.int32: _Pattern(torch.int32, 1, 0),
    torch.int64: _Pattern(torch.int64, 1, 0),
    torch.float16: _float_pattern(torch.float16, torch.int16),
    torch.bfloat16: _float_pattern(torch.bfloat16, torch.int16),
    torch.float32: _float_pattern(torch.float32, torch.int32),
    torch.float64: _float_pattern(torch.float64, torch.int64),
}

#: numpy unsigned dtype the kernel reads each word dtype as.
_UNSIGNED = {torch.uint8: np.uint8, torch.int16: np.uint16, torch.int32: np.uint32, torch.int64: np.uint64}

_WORD_BITS = 64


def _pack_rows(
    flat: np.ndarray,
    offsets: np.ndarray,
    n: int,
    one: np.unsignedinteger,
    bad_bits: np.unsignedinteger,
    bits: np.ndarray,
    first_row: int,
    bad: np.ndarray,
) -> None:
    """Numba kernel: check and pack rows of ``n`` values into 64-bit words.

    ``flat``: 1-D unsigned array (the values' bit patterns); ``offsets``: (C, M) int64 start of row (c, m) in
    ``flat``; ``bits``: (C, M_total, W) uint64 output, row (c, m) written to ``bits[c, first_row + m]``;
    ``bad``: (C,) bool, set for a case with a value v where ``v != one`` and ``v & bad_bits != 0``.
    """
    cases, rows = offsets.shape
    full = n // 64
    for c in range(cases):
        invalid = False
        for m in range(rows):
            start = offsets[c, m]
            out = bits[c, first_row + m]
            for w in range(full):
                base = start + w * 64
                word = np.uint64(0)
                for t in range(64):
                    v = flat[base + t]
                    hit = v == one
                    word |= np.uint64(hit) << np.uint64(t)
                    invalid |= ((v & bad_bits) != 0) & (not hit)
                out[w] = word
            if n > full * 64:
                base = start + full * 64
                word = np.uint64(0)
                for t in range(n - full * 64):
                    v = flat[base + t]
                    hit = v == one
                    word |= np.uint64(hit) << np.uint64(t)
                    invalid |= ((v & bad_bits) != 0) & (not hit)
                out[full] = word
        if invalid:
            bad[c] = True


def _pack_byte_rows(
    flat: np.ndarray,
    offsets: np.ndarray,
    n: int,
    one: np.unsignedinteger,
    bad_bits: np.unsignedinteger,
    bits: np.ndarray,
    first_row: int,
    bad: np.ndarray,
) -> None:
    """Numba kernel: :func:`_pack_rows` for 1-byte values (bool, uint8, int8), eight values per 64-bit step.

    Eight consecutive bytes b₀…b₇ are read as one little-endian uint64 ``u``; every byte must be 0 or 1
    (``u & ~0x0101…01 == 0``, unless ``bad_bits`` is 0: bool), and ``((u & 0x0101…01) · 0x0102040810204080) >> 56``
    has bit k = b_k (the partial products of b_k and the multiplier's byte 7 − k land on bit 56 + k, all other
    partial products of lower bytes on distinct bits below 56, so no carry reaches the top byte). For values
    that pass the check, bit k is set iff b_k is 1, as in :func:`_pack_rows` (same ``one`` = 1).
    """
    low = np.uint64(0x0101010101010101)
    spread = np.uint64(0x0102040810204080)
    check = ~low if bad_bits != 0 else np.uint64(0)
    top, eight = np.uint64(56), np.uint64(8)
    cases, rows = offsets.shape
    full = n // 64
    for c in range(cases):
        invalid = np.uint64(0)
        for m in range(rows):
            start = offsets[c, m]
            out = bits[c, first_row + m]
            for w in range(full):
                word = np.uint64(0)
                for g in range(8):
                    base = start + w * 64 + g * 8
                    u = np.uint64(0)
                    for k in range(8):
                        u |= np.uint64(flat[base + k]) << (eight * np.uint64(k))
                    invalid |= u & check
                    word |= (((u & low) * spread) >> top) << (eight * np.uint64(g))
                out[w] = word
            if n > full * 64:
                base = start + full * 64
                word = np.uint64(0)
                for t in range(n - full * 64):
                    v = flat[base + t]
                    hit = v == one
                    word |= np.uint64(hit) << np.uint64(t)
                    invalid |= np.uint64(((v & bad_bits) != 0) & (not hit))
                out[full] = word
        if invalid != 0:
            bad[c] = True


def _pair_counts(bits: np.ndarray, counts: np.ndarray) -> None:
    """Numba kernel: ``counts[c, i, j]`` = number of bits set in both packed rows i and j of case c.

    ``bits``: (C, M, W) uint64; ``counts``: (C, M, M) int64 output (symmetric). The 64-bit population count is
    the SWAR formula, which LLVM compiles to the ``popcnt`` instruction where the CPU has it.
    """
    cases, rows, words = bits.shape
    one, two, four, top = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)
    m1, m2 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333)
    m4, h01 = np.uint64(0x0F0F0F0F0F0F0F0F), np.uint64(0x0101010101010101)
    for c in range(cases):
        for i in range(rows):
            for j in range(i, rows):
                total = np.uint64(0)
                for w in range(words):
                    x = bits[c, i, w] & bits[c, j, w]
                    x = x - ((x >> one) & m1)
                    x = (x & m2) + ((x >> two) & m2)
                    x = (x + (x >> four)) & m4
                    total += (x * h01) >> top
                counts[c, i, j] = total
                counts[c, j, i] = total


class _Kernels(NamedTuple):
    pack_rows: Callable[..., None]
    pair_counts: Callable[..., None]
    pack_byte_rows: Callable[..., None]


def _jit(numba: Any, function: Callable[..., None]) -> Callable[..., None]:
    """``numba.njit`` with the on-disk cache where numba finds a writable cache directory, without it otherwise."""
    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(function)
    except Exception:  # numba: "no locator available" when no cache directory is writable
        return numba.njit(cache=False, **options)(function)


@functools.cache
def _kernels() -> _Kernels | None:
    """The jitted kernels (None when numba is not installed). Compilation happens on each signature's first call."""
    if importlib.util.find_spec("numba") is None:
        return None
    numba = importlib.import_module("numba")
    return _Kernels(_jit(numba, _pack_rows), _jit(numba, _pair_counts), _jit(numba, _pack_byte_rows))


#: Seconds spent in the first call of each word dtype (compilation or cache load), by kernel input signature.
_FIRST_CALL_SECONDS: dict[str, float] = {}
_DISABLED: list[str] = []


def available() -> bool:
    """Whether the fused kernel can run here (numba installed, and no earlier compilation failure)."""
    return not _DISABLED and _kernels() is not None


def compile_seconds() -> dict[str, float]:
    """Wall seconds of the first call per packed word dtype (``"uint32"`` ...) and of the pair kernel (``"pairs"``).

    Returns
    -------
    dict of str to float
        JIT compilation, or loading from numba's on-disk cache, plus the first run on that call's input.
    """
    return dict(_FIRST_CALL_SECONDS)


def supports(x: torch.Tensor) -> bool:
    """Whether the kernel takes ``x`` (…, M, N): on CPU, a dtype of :data:`BIT_PATTERNS`, unit-stride voxels.

    Parameters
    ----------
    x : torch.Tensor
        (…, M, N) masks, any layout.

    Returns
    -------
    bool
        True when :func:`fused_gram` can read ``x`` in place.
    """
    return (
        x.device.type == "cpu"
        and x.layout == torch.strided
        and x.dtype in BIT_PATTERNS
        and x.numel() > 0
        and (x.stride(-1) == 1 or x.shape[-1] == 1)
        and all(stride >= 0 for stride in x.stride())
    )


def _rows(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(…, M, N) tensor → (flat unsigned numpy view of its storage span, (C, M) int64 row offsets into it)."""
    word = BIT_PATTERNS[x.dtype].word
    words = x.detach().view(word)
    lead = tuple(x.shape[:-1])
    offsets = np.zeros(lead, dtype=np.int64)
    for dim, (size, stride) in enumerate(zip(lead, x.stride()[:-1])):
        shape = [1] * len(lead)
        shape[dim] = size
        offsets = offsets + (np.arange(size, dtype=np.int64) * stride).reshape(shape)
    span = int(offsets.max()) + x.shape[-1]
    flat = torch.as_strided(words, (span,), (1,), words.storage_offset()).numpy().view(_UNSIGNED[word])
    return flat, offsets.reshape(-1, x.shape[-2])


class FusedGram(NamedTuple):
    """Exact counts of one call of :func:`fused_gram`.

    Attributes
    ----------
    gram
        (…, S + R, S + R) int64 intersection counts of ``[samples; raters]``; mask sizes on the diagonal.
    binary_s, binary_y
        0-dim bool tensors: every value of the samples / raters is exactly 0 or 1.
    """

    gram: torch.Tensor
    binary_s: torch.Tensor
    binary_y: torch.Tensor


def _timed_first_call(key: str, kernel: Callable[..., None], *args: Any) -> None:
    """Run ``kernel(*args)``; the first call per ``key`` (compilation or cache load included) is timed."""
    if key in _FIRST_CALL_SECONDS:
        kernel(*args)
        return
    start = time.perf_counter()
    kernel(*args)
    _FIRST_CALL_SECONDS[key] = time.perf_counter() - start


def fused_gram(s: torch.Tensor, y: torch.Tensor) -> FusedGram | None:
    """Gram matrix of each case's S + R binary masks and both binarity flags, in about one pass over the data.

    Parameters
    ----------
    s : torch.Tensor
        (…, S, N) sample masks on CPU (any layout with unit-stride voxels; dtypes of :data:`BIT_PATTERNS`).
    y : torch.Tensor
        (…, R, N) rater masks, same leading shape and N as ``s`` (the dtype may differ).

    Returns
    -------
    FusedGram or None
        The int64 counts and flags, or None when the kernel does not apply (numba not installed, an input
        :func:`supports` rejects, or a failed compilation): the caller then runs the torch path.
    """
    kernels = _kernels()
    if kernels is None or _DISABLED or not (supports(s) and supports(y)):
        return None
    lead, n, num_s = tuple(s.shape[:-2]), s.shape[-1], s.shape[-2]
    num_m = num_s + y.shape[-2]
    cases = int(np.prod(lead, dtype=np.int64))
    bits = np.empty((cases, num_m, -(-n // _WORD_BITS)), dtype=np.uint64)
    counts = np.empty((cases, num_m, num_m), dtype=np.int64)
    bad = np.zeros((2, cases), dtype=np.bool_)
    try:
        for index, (x, first_row) in enumerate(((s, 0), (y, num_s))):
            flat, offsets = _rows(x)
            rule = BIT_PATTERNS[x.dtype]
            one, bad_bits = flat.dtype.type(rule.one), flat.dtype.type(~rule.free_bits % 2 ** (8 * flat.itemsize))
            pack = kernels.pack_byte_rows if flat.itemsize == 1 else kernels.pack_rows
            _timed_first_call(str(flat.dtype), pack, flat, offsets, n, one, bad_bits, bits, first_row, bad[index])
        _timed_first_call("pairs", kernels.pair_counts, bits, counts)
    except Exception as error:  # a numba compilation or typing failure: never fail the metric, use torch
        _DISABLED.append(repr(error))
        warnings.warn(f"fused GED / HM-IoU kernel disabled, using the torch path: {error!r}", stacklevel=2)
        return None
    flags = torch.from_numpy(~bad.any(axis=1))
    return FusedGram(torch.from_numpy(counts).reshape(*lead, num_m, num_m), flags[0], flags[1])
