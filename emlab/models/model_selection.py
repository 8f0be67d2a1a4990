"""How many components, and which covariance model: BIC, AIC and ICL over a grid of fits.

scikit-learn's ``GaussianMixture`` gives ``bic()`` for one fitted model and leaves the search to
the user; R's mclust tabulates BIC over the number of components and the covariance model and
picks the best. This module does the same for our EM (``em_helpers.run_em``):

- ``n_parameters``: free parameters of a mixture (scikit-learn's ``_n_parameters`` formulas);
- ``information_criteria``: log-likelihood, BIC, AIC and ICL of one soft-EM fit;
- ``collapsed_components``: the components of a fit that have collapsed (degenerate fits);
- ``select_model``: the table of criteria over ``n_components`` x ``covariance_type``;
- ``best_model``: the row a criterion picks, skipping degenerate fits;
- tables of a grid for notebook 06: ``criteria_table``, ``choices``, ``collapsed_table``,
  ``bic_gains``, ``component_table``.

Signs: lower is better, as in scikit-learn (``bic = -2 l + p ln N``). mclust reports the
opposite sign (``BIC_mclust = 2 l - p ln N``, higher is better): compare ``-bic`` with its tables.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import em_helpers as em
from emlab.engine.covariance import COVARIANCE_TYPES, check_covariance_type, n_covariance_parameters
from emlab.engine.validation import check_int, check_nonnegative, check_points, check_resp

CRITERIA = ("bic", "aic", "icl")
COLUMNS = ("log_likelihood", "n_parameters", "bic", "aic", "icl", "converged", "degenerate")


def n_parameters(n_components, n_features, covariance_type="full"):
    """Free parameters of a K-component Gaussian mixture in d dimensions.

    ``K d`` means, ``K - 1`` weights and the covariances' share
    (``emlab.engine.covariance.n_covariance_parameters``: full ``K d (d + 1) / 2``, tied
    ``d (d + 1) / 2``, diag ``K d``, spherical ``K``), as scikit-learn's ``_n_parameters``.

    Returns
    -------
    int
    """
    K = check_int(n_components, "n_components", minimum=1)
    d = check_int(n_features, "n_features", minimum=1)
    return K * d + K - 1 + n_covariance_parameters(K, d, check_covariance_type(covariance_type))


def responsibility_entropy(resp):
    """``E = -sum_n sum_k r_nk ln r_nk`` (with ``0 ln 0 = 0``) of responsibilities (K, N)."""
    if np.ndim(resp) != 2:
        raise ValueError(f"resp must have shape (K, N), got {np.shape(resp)}")
    resp = check_resp(resp, np.shape(resp)[1], "resp")
    positive = resp > 0
    return float(-np.sum(resp[positive] * np.log(resp[positive])))


def _check_soft_result(X, result):
    """X as an array and the fit's parameters checked against it (hard EM refused)."""
    if not isinstance(result, em.EMResult):
        raise ValueError(f"result must be an EMResult (from em_helpers.run_em), got "
                         f"{type(result).__name__}")
    if result.method != "soft":
        raise ValueError(
            "result is a hard-EM fit: its E-step is nearest-mean, so it maximises no "
            "likelihood and BIC/AIC/ICL do not apply to it (its sum of squares is the "
            "classification likelihood of equal spherical classes only); refit with "
            "method='soft'")
    X = check_points(X)
    if X.shape[1] != result.means.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns but result was fitted on "
                         f"{result.means.shape[1]}")
    if result.resp.shape[1] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but result was fitted on "
                         f"{result.resp.shape[1]}")
    return X


def information_criteria(X, result):
    """Log-likelihood, number of parameters, BIC, AIC and ICL of a soft-EM fit.

    With ``l`` the log-likelihood of the *observed* cells (a missing cell is integrated out:
    a row observed on ``o`` contributes ``ln sum_k pi_k N(x_o; mu_ko, Sigma_koo)``), ``p`` the
    free parameters (``n_parameters``) and ``N`` the rows of ``X``:

    * ``bic = -2 l + p ln N`` (Schwarz), ``aic = -2 l + 2 p`` (Akaike);
    * ``icl = bic + 2 E``, with ``E = -sum_n sum_k r_nk ln r_nk`` the entropy of the
      responsibilities (McLachlan and Peel's ICL-BIC): BIC plus a penalty for overlapping
      classes; ``icl >= bic``, with equality when every point belongs to one class for sure.

    Lower is better (scikit-learn's sign). mclust reports ``BIC = 2 l - p ln N`` (higher is
    better), i.e. ``-bic``; its ICL is also of the opposite sign and uses the MAP
    classification (``2 sum_n ln max_k r_nk``) in place of ``-2 E``.

    Parameters
    ----------
    X : array-like of shape (N, d)
        The data the fit was made on (``NaN`` for a missing cell).
    result : EMResult
        A fit of ``run_em(..., method="soft")``; its ``covariance_type`` sets ``p``.

    Returns
    -------
    dict
        ``log_likelihood``, ``n_parameters`` (int), ``bic``, ``aic``, ``icl`` (floats).

    Raises
    ------
    ValueError
        For a hard-EM fit (it maximises no likelihood: refit with ``method="soft"``), or when
        ``X`` does not have the fit's shape.
    """
    X = _check_soft_result(X, result)
    resp, log_lik = em.e_step_soft(X, result.means, result.covariances, result.weights)
    if not np.isfinite(log_lik):
        raise ValueError("the fit's log-likelihood on X is not finite")
    K, d = result.means.shape
    p = n_parameters(K, d, result.covariance_type)
    bic = -2.0 * log_lik + p * np.log(X.shape[0])
    return {"log_likelihood": float(log_lik), "n_parameters": p, "bic": float(bic),
            "aic": float(-2.0 * log_lik + 2.0 * p),
            "icl": float(bic + 2.0 * responsibility_entropy(resp))}


def collapsed_components(result, reg_covar=1e-6, factor=10.0):
    """The components of a fit that have collapsed: a degenerate fit has at least one.

    A component has collapsed when its covariance has an eigenvalue below ``factor *
    reg_covar`` (it sits on a point, a line or, for data on a grid, a single value of one
    coordinate, where the likelihood grows without bound but for ``reg_covar``), or when it
    holds less than ``d + 1`` points' worth of weight (too few to estimate a d-dimensional
    Gaussian). As for ``run_em``, ``reg_covar`` must be small against the data's variances
    (rescale data whose spread is near 1e-5 or below).

    Parameters
    ----------
    result : EMResult
    reg_covar : float, default 1e-6
        The ``reg_covar`` of the fit.
    factor : float, default 10.0

    Returns
    -------
    ndarray of int
        The indices of the collapsed components (empty if none).
    """
    if not isinstance(result, em.EMResult):
        raise ValueError(f"result must be an EMResult, got {type(result).__name__}")
    reg_covar = check_nonnegative(reg_covar, "reg_covar")
    factor = check_nonnegative(factor, "factor")
    N, d = result.resp.shape[1], result.means.shape[1]
    smallest = np.linalg.eigvalsh(result.covariances)[:, 0]
    thin = smallest <= factor * reg_covar
    light = result.weights * N < d + 1
    return np.flatnonzero(thin | light)


def _check_grid(n_components, covariance_type):
    """The grid's K values (a sorted tuple of ints) and covariance types (a tuple)."""
    if isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool):
        n_components = [n_components]
    try:
        ks = [check_int(k, "n_components", minimum=1) for k in n_components]
    except TypeError:
        raise ValueError(f"n_components must be an integer or a sequence of integers, got "
                         f"{n_components!r}") from None
    if not ks:
        raise ValueError("n_components is empty: give at least one number of components")
    try:
        types = [covariance_type] if isinstance(covariance_type, str) else list(covariance_type)
    except TypeError:
        raise ValueError(f"covariance_type must be a str or a sequence of str, got "
                         f"{covariance_type!r}") from None
    if not types:
        raise ValueError(f"covariance_type is empty: give some of {COVARIANCE_TYPES}")
    types = [check_covariance_type(t) for t in types]
    for name, values in (("n_components", ks), ("covariance_type", types)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has repeated values: {values}")
    return tuple(sorted(ks)), tuple(types)


def _check_supported(X, ks, types):
    """A clear error for a K that X cannot support (before any fitting)."""
    complete = X[~np.isnan(X).any(axis=1)]
    n_distinct = np.unique(complete, axis=0).shape[0]
    n_observed = int(np.count_nonzero(~np.isnan(X)))
    for k in ks:
        if k > n_distinct:
            raise ValueError(f"n_components={k} is more than the {n_distinct} distinct complete "
                             "rows of X: the data cannot support that many components")
        for t in types:
            p = n_parameters(k, X.shape[1], t)
            if p >= n_observed:
                raise ValueError(
                    f"n_components={k} with covariance_type={t!r} has {p} free parameters, "
                    f"not fewer than the {n_observed} observed values of X")


def _fit_one(X, k, t, fit_options):
    """One soft-EM fit of the grid; (EMResult, converged)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", em.EMConvergenceWarning)
        try:
            result = em.run_em(X, k, method="soft", covariance_type=t, **fit_options)
        except ValueError as exc:
            raise ValueError(f"the fit with covariance_type={t!r}, n_components={k} failed: "
                             f"{exc}") from exc
    others = [w for w in caught if not issubclass(w.category, em.EMConvergenceWarning)]
    for w in others:  # pass on anything that is not the expected convergence warning
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, result.converged


def select_model(X, n_components=range(1, 7), covariance_type=("full",), n_init=5,
                 random_state=0, init="kmeans++", max_iter=300, tol=1e-6, reg_covar=1e-6,
                 return_fits=False):
    """BIC, AIC and ICL of soft EM over numbers of components and covariance models.

    Each cell of the grid is ``run_em(X, K, method="soft", covariance_type=t, init=init,
    n_init=n_init, random_state=random_state, ...)`` (the best of ``n_init`` seeded starts),
    scored by ``information_criteria``; ``collapsed_components`` marks degenerate fits, which
    ``best_model`` never picks (mclust reports them as missing).

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell (integrated out of the likelihood).
    n_components : int or sequence of int, default range(1, 7)
    covariance_type : str or sequence of str, default ("full",)
        Among "full", "tied", "diag", "spherical" (``emlab.engine.covariance``).
    n_init : int, default 5
    random_state : int, default 0
        Seed of the starts (the same for every cell of the grid).
    init : {"kmeans++", "random"}, default "kmeans++"
    max_iter, tol, reg_covar
        As in ``run_em``; a fit that stops at ``max_iter`` has ``converged`` False.
    return_fits : bool, default False
        Also return the fits.

    Returns
    -------
    table : pandas.DataFrame
        Indexed by (``covariance_type``, ``n_components``), in the order given and by
        increasing K; columns ``log_likelihood``, ``n_parameters``, ``bic``, ``aic``, ``icl``
        (lower is better), ``converged`` and ``degenerate`` (bools).
    fits : dict, only if ``return_fits``
        ``(covariance_type, n_components) -> EMResult``.

    Raises
    ------
    ValueError
        For a bad argument, for a K larger than the data support (more than the distinct
        complete rows, or as many free parameters as observed values), checked before any
        fitting, or when a fit fails (the message names the cell).
    """
    X = check_points(X)
    ks, types = _check_grid(n_components, covariance_type)
    n_init = check_int(n_init, "n_init", minimum=1)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    if not isinstance(init, str):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    if not isinstance(return_fits, (bool, np.bool_)):
        raise ValueError(f"return_fits must be True or False, got {return_fits!r}")
    _check_supported(X, ks, types)
    options = {"init": init, "n_init": n_init, "random_state": random_state,
               "max_iter": max_iter, "tol": tol, "reg_covar": reg_covar}
    rows, fits = {}, {}
    for t in types:
        for k in ks:
            result, converged = _fit_one(X, k, t, options)
            scores = information_criteria(X, result)
            degenerate = collapsed_components(result, reg_covar).size > 0
            rows[(t, k)] = {**scores, "converged": converged, "degenerate": bool(degenerate)}
            fits[(t, k)] = result
    table = pd.DataFrame.from_dict(rows, orient="index")[list(COLUMNS)]
    table.index = pd.MultiIndex.from_tuples(table.index,
                                            names=["covariance_type", "n_components"])
    return (table, fits) if return_fits else table


def best_model(table, criterion="bic"):
    """The (covariance_type, n_components) with the lowest ``criterion``, degenerate fits
    skipped.

    Values within rounding (1e-9 relative) of the lowest count as ties, which go to the model
    with the fewest parameters, then to the first row: in one dimension "full", "diag" and
    "spherical" are the same model and must not be told apart by the last digit.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by ``select_model``.
    criterion : {"bic", "aic", "icl"}, default "bic"

    Returns
    -------
    tuple (str, int)

    Raises
    ------
    ValueError
        For an unknown criterion, a table without the columns of ``select_model``, or when
        every fit is degenerate.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    _check_table(table, (criterion, "degenerate", "n_parameters"))
    usable = table.loc[~table["degenerate"].astype(bool)]
    if usable.empty:
        raise ValueError("every fit in the table is degenerate: nothing to choose")
    values = usable[criterion].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(f"table's {criterion!r} column has a missing or infinite value")
    lowest = values.min()
    ties = usable[values <= lowest + 1e-9 * max(abs(lowest), 1.0)]
    order = np.argsort(ties["n_parameters"].to_numpy(), kind="stable")
    t, k = ties.index[order[0]]
    return str(t), int(k)


# Tables of a grid, for the model-choice notebook ---------------------------------------------

def _check_table(table, columns):
    if not isinstance(table, pd.DataFrame) or not set(columns) <= set(table):
        raise ValueError(f"table must be the DataFrame of select_model (with columns "
                         f"{sorted(columns)})")


def criteria_table(table, criteria=("bic", "icl"), decimals=1):
    """The criteria per K (rows) and covariance model (columns), rounded.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by ``select_model``.
    criteria : sequence of {"bic", "aic", "icl"}, default ("bic", "icl")
    decimals : int, default 1

    Returns
    -------
    pandas.DataFrame
        Indexed by ``n_components``; columns (criterion, covariance_type).
    """
    _check_table(table, criteria)
    return table[list(criteria)].unstack(level=0).round(check_int(decimals, "decimals"))


def choices(table, criteria=CRITERIA):
    """What each criterion picks (``best_model``, degenerate fits skipped).

    Returns
    -------
    pandas.DataFrame
        One row per criterion (upper case), columns ``covariance_type`` and ``K``.
    """
    return pd.DataFrame({c.upper(): dict(zip(["covariance_type", "K"], best_model(table, c)))
                         for c in criteria}).T


def collapsed_table(table, fits, X):
    """One row per collapsed component of a degenerate fit, and one per fit that did not
    converge, so that a reader sees why a row of the grid was set aside.

    Parameters
    ----------
    table, fits : the two results of ``select_model(..., return_fits=True)``
    X : array-like of shape (N, d)
        The data of the grid.

    Returns
    -------
    pandas.DataFrame
        Indexed by (covariance_type, n_components, component; -1 for a fit that did not
        converge); columns ``converged``, ``points' worth of weight``, ``smallest
        eigenvalue``, ``distinct values it owns`` and ``BIC``.
    """
    _check_table(table, ("bic", "converged", "degenerate"))
    if not isinstance(fits, dict):
        raise ValueError(f"fits must be the dict of select_model(..., return_fits=True), got "
                         f"{type(fits).__name__}")
    X = check_points(X)
    rows = {}
    for key in table.index[table["degenerate"] | ~table["converged"]]:
        if key not in fits:
            raise ValueError(f"fits has no fit for {key}: pass the fits of the same grid")
        fit = fits[key]
        for k in collapsed_components(fit):
            rows[(*key, int(k))] = {
                "converged": bool(table.loc[key, "converged"]),
                "points' worth of weight": round(float(fit.weights[k] * len(X)), 1),
                "smallest eigenvalue": f"{np.linalg.eigvalsh(fit.covariances[k])[0]:.1e}",
                "distinct values it owns": len(np.unique(X[fit.labels == k], axis=0)),
                "BIC": round(float(table.loc[key, "bic"]), 1)}
        if not table.loc[key, "degenerate"]:
            rows[(*key, -1)] = {"converged": False}
    index = pd.MultiIndex.from_tuples(list(rows), names=[*table.index.names, "component"])
    return pd.DataFrame(list(rows.values()), index=index,
                        columns=["converged", "points' worth of weight", "smallest eigenvalue",
                                 "distinct values it owns", "BIC"])


def bic_gains(table, n_points, up_to, covariance_type="full"):
    """The log-likelihood each extra component buys, against BIC's price for it.

    Going from K to K + 1 components lowers BIC when the gain in log-likelihood exceeds
    ``(p_{K+1} - p_K) ln N / 2``.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by ``select_model``.
    n_points : int
        N, the number of points of the grid.
    up_to : int
        The largest K shown.
    covariance_type : str, default "full"

    Returns
    -------
    pandas.DataFrame
        Rows ``"K = a -> b"``; columns ``gain in log-likelihood`` and ``BIC's price``,
        rounded to 0.1.
    """
    _check_table(table, ("log_likelihood", "n_parameters"))
    n_points = check_int(n_points, "n_points", minimum=1)
    if covariance_type not in table.index.get_level_values(0):
        raise ValueError(f"table has no {covariance_type!r} rows")
    rows = table.loc[covariance_type].loc[1:check_int(up_to, "up_to", minimum=2)]
    price = 0.5 * np.diff(rows["n_parameters"].to_numpy()) * np.log(n_points)
    return pd.DataFrame({"gain in log-likelihood": np.diff(rows["log_likelihood"]).round(1),
                         "BIC's price": price.round(1)},
                        index=[f"K = {a} -> {b}" for a, b in zip(rows.index[:-1], rows.index[1:])])


def component_table(result):
    """Mean, standard deviation and weight of each component of a 1-D fit, by increasing mean.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``component`` (1, 2, ...).
    """
    if not isinstance(result, em.EMResult):
        raise ValueError(f"result must be an EMResult, got {type(result).__name__}")
    if result.means.shape[1] != 1:
        raise ValueError(f"component_table is for 1-D fits; this one has d = "
                         f"{result.means.shape[1]}")
    order = np.argsort(result.means[:, 0])
    return pd.DataFrame({"mean": result.means[order, 0],
                         "sd": np.sqrt(result.covariances[order, 0, 0]),
                         "weight": result.weights[order]},
                        index=pd.RangeIndex(1, len(order) + 1, name="component"))
