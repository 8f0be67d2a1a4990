"""Plotting helpers shared by the notebooks (matplotlib).

- ``CLASS_COLORS``: one colour per class, used by every figure;
- 2-D points: ``plot_clusters`` (points, means, covariance ellipses, margin ticks for missing
  cells), ``covariance_ellipse``, ``shared_legend``;
- images: ``plot_label_image`` and ``plot_intensity_fit`` (histogram with the fitted mixture);
- model choice: ``plot_criterion`` (BIC, AIC or ICL against K, one line per covariance model).
- the two scans' estimates: ``plot_image_comparison`` (estimate - truth with bootstrap SEs);
- volumes: ``plot_orthogonal_views`` (axial, coronal, sagittal, with a label overlay).
"""

from __future__ import annotations

import numpy as np

from em_helpers import CLASS_NAMES, log_gaussian_1d
from emlab.engine.validation import check_positive

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def plot_label_image(ax, label_image, names, title=None, background="black"):
    """Show a label image with one colour per class (``CLASS_COLORS``) and a legend.

    Pixels with a negative label (outside the mask) are drawn in ``background``. Returns ax.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    labels = np.asarray(label_image)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_image must be a 2-D integer array, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if names is None or isinstance(names, str):
        raise ValueError(f"names must be a sequence of class names, got {names!r}")
    if labels.max() >= len(names):
        raise ValueError(f"label_image has class {labels.max()} but only {len(names)} names")
    colours = [background] + [CLASS_COLORS[k % len(CLASS_COLORS)] for k in range(len(names))]
    ax.imshow(np.maximum(labels, -1) + 1, cmap=ListedColormap(colours), vmin=0,
              vmax=len(names), interpolation="nearest")
    ax.legend(handles=[Patch(color=colours[k + 1], label=name) for k, name in enumerate(names)],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(len(names), 4),
              fontsize="small", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def plot_intensity_fit(ax, values, result, names, bins=64, title=None):
    """Histogram (density) of ``values`` with each fitted component ``pi_k N(mu_k, sigma_k^2)``
    and their sum drawn over it. ``result`` is a one-dimensional ``EMResult``. Returns ax."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("values must be a non-empty array of finite intensities")
    if not all(hasattr(result, a) for a in ("means", "covariances", "weights")):
        raise ValueError(f"result must be an EMResult (a fit with means, covariances and "
                         f"weights), got {type(result).__name__}")
    if result.means.shape[1] != 1:
        raise ValueError(f"need a fit on scalar intensities, got d={result.means.shape[1]}")
    grid = np.linspace(values.min(), values.max(), 400)
    densities = np.exp(log_gaussian_1d(grid, result.means[:, 0], result.covariances[:, 0, 0]))
    weighted = result.weights[:, None] * densities
    ax.hist(values, bins=bins, density=True, color="0.8", label="brain pixels")
    for k, name in enumerate(names):
        ax.plot(grid, weighted[k], color=CLASS_COLORS[k % len(CLASS_COLORS)], lw=2,
                label=rf"{name}: $\mu$={result.means[k, 0]:.3f}, $\sigma$="
                      rf"{np.sqrt(result.covariances[k, 0, 0]):.3f}")
    ax.plot(grid, weighted.sum(axis=0), "k--", lw=1.2, label="mixture")
    ax.set_xlabel("intensity")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def covariance_ellipse(mean, cov, n_std=1.0, **kwargs):
    """A matplotlib ``Ellipse`` of the points at Mahalanobis distance ``n_std`` from ``mean``."""
    from matplotlib.patches import Ellipse

    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"need a 2-D mean and a 2x2 covariance, got {mean.shape}, {cov.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
        raise ValueError("mean and cov must be finite")
    n_std = check_positive(n_std, "n_std")
    eigval, eigvec = np.linalg.eigh(cov)
    if (eigval < 0).any():
        raise ValueError("cov must be positive semi-definite")
    angle = np.degrees(np.arctan2(eigvec[1, 1], eigvec[0, 1]))
    width, height = 2 * n_std * np.sqrt(eigval[::-1])
    return Ellipse(xy=mean, width=width, height=height, angle=angle, **kwargs)


def plot_clusters(ax, X, labels, means=None, covariances=None, title=None,
                  names=CLASS_NAMES, show_missing=True, point_size=12, legend=True):
    """Scatter points coloured by label, with each component's mean and 1-sigma/2-sigma ellipses.

    Rows with a missing coordinate cannot be placed in the plane: with ``show_missing`` they are
    drawn on the margin instead, as ticks at their observed coordinate (x1 observed: bottom
    edge; x2 observed: left edge).

    Parameters
    ----------
    ax : matplotlib Axes
    X : array-like (N, 2)
    labels : array-like (N,) of int
    means, covariances : optional, (K, 2) and (K, 2, 2)
    title : str, optional
    names : sequence of str
        Legend name of label ``k`` (``names[k]``; "cluster k" past its end).
    legend : bool, default True
        Draw the legend below the axes (off the data); pass False to draw one shared legend.

    Returns
    -------
    ax
    """
    X = np.asarray(X, dtype=float)
    labels = np.asarray(labels)
    if X.ndim != 2 or X.shape[1] != 2 or labels.shape != (X.shape[0],):
        raise ValueError(f"need X of shape (N, 2) and labels of shape (N,), got {X.shape} "
                         f"and {labels.shape}")
    complete = ~np.isnan(X).any(axis=1)
    n_labels = int(labels.max()) + 1 if labels.size else 0
    if means is not None:
        n_labels = max(n_labels, len(means))
    for k in range(n_labels):
        color = CLASS_COLORS[k % len(CLASS_COLORS)]
        name = names[k] if k < len(names) else f"cluster {k}"
        sel = complete & (labels == k)
        ax.scatter(X[sel, 0], X[sel, 1], s=point_size, color=color, alpha=0.6, label=name,
                   edgecolors="none")
        if show_missing:
            only_x1 = (labels == k) & ~np.isnan(X[:, 0]) & np.isnan(X[:, 1])
            only_x2 = (labels == k) & np.isnan(X[:, 0]) & ~np.isnan(X[:, 1])
            if only_x1.any():  # an empty unclipped line would stretch a tight bounding box
                ax.plot(X[only_x1, 0], np.zeros(only_x1.sum()), "|", color=color, ms=12,
                        mew=1.5, transform=ax.get_xaxis_transform(), clip_on=False)
            if only_x2.any():
                ax.plot(np.zeros(only_x2.sum()), X[only_x2, 1], "_", color=color, ms=12,
                        mew=1.5, transform=ax.get_yaxis_transform(), clip_on=False)
        if means is not None:
            ax.scatter(*means[k], marker="X", s=120, color=color, edgecolors="black",
                       linewidths=1.0, zorder=3)
            if covariances is not None:
                for n_std, style in ((1, "-"), (2, "--")):
                    ax.add_patch(covariance_ellipse(means[k], covariances[k], n_std,
                                                    fill=False, color=color, lw=1.5, ls=style))
    if means is not None:
        ax.scatter([], [], marker="X", s=80, color="grey", edgecolors="black", label="mean")
        if covariances is not None:
            ax.plot([], [], "-", color="grey", label=r"1$\sigma$ ellipse")
            ax.plot([], [], "--", color="grey", label=r"2$\sigma$ ellipse")
    if show_missing and not complete.all():
        ax.plot([], [], "|", color="grey", ms=10, label="one coordinate missing (margin)")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small",
                  frameon=False)
    return ax


def shared_legend(fig, axes, ncols=None, **kwargs):
    """Replace the legends of several panels by one legend below the figure.

    Entries are taken from every axes in order, each label once. With a figure made with
    ``layout="constrained"`` the legend goes outside the panels, so it never hides a point.

    Parameters
    ----------
    fig : matplotlib Figure
    axes : iterable of Axes
    ncols : int, optional
        Columns of the legend; default: one row of up to 7 entries, else two balanced rows.
    **kwargs
        Passed to ``fig.legend``.

    Returns
    -------
    matplotlib Legend
    """
    axes = list(np.ravel(axes))
    if not axes:
        raise ValueError("axes must hold at least one Axes")
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not entries:
        raise ValueError("no labelled artist in axes: nothing to put in a legend")
    constrained = fig.get_layout_engine() is not None and \
        type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    kwargs.setdefault("fontsize", "small")
    kwargs.setdefault("loc", "outside lower center" if constrained else "lower center")
    if ncols is None:  # one row, or two balanced rows past 7 entries
        ncols = len(entries) if len(entries) <= 7 else -(-len(entries) // 2)
    return fig.legend(list(entries.values()), list(entries), ncols=ncols, **kwargs)


def plot_criterion(ax, table, criterion="bic", title=None):
    """A criterion of ``model_selection.select_model``'s table against K, one line per model.

    Degenerate fits are drawn as grey crosses (and left out of the lines); the model that
    ``model_selection.best_model`` picks is ringed. Returns ax.
    """
    from emlab.models import model_selection

    best = model_selection.best_model(table, criterion)
    for i, (covariance_type, rows) in enumerate(table.groupby(level=0, sort=False)):
        ks = rows.index.get_level_values(1).to_numpy()
        values = rows[criterion].to_numpy(dtype=float)
        bad = rows["degenerate"].to_numpy(dtype=bool)
        colour = CLASS_COLORS[i % len(CLASS_COLORS)]
        ax.plot(ks[~bad], values[~bad], "o-", color=colour, label=covariance_type)
        if bad.any():
            ax.plot(ks[bad], values[bad], "x", color="0.4", ms=8, mew=2)
    chosen = table.loc[best, criterion]
    ax.plot([best[1]], [chosen], "o", ms=16, mfc="none", mec="black", mew=1.5,
            label=f"chosen: {best[0]}, K = {best[1]}")
    if table["degenerate"].any():
        ax.plot([], [], "x", color="0.4", ms=8, mew=2, label="degenerate (never chosen)")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(np.unique(table.index.get_level_values(1)))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def plot_criteria_grid(tables_by_name, criteria=("bic", "icl"), types_note=""):
    """Criteria against K (``plot_criterion``), one row of panels per data set.

    Parameters
    ----------
    tables_by_name : dict {name: table of ``model_selection.select_model``}
    criteria : sequence of str, default ("bic", "icl")
    types_note : str, default ""
        Appended to every panel's title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not isinstance(tables_by_name, dict) or not tables_by_name:
        raise ValueError("tables_by_name must be a non-empty dict {name: table}")
    fig, axes = plt.subplots(len(tables_by_name), len(criteria),
                             figsize=(6.5 * len(criteria), 4.4 * len(tables_by_name)),
                             squeeze=False)
    for row, (name, table) in zip(axes, tables_by_name.items()):
        for ax, criterion in zip(row, criteria):
            plot_criterion(ax, table, criterion,
                           title=f"{name}: {criterion.upper()} against K{types_note}")
    fig.tight_layout()
    return fig


ORTHOGONAL_VIEWS = (  # name, the axis held fixed, the (horizontal, vertical) voxel axes
    ("axial", 2, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 0, (1, 2)))


def orthogonal_slices(volume, voxel):
    """The axial (``[:, :, k]``), coronal (``[:, j, :]``) and sagittal (``[i, :, :]``) slices
    of a volume through ``voxel = (i, j, k)``, each transposed so that its first voxel axis
    runs horizontally (draw with ``origin="lower"``). Returns a dict name -> 2-D array."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D, got shape {volume.shape}")
    given = voxel
    voxel = tuple(np.atleast_1d(voxel)) if not isinstance(voxel, str) else ()
    if len(voxel) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  and 0 <= v < n for v, n in zip(voxel, volume.shape)):
        raise ValueError(f"voxel must be 3 indices inside {volume.shape}, got {given!r}")
    voxel = tuple(int(v) for v in voxel)
    return {name: np.take(volume, voxel[fixed], axis=fixed).T
            for name, fixed, _ in ORTHOGONAL_VIEWS}


def plot_orthogonal_views(axes, image, label_image=None, names=None, voxel=None,
                          voxel_sizes=(1.0, 1.0, 1.0), alpha=0.45, title=None,
                          axis_names=("x", "y", "z")):
    """Axial, coronal and sagittal views of a volume, with an optional label overlay.

    Parameters
    ----------
    axes : three matplotlib Axes
    image : array-like (X, Y, Z)
        Drawn in grey.
    label_image : array-like of int (X, Y, Z), optional
        Drawn over it in ``CLASS_COLORS`` (negative labels transparent), with a legend of
        ``names`` below the middle panel.
    names : sequence of str, optional
        Required with ``label_image``.
    voxel : (i, j, k), optional
        Where the three planes cross. Default: the centre of the volume.
    voxel_sizes : 3 floats, default (1, 1, 1)
        In mm, for the aspect ratio of each panel.
    title : str, optional
        Prefix of the three panels' titles.
    axis_names : 3 str
        Names of the voxel axes for the axis labels (for an RAS image such as MNI: x runs
        left to right, y posterior to anterior, z inferior to superior).

    Returns
    -------
    axes
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    axes = list(np.ravel(axes))
    image = np.asarray(image, dtype=float)
    if len(axes) != 3:
        raise ValueError(f"axes must hold 3 Axes, got {len(axes)}")
    if voxel is None:
        voxel = tuple(n // 2 for n in image.shape)
    grey = orthogonal_slices(image, voxel)
    if label_image is not None:
        labels = np.asarray(label_image)
        if labels.shape != image.shape or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"label_image must be an integer array of shape {image.shape}")
        if names is None or labels.max() >= len(names):
            raise ValueError(f"label_image has class {labels.max()}: give one name per class")
        colours = ListedColormap([CLASS_COLORS[k % len(CLASS_COLORS)]
                                  for k in range(len(names))])
        overlay = orthogonal_slices(labels, voxel)
    try:
        sizes = np.asarray(voxel_sizes, dtype=float)
    except (TypeError, ValueError):
        sizes = np.empty(0)
    if sizes.shape != (3,) or not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ValueError(f"voxel_sizes must be 3 positive finite numbers (mm), got "
                         f"{voxel_sizes!r}")
    for ax, (name, fixed, (h, v)) in zip(axes, ORTHOGONAL_VIEWS):
        ax.imshow(grey[name], cmap="gray", origin="lower", aspect=sizes[v] / sizes[h],
                  interpolation="nearest")
        if label_image is not None:
            shown = np.ma.masked_less(overlay[name], 0)
            ax.imshow(shown, cmap=colours, vmin=-0.5, vmax=len(names) - 0.5, alpha=alpha,
                      origin="lower", aspect=sizes[v] / sizes[h], interpolation="nearest")
        ax.set_xlabel(f"{axis_names[h]} (voxel)")
        ax.set_ylabel(f"{axis_names[v]} (voxel)")
        where = f"{axis_names[fixed]} = {voxel[fixed]}"
        ax.set_title(f"{title}: {name}, {where}" if title else f"{name}, {where}",
                     fontsize="medium")
    if label_image is not None:
        axes[1].legend(handles=[Patch(color=colours(k), alpha=0.8, label=n)
                                for k, n in enumerate(names)],
                       loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(names),
                       fontsize="small", frameon=False)
    return axes


def plot_image_comparison(ax, table, images=("Image1", "Image2"), z=1.96, title=None):
    """Estimate minus truth of every parameter, with ``z`` bootstrap SEs, one marker per scan.

    Parameters
    ----------
    ax : matplotlib Axes
    table : pandas.DataFrame
        As returned by ``tables.image_comparison_table`` with standard errors: rows (class,
        parameter), columns (scan, ``"estimate - truth"`` / ``"bootstrap SE"``).
    images : sequence of str, default ("Image1", "Image2")
    z : float, default 1.96
        Half-width of the error bars in standard errors.
    title : str, optional

    Returns
    -------
    ax
    """
    needed = [(image, column) for image in images
              for column in ("estimate - truth", "bootstrap SE")]
    missing = [key for key in needed if key not in table.columns]
    if missing:
        raise ValueError(f"table has no columns {missing}: pass image_comparison_table's output "
                         "with standard errors")
    rows = np.arange(len(table))
    offsets = np.linspace(-0.18, 0.18, len(images))
    for i, (image, offset) in enumerate(zip(images, offsets)):
        error = table[(image, "estimate - truth")].to_numpy(dtype=float)
        se = table[(image, "bootstrap SE")].to_numpy(dtype=float)
        ax.errorbar(error, rows + offset, xerr=z * se, fmt="o", ms=4, capsize=2,
                    color=CLASS_COLORS[i % len(CLASS_COLORS)],
                    label=f"{image}: estimate - truth ± {z:g} SE")
    ax.axvline(0.0, color="0.3", lw=1)
    ax.set_yticks(rows, [f"{cls}: {param}" for cls, param in table.index])
    ax.invert_yaxis()
    ax.set_xlabel("estimate - truth")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax
