"""Tables for the simulation notebooks (questions 1-5): both scans, their truth, the fits.

- ``load_images``, ``load_truth`` (``data/truth.json``), ``true_parameters``, ``missing_table``;
- ``fit_hard_and_soft`` (both EM variants from one start), ``parameter_table``,
  ``scores_table``, ``confusion_table``, ``position_along``;
- the comparison of the two scans (question 5): ``image_comparison_table``,
  ``total_variance_table``, ``covariance_shift_table``, ``bayes_accuracy``,
  ``accuracy_on_rows``;
- ``Parameters`` (means, covariances, weights) with ``as_parameters`` and ``class_name``, which
  ``emlab.bootstrap`` shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from em_helpers import (
    CLASS_NAMES,
    align_to_truth,
    clustering_scores,
    e_step_soft,
    load_image,
    m_step,
    match_labels,
    one_hot,
    run_em,
)
from emlab.validation import check_covariances, check_labels, check_means, check_points

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


PARAMETER_NAMES = ("mean x1", "mean x2", "var x1", "var x2", "cov x1,x2", "weight")


@dataclass(frozen=True)
class Parameters:
    """Mixture parameters (or their standard errors): ``means`` (K, d), ``covariances``
    (K, d, d), ``weights`` (K,)."""

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray


def load_images(names=("Image1", "Image2"), data_dir=None, n_components=3):
    """Load several scans with ``load_image``.

    Parameters
    ----------
    names : sequence of str, default ("Image1", "Image2")
        File stems: ``<data_dir>/<name>.csv``.
    data_dir : str or path-like, optional
        Default: the ``data`` folder next to this module.
    n_components : int, default 3

    Returns
    -------
    dict
        ``name -> (X, y)``, in the order of ``names``; ``X`` (N, 2) with ``NaN`` for missing
        cells, ``y`` (N,) the true classes.
    """
    if isinstance(names, str) or len(names) == 0:
        raise ValueError(f"names must be a non-empty sequence of file stems, got {names!r}")
    data_dir = DATA_DIR if data_dir is None else Path(data_dir)
    return {name: load_image(data_dir / f"{name}.csv", n_components) for name in names}


def load_truth(path=None):
    """Read ``truth.json``: the generating parameters of the scans.

    Parameters
    ----------
    path : str or path-like, optional
        Default: ``data/truth.json`` next to this module.

    Returns
    -------
    dict
        The JSON record; it has at least ``class_names``, ``means`` (K x d) and
        ``covariances`` (image name -> K x d x d).
    """
    import json

    path = DATA_DIR / "truth.json" if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected the truth.json record)")
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from None
    missing = [key for key in ("class_names", "means", "covariances") if key not in truth]
    if not isinstance(truth, dict) or missing:
        raise ValueError(f"{path}: missing keys {missing}; expected class_names, means and "
                         "covariances (one entry per image)")
    return truth


def true_parameters(truth, image):
    """The generating parameters of one scan as arrays.

    Parameters
    ----------
    truth : dict
        As returned by ``load_truth``.
    image : str
        A key of ``truth["covariances"]``, e.g. ``"Image1"``.

    Returns
    -------
    Parameters
        ``means`` (K, d), ``covariances`` (K, d, d) and ``weights`` (K,): every class has the
        same number of points, so each weight is ``1 / K``.
    """
    covariances = truth["covariances"]
    if image not in covariances:
        raise ValueError(f"image must be one of {sorted(covariances)}, got {image!r}")
    means = check_means(truth["means"], len(truth["means"][0]), "truth['means']")
    K, d = means.shape
    covs = check_covariances(covariances[image], K, d, f"truth['covariances'][{image!r}]")
    return Parameters(means, covs, np.full(K, 1.0 / K))


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


def class_name(k, names):
    return names[k] if k < len(names) else f"class {k}"


def as_parameters(params, name):
    """Read means, covariances and weights from any object that has them as attributes."""
    try:
        means = np.asarray(params.means, dtype=float)
        covs = np.asarray(params.covariances, dtype=float)
        weights = np.asarray(params.weights, dtype=float)
    except AttributeError:
        raise ValueError(f"{name} must have means, covariances and weights attributes "
                         f"(an EMResult, MStepResult or Parameters), got {type(params).__name__}"
                         ) from None
    K = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or covs.shape != (K, means.shape[1], means.shape[1]) or \
            weights.shape != (K,):
        raise ValueError(f"{name}: inconsistent shapes means {means.shape}, covariances "
                         f"{covs.shape}, weights {weights.shape}; expected (K, d), (K, d, d), (K,)")
    return Parameters(means, covs, weights)


def _flatten_parameters(params):
    """(K, 6) array: mean x1, mean x2, var x1, var x2, cov x1,x2, weight for each component."""
    return np.column_stack([params.means[:, 0], params.means[:, 1],
                            params.covariances[:, 0, 0], params.covariances[:, 1, 1],
                            params.covariances[:, 0, 1], params.weights])


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


def fit_hard_and_soft(X, init, y=None, max_iter=500, tol=1e-6):
    """Hard EM (the statement's algorithm) from ``init``, then soft EM from the hard fit.

    Starting the full Gaussian mixture from the converged hard (k-means) solution is the usual
    fixed start (scikit-learn's ``GaussianMixture`` does the same by default). BLAS is limited
    to one thread meanwhile: on these tiny problems extra threads only add overhead.

    Parameters
    ----------
    X : array-like of shape (N, d)
    init : array of shape (K, d) or dict
        Start of the hard run (see ``run_em``).
    y : array-like of shape (N,), optional
        True classes; when given both fits are aligned to them (``align_to_truth``).
    max_iter, tol
        Passed to ``run_em``.

    Returns
    -------
    dict
        ``{"hard": EMResult, "soft": EMResult}``.
    """
    from threadpoolctl import threadpool_limits

    X = check_points(X)
    n_components = len(init["means"]) if isinstance(init, dict) else len(np.asarray(init))
    with threadpool_limits(limits=1, user_api="blas"):
        hard = run_em(X, n_components, method="hard", init=init, max_iter=max_iter, tol=tol)
        start = {"means": hard.means, "covariances": hard.covariances, "weights": hard.weights}
        soft = run_em(X, n_components, method="soft", init=start, max_iter=max_iter, tol=tol)
    if y is not None:
        hard, soft = align_to_truth(hard, y), align_to_truth(soft, y)
    return {"hard": hard, "soft": soft}


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


def bayes_accuracy(X, y, params):
    """Share of points that the Bayes rule with the given (true) parameters classifies right.

    The rule assigns ``x`` to ``argmax_k pi_k N(x; mu_k, Sigma_k)`` (missing cells marginalised
    out). With the generating parameters it is the best any classifier can do on average, so its
    errors measure how much the classes overlap, whatever the fitting method.

    Parameters
    ----------
    X : array-like of shape (N, d)
    y : array-like of shape (N,)
        True classes, numbered like the components of ``params``.
    params : Parameters
        E.g. ``true_parameters(truth, image)``.

    Returns
    -------
    float
    """
    params = as_parameters(params, "params")
    R, _ = e_step_soft(X, params.means, params.covariances, params.weights)
    y = np.asarray(y)
    if y.shape != (R.shape[1],):
        raise ValueError(f"y must have shape ({R.shape[1]},), got {y.shape}")
    return float(np.mean(np.argmax(R, axis=0) == y))


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
