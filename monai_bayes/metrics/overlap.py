"""Pairwise overlap between sets of binary masks, computed with batched matrix products.

For masks flattened to (…, M, N) and (…, P, N), the M × P intersections are one matrix product
``A @ Bᵀ``; mask sizes are the diagonal of ``A @ Aᵀ`` (or row sums) and ``union = |a| + |b| − |a ∩ b|``.
No loop runs over pixels or pairs.

Exactness: products of 0/1 values are summed in float32 in chunks of at most 2**22 voxels, so every partial
sum is an integer below 2**24 and exactly representable (also with TF32 on NVIDIA GPUs, since 0 and 1 are
exact in TF32); chunk results are rounded and accumulated in int64, so counts are exact for any volume size.

Binary check: every value must be exactly 0 or 1 (−0.0 counts as 0); nothing near-binary is accepted.

* Fused CPU kernel (the default on CPU where numba is installed, extra ``fast``; :mod:`._fused`): reads every
  value once, checks its bit pattern exactly and packs it into 64-bit words; the counts are AND + popcount of
  each pair of packed masks (exact int64, the same as the products below). It declines inputs it does not read
  in place (other dtypes, voxels with a stride), and the torch paths below run.
* CPU foreground gather (the default on CPU when a call's foreground union covers at most half of the voxels):
  one byte-wise ``amax`` over the mask axis finds each
  case's union: a voxel is left out only if every byte of every mask there is 0, i.e. every value is +0 (so
  negative, NaN, inf and −0.0 all land in the union). Every gathered value is then tested with x − x² == 0 in
  its own dtype (``addcmul`` + ``aminmax``), which is exact under IEEE round-to-nearest: see
  :func:`_binary_deviation` for the proof. Only with denormals flushed to zero (``torch.set_flush_denormal``)
  can a subnormal value (< 1.2e-38) pass as 0.
* Dense products (accelerators, and CPU calls with a larger union): the same exact test x − x² == 0 on every
  value, in voxel chunks (:func:`_exactly_binary`).
* ``class_reduction="union"`` uses the exact elementwise check first, on every path.

The whole check costs one host synchronisation per call.

Foreground gather (CPU): a voxel where every sample and rater of a case is +0 adds nothing to any count, so on
CPU the shared pass first finds the union of each case's foreground with one byte-wise reduction over the
mask axis (:func:`_nonzero_columns`) and, when the union covers at most half of the voxels, gathers only each
case's union voxels and multiplies those (bool / uint8 masks are gathered before any float conversion; sizes
are the Gram diagonal). For lesion-sized foreground this costs less than the dense product alone; it adds
one host synchronisation (the foreground size) per call. Accelerators keep the dense path.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

from . import _fused
from ._utils import (
    CLASS_REDUCTIONS,
    EMPTY_POLICIES,
    as_plain_tensor,
    binarize_predictions,
    check_binary,
    check_option,
    check_samples_and_raters,
    has_values,
    select_channels,
)

__all__ = [
    "PairwiseIoU",
    "compute_pairwise_iou",
    "flatten_masks",
    "pairwise_counts",
    "pairwise_iou",
    "reduce_classes",
]

#: Voxels per matrix-product chunk; < 2**24 keeps float32 partial sums exact.
CHUNK_VOXELS = 2**22

#: Values per chunk of the dense path's exact binary check (:func:`_exactly_binary`): 4 MiB of float32.
CHECK_CHUNK = 2**20


class PairwiseIoU(NamedTuple):
    """IoU between all pairs of a case's samples and raters, each (B, K, ·, ·) float32.

    Attributes
    ----------
    sample_rater
        (B, K, S, R) IoU between every sample and every rater.
    sample_sample
        (B, K, S, S) IoU between samples (None when not requested).
    rater_rater
        (B, K, R, R) IoU between raters (None when not requested).
    """

    sample_rater: torch.Tensor
    sample_sample: torch.Tensor | None
    rater_rater: torch.Tensor | None


def flatten_masks(masks: torch.Tensor, include_background: bool = False, class_reduction: str = "mean") -> torch.Tensor:
    """Rearrange (B, S, C, *spatial) masks into (B, K, S, N) for pairwise overlap.

    Parameters
    ----------
    masks
        (B, S, C, *spatial) binary masks (bool or 0/1 numbers). S is the number of samples or raters.
    include_background
        Keep channel 0 when C > 1 (with C == 1 the single channel is always kept, as in MONAI).
    class_reduction
        ``"union"`` merges the kept channels into one foreground mask (K = 1, bool); ``"mean"`` and
        ``"none"`` keep one mask per kept channel (K = C or C − 1).

    Returns
    -------
    torch.Tensor
        (B, K, S, N) view or tensor, N = prod(spatial) (1 when there are no spatial dims).
    """
    check_option(class_reduction, "class_reduction", CLASS_REDUCTIONS)
    x = select_channels(masks, include_background, channel_dim=2)
    if class_reduction == "union":
        x = (x != 0).any(dim=2, keepdim=True)
    b, s, k = x.shape[:3]
    if k == 1:  # plain reshape keeps canonical strides (reductions on the transposed view are ~2x slower)
        return x.reshape(b, 1, s, -1)
    return x.reshape(b, s, k, -1).transpose(1, 2)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """float32 masks for the matrix products (no copy when already float32)."""
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def _counts(product: torch.Tensor) -> torch.Tensor:
    return product.round().to(torch.int64)


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total + part


class _SetCounts(NamedTuple):
    """Exact int64 counts of one call plus the (device-side) binarity flags of both inputs."""

    inter_sy: torch.Tensor
    inter_ss: torch.Tensor | None
    inter_yy: torch.Tensor | None
    size_s: torch.Tensor
    size_y: torch.Tensor
    binary_s: torch.Tensor
    binary_y: torch.Tensor


#: Integer dtype of each element size, to read the per-voxel byte maxima of :func:`_nonzero_columns` as one word.
_WORD_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _nonzero_columns(x: torch.Tensor) -> torch.Tensor:
    """(…, M, N) masks → (…, N) bool: some mask has a value at the voxel whose bytes are not all zero.

    One reduction over the mask axis, on the bytes: ``x`` is read as uint8 (…, M, k·N) (k = element size),
    reduced with ``amax`` over the mask axis, and the k byte maxima of each voxel are read back as one k-byte
    word. The word is 0 iff every byte of every mask at the voxel is 0, i.e. iff every value there is +0
    (IEEE floats) or 0 (integers, bool). So a voxel outside the returned union is exactly 0 in all masks,
    whatever the values elsewhere (negative, NaN, inf and −0.0 all have a non-zero byte and land in the union,
    where :func:`_binary_deviation` checks them). ``any`` over a non-innermost axis is ~40x slower than this, and
    ``amax`` + ``amin`` of the values is two passes.
    """
    if x.shape[-2] == 0:
        return x.new_zeros(x.shape[:-2] + x.shape[-1:], dtype=torch.bool)
    word = _WORD_DTYPES[x.element_size()]
    if x.stride(-1) != 1:  # a byte view needs unit-stride voxels (rare layouts: one copy)
        x = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x)
    return x.view(torch.uint8).amax(dim=-2).view(word) != 0


def _foreground(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(…, N) union of the voxels where some sample or rater is not +0 (:func:`_nonzero_columns`).

    A voxel outside the union is exactly 0 in every mask of the case, so it adds nothing to any intersection,
    size, Σx or Σx²: the counts can be computed on the union's voxels alone.
    """
    return _nonzero_columns(s) | _nonzero_columns(y)


def _binary_deviation(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(2,) smallest and largest value of x − x² over ``x``: both are 0 iff every value is exactly 0 or 1.

    One fused elementwise pass (``addcmul``) and one reduction (``aminmax``), in ``x``'s own floating dtype
    (integer blocks as float32, which maps every integer other than 0 and 1 to a float other than 0 and 1).
    Proof for IEEE floats under round-to-nearest (p = 24 significand bits for float32): x − x² is exactly 0
    at x = ±0 and 1; NaN propagates; +inf gives inf − inf = NaN, −inf gives −inf; x < 0 and x > 1 give
    x − x² < 0 (or NaN / −inf on overflow). For 0 < x < 1, x ≤ 1 − 2⁻ᵖ, so x² ≤ x − x·2⁻ᵖ lies more than half
    a float spacing below x and rounds to fl(x²) < x; x − fl(x²) is then a difference of two distinct floats,
    which is never rounded to 0 with gradual underflow (a fused multiply-add rounds x − x² > 0 to ≥ the
    smallest subnormal for the same reasons). Only with denormals flushed to zero (``torch.set_flush_denormal``)
    can a subnormal x (< 1.2e-38) pass as 0; its contribution to any count is then below 1e-31.

    ``out``: an optional 1-D buffer of the check's dtype for a 1-D ``x`` (its first ``x.numel()`` entries are
    overwritten), so that a caller looping over chunks reuses one cache-resident temporary.
    """
    if x.numel() == 0:
        return torch.zeros(2, dtype=torch.float32, device=x.device)
    v = x if x.is_floating_point() else x.to(torch.float32)
    if out is None:
        return torch.stack(torch.aminmax(torch.addcmul(v, v, v, value=-1)))
    return torch.stack(torch.aminmax(torch.addcmul(v, v, v, value=-1, out=out[: v.numel()])))


def _exactly_binary(x: torch.Tensor) -> torch.Tensor:
    """Device-side flag: every value of ``x`` is exactly 0 or 1 (:func:`_binary_deviation`, in chunks).

    A contiguous ``x`` is checked in flat chunks of :data:`CHECK_CHUNK` values through one reused buffer (a
    single whole-size temporary x − x² costs ≈ 40 % more on CPU: fresh pages, no cache reuse); other layouts in
    chunks of at most :data:`CHUNK_VOXELS` voxels.
    """
    if x.dtype == torch.bool or x.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=x.device)
    if x.is_contiguous():
        flat = x.reshape(-1)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        buffer = torch.empty(min(CHECK_CHUNK, flat.numel()), dtype=dtype, device=x.device)
        chunks = [
            _binary_deviation(flat[start : start + CHECK_CHUNK], out=buffer)
            for start in range(0, flat.numel(), CHECK_CHUNK)
        ]
    else:
        n = x.shape[-1]
        chunks = [_binary_deviation(x[..., start : start + CHUNK_VOXELS]) for start in range(0, n, CHUNK_VOXELS)]
    return (torch.stack(chunks) == 0).all()


def _gather_case(s: torch.Tensor, y: torch.Tensor, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(S, N) samples, (R, N) raters of one case, (F,) voxel indices → (S + R, F) float32 ``[S; Y]`` on them.

    Both sets are gathered straight into one buffer in their common dtype (bool masks through their uint8
    view; strided rows such as the per-class views of :func:`flatten_masks` are read in place) and checked
    there, before any rounding to float32 (:func:`_binary_deviation`; None for two bool sets, which need no
    check); only the gathered block becomes float32.
    """
    sources = [x.view(torch.uint8) if x.dtype == torch.bool else x for x in (s, y)]
    dtype = torch.promote_types(sources[0].dtype, sources[1].dtype)
    num_s = s.shape[0]
    out = torch.empty(num_s + y.shape[0], voxels.numel(), dtype=dtype, device=s.device)
    for source, rows in ((sources[0], out[:num_s]), (sources[1], out[num_s:])):
        if source.dtype == dtype:
            torch.index_select(source, -1, voxels, out=rows)
        else:
            rows.copy_(torch.index_select(source, -1, voxels))
    deviation = None if s.dtype == y.dtype == torch.bool else _binary_deviation(out)
    return _as_float(out), deviation


def _foreground_set_counts(s: torch.Tensor, y: torch.Tensor, union: torch.Tensor) -> _SetCounts:
    """:func:`_set_counts` of (…, S, N) samples and (…, R, N) raters on each case's (…, N) ``union`` voxels.

    Per case (each with its own number F of union voxels, so no case pays for the largest): gather ``[S; Y]``
    on the union, check every gathered value exactly (:func:`_gather_case`) and take one Gram matrix, in chunks
    of at most :data:`CHUNK_VOXELS` voxels so that every float32 partial sum is an exact integer. The Gram
    matrix holds the intersections, and on its diagonal the mask sizes (Σx² = Σx for 0/1 values). With the
    union of :func:`_nonzero_columns` (every other voxel is +0 in all masks) the check covers the whole input
    exactly; the flag does not say which of the two sets failed (the caller's exact re-check names it).
    """
    num_s, num_m = s.shape[-2], s.shape[-2] + y.shape[-2]
    lead = tuple(union.shape[:-1])
    gram = torch.zeros(*lead, num_m, num_m, dtype=torch.float32, device=s.device)
    gram_big = torch.zeros_like(gram, dtype=torch.int64)
    deviations = [torch.zeros(2, device=s.device)]
    flat_union = union.reshape(-1, union.shape[-1])
    per_case = torch.split(flat_union.nonzero()[:, 1], flat_union.sum(dim=-1).tolist())
    for case, voxels in zip(itertools.product(*(range(n) for n in lead)), per_case):
        for start in range(0, voxels.numel(), CHUNK_VOXELS):
            x, deviation = _gather_case(s[case], y[case], voxels[start : start + CHUNK_VOXELS])
            if deviation is not None:
                deviations.append(deviation.to(torch.float32))
            if voxels.numel() <= CHUNK_VOXELS:  # exact in float32: written in place, rounded once below
                torch.matmul(x, x.transpose(0, 1), out=gram[case])
            else:  # very large unions: int64 accumulation
                gram_big[case] += _counts(torch.matmul(x, x.transpose(0, 1)))
    binary = (torch.stack(deviations) == 0).all()
    return _split_gram(_counts(gram) + gram_big, num_s, within_sets=True)._replace(binary_s=binary, binary_y=binary)


def _split_gram(counts: torch.Tensor, num_s: int, within_sets: bool) -> _SetCounts:
    """:class:`_SetCounts` from the (…, S + R, S + R) int64 Gram matrix of ``[samples; raters]`` (flags True).

    The Gram matrix holds the intersections, and on its diagonal the mask sizes (Σx² = Σx for 0/1 values).
    """
    sizes = counts.diagonal(dim1=-2, dim2=-1)
    ones = torch.ones((), dtype=torch.bool, device=counts.device)
    return _SetCounts(
        inter_sy=counts[..., :num_s, num_s:],
        inter_ss=counts[..., :num_s, :num_s] if within_sets else None,
        inter_yy=counts[..., num_s:, num_s:] if within_sets else None,
        size_s=sizes[..., :num_s],
        size_y=sizes[..., num_s:],
        binary_s=ones,
        binary_y=ones,
    )


#: On CPU (:data:`GATHER_DEVICE_TYPES`) the shared pass computes the counts on each case's foreground voxels
#: only (:func:`_foreground_set_counts`) when the union of the foreground of each case's masks covers at most
#: this fraction of all voxels of the call; above it the gathers cost more than they save and the dense
#: products run on all voxels.
FOREGROUND_GATHER_MAX_FRACTION = 0.5

#: Devices on which the fused kernel (:func:`monai_bayes.metrics._fused.fused_gram`: exact check, bit packing and
#: AND / popcount counts in about one pass over the data, numba, extra ``fast``) is tried first; it declines
#: (and the torch paths below run) without numba or for dtypes / layouts it does not read in place.
FUSED_DEVICE_TYPES = ("cpu",)

#: Devices on which the foreground gather is used: it loops over cases with data-dependent shapes, so
#: accelerators (and the meta device) keep the dense batched products with their single host
#: synchronisation (the gather was measured on CPU only).
GATHER_DEVICE_TYPES = ("cpu",)


def _set_counts(s: torch.Tensor, y: torch.Tensor, within_sets: bool) -> _SetCounts:
    """Intersections, sizes and binarity flags for (B, K, S, N) samples and (B, K, R, N) raters.

    On CPU (:data:`FUSED_DEVICE_TYPES`) the fused kernel runs first where it applies
    (:func:`monai_bayes.metrics._fused.fused_gram`: exact check and counts in about one pass over the data).
    Otherwise, on CPU (:data:`GATHER_DEVICE_TYPES`), one byte-wise reduction over the mask axis finds each case's
    foreground voxels (:func:`_nonzero_columns`); when they are few (:data:`FOREGROUND_GATHER_MAX_FRACTION`),
    only those voxels are gathered, checked exactly, converted to float32 and multiplied
    (:func:`_foreground_set_counts`), which is exact because every other voxel is +0 in all masks of the case.
    Otherwise the dense products of :func:`_dense_set_counts` run on all voxels, with the exact check
    (:func:`_exactly_binary`) folded into ``binary_s`` / ``binary_y``.
    """
    if s.device.type in FUSED_DEVICE_TYPES:
        fused = _fused.fused_gram(s, y)
        if fused is not None:
            return _split_gram(fused.gram, num_s=s.shape[-2], within_sets=within_sets)._replace(
                binary_s=fused.binary_s, binary_y=fused.binary_y
            )
    if s.device.type in GATHER_DEVICE_TYPES:
        union = _foreground(s, y)
        if int(union.sum()) <= FOREGROUND_GATHER_MAX_FRACTION * union.numel():
            counts = _foreground_set_counts(s, y, union)
            return counts if within_sets else counts._replace(inter_ss=None, inter_yy=None)
    counts = _dense_set_counts(_as_float(s), _as_float(y), within_sets)
    return counts._replace(binary_s=_exactly_binary(s), binary_y=_exactly_binary(y))


def _dense_set_counts(s: torch.Tensor, y: torch.Tensor, within_sets: bool) -> _SetCounts:
    """:func:`_set_counts` on all voxels of float32 (B, K, S, N) samples and (B, K, R, N) raters.

    The binarity flags are left True: the caller sets them (:func:`_exactly_binary` on the input dtype).
    """
    n, num_raters = s.shape[-1], y.shape[-2]
    inter_sy = inter_ss = inter_yy = size_s = size_y = None
    for start in range(0, max(n, 1), CHUNK_VOXELS):
        sc, yc = s[..., start : start + CHUNK_VOXELS], y[..., start : start + CHUNK_VOXELS]
        y_ones = torch.cat([yc, torch.ones_like(yc[..., :1, :])], dim=-2)  # (B, K, R + 1, n)
        prod_sy = torch.matmul(sc, y_ones.transpose(-1, -2))
        inter_sy = _add(inter_sy, _counts(prod_sy[..., :num_raters]))
        lin_s = prod_sy[..., num_raters]
        if within_sets:
            gram_s = torch.matmul(sc, sc.transpose(-1, -2))
            prod_yy = torch.matmul(yc, y_ones.transpose(-1, -2))
            gram_y, lin_y = prod_yy[..., :num_raters], prod_yy[..., num_raters]
            inter_ss, inter_yy = _add(inter_ss, _counts(gram_s)), _add(inter_yy, _counts(gram_y))
        else:
            lin_y = yc.sum(dim=-1)
        size_s, size_y = _add(size_s, _counts(lin_s)), _add(size_y, _counts(lin_y))
    assert inter_sy is not None and size_s is not None and size_y is not None
    ones = torch.ones((), dtype=torch.bool, device=s.device)
    return _SetCounts(inter_sy, inter_ss, inter_yy, size_s, size_y, ones, ones)


def _in_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Device-side flag: all values in [0, 1] (False for NaN, which propagates through min / max)."""
    if x.numel() == 0 or x.dtype == torch.bool:
        return torch.ones((), dtype=torch.bool, device=x.device)
    low, high = torch.aminmax(x)
    return (low >= 0) & (high <= 1)


def _in_unit_range_if_dropped(masks: torch.Tensor, flattened: torch.Tensor) -> torch.Tensor:
    """Range flag of the channels that :func:`flatten_masks` dropped (the flattened ones are checked already)."""
    if flattened.numel() == masks.numel():
        return torch.ones((), dtype=torch.bool, device=masks.device)
    return _in_unit_range(masks)


def _raise_if_not_binary(flags: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    """One host synchronisation for all flags; on failure the exact elementwise check names the culprit."""
    if not flags or not has_values(next(iter(flags.values()))):
        return
    if bool(torch.stack(list(flags.values())).all()):
        return
    for name, ok in flags.items():
        if not bool(ok):
            check_binary(tensors[name], name)
    raise ValueError(f"{' or '.join(flags)} must be binary masks (values 0/1).")  # unreachable in exact arithmetic


def _iou_from_counts(
    inter: torch.Tensor, size_a: torch.Tensor, size_b: torch.Tensor, empty_policy: str
) -> torch.Tensor:
    union = size_a.unsqueeze(-1) + size_b.unsqueeze(-2) - inter
    iou = inter.to(torch.float32) / union.clamp(min=1).to(torch.float32)
    fill = {"match": 1.0, "mismatch": 0.0, "ignore": float("nan")}[empty_policy]
    return torch.where(union == 0, torch.full_like(iou, fill), iou)


def pairwise_counts(a: torch.Tensor, b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact intersections and sizes of every pair of binary masks (values are not checked here).

    Parameters
    ----------
    a
        (…, M, N) binary masks.
    b
        (…, P, N) binary masks, or None to pair ``a`` with itself.

    Returns
    -------
    tuple of torch.Tensor
        ``intersection`` (…, M, P), ``size_a`` (…, M) and ``size_b`` (…, P), all int64 on ``a.device``.
    """
    a = _as_float(a)
    other = a if b is None else _as_float(b)
    inter = size_a = size_b = None
    for start in range(0, max(a.shape[-1], 1), CHUNK_VOXELS):
        ac, oc = a[..., start : start + CHUNK_VOXELS], other[..., start : start + CHUNK_VOXELS]
        inter = _add(inter, _counts(torch.matmul(ac, oc.transpose(-1, -2))))
        size_a = _add(size_a, _counts(ac.sum(dim=-1)))
        if b is not None:
            size_b = _add(size_b, _counts(oc.sum(dim=-1)))
    assert inter is not None and size_a is not None
    return inter, size_a, size_a if size_b is None else size_b


def pairwise_iou(a: torch.Tensor, b: torch.Tensor | None = None, empty_policy: str = "match") -> torch.Tensor:
    """IoU (Jaccard index) |a ∩ b| / |a ∪ b| between every mask of ``a`` and every mask of ``b``.

    Parameters
    ----------
    a
        (…, M, N) binary masks.
    b
        (…, P, N) binary masks, or None to pair ``a`` with itself.
    empty_policy
        IoU of a pair where both masks are empty (|a ∪ b| = 0): ``"match"`` → 1 (PHiSeg convention),
        ``"mismatch"`` → 0 (the |a ∩ b| / (|a ∪ b| + ε) convention), ``"ignore"`` → NaN (left out of later
        averages, as in the class-wise ``nanmean`` of the Prob. U-Net evaluation code).

    Returns
    -------
    torch.Tensor
        (…, M, P) float32 IoU on ``a.device``.
    """
    check_option(empty_policy, "empty_policy", EMPTY_POLICIES)
    inter, size_a, size_b = pairwise_counts(a, b)
    return _iou_from_counts(inter, size_a, size_b, empty_policy)


def reduce_classes(iou: torch.Tensor, class_reduction: str) -> torch.Tensor:
    """Average a (B, K, M, P) per-class IoU over K for ``class_reduction="mean"`` (NaN-aware).

    ``"none"`` and ``"union"`` return the input unchanged (for ``"union"`` K is already 1).
    """
    check_option(class_reduction, "class_reduction", CLASS_REDUCTIONS)
    if class_reduction == "mean" and iou.shape[1] > 1:
        return torch.nanmean(iou, dim=1, keepdim=True)
    return iou


def compute_pairwise_iou(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = False,
    class_reduction: str = "mean",
    empty_policy: str = "match",
    binarize: float | str | None = None,
    within_sets: bool = True,
) -> PairwiseIoU:
    """IoU between all sample / rater pairs of each case: the shared first step of GED and HM-IoU.

    Validates the inputs (shapes, binary masks) and computes the sample–rater IoU and, with ``within_sets``,
    the sample–sample and rater–rater IoU, each from one batched matrix product on the input's device.
    :func:`~monai_bayes.metrics.ged_from_pairwise_iou` and
    :func:`~monai_bayes.metrics.hm_iou_from_pairwise_iou` turn the result into GED and HM-IoU, so an
    evaluator reporting both pays for the products once.

    Parameters
    ----------
    y_pred
        (B, S, C, *spatial) binary prediction samples (bool or 0/1), or probabilities with ``binarize``.
    y
        (B, R, C, *spatial) binary rater masks. R may differ from S.
    include_background
        Keep channel 0 when C > 1. With a single (sigmoid) channel it is always used.
    class_reduction
        ``"mean"``: per-class IoU averaged over the kept channels per pair (K = 1); ``"none"``: one IoU per
        kept channel (K = C or C − 1); ``"union"``: IoU of the merged foreground (K = 1).
    empty_policy
        IoU of a (pair, class) with two empty masks: ``"match"`` → 1, ``"mismatch"`` → 0, ``"ignore"`` → NaN
        (left out of the class mean; a pair empty in every class stays NaN).
    binarize
        ``None`` (``y_pred`` must be binary), a threshold ``t`` (``y_pred > t``) or ``"argmax"`` (one-hot).
    within_sets
        Also compute the sample–sample and rater–rater IoU (needed by GED, not by HM-IoU).

    Returns
    -------
    PairwiseIoU
        (B, K, S, R), (B, K, S, S) and (B, K, R, R) float32 IoU on ``y_pred.device``.

    Raises
    ------
    ValueError
        On shape mismatch between ``y_pred`` and ``y``, non-binary masks, NaN probabilities or bad options.
    """
    check_samples_and_raters(y_pred, y)
    check_option(class_reduction, "class_reduction", CLASS_REDUCTIONS)
    check_option(empty_policy, "empty_policy", EMPTY_POLICIES)
    y_pred, y = as_plain_tensor(y_pred), as_plain_tensor(y)
    if binarize is not None:
        y_pred = binarize_predictions(y_pred, binarize)
    if class_reduction == "union":  # the merge hides values, so check them exactly first
        check_binary(y_pred, "y_pred")
        check_binary(y, "y")
    samples = flatten_masks(y_pred, include_background, class_reduction)
    raters = flatten_masks(y, include_background, class_reduction)
    counts = _set_counts(samples, raters, within_sets)  # checks the range of the flattened masks
    _raise_if_not_binary(
        {
            "y_pred": counts.binary_s & _in_unit_range_if_dropped(y_pred, samples),
            "y": counts.binary_y & _in_unit_range_if_dropped(y, raters),
        },
        {"y_pred": y_pred, "y": y},
    )

    def iou(inter: torch.Tensor | None, size_a: torch.Tensor, size_b: torch.Tensor) -> torch.Tensor | None:
        if inter is None:
            return None
        return reduce_classes(_iou_from_counts(inter, size_a, size_b, empty_policy), class_reduction)

    sample_rater = iou(counts.inter_sy, counts.size_s, counts.size_y)
    assert sample_rater is not None
    return PairwiseIoU(
        sample_rater,
        iou(counts.inter_ss, counts.size_s, counts.size_s),
        iou(counts.inter_yy, counts.size_y, counts.size_y),
    )
