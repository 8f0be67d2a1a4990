"""Tests of ``emlab.report.plotting``: ellipses, cluster plots, the shared legend and the image plots
draw what they say."""

from pathlib import Path

import numpy as np
import pytest
from synthetic import piecewise_image

import em_helpers as em
from emlab.report import plotting
from emlab.imaging import segmentation

DATA = Path(__file__).resolve().parents[1] / "data"
TRUE_MEANS = np.array([[2.0, 2.0], [7.0, 3.0], [4.5, 7.5]])


def test_covariance_ellipse_axes_are_the_scaled_standard_deviations():
    cov = np.array([[4.0, 0.0], [0.0, 1.0]])
    ellipse = plotting.covariance_ellipse([1.0, 2.0], cov, n_std=2)
    assert {round(ellipse.width, 12), round(ellipse.height, 12)} == {8.0, 4.0}
    rotated = plotting.covariance_ellipse([0, 0], np.array([[2.0, 1.9], [1.9, 2.0]]), n_std=1)
    assert rotated.angle % 180 == pytest.approx(45.0)
    with pytest.raises(ValueError, match="2x2"):
        plotting.covariance_ellipse([0, 0, 0], np.eye(3))


def test_plot_clusters_draws_points_means_ellipses_and_missing_margins():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    X, y = em.load_image(DATA / "Image2.csv")
    result = em.align_to_truth(em.run_em(X, method="soft", init=TRUE_MEANS), y)
    fig, ax = plt.subplots()
    plotting.plot_clusters(ax, X, result.labels, result.means, result.covariances, title="t")
    complete = ~np.isnan(X).any(axis=1)
    n_points = sum(len(c.get_offsets()) for c in ax.collections[:6:2])
    assert n_points == complete.sum()
    assert len(ax.patches) == 6  # 1 and 2 sigma ellipse per component
    margin_ticks = sum(len(line.get_xdata()) for line in ax.lines if line.get_marker() in "|_")
    assert margin_ticks == (~complete).sum()
    assert ax.get_title() == "t" and ax.get_legend() is not None
    plt.close(fig)


def test_shared_legend_collects_each_label_once_and_removes_panel_legends():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, layout="constrained")
    axes[0].plot([0, 1], label="a")
    axes[0].plot([1, 0], label="b")
    axes[1].plot([0, 1], label="b")
    axes[1].plot([1, 1], label="c")
    for ax in axes:
        ax.legend()
    legend = plotting.shared_legend(fig, axes)
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    assert all(ax.get_legend() is None for ax in axes)
    assert legend in fig.legends
    with pytest.raises(ValueError, match="no labelled artist"):
        plotting.shared_legend(fig, [fig.add_subplot(3, 3, 9)])
    plt.close(fig)


def test_plot_helpers_draw_one_artist_per_class():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    image, _ = piecewise_image(noise_sd=0.2, seed=15, shape=(20, 20))
    mask = np.ones(image.shape, dtype=bool)
    mask[0] = False
    labels, fit = segmentation.segment_image(image, mask)
    fig, (left, right) = plt.subplots(1, 2)
    plotting.plot_label_image(left, labels, ["a", "b", "c"], title="labels")
    shown = left.images[0].get_array()
    np.testing.assert_array_equal(shown, labels + 1)  # colour 0 is the background
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["a", "b", "c"]
    plotting.plot_intensity_fit(right, image[mask], fit, ["a", "b", "c"])
    assert len(right.lines) == 4  # three components and the mixture
    mixture = right.lines[-1].get_ydata()
    np.testing.assert_allclose(mixture, sum(line.get_ydata() for line in right.lines[:3]))
    with pytest.raises(ValueError, match="only 2 names"):
        plotting.plot_label_image(left, labels, ["a", "b"])
    plt.close(fig)


def test_plot_criterion_draws_one_line_per_model_skips_degenerate_fits_and_rings_the_choice():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import pandas as pd

    index = pd.MultiIndex.from_product([["full", "diag"], [1, 2, 3]],
                                       names=["covariance_type", "n_components"])
    table = pd.DataFrame({"bic": [10.0, 8.0, 1.0, 11.0, 9.0, 9.5],
                          "n_parameters": [5, 11, 17, 4, 9, 14],
                          "degenerate": [False, False, True, False, False, False]}, index=index)
    fig, ax = plt.subplots()
    plotting.plot_criterion(ax, table, "bic", title="t")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["full"].get_xdata(), [1, 2])  # K = 3 is degenerate
    np.testing.assert_array_equal(lines["diag"].get_ydata(), [11.0, 9.0, 9.5])
    ring = lines["chosen: full, K = 2"]  # the lowest BIC of a usable fit
    assert (ring.get_xdata()[0], ring.get_ydata()[0]) == (2, 8.0)
    assert "degenerate (never chosen)" in lines
    assert ax.get_title() == "t" and ax.get_ylabel() == "BIC (lower is better)"
    plt.close(fig)


def test_plot_criteria_grid_has_a_row_per_data_set_and_a_panel_per_criterion():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import pandas as pd

    index = pd.MultiIndex.from_product([["full"], [1, 2]],
                                       names=["covariance_type", "n_components"])
    table = pd.DataFrame({"bic": [3.0, 2.0], "icl": [3.0, 4.0], "n_parameters": [2, 5],
                          "degenerate": [False, False]}, index=index)
    fig = plotting.plot_criteria_grid({"a": table, "b": table}, types_note=" (x)")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["a: BIC against K (x)", "a: ICL against K (x)",
                      "b: BIC against K (x)", "b: ICL against K (x)"]
    plt.close(fig)
    with pytest.raises(ValueError, match="non-empty dict"):
        plotting.plot_criteria_grid({})


def test_orthogonal_views_show_the_three_planes_through_the_voxel():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    volume = np.arange(4 * 5 * 6.0).reshape(4, 5, 6)
    labels = (volume % 3).astype(int) - 1
    slices = plotting.orthogonal_slices(volume, (1, 2, 3))
    np.testing.assert_array_equal(slices["axial"], volume[:, :, 3].T)
    np.testing.assert_array_equal(slices["coronal"], volume[:, 2, :].T)
    np.testing.assert_array_equal(slices["sagittal"], volume[1, :, :].T)
    fig, axes = plt.subplots(1, 3)
    plotting.plot_orthogonal_views(axes, volume, labels, ["a", "b"], voxel=(1, 2, 3),
                                   title="t")
    for ax, name in zip(axes, ["axial", "coronal", "sagittal"]):
        grey, overlay = ax.get_images()
        np.testing.assert_array_equal(grey.get_array(), slices[name])
        assert overlay.get_array().mask.sum() == (plotting.orthogonal_slices(
            labels, (1, 2, 3))[name] < 0).sum()
        assert ax.get_title().startswith(f"t: {name}")
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="voxel must be 3 indices"):
        plotting.orthogonal_slices(volume, (9, 0, 0))
    with pytest.raises(ValueError, match="give one name per class"):
        plotting.plot_orthogonal_views(axes, volume, labels + 5, ["a"])
    plt.close(fig)


def test_plot_image_comparison_puts_each_error_and_its_interval_on_its_row():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import pandas as pd

    index = pd.MultiIndex.from_tuples([("a", "mean x1"), ("b", "var x1")])
    columns = pd.MultiIndex.from_product([["Image1", "Image2"],
                                          ["truth", "estimate - truth", "bootstrap SE"]])
    table = pd.DataFrame([[1.0, 0.1, 0.05, 1.0, -0.2, 0.1], [2.0, 0.3, 0.1, 3.2, 0.0, 0.2]],
                         index=index, columns=columns)
    fig, ax = plt.subplots()
    plotting.plot_image_comparison(ax, table, z=2.0, title="t")
    first, second = ax.containers  # one errorbar container per scan
    np.testing.assert_allclose(first.lines[0].get_xdata(), [0.1, 0.3])
    np.testing.assert_allclose(second.lines[0].get_xdata(), [-0.2, 0.0])
    segments = second.lines[2][0].get_segments()  # the horizontal bars: ± 2 SE
    np.testing.assert_allclose([s[:, 0] for s in segments], [[-0.4, 0.0], [-0.4, 0.4]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a: mean x1", "b: var x1"]
    assert ax.get_title() == "t"
    plt.close(fig)
    with pytest.raises(ValueError, match="no columns"):
        plotting.plot_image_comparison(ax, table.drop(columns=("Image2", "bootstrap SE")))


def test_plot_helpers_name_bad_arguments():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    try:
        with pytest.raises(ValueError, match="mean and cov must be finite"):
            plotting.covariance_ellipse([np.nan, 0.0], np.eye(2))  # once an invisible NaN patch
        with pytest.raises(ValueError, match="mean and cov must be finite"):
            plotting.covariance_ellipse([0.0, 0.0], np.full((2, 2), np.nan))
        with pytest.raises(ValueError, match="n_std must be a positive number"):
            plotting.covariance_ellipse([0.0, 0.0], np.eye(2), n_std=-1)
        with pytest.raises(ValueError, match="names must be a sequence of class names"):
            plotting.plot_label_image(axes[0], np.zeros((2, 2), dtype=int), None)
        with pytest.raises(ValueError, match="voxel must be 3 indices"):
            plotting.orthogonal_slices(np.zeros((3, 3, 3)), "abc")
        with pytest.raises(ValueError, match="voxel must be 3 indices"):
            plotting.orthogonal_slices(np.zeros((3, 3, 3)), (1.7, 1, 1))  # once cut to 1
        with pytest.raises(ValueError, match="voxel_sizes must be 3 positive finite numbers"):
            plotting.plot_orthogonal_views(axes, np.zeros((3, 3, 3)), voxel_sizes=(0, 1, 1))
        fit = segmentation.segment_image(np.array([[1.0, 1.1, 3.0, 3.1]]), n_components=2)[1]
        with pytest.raises(ValueError, match="values must be a non-empty array of finite"):
            plotting.plot_intensity_fit(axes[0], [np.nan, 1.0, 3.0], fit, ["a", "b"])
        with pytest.raises(ValueError, match="result must be an EMResult"):
            plotting.plot_intensity_fit(axes[0], [1.0, 3.0], None, ["a", "b"])
    finally:
        plt.close(fig)
