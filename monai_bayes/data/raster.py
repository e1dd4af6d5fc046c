"""Rasterising LIDC outlines to masks, and tracing masks back to outlines.

The rasterisation rule (shared by the LIDC reader and the synthetic generator)
----------------------------------------------------------------------------
An outline is a closed polygon through pixel coordinates ``(x, y)`` = (column, row), as in the
LIDC ``edgeMap`` elements. On a slice of shape ``(H, W)``:

* *interior* — pixels whose centre ``(col, row)`` lies inside the polygon by the even–odd rule
  (half-open crossing test: a centre exactly on an edge may fall either side; see next point);
* *outline pixels* — the vertices and the digital line segments joining consecutive vertices
  (points at most one pixel apart along each edge, rounded half-to-even);
* the region of an *inclusion* outline is ``interior ∪ outline`` (the outline pixels belong to the
  nodule; ``include_outline=False`` gives ``interior ∖ outline``, pylidc's default reading);
* the region of an *exclusion* outline (``inclusion=FALSE``, a hole) is always
  ``interior ∪ outline`` — an outline belongs to the region it outlines;
* a reader's mask on a slice is ``∪ inclusion regions  ∖  ∪ exclusion regions``.

A single point (LIDC's "nodule < 3 mm" mark) therefore rasterises to that one pixel.

pylidc's rule (the LIDC reader's default, :func:`rasterize_rois_pylidc`)
-----------------------------------------------------------------------
pylidc's ``Annotation.boolean_mask()`` tests pixel centres ``(row, col)`` against each outline
with matplotlib's ``Path.contains_points`` (the crossing test of :func:`points_in_polygon_mpl`;
points exactly on an edge fall inside or outside by that test's tie rule), then clears the
outline's own vertices; exclusion outlines clear their inside and their vertices. Outlines with
fewer than two distinct vertices (the "< 3 mm" centre mark) give an empty mask. The outline
pixels therefore do *not* belong to the nodule: the LIDC reading instructions put the outline
just outside the nodule.

:func:`trace_outline` is the inverse used by the synthetic writer: for an 8-connected mask without
holes, ``rasterize_outline(trace_outline(m), m.shape) == m`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage

__all__ = [
    "mask_to_outlines",
    "points_in_polygon_mpl",
    "rasterize_outline",
    "rasterize_rois",
    "rasterize_rois_pylidc",
    "trace_outline",
]

# 8-neighbourhood in clockwise order on screen (row axis pointing down), starting west.
_DIRS = np.array([(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)])
_DIR_INDEX = {(int(dr), int(dc)): i for i, (dr, dc) in enumerate(_DIRS)}


def _outline_pixels(xy: np.ndarray) -> np.ndarray:
    """``(M, 2)`` integer (x, y) pixels on the closed polygon ``xy`` (vertices and edges)."""
    if len(xy) == 1:
        return np.rint(xy).astype(np.int64)
    a, b = xy, np.roll(xy, -1, axis=0)
    pts = [np.rint(a)]
    for p, q in zip(a, b):
        n = int(np.ceil(np.abs(q - p).max()))
        if n > 1:
            t = np.arange(1, n)[:, None] / n
            pts.append(np.rint(p + t * (q - p)))
    return np.concatenate(pts).astype(np.int64)


def _interior(xy: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Even–odd interior of the polygon within its bounding box; returns (bool box, (row0, col0))."""
    h, w = shape
    c0, r0 = max(int(np.floor(xy[:, 0].min())), 0), max(int(np.floor(xy[:, 1].min())), 0)
    c1, r1 = min(int(np.ceil(xy[:, 0].max())), w - 1), min(int(np.ceil(xy[:, 1].max())), h - 1)
    if c1 < c0 or r1 < r0 or len(xy) < 3:
        return np.zeros((0, 0), bool), (r0, c0)
    ys = np.arange(r0, r1 + 1, dtype=float)[:, None]
    xs = np.arange(c0, c1 + 1, dtype=float)[None, :]
    inside = np.zeros((len(ys), xs.shape[1]), dtype=bool)
    for (x0, y0), (x1, y1) in zip(xy, np.roll(xy, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > ys) != (y1 > ys)  # (h, 1)
        x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)  # (h, 1)
        inside ^= crosses & (xs < x_at)
    return inside, (r0, c0)


def rasterize_outline(
    xy: np.ndarray | Iterable[tuple[float, float]], shape: tuple[int, int], include_outline: bool = True
) -> np.ndarray:
    """Rasterise one closed outline to a boolean mask (rule in the module docstring).

    Parameters
    ----------
    xy
        ``(N, 2)`` vertices ``(x, y)`` = (column, row) in pixels; ``N >= 1``. A repeated closing
        vertex is harmless.
    shape
        ``(H, W)`` of the slice.
    include_outline
        Whether the outline pixels belong to the region.

    Returns
    -------
    np.ndarray
        ``(H, W)`` bool. Parts outside the slice are clipped.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    mask = np.zeros(shape, dtype=bool)
    if len(xy) == 0:
        return mask
    inside, (r0, c0) = _interior(xy, shape)
    mask[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
    pix = _outline_pixels(xy)
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < shape[1]) & (pix[:, 1] >= 0) & (pix[:, 1] < shape[0])
    mask[pix[ok, 1], pix[ok, 0]] = include_outline
    return mask


def rasterize_rois(
    outlines: Iterable[tuple[np.ndarray, bool]], shape: tuple[int, int], include_outline: bool = True
) -> np.ndarray:
    """One reader's mask on one slice from its outlines.

    Parameters
    ----------
    outlines
        ``(xy, inclusion)`` pairs; ``xy`` as in :func:`rasterize_outline`.
    shape
        ``(H, W)``.
    include_outline
        Whether inclusion outlines' own pixels belong to the nodule (exclusion outlines always
        remove theirs).

    Returns
    -------
    np.ndarray
        ``(H, W)`` bool: union of the inclusion regions minus the union of the exclusion regions.
    """
    incl = np.zeros(shape, dtype=bool)
    excl = np.zeros(shape, dtype=bool)
    for xy, inclusion in outlines:
        if inclusion:
            incl |= rasterize_outline(xy, shape, include_outline)
        else:
            excl |= rasterize_outline(xy, shape, True)
    return incl & ~excl


def points_in_polygon_mpl(vertices: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Crossing-number point-in-polygon test with matplotlib's tie rules (``Path.contains_points``).

    For each edge ``(x0, y0) -> (x1, y1)`` of the closed polygon, a point ``(tx, ty)`` toggles when
    ``(y0 >= ty) != (y1 >= ty)`` and ``((y1 - ty)(x0 - x1) >= (x1 - tx)(y0 - y1)) == (y1 >= ty)``
    (a ray towards +x). With integer inputs every product is exact, so the answer equals
    matplotlib's voxel for voxel, including points on edges and vertices.

    Parameters
    ----------
    vertices : np.ndarray
        ``(N, 2)`` polygon vertices ``(x, y)``; a repeated closing vertex is dropped. Fewer than two
        vertices (after dropping) gives all ``False``, as matplotlib does for paths of < 3 vertices.
    px, py : np.ndarray
        Broadcastable arrays of the test points' x and y.

    Returns
    -------
    np.ndarray
        Bool array of the broadcast shape of ``px`` and ``py``.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
    if len(v) > 1 and np.array_equal(v[0], v[-1]):
        v = v[:-1]
    px, py = np.broadcast_arrays(np.asarray(px, np.float64), np.asarray(py, np.float64))
    inside = np.zeros(px.shape, dtype=bool)
    if len(v) < 2:
        return inside
    for (x0, y0), (x1, y1) in zip(v, np.roll(v, -1, axis=0)):
        f0, f1 = y0 >= py, y1 >= py
        crosses = f0 != f1
        if not crosses.any():
            continue
        hit = ((y1 - py) * (x0 - x1) >= (x1 - px) * (y0 - y1)) == f1
        inside ^= crosses & hit
    return inside


def rasterize_rois_pylidc(outlines: Iterable[tuple[np.ndarray, bool]], shape: tuple[int, int]) -> np.ndarray:
    """One reader's mask on one slice by pylidc's rule (module docstring), contour order kept.

    Parameters
    ----------
    outlines : iterable of (np.ndarray, bool)
        ``(ij, inclusion)`` pairs in the reader's order; ``ij`` is ``(N, 2)`` integer
        ``(row, column)`` (pylidc's order, i.e. the XML's ``(yCoord, xCoord)``).
    shape : tuple[int, int]
        ``(H, W)`` of the slice (or of a box whose origin the coordinates are relative to).

    Returns
    -------
    np.ndarray
        ``(H, W)`` bool: inclusion insides OR-ed in order, each contour's vertices cleared right
        after it; then exclusion insides and vertices cleared. Vertices outside ``shape`` are
        ignored.
    """
    outlines = [(np.asarray(ij, dtype=np.int64).reshape(-1, 2), bool(inc)) for ij, inc in outlines]
    mask = np.zeros(shape, dtype=bool)

    def inside(ij: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
        # only pixels within the outline's bounding box can be inside (the test is exact)
        r0, c0 = np.maximum(ij.min(axis=0), 0)
        r1, c1 = np.minimum(ij.max(axis=0) + 1, shape)
        box = (slice(int(r0), int(max(r1, r0))), slice(int(c0), int(max(c1, c0))))
        rows = np.arange(box[0].start, box[0].stop)[:, None]
        cols = np.arange(box[1].start, box[1].stop)[None, :]
        return points_in_polygon_mpl(ij, rows, cols), box

    def clear_vertices(ij: np.ndarray) -> None:
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
        mask[ij[ok, 0], ij[ok, 1]] = False

    for ij, inclusion in outlines:
        if inclusion:
            m, box = inside(ij)
            mask[box] |= m
            clear_vertices(ij)
    for ij, inclusion in outlines:
        if not inclusion:
            m, box = inside(ij)
            mask[box] &= ~m
            clear_vertices(ij)
    return mask


def trace_outline(mask: np.ndarray) -> np.ndarray:
    """Ordered outer boundary pixels of an 8-connected region (Moore-neighbour tracing).

    Parameters
    ----------
    mask
        ``(H, W)`` bool with one 8-connected component (the first in raster order is traced).

    Returns
    -------
    np.ndarray
        ``(N, 2)`` int ``(x, y)`` = (column, row) boundary pixels in clockwise screen order
        (consecutive pixels are 8-neighbours; a one-pixel region gives ``N == 1``), without a
        repeated closing point.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    fg = np.argwhere(m)
    if len(fg) == 0:
        raise ValueError("trace_outline: mask is empty")
    start = (int(fg[0, 0]), int(fg[0, 1]))
    path = [start]
    cur, back = start, 0  # the west neighbour of the first pixel in raster order is background
    first_move = None
    while True:
        for k in range(1, 9):
            d = (back + k) % 8
            nxt = (cur[0] + int(_DIRS[d, 0]), cur[1] + int(_DIRS[d, 1]))
            if m[nxt]:
                break
        else:
            break  # isolated pixel
        prev_d = (d - 1) % 8
        prev = (cur[0] + int(_DIRS[prev_d, 0]), cur[1] + int(_DIRS[prev_d, 1]))
        move = (cur, nxt)
        if first_move is None:
            first_move = move
        elif move == first_move:
            break
        path.append(nxt)
        back = _DIR_INDEX[(prev[0] - nxt[0], prev[1] - nxt[1])]
        cur = nxt
    if len(path) > 1 and path[-1] == path[0]:
        path.pop()
    rc = np.asarray(path, dtype=np.int64) - 1
    return rc[:, ::-1].copy()


def mask_to_outlines(mask: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Outlines that :func:`rasterize_rois` turns back into exactly ``mask``.

    One inclusion outline per 8-connected component (of the hole-filled mask) and one exclusion
    outline per hole (a background region enclosed by the mask).

    Parameters
    ----------
    mask
        ``(H, W)`` bool.

    Returns
    -------
    list
        ``(xy, inclusion)`` pairs, ``xy`` as returned by :func:`trace_outline`.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, c0 = rows[0], cols[0]
    sub = mask[r0 : rows[-1] + 1, c0 : cols[-1] + 1]
    offset = np.array([c0, r0])
    filled = ndimage.binary_fill_holes(sub)
    out: list[tuple[np.ndarray, bool]] = []
    lab, n = ndimage.label(filled, structure=np.ones((3, 3)))
    for i in range(1, n + 1):
        out.append((trace_outline(lab == i) + offset, True))
    holes, nh = ndimage.label(filled & ~sub)  # 4-connected background regions
    for i in range(1, nh + 1):
        out.append((trace_outline(holes == i) + offset, False))
    return out
