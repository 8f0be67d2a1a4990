"""Tables for the simulation notebooks (questions 1-5): the scans, their truth, the fits.

- ``missing_table``, ``estimate_table`` (estimates as numbered by the fit), ``parameter_table``
  (next to the truth), ``scores_table``, ``confusion_table``, ``position_along``;
- the comparison of the two scans (question 5): ``image_comparison_table``,
  ``total_variance_table``, ``covariance_shift_table``, ``accuracy_on_rows``;
- reading many intervals together: ``interval_misses`` (how many miss zero, against chance).

Loading the scans, their truth and the fits are ``emlab.models.course_scans``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from em_helpers import CLASS_NAMES, clustering_scores, m_step, match_labels, one_hot
from emlab.engine.validation import check_labels, check_points
from emlab.models.course_scans import as_parameters, class_name, true_parameters

PARAMETER_NAMES = ("mean x1", "mean x2", "var x1", "var x2", "cov x1,x2", "weight")


def missing_table(images, names=CLASS_NAMES):
    """Count the points and the missing cells of each scan, per true class.

    Parameters
    ----------
    images : dict
        ``name -> (X, y)`` as returned by ``load_images``.
    names : sequence of str
        Class names (``names[k]`` for class ``k``).

    Returns
    -------
    DataFrame
        Index ``(image, class)`` with a last row ``"all"`` per image; columns ``points``,
        ``x1 missing``, ``x2 missing`` (rows whose x1 / x2 cell is empty) and ``complete rows``.
    """
    rows = {}
    for image, (X, y) in images.items():
        X = check_points(X, f"images[{image!r}] X")
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"images[{image!r}]: y must have shape ({X.shape[0]},), got {y.shape}")
        missing = np.isnan(X)
        groups = [(class_name(k, names), y == k) for k in np.unique(y)]
        for label, sel in groups + [("all", np.ones(len(y), dtype=bool))]:
            rows[(image, label)] = {"points": int(sel.sum()),
                                    "x1 missing": int(missing[sel, 0].sum()),
                                    "x2 missing": int(missing[sel, 1].sum()),
                                    "complete rows": int((~missing[sel].any(axis=1)).sum())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["image", "class"]
    return table


def _flatten_parameters(params):
    """(K, 6) array: mean x1, mean x2, var x1, var x2, cov x1,x2, weight for each component."""
    return np.column_stack([params.means[:, 0], params.means[:, 1],
                            params.covariances[:, 0, 0], params.covariances[:, 1, 1],
                            params.covariances[:, 0, 1], params.weights])


def estimate_table(results):
    """The estimated parameters of each component, in the fit's own numbering.

    Parameters
    ----------
    results : dict
        ``name -> EMResult, MStepResult or Parameters`` (two-dimensional data).

    Returns
    -------
    DataFrame
        Index ``(name, component)``; columns ``mean x1``, ``mean x2``, ``var x1``, ``var x2``,
        ``cov x1,x2``, ``weight``.
    """
    frames = {}
    for name, result in results.items():
        params = as_parameters(result, f"results[{name!r}]")
        if params.means.shape[1] != 2:
            raise ValueError(f"results[{name!r}]: two-dimensional data expected, got "
                             f"d = {params.means.shape[1]}")
        frames[name] = pd.DataFrame(_flatten_parameters(params), columns=list(PARAMETER_NAMES),
                                    index=pd.RangeIndex(len(params.weights), name="component"))
    return pd.concat(frames, names=["image"])


def parameter_table(result, truth, image, se=None, names=None):
    """Estimated parameters next to the true ones, one row per class and parameter.

    Parameters
    ----------
    result : EMResult, MStepResult or Parameters
        Estimates whose component ``k`` corresponds to true class ``k`` (see ``align_to_truth``);
        two-dimensional data.
    truth : dict
        As returned by ``load_truth``.
    image : str
        Which scan's true covariances to compare with (``"Image1"``, ``"Image2"``).
    se : Parameters, optional
        Standard errors of the estimates (e.g. ``BootstrapResult.se``); adds a ``se`` column.
    names : sequence of str, optional
        Class names; default ``truth["class_names"]``.

    Returns
    -------
    DataFrame
        Index ``(class, parameter)`` with parameters ``PARAMETER_NAMES`` (means, variances,
        covariance of x1 and x2, mixing weight); columns ``truth``, ``estimate``,
        ``error`` (= estimate - truth) and, with ``se``, ``se``.
    """
    expected = true_parameters(truth, image)
    estimate = as_parameters(result, "result")
    if estimate.means.shape != expected.means.shape:
        raise ValueError(f"result has means of shape {estimate.means.shape}, the truth of "
                         f"{image} has {expected.means.shape}")
    names = list(truth["class_names"]) if names is None else list(names)
    K = expected.means.shape[0]
    index = pd.MultiIndex.from_product([[class_name(k, names) for k in range(K)],
                                        PARAMETER_NAMES], names=["class", "parameter"])
    columns = {"truth": _flatten_parameters(expected).ravel(),
               "estimate": _flatten_parameters(estimate).ravel()}
    columns["error"] = columns["estimate"] - columns["truth"]
    if se is not None:
        se = as_parameters(se, "se")
        if se.means.shape != expected.means.shape:
            raise ValueError(f"se has means of shape {se.means.shape}, expected "
                             f"{expected.means.shape}")
        columns["se"] = _flatten_parameters(se).ravel()
    return pd.DataFrame(columns, index=index)


def _check_fits(fits, images):
    for key in fits:
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in images):
            raise ValueError(f"fits keys must be (image, method) with image in {list(images)}, "
                             f"got {key!r}")


def scores_table(fits, images):
    """How well each fit recovers the true labels.

    Parameters
    ----------
    fits : dict
        ``(image, method) -> EMResult``.
    images : dict
        ``image -> (X, y)`` (``load_images``).

    Returns
    -------
    DataFrame
        Index ``(image, method)``; columns ``iterations``, ``converged``, ``accuracy`` (after
        label matching), ``misassigned`` (points) and ``ARI`` (adjusted Rand index).
    """
    _check_fits(fits, images)
    rows = {}
    for key, fit in fits.items():
        y = images[key[0]][1]
        scores = clustering_scores(y, fit.labels)
        rows[key] = {"iterations": fit.n_iter, "converged": fit.converged,
                     "accuracy": scores["accuracy"],
                     "misassigned": int(len(y) - np.trace(scores["confusion"])),
                     "ARI": scores["ari"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["image", "method"]
    return table


def confusion_table(y_true, y_pred, names=CLASS_NAMES):
    """Confusion matrix after label matching, with named rows (truth) and columns (assigned).

    Returns
    -------
    DataFrame of shape (K, K)
        ``table.loc[a, b]``: points of true class ``a`` assigned to the cluster matched to ``b``.
    """
    confusion = clustering_scores(y_true, y_pred)["confusion"]
    labels = [class_name(k, names) for k in range(confusion.shape[0])]
    return pd.DataFrame(confusion, index=pd.Index(labels, name="true class"),
                        columns=pd.Index(labels, name="assigned to"))


def position_along(X, start, end):
    """Coordinate of each point's projection on the line from ``start`` to ``end``.

    Parameters
    ----------
    X : array-like of shape (N, d)
    start, end : array-like of shape (d,), distinct

    Returns
    -------
    t : ndarray of shape (N,)
        ``(x - start) . (end - start) / |end - start|^2``: 0 at ``start``, 1 at ``end``; for two
        means, the nearest-mean boundary crosses the line at ``t = 0.5``. ``NaN`` for rows with a
        missing cell.
    """
    X = check_points(X)
    start = np.asarray(start, dtype=float)
    end = np.asarray(end, dtype=float)
    if start.shape != (X.shape[1],) or end.shape != (X.shape[1],):
        raise ValueError(f"start and end must have shape ({X.shape[1]},), got {start.shape} "
                         f"and {end.shape}")
    direction = end - start
    length2 = direction @ direction
    if not np.isfinite(length2) or length2 == 0:
        raise ValueError("start and end must be finite and distinct")
    return (X - start) @ direction / length2


def image_comparison_table(fits, truth, ses=None, images=("Image1", "Image2")):
    """Estimate - truth on two scans side by side, with standard errors, and their difference.

    Parameters
    ----------
    fits : dict
        ``image -> EMResult`` (aligned to the true classes) for the two ``images``.
    truth : dict
        ``load_truth()``.
    ses : dict, optional
        ``image -> Parameters`` of standard errors (``BootstrapResult.se``).
    images : pair of str, default ("Image1", "Image2")

    Returns
    -------
    DataFrame
        Index ``(class, parameter)``; for each image the columns ``truth``, ``estimate - truth``
        and (with ``ses``) ``bootstrap SE``; then ``"<second> - <first>"`` with ``estimated``
        (difference of the estimates) and ``expected`` (difference of the true values).
    """
    if isinstance(images, str) or len(images) != 2:
        raise ValueError(f"images must be a pair of image names, got {images!r}")
    for name, mapping in (("fits", fits), ("ses", ses)):
        absent = [image for image in images if mapping is not None and image not in mapping]
        if absent:
            raise ValueError(f"{name} has no entry for {absent}")
    first, second = images
    tables = {image: parameter_table(fits[image], truth, image,
                                     se=None if ses is None else ses[image])
              for image in images}
    columns = {}
    for image in images:
        columns[(image, "truth")] = tables[image]["truth"]
        columns[(image, "estimate - truth")] = tables[image]["error"]
        if ses is not None:
            columns[(image, "bootstrap SE")] = tables[image]["se"]
    label = f"{second} - {first}"
    columns[(label, "estimated")] = tables[second]["estimate"] - tables[first]["estimate"]
    columns[(label, "expected")] = tables[second]["truth"] - tables[first]["truth"]
    return pd.DataFrame(columns)


def total_variance_table(fits, images, truth, names=None):
    """Total variance ``tr(Sigma_k)`` of every class: truth, true partition and each fit.

    The ``true labels`` column is the M-step on the true partition of the sample (what a
    perfect assignment would estimate from these very points), so that a fit's gap to it is
    the effect of its assignments rather than of sampling.

    Parameters
    ----------
    fits : dict
        ``(image, method) -> EMResult`` aligned to the true classes.
    images : dict
        ``image -> (X, y)``.
    truth : dict
        ``load_truth()``.
    names : sequence of str, optional
        Default ``truth["class_names"]``.

    Returns
    -------
    DataFrame
        Index ``(image, class)``; columns ``truth``, ``true labels`` and one per method (in the
        order they first appear in ``fits``).
    """
    _check_fits(fits, images)
    names = list(truth["class_names"]) if names is None else list(names)
    methods = list(dict.fromkeys(method for _, method in fits))
    frames = {}
    for image in dict.fromkeys(image for image, _ in fits):
        X, y = images[image]
        K = len(true_parameters(truth, image).means)
        columns = {"truth": true_parameters(truth, image).covariances,
                   "true labels": m_step(X, one_hot(np.asarray(y), K)).covariances}
        for method in methods:
            if (image, method) in fits:
                columns[method] = as_parameters(fits[(image, method)], "fits").covariances
        frames[image] = pd.DataFrame(
            {label: np.trace(covs, axis1=1, axis2=2) for label, covs in columns.items()},
            index=pd.Index([class_name(k, names) for k in range(K)], name="class"))
    return pd.concat(frames, names=["image"])


def covariance_shift_table(fits, first="Image1", second="Image2", names=CLASS_NAMES):
    """How much each fitted covariance grows from one scan to the other.

    Parameters
    ----------
    fits : dict
        ``(image, method) -> EMResult`` aligned to the true classes, with both ``first`` and
        ``second`` for every method.
    first, second : str
        The scans compared: the table holds ``Sigma_k(second) - Sigma_k(first)``.
    names : sequence of str

    Returns
    -------
    DataFrame
        One row per class and a last row ``mean`` (over classes); columns ``(method, entry)``
        with entries ``var x1``, ``var x2``, ``mean var`` (their average) and ``cov x1,x2``.
    """
    methods = list(dict.fromkeys(method for _, method in fits))
    columns = {}
    for method in methods:
        if (first, method) not in fits or (second, method) not in fits:
            raise ValueError(f"fits needs ({first!r}, {method!r}) and ({second!r}, {method!r})")
        shift = (as_parameters(fits[(second, method)], "fits").covariances
                 - as_parameters(fits[(first, method)], "fits").covariances)
        for entry, values in (("var x1", shift[:, 0, 0]), ("var x2", shift[:, 1, 1]),
                              ("mean var", 0.5 * (shift[:, 0, 0] + shift[:, 1, 1])),
                              ("cov x1,x2", shift[:, 0, 1])):
            columns[(method, entry)] = np.append(values, values.mean())
    K = len(next(iter(columns.values()))) - 1
    return pd.DataFrame(columns, index=pd.Index(
        [class_name(k, names) for k in range(K)] + ["mean"], name="class"))


def accuracy_on_rows(y_true, y_pred, rows):
    """Accuracy after label matching, counted over a subset of the points only.

    The labels are matched to the classes on all points (as in ``clustering_scores``); then the
    share of ``rows`` whose matched label is right is returned.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (N,)
    rows : array-like of shape (N,), bool
        The points to count (at least one).

    Returns
    -------
    float
    """
    y_true, y_pred = check_labels(y_true, y_pred)
    rows = np.asarray(rows)
    if rows.shape != y_true.shape or rows.dtype != bool or not rows.any():
        raise ValueError(f"rows must be a boolean mask of shape {y_true.shape} selecting at "
                         "least one point")
    return float(np.mean(match_labels(y_true, y_pred)[rows] == y_true[rows]))


def interval_misses(errors, ses, level=0.95):
    """Count the normal intervals ``error +- z SE`` that miss zero, and what chance predicts.

    With ``n`` intervals at coverage ``level``, about ``n (1 - level)`` miss zero by chance even
    when every estimate is unbiased. The tail probability treats the intervals as independent,
    which estimates of one fit are not (weights sum to one, for instance): read it as a rough
    guide.

    Parameters
    ----------
    errors, ses : array-like of the same shape
        Estimate minus truth, and the standard errors (positive).
    level : float, default 0.95

    Returns
    -------
    dict
        ``intervals`` (n), ``missing zero`` (count), ``expected by chance`` (``n (1 - level)``)
        and ``P(at least as many)`` (binomial upper tail under independence).
    """
    from scipy.stats import binom, norm

    errors = np.asarray(errors, dtype=float).ravel()
    ses = np.asarray(ses, dtype=float).ravel()
    if errors.shape != ses.shape or errors.size == 0:
        raise ValueError(f"errors and ses must have the same non-empty shape, got "
                         f"{np.shape(errors)} and {np.shape(ses)}")
    if not (np.all(np.isfinite(errors)) and np.all(np.isfinite(ses)) and np.all(ses > 0)):
        raise ValueError("errors must be finite and ses finite and positive")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)) \
            or not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    z = norm.ppf(0.5 + level / 2)
    misses = int(np.sum(np.abs(errors) > z * ses))
    n = errors.size
    return {"intervals": n, "missing zero": misses, "expected by chance": n * (1 - level),
            "P(at least as many)": float(binom.sf(misses - 1, n, 1 - level))}
