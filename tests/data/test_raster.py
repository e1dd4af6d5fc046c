"""Outline rasterisation rule and its inverse (boundary tracing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from monai_bayes.data.raster import mask_to_outlines, rasterize_outline, rasterize_rois, trace_outline


def _random_region(rng: np.random.Generator, holes: bool) -> np.ndarray:
    n = int(rng.integers(4, 28))
    m = rng.random((n, n)) < rng.uniform(0.3, 0.7)
    m = ndimage.binary_closing(m) if rng.random() < 0.5 else m
    lab, k = ndimage.label(m, structure=np.ones((3, 3)))
    if k == 0:
        m[n // 2, n // 2] = True
        return m
    m = lab == 1 + int(np.argmax(ndimage.sum(m, lab, range(1, k + 1))))
    return m if holes else ndimage.binary_fill_holes(m)


def test_square_polygon_includes_outline() -> None:
    xy = np.array([(2, 1), (5, 1), (5, 3), (2, 3)])  # (x, y) = (col, row)
    m = rasterize_outline(xy, (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(m, expected)
    interior = rasterize_outline(xy, (6, 8), include_outline=False)
    expected_int = np.zeros((6, 8), bool)
    expected_int[2, 3:5] = True
    np.testing.assert_array_equal(interior, expected_int)


def test_single_point_is_one_pixel_and_clipping() -> None:
    m = rasterize_outline([(3, 4)], (6, 6))
    assert m.sum() == 1 and m[4, 3]
    assert not rasterize_outline([(30, 40)], (6, 6)).any()


def test_exclusion_outline_makes_a_hole() -> None:
    outer = np.array([(0, 0), (8, 0), (8, 8), (0, 8)])
    hole = np.array([(3, 3), (5, 3), (5, 5), (3, 5)])
    m = rasterize_rois([(outer, True), (hole, False)], (9, 9))
    assert m.sum() == 81 - 9
    assert not m[3:6, 3:6].any()


@pytest.mark.parametrize("holes", [False, True])
def test_trace_then_rasterise_is_exact(holes: bool) -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        m = _random_region(rng, holes)
        filled = ndimage.binary_fill_holes(m)
        np.testing.assert_array_equal(rasterize_outline(trace_outline(filled), m.shape), filled)
        hole_lab, nh = ndimage.label(filled & ~m)
        if any(ndimage.binary_fill_holes(hole_lab == i).sum() != (hole_lab == i).sum() for i in range(1, nh + 1)):
            continue  # islands inside holes are out of scope
        np.testing.assert_array_equal(rasterize_rois(mask_to_outlines(m), m.shape), m)


def test_trace_is_an_8_connected_closed_chain() -> None:
    yy, xx = np.mgrid[:20, :20]
    disk = (yy - 10) ** 2 + (xx - 9) ** 2 <= 36
    xy = trace_outline(disk)
    step = np.abs(np.diff(np.vstack([xy, xy[:1]]), axis=0)).max(axis=1)
    assert np.all(step == 1)
    assert disk[xy[:, 1], xy[:, 0]].all()
    assert len(np.unique(xy, axis=0)) == len(xy)
