"""Figures: overlay colours and that the PNG files are written."""

from __future__ import annotations

import numpy as np
import pytest

from monai_bayes.visualize import (
    FN_COLOR,
    FP_COLOR,
    TP_COLOR,
    overlay_errors,
    plot_cases,
    plot_method_comparison,
    plot_quality_cost_frontier,
    plot_reliability,
)


def test_overlay_colours_mark_tp_fp_fn():
    image = np.zeros((3, 3))
    pred = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    ref = np.array([[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    rgb = overlay_errors(image, pred, ref, alpha=1.0)
    assert tuple(rgb[0, 0]) == TP_COLOR and tuple(rgb[0, 1]) == FP_COLOR and tuple(rgb[0, 2]) == FN_COLOR
    assert tuple(rgb[1, 1]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="one shape"):
        overlay_errors(image, pred[:2], ref)


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    case = {
        "image": rng.random((16, 16)),
        "raters": rng.random((4, 16, 16)) > 0.5,
        "mean": rng.random((16, 16)),
        "uncertainty": rng.random((16, 16)),
        "name": "case-1",
    }
    for path in (
        plot_cases([case, case], tmp_path / "cases.png"),
        plot_method_comparison({"a": {"dice": (0.8, 0.01)}, "b": {"dice": 0.7}}, ["dice"], tmp_path / "bars.png"),
        plot_reliability({"a": (np.linspace(0, 1, 5), np.linspace(0, 1, 5))}, tmp_path / "rel.png"),
    ):
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def test_rgb_images_are_displayed_in_colour():
    from monai_bayes.visualize import display_image

    rgb = np.zeros((3, 4, 5))
    rgb[0] = 1.0
    out = display_image(rgb)
    assert out.shape == (4, 5, 3) and out[..., 0].min() == 1.0 and out[..., 1].max() == 0.0
    overlay = overlay_errors(rgb, np.zeros((4, 5)), np.zeros((4, 5)))
    assert overlay.shape == (4, 5, 3) and np.allclose(overlay, out)
    with pytest.raises(ValueError, match="image must be"):
        display_image(np.zeros((2, 4, 5)))


def test_case_overlay_uses_the_consensus_of_the_raters_who_marked():
    """A nodule marked by 1 of 4 readers: that reader's mask is the reference (pylidc's consensus), not empty."""
    from matplotlib.figure import Figure

    from monai_bayes.visualize import plot_case

    raters = np.zeros((4, 6, 6))
    raters[2, 1:3, 1:3] = 1  # only reader 2 marked the nodule
    prob = raters[2].copy()
    axes = Figure().subplots(1, 4)
    plot_case(axes, np.zeros((6, 6)), raters, prob, np.zeros((6, 6)))
    assert axes[1].get_title() == "1 of 4 raters marked"
    overlay = np.asarray(axes[2].get_images()[0].get_array())
    expected = overlay_errors(np.zeros((6, 6)), prob > 0.5, raters[2] > 0)  # reader 2 is the reference
    np.testing.assert_allclose(overlay, expected)  # a 4-channel majority (empty) would paint it FP blue
    assert overlay[1, 1, 1] > overlay[1, 1, 2]  # green (TP), not blue


def test_quality_cost_frontier_figure_is_byte_stable(tmp_path):
    table = tmp_path / "frontier.csv"
    table.write_text("selection,Dice,GED,MC cost S=8\nglobal 1 %,0.700,0.500,0.95\ndecoder 1 %,0.690,0.520,0.40\n")
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    plot_quality_cost_frontier([table], first)
    plot_quality_cost_frontier([table], second)
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes(), "make_results.py needs byte-stable PNGs"
    (tmp_path / "bad.csv").write_text("selection,Dice\nx,0.5\n")
    with pytest.raises(ValueError, match="missing"):
        plot_quality_cost_frontier([tmp_path / "bad.csv"], tmp_path / "c.png")


def test_single_annotation_panel_is_called_ground_truth():
    from matplotlib.figure import Figure

    from monai_bayes.visualize import plot_case, rater_title

    assert rater_title(1, 1) == "ground truth" and rater_title(1, 0) == "ground truth (empty)"
    assert rater_title(4, 3) == "3 of 4 raters marked"
    fig = Figure()
    axes = fig.subplots(1, 4)
    mask = np.zeros((1, 6, 6))
    mask[0, 2:4, 2:4] = 1
    plot_case(axes, np.zeros((6, 6)), mask, mask[0], np.zeros((6, 6)))
    assert axes[1].get_title() == "ground truth"


def test_latent_width_comparison_draws_every_width_and_baseline(tmp_path, monkeypatch):
    """One panel per S; BN3's line has one point per latent width, each baseline of that S one horizontal line."""
    from matplotlib.figure import Figure

    from monai_bayes.visualize import plot_latent_width_comparison

    widths = tmp_path / "latent_widths.csv"
    lines = [f"{w}/3,{s},{0.9 - 0.1 * w - 0.01 * s:.3f} ± 0.1,0.5 ± 0.1,0 ± 0,5" for s in (1, 4) for w in (1, 2, 3)]
    widths.write_text("latent dims kept,S,GED²,HM-IoU,sample diversity,cases\n" + "\n".join(lines) + "\n")
    comparison = tmp_path / "comparison.csv"
    comparison.write_text(
        "method,S,GED²,HM-IoU,sample diversity,cases\n"
        "Prob. U-Net,1,0.700 ± 0.1,x,x,5\nBN3 Prob. U-Net (all 3 latent dims),1,0.6 ± 0.1,x,x,5\n"
        "Prob. U-Net,4,0.400 ± 0.1,x,x,5\nensemble U-Net,4,0.450 ± 0.1,x,x,5\n"
    )
    saved: list[Figure] = []
    monkeypatch.setattr("monai_bayes.visualize.save_figure", lambda fig, path: saved.append(fig))
    plot_latent_width_comparison([widths, comparison], tmp_path / "x.png")
    (fig,) = saved
    s1, s4 = fig.axes
    assert s1.get_title() == "S = 1" and s4.get_title() == "S = 4"
    np.testing.assert_allclose(s4.lines[0].get_ydata(), [0.76, 0.66, 0.56])  # 0.9 - 0.1 w - 0.01 S
    assert [line.get_ydata()[0] for line in s1.lines[1:]] == [0.7]  # the full-width BN3 row is no baseline
    assert [line.get_ydata()[0] for line in s4.lines[1:]] == [0.4, 0.45]
    monkeypatch.undo()
    plot_latent_width_comparison([widths, comparison], tmp_path / "a.png")
    plot_latent_width_comparison([widths, comparison], tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # byte-stable for --check
