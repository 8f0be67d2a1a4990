"""Filling in missing cells under a fitted Gaussian mixture, and scoring imputers.

- ``impute``: conditional means (and, with ``return_std``, conditional standard deviations) of
  the missing cells given the observed ones, mixed over the components by the responsibilities
  (soft EM) or taken from the assigned component (hard EM);
- ``compare_imputers``: ours against scikit-learn's ``SimpleImputer``, ``KNNImputer`` and
  ``IterativeImputer`` on the same cells;
- ``mcar_mask``, ``imputation_rmse``, ``interval_coverage``: hiding cells at random and scoring
  what was filled in.
"""

from __future__ import annotations

import numpy as np

from em_helpers import (
    EMResult,
    conditional_fill,
    nearest_mean,
    one_hot,
    run_em,
    soft_responsibilities,
)
from emlab.engine.validation import (
    check_covariances,
    check_int,
    check_means,
    check_points,
    check_positive,
    check_weights,
    cholesky,
    missing_patterns,
)


def _check_fitted(result, d):
    """The fitted means, covariances and weights of ``result``, checked against ``d``."""
    if not isinstance(result, EMResult):
        raise ValueError(f"result must be an EMResult returned by run_em, got "
                         f"{type(result).__name__}")
    if result.method not in ("hard", "soft"):
        raise ValueError(f"result.method must be 'hard' or 'soft', got {result.method!r}")
    fitted_d = np.shape(result.means)[-1] if np.ndim(result.means) == 2 else None
    if fitted_d != d:
        raise ValueError(f"X has {d} columns but result was fitted on {fitted_d}-dimensional "
                         "points; impute needs the same coordinates as the fit")
    means = check_means(result.means, d, "result.means")
    K = means.shape[0]
    covariances = check_covariances(result.covariances, K, d, "result.covariances")
    cholesky(covariances)
    weights = check_weights(result.weights, K, "result.weights")
    return means, covariances, weights


def _imputation_weights(X, means, covariances, weights, method):
    """Weight of each component in each row's imputation, (K, N).

    Soft: the posterior responsibilities given the row's observed cells only (missing cells
    marginalised out). Hard: one-hot on the component the hard E-step assigns (nearest mean
    over the observed cells). Rows with nothing observed get the mixing weights in both cases.
    """
    empty = np.isnan(X).all(axis=1)
    if method == "soft":
        # rows with nothing observed: R = weights already
        R, _ = soft_responsibilities(X, means, covariances, weights)
    else:
        labels, _ = nearest_mean(X, means)
        R = one_hot(labels, means.shape[0]).astype(float)
    R[:, empty] = weights[:, None]
    return R


def _component_conditionals(X_rows, obs, means, covariances):
    """Per-component conditional means (K, n, d) and variances (K, d) for one pattern.

    Component ``k`` gives ``E[x | x_o, k]`` (observed cells unchanged) and the diagonal of
    ``Cov[x | x_o, k]`` (0 on observed coordinates), by ``conditional_fill``.
    """
    K, d = means.shape
    cond_means = np.empty((K,) + X_rows.shape)
    cond_vars = np.empty((K, d))
    for k in range(K):
        cond_means[k], cond_cov = conditional_fill(X_rows, obs, means[k], covariances[k])
        cond_vars[k] = np.diag(cond_cov)
    return cond_means, cond_vars


def _mix_conditionals(R_rows, cond_means, cond_vars):
    """Mixture mean (n, d) and variance (n, d) by the law of total variance.

    ``E[x] = sum_k r_k m_k`` and ``Var[x] = sum_k r_k (v_k + (m_k - E[x])^2)``: the expected
    within-component variance plus the variance of the component means.
    """
    mean = np.einsum("kn,knd->nd", R_rows, cond_means)
    spread = (cond_means - mean[None]) ** 2
    var = np.einsum("kn,kd->nd", R_rows, cond_vars) + np.einsum("kn,knd->nd", R_rows, spread)
    return mean, var


def impute(X, result, return_std=False):
    """Fill every missing cell with its conditional expectation under a fitted mixture.

    For a row observed on the coordinates ``o`` and missing on ``m``, component ``k`` predicts

    ``E[x_m | x_o, k] = mu_km + Sigma_k,mo Sigma_k,oo^-1 (x_o - mu_ko)`` and
    ``Cov[x_m | x_o, k] = Sigma_k,mm - Sigma_k,mo Sigma_k,oo^-1 Sigma_k,om``.

    ``result.method == "soft"``: the imputed value is ``sum_k r_k E[x_m | x_o, k]`` with
    ``r_k = p(z = k | x_o)``, the responsibilities computed from the observed cells only.
    ``result.method == "hard"``: the imputed value is ``E[x_m | x_o, k*]`` for the component
    ``k*`` that the hard E-step assigns (nearest mean over the observed cells). A row with
    nothing observed gets the mixture mean ``sum_k pi_k mu_k`` in both cases.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell; any pattern is accepted, including rows (or columns) with
        nothing observed. Observed cells must be finite.
    result : EMResult
        A mixture fitted by ``run_em`` on ``d``-dimensional points (not necessarily on ``X``).
    return_std : bool, default False
        Also return the conditional standard deviation of every cell.

    Returns
    -------
    X_imputed : ndarray of shape (N, d)
        A new array: observed cells copied unchanged, missing cells filled.
    std : ndarray of shape (N, d)
        Only with ``return_std=True``. ``0`` for observed cells; for a missing cell the square
        root of its conditional variance: by the law of total variance
        ``sum_k r_k (Var[x_j | x_o, k] + (E[x_j | x_o, k] - E[x_j | x_o])^2)`` (soft, and
        rows with nothing observed, where ``r = pi`` and this is the marginal spread of the
        mixture), or ``Var[x_j | x_o, k*]`` (hard).

    Raises
    ------
    ValueError
        If ``X`` is not a numeric 2-D array or holds an infinite value, if ``result`` is not
        an ``EMResult``, was fitted on another number of coordinates or holds invalid
        parameters, or if ``return_std`` is not a bool.
    """
    if not isinstance(return_std, (bool, np.bool_)):
        raise ValueError(f"return_std must be True or False, got {return_std!r}")
    X = check_points(X, allow_empty_columns=True)
    means, covariances, weights = _check_fitted(result, X.shape[1])
    X_imputed = X  # already a private copy
    std = np.zeros_like(X)
    if np.isnan(X).any():
        R = _imputation_weights(X, means, covariances, weights, result.method)
        for obs, rows in missing_patterns(X):
            if obs.all():
                continue
            cond_means, cond_vars = _component_conditionals(X[rows], obs, means, covariances)
            mean, var = _mix_conditionals(R[:, rows], cond_means, cond_vars)
            mis = np.flatnonzero(~obs)
            X_imputed[np.ix_(rows, mis)] = mean[:, mis]
            std[np.ix_(rows, mis)] = np.sqrt(np.maximum(var[:, mis], 0.0))
    return (X_imputed, std) if return_std else X_imputed


IMPUTER_NAMES = ("soft EM", "hard EM", "mean (SimpleImputer)", "KNNImputer", "IterativeImputer")


def compare_imputers(X, n_components=3, n_init=3, random_state=0, max_iter=500):
    """Fill in ``X`` five ways: our soft and hard EM imputation and three scikit-learn baselines.

    The EM fits use ``run_em(X, n_components, method, init="kmeans++", n_init, max_iter,
    random_state)``; the baselines are ``SimpleImputer(strategy="mean")``, ``KNNImputer()`` and
    ``IterativeImputer(random_state=random_state)`` with their default settings.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell.
    n_components, n_init, random_state, max_iter : int
        Passed to ``run_em`` (``random_state`` also to ``IterativeImputer``).

    Returns
    -------
    fits : dict
        ``{"soft": EMResult, "hard": EMResult}``.
    filled : dict
        ``{name: (X_filled, std)}`` for every name of ``IMPUTER_NAMES``, in that order;
        ``X_filled`` has shape (N, d); ``std`` is ``impute``'s standard deviation (N, d) for the
        EM methods and ``None`` for the baselines.
    """
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    X = check_points(X)
    fits = {method: run_em(X, n_components, method=method, init="kmeans++", n_init=n_init,
                           max_iter=max_iter, random_state=random_state)
            for method in ("soft", "hard")}
    filled = {f"{method} EM": impute(X, fit, return_std=True) for method, fit in fits.items()}
    baselines = (SimpleImputer(strategy="mean"), KNNImputer(),
                 IterativeImputer(random_state=random_state))
    for name, imputer in zip(IMPUTER_NAMES[2:], baselines):
        filled[name] = (imputer.fit_transform(X), None)
    return fits, filled


def _check_mask(mask, shape, name="mask"):
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"{name} must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name} selects no cell; nothing to score")
    return mask


def _check_scored(X, shape, mask, name):
    """A float copy of X with the same shape as the reference and finite on ``mask``."""
    try:
        X = np.array(X, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if X.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {X.shape}")
    if not np.isfinite(X[mask]).all():
        raise ValueError(f"{name} has NaN or infinite values in the scored cells")
    return X


def mcar_mask(shape, rate, random_state=0):
    """A seeded missing-completely-at-random mask that leaves every row one observed cell.

    ``round(rate * N * d)`` cells are removed: the cells are visited in a random order and a
    cell is taken unless it is the last observed cell of its row.

    Parameters
    ----------
    shape : tuple (N, d)
    rate : float
        Fraction of all cells to remove, ``0 <= rate <= (d - 1) / d``.
    random_state : int, default 0

    Returns
    -------
    mask : ndarray of shape (N, d), bool
        ``True`` for a removed cell.
    """
    if (not isinstance(shape, tuple) or len(shape) != 2
            or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape)):
        raise ValueError(f"shape must be a tuple (N, d) of positive integers, got {shape!r}")
    N, d = int(shape[0]), int(shape[1])
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) \
            or not np.isfinite(rate):
        raise ValueError(f"rate must be a number between 0 and 1, got {rate!r}")
    n_missing = int(round(rate * N * d))
    if rate < 0 or n_missing > N * (d - 1):
        raise ValueError(f"rate must be between 0 and (d - 1) / d = {(d - 1) / d:.4g} so that "
                         f"every row keeps an observed cell, got {rate!r}")
    random_state = check_int(random_state, "random_state", minimum=0)
    rng = np.random.default_rng(random_state)
    mask = np.zeros(N * d, dtype=bool)
    left_in_row = np.full(N, d)
    taken = 0
    for cell in rng.permutation(N * d):
        if taken == n_missing:
            break
        row = cell // d
        if left_in_row[row] > 1:
            mask[cell] = True
            left_in_row[row] -= 1
            taken += 1
    return mask.reshape(N, d)


def imputation_rmse(X_imputed, X_complete, mask, per_coordinate=False):
    """Root-mean-square error of the imputed cells against the true values.

    Parameters
    ----------
    X_imputed, X_complete : array-like of shape (N, d)
        The filled-in data and the truth; both must be finite on ``mask``.
    mask : array-like of shape (N, d), bool
        The cells that were missing (the only ones scored).
    per_coordinate : bool, default False
        Return one RMSE per coordinate instead of the overall RMSE.

    Returns
    -------
    rmse : float, or ndarray of shape (d,) with ``per_coordinate=True``
    """
    if not isinstance(per_coordinate, (bool, np.bool_)):
        raise ValueError(f"per_coordinate must be True or False, got {per_coordinate!r}")
    shape = np.shape(X_complete)
    mask = _check_mask(mask, shape)
    X_complete = _check_scored(X_complete, shape, mask, "X_complete")
    X_imputed = _check_scored(X_imputed, shape, mask, "X_imputed")
    sq = np.where(mask, X_imputed - X_complete, 0.0) ** 2
    if not per_coordinate:
        return float(np.sqrt(sq.sum() / mask.sum()))
    counts = mask.sum(axis=0)
    if (counts == 0).any():
        raise ValueError(f"mask has no cell in coordinate {int(np.argmin(counts))}; its RMSE is "
                         "undefined")
    return np.sqrt(sq.sum(axis=0) / counts)


def interval_coverage(X_imputed, std, X_complete, mask, z=1.96):
    """Share of the scored cells whose true value lies in ``imputed +- z * std``.

    Parameters
    ----------
    X_imputed, std, X_complete : array-like of shape (N, d)
        As returned by ``impute(..., return_std=True)``, and the truth.
    mask : array-like of shape (N, d), bool
        The cells that were missing.
    z : float, default 1.96
        Half-width in standard deviations (1.96: a nominal 95 % Gaussian interval).

    Returns
    -------
    coverage : float in [0, 1]
    """
    shape = np.shape(X_complete)
    mask = _check_mask(mask, shape)
    X_complete = _check_scored(X_complete, shape, mask, "X_complete")
    X_imputed = _check_scored(X_imputed, shape, mask, "X_imputed")
    std = _check_scored(std, shape, mask, "std")
    if (std[mask] < 0).any():
        raise ValueError("std must be non-negative")
    z = check_positive(z, "z")
    inside = np.abs(X_imputed[mask] - X_complete[mask]) <= z * std[mask]
    return float(inside.mean())
