"""EM for mixture models: the one helper module of this project.

Read top to bottom, it follows the course's order:

1. Loading the data: ``load_image`` reads a scan (any plausible CSV layout) into ``(X, y)``.
2. The E-step: ``e_step`` (hard assignment by Euclidean distance, the simulation questions),
   ``log_gaussian_density`` and ``e_step_soft`` (Gaussian responsibilities).
3. The M-step: ``m_step`` (means, covariances, weights; missing cells through expected
   sufficient statistics).
4. The EM loop: ``run_em`` returning an ``EMResult``.
4b. Filling in missing data: ``impute`` (conditional means and standard deviations under a
   fitted mixture); scoring with ``mcar_mask``, ``imputation_rmse``, ``interval_coverage``.
5. Metrics against the true labels: ``match_labels``, ``align_to_truth``, ``clustering_scores``.
6. Plotting helpers shared by the notebooks: ``plot_clusters``, ``covariance_ellipse``.

Conventions used everywhere:

* ``X`` has shape ``(N, d)``: one row per point; a missing cell is ``NaN``.
* Component-first arrays: ``means`` ``(K, d)``, ``covariances`` ``(K, d, d)``, ``weights``
  ``(K,)`` and the assignment / responsibility matrix ``R`` of shape ``(K, N)``, where
  ``R[k, n]`` is the share of point ``n`` given to component ``k``. The statement asks for a
  "3 x 600" array but then speaks of ``R_ij`` as "the i-th data in the j-th distribution"; we
  keep the 3 x 600 shape, so the *row* is the distribution and the *column* the point.
* Nothing here modifies the caller's arrays.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import linalg
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp

CLASS_NAMES = ("background", "normal tissue", "tumour")
N_COORDINATES = 2  # the course's scans are two-dimensional
_MISSING_TOKENS = {"", "nan", "na", "n/a", "null", "none", "?"}


class EMConvergenceWarning(UserWarning):
    """Raised as a warning when ``run_em`` stops at ``max_iter`` without converging."""


# ---------------------------------------------------------------------------------------------
# 1. Loading the data
# ---------------------------------------------------------------------------------------------

def load_image(path, n_components=3):
    """Read a scan from a CSV file into points and their true labels.

    The file holds ``N`` two-dimensional points, ``N / n_components`` per class, concatenated in
    class order, so the true label of a point is given by its position. Accepted layouts: ``N x 2``
    or ``2 x N``; with or without a header row (or header column for ``2 x N``); with or without
    a leading index column (``0..N-1`` or ``1..N``); separated by commas, semicolons, tabs or
    spaces. Empty cells (or ``NaN``/``NA``) are missing values. A row with nothing observed is
    kept, because its position carries its label.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    n_components : int, default 3
        Number of classes; ``N`` must be a multiple of it.

    Returns
    -------
    X : ndarray of shape (N, 2), float
        The points, ``NaN`` where a cell is missing.
    y : ndarray of shape (N,), int
        The true class of each point: ``0`` for the first ``N / n_components`` rows, and so on.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read as a table of numbers in one of the layouts above; the
        message names the file, what was found and what was expected.
    """
    path = Path(path)
    n_components = _check_int(n_components, "n_components", minimum=1)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a CSV file of 2-D points)")
    table = _read_text_table(path)
    values = _table_to_points(table, path)
    n_points = values.shape[0]
    if n_points < n_components or n_points % n_components:
        raise ValueError(
            f"{path}: found {n_points} points, expected a positive multiple of "
            f"n_components={n_components} (equal blocks of points, one block per class)")
    y = np.repeat(np.arange(n_components), n_points // n_components)
    return values, y


def _read_text_table(path):
    """Read every cell of a delimited text file as a stripped string (no type guessing)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a text file ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: the file is empty (expected 2-D points, one per row)")
    first = lines[0]
    sep = next((s for s in (",", ";", "\t") if s in first), None)
    try:
        if sep is None:  # whitespace-separated
            rows = [line.split() for line in lines]
        else:
            rows = list(csv.reader(lines, delimiter=sep))
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        counts = pd.Series([len(row) for row in rows]).value_counts()
        odd = next(i for i, row in enumerate(rows) if len(row) != counts.index[0])
        raise ValueError(
            f"{path}: rows have different numbers of fields (line {odd + 1} has "
            f"{len(rows[odd])}, most have {counts.index[0]}); expected a rectangular table")
    return pd.DataFrame(rows).apply(lambda col: col.str.strip())


def _parse_numbers(cells):
    """Parse a string frame: floats, NaN for missing tokens; also return the unparseable mask."""
    missing = cells.apply(lambda col: col.str.lower().isin(_MISSING_TOKENS))
    numbers = cells.apply(pd.to_numeric, errors="coerce").astype(float)
    bad = numbers.isna() & ~missing
    return numbers, bad


def _is_index(column):
    """True if ``column`` is 0..n-1 or 1..n exactly."""
    n = len(column)
    return bool(np.all(np.isfinite(column))) and (
        np.array_equal(column, np.arange(n)) or np.array_equal(column, np.arange(1, n + 1)))


def _table_to_points(table, path):
    """Turn a table of strings into an (N, 2) float array, detecting the layout."""
    numbers, bad = _parse_numbers(table)
    # A header row / header column is a first row / column with text in it.
    if bad.iloc[0].any():
        numbers, bad = numbers.iloc[1:], bad.iloc[1:]
    if numbers.shape[1] > 1 and bad.iloc[:, 0].any() and numbers.shape[0] <= N_COORDINATES + 1:
        numbers, bad = numbers.iloc[:, 1:], bad.iloc[:, 1:]  # names of the rows of a 2 x N file
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        value = table.loc[numbers.index[r], numbers.columns[c]]
        raise ValueError(
            f"{path}: text {value!r} in a numeric cell (row {numbers.index[r] + 1}, column "
            f"{numbers.columns[c] + 1}); expected numbers or empty cells")
    values = numbers.to_numpy(dtype=float)
    if values.size == 0:
        raise ValueError(f"{path}: no data rows (found only a header)")
    if values.shape[0] < values.shape[1]:  # 2 x N (or 3 x N with an index row)
        values = values.T
    if values.shape[1] == N_COORDINATES + 1 and _is_index(values[:, 0]):
        values = values[:, 1:]
    if values.shape[1] != N_COORDINATES:
        raise ValueError(
            f"{path}: found a {values.shape[0]} x {values.shape[1]} table of numbers, expected "
            f"{N_COORDINATES} coordinates per point (N x {N_COORDINATES} or {N_COORDINATES} x N, "
            "optionally with a header and an index column)")
    if np.isinf(values).any():
        r, c = np.argwhere(np.isinf(values))[0]
        raise ValueError(
            f"{path}: infinite value at point {r + 1}, coordinate {c + 1}; expected finite "
            "numbers or empty cells")
    all_missing = np.isnan(values).all(axis=0)
    if all_missing.any():
        raise ValueError(
            f"{path}: coordinate {int(np.argmax(all_missing)) + 1} is missing in every row; "
            "expected at least one observed value per coordinate")
    return values


# ---------------------------------------------------------------------------------------------
# Input checks shared by the steps below
# ---------------------------------------------------------------------------------------------

def _check_int(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_points(X, name="X"):
    """Return X as a float (N, d) array (a new array), NaN allowed, inf not."""
    try:
        X = np.array(X, dtype=float)  # a copy: the caller's array is never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, d): {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got shape {X.shape}")
    if np.isinf(X).any():
        raise ValueError(f"{name} contains infinite values; use NaN for missing cells")
    if np.isnan(X).all(axis=0).any():
        raise ValueError(f"{name} has a column with every value missing")
    return X


def _check_means(means, d, name="means"):
    means = np.array(means, dtype=float)
    if means.ndim != 2 or means.shape[1] != d or means.shape[0] == 0:
        raise ValueError(f"{name} must have shape (K, {d}), got shape {means.shape}")
    if not np.isfinite(means).all():
        raise ValueError(f"{name} must be finite")
    return means


def _check_covariances(covariances, K, d, name="covariances"):
    covariances = np.array(covariances, dtype=float)
    if covariances.shape != (K, d, d):
        raise ValueError(f"{name} must have shape ({K}, {d}, {d}), got {covariances.shape}")
    if not np.isfinite(covariances).all():
        raise ValueError(f"{name} must be finite")
    if not np.allclose(covariances, covariances.transpose(0, 2, 1)):
        raise ValueError(f"{name} must be symmetric")
    return covariances


def _check_weights(weights, K, name="weights"):
    weights = np.array(weights, dtype=float)
    if weights.shape != (K,):
        raise ValueError(f"{name} must have shape ({K},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not np.isclose(weights.sum(), 1.0, atol=1e-8):
        raise ValueError(f"{name} must sum to 1, they sum to {weights.sum():.6g}")
    return weights


def _check_resp(R, N, name="R"):
    R = np.array(R, dtype=float)
    if R.ndim != 2 or R.shape[1] != N:
        raise ValueError(f"{name} must have shape (K, N) with N={N} points, got {R.shape}")
    if not np.isfinite(R).all() or (R < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    col_sums = R.sum(axis=0)
    if not np.allclose(col_sums, 1.0, atol=1e-6):
        n = int(np.argmax(np.abs(col_sums - 1.0)))
        raise ValueError(
            f"{name} must have columns summing to 1 (one distribution per point); column {n} "
            f"sums to {col_sums[n]:.6g}")
    return R


def _missing_patterns(X):
    """Group rows by which coordinates are observed.

    Returns a list of ``(observed, rows)``: a boolean (d,) mask and the row indices that share it.
    """
    observed = ~np.isnan(X)
    if observed.all():
        return [(np.ones(X.shape[1], dtype=bool), np.arange(X.shape[0]))]
    patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return [(pattern, np.flatnonzero(inverse == i)) for i, pattern in enumerate(patterns)]


# ---------------------------------------------------------------------------------------------
# 2. The E-step
# ---------------------------------------------------------------------------------------------

def _squared_distances(X, means):
    """Squared Euclidean distances (N, K), over observed coordinates scaled by d / d_observed.

    Uses ||x||^2 - 2 x.mu + ||mu||^2 (one matrix product, no (N, K, d) temporary). Rows with
    nothing observed get NaN.
    """
    observed = ~np.isnan(X)
    if observed.all():
        sq = np.einsum("nd,nd->n", X, X)[:, None] - 2.0 * (X @ means.T)
        sq += np.einsum("kd,kd->k", means, means)[None, :]
        return np.maximum(sq, 0.0)
    X0 = np.where(observed, X, 0.0)
    mask = observed.astype(float)
    sq = np.einsum("nd,nd->n", X0, X0)[:, None] - 2.0 * (X0 @ means.T) + mask @ (means ** 2).T
    n_obs = mask.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.maximum(sq, 0.0) * (X.shape[1] / n_obs)[:, None]
    sq[n_obs == 0] = np.nan
    return sq


def _assign(X, means):
    """Nearest-mean labels (N,) and each point's squared distance to its mean (N,).

    Ties go to the lowest component index. A row with nothing observed goes to the component
    holding the most points (distance 0).
    """
    sq = _squared_distances(X, means)
    empty_rows = np.isnan(sq[:, 0])
    if not empty_rows.any():
        labels = np.argmin(sq, axis=1)
        return labels, sq[np.arange(len(labels)), labels]
    labels = np.zeros(X.shape[0], dtype=np.intp)
    labels[~empty_rows] = np.argmin(sq[~empty_rows], axis=1)
    counts = np.bincount(labels[~empty_rows], minlength=means.shape[0])
    labels[empty_rows] = int(np.argmax(counts))
    dist = np.zeros(X.shape[0])
    dist[~empty_rows] = sq[~empty_rows, labels[~empty_rows]]
    return labels, dist


def _one_hot(labels, n_components):
    R = np.zeros((n_components, labels.shape[0]), dtype=np.int64)
    R[labels, np.arange(labels.shape[0])] = 1
    return R


def e_step(X, means):
    """Hard E-step: assign every point to the distribution with the nearest mean.

    Parameters
    ----------
    X : array-like of shape (N, d)
        The points; ``NaN`` marks a missing cell. The distance then runs over the observed
        coordinates and is scaled by ``d / d_observed``, so that it stays comparable with the
        distances of complete rows. A row with nothing observed goes to the component that holds
        the most points.
    means : array-like of shape (K, d)
        The current means.

    Returns
    -------
    R : ndarray of shape (K, N), int
        One-hot assignment: ``R[k, n] == 1`` if and only if point ``n`` is assigned to
        distribution ``k``. Ties go to the lowest ``k``.
    """
    X = _check_points(X)
    means = _check_means(means, X.shape[1])
    labels, _ = _assign(X, means)
    return _one_hot(labels, means.shape[0])


def _cholesky(covariances):
    """Lower Cholesky factors (K, d, d), with a clear error for a non-PD covariance."""
    chol = np.empty_like(covariances)
    for k, cov in enumerate(covariances):
        try:
            chol[k] = linalg.cholesky(cov, lower=True)
        except linalg.LinAlgError:
            raise ValueError(
                f"covariances[{k}] is not positive definite; increase reg_covar") from None
    return chol


def _log_gaussian_complete(X, means, chol):
    """ln N(x_n; mu_k, L_k L_k^T) for complete rows: (K, N)."""
    K, d = means.shape
    out = np.empty((K, X.shape[0]))
    for k in range(K):
        z = linalg.solve_triangular(chol[k], (X - means[k]).T, lower=True, check_finite=False)
        log_det = 2.0 * np.log(np.diag(chol[k])).sum()
        out[k] = -0.5 * (d * np.log(2 * np.pi) + log_det + np.einsum("dn,dn->n", z, z))
    return out


def log_gaussian_density(X, means, covariances):
    """Log density of every point under every Gaussian component.

    Missing cells are marginalised out: a row observed on the coordinates ``o`` is scored by
    ``N(x_o; mu_o, Sigma_oo)``; a row with nothing observed scores 0 (probability 1).

    Parameters
    ----------
    X : array-like of shape (N, d)
    means : array-like of shape (K, d)
    covariances : array-like of shape (K, d, d), positive definite

    Returns
    -------
    log_prob : ndarray of shape (K, N)
        ``log_prob[k, n] = ln N(x_n; mu_k, Sigma_k)``.
    """
    X = _check_points(X)
    means = _check_means(means, X.shape[1])
    covariances = _check_covariances(covariances, means.shape[0], X.shape[1])
    return _log_gaussian(X, means, covariances)


def _log_gaussian(X, means, covariances):
    K = means.shape[0]
    out = np.zeros((K, X.shape[0]))
    for obs, rows in _missing_patterns(X):
        if not obs.any():
            continue  # nothing observed: density of the empty marginal is 1
        sub_cov = covariances[:, obs][:, :, obs]
        out[:, rows] = _log_gaussian_complete(X[np.ix_(rows, obs)], means[:, obs],
                                              _cholesky(sub_cov))
    return out


def e_step_soft(X, means, covariances, weights):
    """Soft E-step: posterior responsibilities of a Gaussian mixture, in log space.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell (marginalised out).
    means : array-like of shape (K, d)
    covariances : array-like of shape (K, d, d)
    weights : array-like of shape (K,), summing to 1

    Returns
    -------
    R : ndarray of shape (K, N)
        ``R[k, n] = p(z_n = k | x_n)``; each column sums to 1.
    log_lik : float
        The total log-likelihood ``sum_n ln p(x_n)`` under these parameters.
    """
    X = _check_points(X)
    means = _check_means(means, X.shape[1])
    K = means.shape[0]
    covariances = _check_covariances(covariances, K, X.shape[1])
    weights = _check_weights(weights, K)
    return _soft_assign(X, means, covariances, weights)


def _soft_assign(X, means, covariances, weights):
    with np.errstate(divide="ignore"):
        weighted = _log_gaussian(X, means, covariances) + np.log(weights)[:, None]
    log_norm = logsumexp(weighted, axis=0)
    return np.exp(weighted - log_norm[None, :]), float(log_norm.sum())


def log_likelihood(X, means, covariances, weights):
    """Total log-likelihood ``sum_n ln sum_k pi_k N(x_n; mu_k, Sigma_k)`` (missing cells
    marginalised out). Same arguments as ``e_step_soft``."""
    return e_step_soft(X, means, covariances, weights)[1]


# ---------------------------------------------------------------------------------------------
# 3. The M-step
# ---------------------------------------------------------------------------------------------

class MStepResult(tuple):
    """``(means, covariances, weights)``, unpackable as a 3-tuple, plus ``reseeded``: the
    components that were empty and were re-seeded (an empty tuple if none)."""

    def __new__(cls, means, covariances, weights, reseeded=()):
        self = super().__new__(cls, (means, covariances, weights))
        self.reseeded = tuple(reseeded)
        return self

    means = property(lambda self: self[0])
    covariances = property(lambda self: self[1])
    weights = property(lambda self: self[2])


def _reseed_empty(X, R, counts):
    """Give every empty component the point farthest from its current assigned mean.

    Like scikit-learn's KMeans: the point that is worst explained moves to the empty
    component, which then holds it alone. Returns the new R and the re-seeded components.
    """
    empty = np.flatnonzero(counts <= 10 * np.finfo(float).eps * max(X.shape[0], 1))
    if empty.size == 0:
        return R, ()
    R = R.copy()
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    full = np.setdiff1d(np.arange(R.shape[0]), empty)
    means = (R[full] @ filled) / R[full].sum(axis=1, keepdims=True)
    owner = full[np.argmax(R[full], axis=0)]
    dist = ((filled - means[np.searchsorted(full, owner)]) ** 2).sum(axis=1)
    for k, n in zip(empty, np.argsort(-dist, kind="stable")):
        R[:, n] = 0.0
        R[k, n] = 1.0
    return R, tuple(int(k) for k in empty)


def _available_case_parameters(X, R, counts):
    """Per-component means and covariances from the observed cells only (no imputation).

    Used to start the conditional expectations when no current parameters are given. A
    coordinate that a component never observes falls back to the overall observed mean/variance.
    """
    K, d = R.shape[0], X.shape[1]
    observed = ~np.isnan(X)
    X0 = np.where(observed, X, 0.0)
    w_obs = R @ observed  # (K, d): weight of observed cells
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (R @ X0) / w_obs
    means = np.where(w_obs > 0, means, np.nanmean(X, axis=0))
    covs = np.empty((K, d, d))
    for k in range(K):
        centred = np.where(observed, X - means[k], 0.0)
        weighted = R[k][:, None] * centred
        pair_w = (R[k][:, None] * observed).T @ observed  # (d, d) weight of pairs seen together
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = (weighted.T @ centred) / pair_w
        fallback = np.diag(np.nanvar(X, axis=0))
        cov = np.where(pair_w > 0, cov, fallback)
        # pairwise estimates need not be PD: shrink the off-diagonal until they are
        diag = np.sqrt(np.maximum(np.diag(cov), 0.0))
        corr_bound = np.outer(diag, diag)
        cov = np.clip(cov, -0.99 * corr_bound, 0.99 * corr_bound)
        np.fill_diagonal(cov, np.maximum(diag ** 2, np.nanvar(X, axis=0) * 1e-3 + 1e-12))
        covs[k] = cov
    return means, covs


def _conditional_fill(X_rows, obs, mean, cov):
    """E[x | x_obs] and Cov[x | x_obs] for rows that share the observed mask ``obs``.

    Returns the filled rows (n, d) and the (d, d) conditional covariance (zero on observed
    coordinates), which is the same for every row of the pattern.
    """
    mis = ~obs
    filled = X_rows.copy()
    cond_cov = np.zeros_like(cov)
    if not obs.any():
        filled[:] = mean
        cond_cov[:] = cov
        return filled, cond_cov
    s_oo = cov[np.ix_(obs, obs)]
    s_mo = cov[np.ix_(mis, obs)]
    gain = linalg.solve(s_oo, s_mo.T, assume_a="pos").T  # Sigma_mo Sigma_oo^-1
    filled[:, mis] = mean[mis] + (X_rows[:, obs] - mean[obs]) @ gain.T
    cond_cov[np.ix_(mis, mis)] = cov[np.ix_(mis, mis)] - gain @ s_mo.T
    return filled, cond_cov


def _weighted_gaussian_fit(X, R, counts, reg_covar):
    """Closed-form means and covariances of complete data: (K, d), (K, d, d)."""
    means = (R @ X) / counts[:, None]
    K, d = means.shape
    covs = np.empty((K, d, d))
    for k in range(K):
        diff = X - means[k]
        covs[k] = (R[k][:, None] * diff).T @ diff / counts[k]
        covs[k].flat[:: d + 1] += reg_covar
    return means, covs


def _expected_statistics_fit(X, R, counts, means_cur, covs_cur, reg_covar):
    """M-step with missing cells: expected sufficient statistics under the current parameters.

    For component k, a row's missing cells are replaced by E[x_m | x_o, k] and the outer product
    gains the conditional covariance Cov[x_m | x_o, k]; then the usual weighted formulas apply.
    """
    K, d = R.shape[0], X.shape[1]
    patterns = _missing_patterns(X)
    means = np.empty((K, d))
    covs = np.empty((K, d, d))
    for k in range(K):
        filled = np.empty_like(X)
        extra = np.zeros((d, d))  # sum_n r_nk Cov[x_n | x_o, k]
        for obs, rows in patterns:
            filled[rows], cond_cov = _conditional_fill(X[rows], obs, means_cur[k], covs_cur[k])
            extra += R[k, rows].sum() * cond_cov
        means[k] = R[k] @ filled / counts[k]
        diff = filled - means[k]
        covs[k] = ((R[k][:, None] * diff).T @ diff + extra) / counts[k]
        covs[k] = 0.5 * (covs[k] + covs[k].T)
        covs[k].flat[:: d + 1] += reg_covar
    return means, covs


def m_step(X, R, means=None, covariances=None, reg_covar=1e-6):
    """M-step: the weighted maximum-likelihood means, covariances and weights.

    For component ``k`` with ``N_k = sum_n R[k, n]``:
    ``mu_k = sum_n R[k, n] x_n / N_k``,
    ``Sigma_k = sum_n R[k, n] (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I`` and
    ``pi_k = N_k / N``.

    With missing cells this is the M-step of EM for incomplete data: each row's missing cells
    are replaced by their conditional expectation given its observed cells under component
    ``k``'s *current* Gaussian, and the conditional covariance is added to the scatter. No row is
    dropped.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell.
    R : array-like of shape (K, N)
        Hard (one-hot) assignments or soft responsibilities; every column sums to 1.
    means, covariances : array-like of shape (K, d) and (K, d, d), optional
        The current parameters, used only for the conditional expectations of missing cells.
        When absent, available-case estimates (from the observed cells of each component) are
        used instead.
    reg_covar : float, default 1e-6
        Added to every covariance's diagonal so that it stays positive definite.

    Returns
    -------
    MStepResult
        Unpacks as ``means (K, d), covariances (K, d, d), weights (K,)``; its ``reseeded``
        attribute lists the components that received no points: each was re-seeded with the
        point farthest from its assigned mean (so nothing is NaN).
    """
    X = _check_points(X)
    R = _check_resp(R, X.shape[0])
    K, d = R.shape[0], X.shape[1]
    if not (np.isfinite(reg_covar) and reg_covar >= 0):
        raise ValueError(f"reg_covar must be a non-negative number, got {reg_covar!r}")
    R, reseeded = _reseed_empty(X, R, R.sum(axis=1))
    counts = R.sum(axis=1)
    if not np.isnan(X).any():
        new_means, new_covs = _weighted_gaussian_fit(X, R, counts, reg_covar)
    else:
        if (means is None) != (covariances is None):
            raise ValueError("give both means and covariances (the current parameters) or neither")
        if means is None:
            means, covariances = _available_case_parameters(X, R, counts)
        else:
            means = _check_means(means, d)
            if means.shape[0] != K:
                raise ValueError(f"means has {means.shape[0]} components but R has {K}")
            covariances = _check_covariances(covariances, K, d)
        new_means, new_covs = _expected_statistics_fit(X, R, counts, means, covariances,
                                                       reg_covar)
    return MStepResult(new_means, new_covs, counts / X.shape[0], reseeded)


# ---------------------------------------------------------------------------------------------
# 4. The EM loop
# ---------------------------------------------------------------------------------------------

@dataclass
class EMResult:
    """The outcome of ``run_em``.

    Attributes
    ----------
    means : ndarray (K, d)
    covariances : ndarray (K, d, d)
    weights : ndarray (K,)
    resp : ndarray (K, N)
        Final assignment (hard: one-hot) or responsibilities (soft), from a last E-step with the
        final parameters.
    labels : ndarray (N,)
        ``argmax`` of ``resp`` over components.
    n_iter : int
        EM iterations (E-step + M-step) performed.
    converged : bool
    objective : float
        Of the final parameters: within-cluster sum of squares (hard, lower is better) or total
        log-likelihood (soft, higher is better).
    history : list of dict
        Entry ``t`` holds the parameters after ``t`` M-steps (entry 0: the start) under keys
        ``means``, ``covariances``, ``weights``, and their ``objective``.
    init_means : ndarray (K, d)
    method : str
    reseeded : list of (iteration, component)
        Empty components that the M-step re-seeded.
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    resp: np.ndarray
    labels: np.ndarray
    n_iter: int
    converged: bool
    objective: float
    history: list = field(repr=False)
    init_means: np.ndarray = field(repr=False)
    method: str = "soft"
    reseeded: list = field(default_factory=list)

    @property
    def objective_trace(self):
        """The objective of every entry of ``history``, as an array (length n_iter + 1)."""
        return np.array([h["objective"] for h in self.history])


def _complete_rows(X):
    return X[~np.isnan(X).any(axis=1)]


def _init_means(X, K, init, rng):
    """Initial means (K, d): 'random' (K distinct complete rows), 'kmeans++', or given."""
    complete = _complete_rows(X)
    if isinstance(init, str):
        if len(complete) < K:
            raise ValueError(
                f"n_components={K} is more than the {len(complete)} complete rows of X")
        if init == "random":
            return complete[rng.choice(len(complete), size=K, replace=False)].copy()
        if init == "kmeans++":
            return _kmeans_plusplus(complete, K, rng)
        raise ValueError(f"init must be 'random', 'kmeans++' or an array of means, got {init!r}")
    raise AssertionError("unreachable: array inits are handled by the caller")


def _kmeans_plusplus(X, K, rng):
    """k-means++ seeding: each new mean is a point drawn with probability ~ D(x)^2."""
    means = [X[rng.integers(len(X))]]
    closest = ((X - means[0]) ** 2).sum(axis=1)
    for _ in range(1, K):
        total = closest.sum()
        if total <= 0:  # every point coincides with a chosen mean
            idx = rng.integers(len(X))
        else:
            idx = rng.choice(len(X), p=closest / total)
        means.append(X[idx])
        closest = np.minimum(closest, ((X - X[idx]) ** 2).sum(axis=1))
    return np.array(means, dtype=float)


def _parse_init(X, K, init):
    """Split an explicit init into (means, covariances or None, weights or None)."""
    d = X.shape[1]
    if isinstance(init, dict):
        unknown = set(init) - {"means", "covariances", "weights"}
        if unknown or "means" not in init:
            raise ValueError("an init dict needs 'means' and may have 'covariances' and "
                             f"'weights'; got keys {sorted(init)}")
        means = _check_means(init["means"], d, "init['means']")
        covs = init.get("covariances")
        weights = init.get("weights")
    else:
        means, covs, weights = _check_means(init, d, "init"), None, None
    if means.shape[0] != K:
        raise ValueError(f"init has {means.shape[0]} means but n_components={K}")
    if covs is not None:
        covs = _check_covariances(covs, K, d, "init['covariances']")
        _cholesky(covs)
    if weights is not None:
        weights = _check_weights(weights, K, "init['weights']")
    return means, covs, weights


def _starting_point(X, means, covs, weights, reg_covar):
    """Complete a start given by means only: covariances and weights of the partition the
    means induce (one hard E-step), the means kept as given."""
    if covs is None or weights is None:
        labels, _ = _assign(X, means)
        fit = m_step(X, _one_hot(labels, means.shape[0]), reg_covar=reg_covar)
        covs = fit.covariances if covs is None else covs
        weights = fit.weights if weights is None else weights
    return means, covs, weights


def _snapshot(means, covs, weights, objective=np.nan):
    return {"means": means.copy(), "covariances": covs.copy(), "weights": weights.copy(),
            "objective": objective}


def _em_once(X, means, covs, weights, method, max_iter, tol, reg_covar):
    """One EM run from a start; returns an EMResult."""
    N, K = X.shape[0], means.shape[0]
    init_means = means.copy()
    history = [_snapshot(means, covs, weights)]
    reseeded = []
    converged = False
    prev_labels, prev_mean_ll = None, -np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        if method == "hard":
            labels, dist = _assign(X, means)
            history[-1]["objective"] = float(dist.sum())
            R = _one_hot(labels, K)
        else:
            R, log_lik = _soft_assign(X, means, covs, weights)
            history[-1]["objective"] = log_lik
        fit = m_step(X, R, means, covs, reg_covar) if np.isnan(X).any() else \
            m_step(X, R, reg_covar=reg_covar)
        means, covs, weights = fit
        reseeded += [(n_iter, k) for k in fit.reseeded]
        history.append(_snapshot(means, covs, weights))
        if method == "hard":
            converged = prev_labels is not None and np.array_equal(labels, prev_labels)
            prev_labels = labels
        else:
            converged = log_lik / N - prev_mean_ll < tol
            prev_mean_ll = log_lik / N
        if converged:
            break
    # a last E-step so that resp, labels and the objective belong to the final parameters
    if method == "hard":
        labels, dist = _assign(X, means)
        objective = float(dist.sum())
        resp = _one_hot(labels, K)
    else:
        resp, objective = _soft_assign(X, means, covs, weights)
        labels = np.argmax(resp, axis=0)
    history[-1]["objective"] = objective
    return EMResult(means=means, covariances=covs, weights=weights, resp=resp, labels=labels,
                    n_iter=n_iter, converged=bool(converged), objective=objective,
                    history=history, init_means=init_means, method=method, reseeded=reseeded)


def run_em(X, n_components=3, method="hard", init="random", n_init=1, max_iter=100, tol=1e-6,
           random_state=0, reg_covar=1e-6):
    """Fit a mixture of Gaussians by EM.

    ``method="hard"`` is the algorithm of the simulation questions: the E-step assigns each
    point to the nearest mean (``e_step``), the M-step re-estimates means, covariances and
    weights (``m_step``); it stops when no assignment changes. Without missing cells this is
    Lloyd's k-means. ``method="soft"`` is full-covariance Gaussian-mixture EM: the E-step computes
    posterior responsibilities (``e_step_soft``, log space); it stops when the mean
    log-likelihood per point improves by less than ``tol``. Missing cells are marginalised out in
    the soft E-step and handled by expected sufficient statistics in the M-step.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell.
    n_components : int, default 3
    method : {"hard", "soft"}, default "hard"
    init : {"random", "kmeans++"}, array of shape (K, d), or dict, default "random"
        "random": ``K`` distinct complete rows; "kmeans++": k-means++ seeding on the complete
        rows; an array: the initial means; a dict with ``means`` and optionally ``covariances``
        and ``weights``: the full starting parameters. Missing covariances/weights are those of
        the partition that the initial means induce.
    n_init : int, default 1
        Number of starts (only with a string ``init``); the best objective wins.
    max_iter : int, default 100
    tol : float, default 1e-6
        Soft EM only: threshold on the gain in mean log-likelihood per point.
    random_state : int, default 0
        Seed of every random choice.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance.

    Returns
    -------
    EMResult

    Warns
    -----
    EMConvergenceWarning
        When ``max_iter`` iterations did not reach convergence (``converged`` is then False).
    """
    X = _check_points(X)
    K = _check_int(n_components, "n_components", minimum=1)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    n_init = _check_int(n_init, "n_init", minimum=1)
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if not (isinstance(reg_covar, (int, float, np.floating)) and np.isfinite(reg_covar)
            and reg_covar >= 0):
        raise ValueError(f"reg_covar must be a non-negative number, got {reg_covar!r}")
    if len(_complete_rows(X)) < K:
        raise ValueError(f"n_components={K} is more than the {len(_complete_rows(X))} "
                         "complete rows of X")
    rng = np.random.default_rng(random_state)
    if isinstance(init, str):
        starts = [(_init_means(X, K, init, rng), None, None) for _ in range(n_init)]
    else:
        if n_init != 1:
            raise ValueError("n_init > 1 needs a random init ('random' or 'kmeans++')")
        starts = [_parse_init(X, K, init)]
    best = None
    for means, covs, weights in starts:
        means, covs, weights = _starting_point(X, means, covs, weights, reg_covar)
        result = _em_once(X, means, covs, weights, method, max_iter, tol, reg_covar)
        better = best is None or (result.objective < best.objective if method == "hard"
                                  else result.objective > best.objective)
        if better:
            best = result
    if not best.converged:
        warnings.warn(f"{method} EM did not converge within max_iter={max_iter} iterations; "
                      "raise max_iter or tol", EMConvergenceWarning, stacklevel=2)
    return best


# ---------------------------------------------------------------------------------------------
# 4b. Filling in missing data
# ---------------------------------------------------------------------------------------------

def _check_impute_points(X):
    """X as a new float (N, d) array; NaN allowed anywhere (even whole rows or columns)."""
    if isinstance(X, (str, bytes)) or X is None:
        raise ValueError(f"X must be a numeric array of shape (N, d), got {type(X).__name__}")
    try:
        X = np.array(X, dtype=float)  # a copy: the caller's array is never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be a numeric array of shape (N, d): {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must have shape (N, d) with N, d >= 1, got shape {X.shape}")
    if np.isinf(X).any():
        r, c = np.argwhere(np.isinf(X))[0]
        raise ValueError(f"X contains an infinite value (row {r}, column {c}); use NaN for "
                         "missing cells")
    return X


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
    means = _check_means(result.means, d, "result.means")
    K = means.shape[0]
    covariances = _check_covariances(result.covariances, K, d, "result.covariances")
    _cholesky(covariances)
    weights = _check_weights(result.weights, K, "result.weights")
    return means, covariances, weights


def _imputation_weights(X, means, covariances, weights, method):
    """Weight of each component in each row's imputation, (K, N).

    Soft: the posterior responsibilities given the row's observed cells only (missing cells
    marginalised out). Hard: one-hot on the component the hard E-step assigns (nearest mean
    over the observed cells). Rows with nothing observed get the mixing weights in both cases.
    """
    empty = np.isnan(X).all(axis=1)
    if method == "soft":
        R, _ = _soft_assign(X, means, covariances, weights)  # empty rows: R = weights already
    else:
        labels, _ = _assign(X, means)
        R = _one_hot(labels, means.shape[0]).astype(float)
    R[:, empty] = weights[:, None]
    return R


def _component_conditionals(X_rows, obs, means, covariances):
    """Per-component conditional means (K, n, d) and variances (K, d) for one pattern.

    Component ``k`` gives ``E[x | x_o, k]`` (observed cells unchanged) and the diagonal of
    ``Cov[x | x_o, k]`` (0 on observed coordinates), by ``_conditional_fill``.
    """
    K, d = means.shape
    cond_means = np.empty((K,) + X_rows.shape)
    cond_vars = np.empty((K, d))
    for k in range(K):
        cond_means[k], cond_cov = _conditional_fill(X_rows, obs, means[k], covariances[k])
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
    X = _check_impute_points(X)
    means, covariances, weights = _check_fitted(result, X.shape[1])
    X_imputed = X  # already a private copy
    std = np.zeros_like(X)
    if np.isnan(X).any():
        R = _imputation_weights(X, means, covariances, weights, result.method)
        for obs, rows in _missing_patterns(X):
            if obs.all():
                continue
            cond_means, cond_vars = _component_conditionals(X[rows], obs, means, covariances)
            mean, var = _mix_conditionals(R[:, rows], cond_means, cond_vars)
            mis = np.flatnonzero(~obs)
            X_imputed[np.ix_(rows, mis)] = mean[:, mis]
            std[np.ix_(rows, mis)] = np.sqrt(np.maximum(var[:, mis], 0.0))
    return (X_imputed, std) if return_std else X_imputed


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
    random_state = _check_int(random_state, "random_state", minimum=0)
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
    if isinstance(z, bool) or not isinstance(z, (int, float, np.floating)) \
            or not (np.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive number, got {z!r}")
    inside = np.abs(X_imputed[mask] - X_complete[mask]) <= z * std[mask]
    return float(inside.mean())


# ---------------------------------------------------------------------------------------------
# 5. Metrics against the true labels
# ---------------------------------------------------------------------------------------------

def _check_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise ValueError(f"{name} must hold non-negative integer labels")
    return y_true, y_pred


def label_mapping(y_true, y_pred):
    """The one-to-one relabelling of predicted clusters that agrees most with the truth.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) on the contingency table.

    Returns
    -------
    mapping : ndarray (n_pred_labels,)
        ``mapping[j]`` is the true class matched to predicted cluster ``j`` (clusters left
        unmatched get fresh labels after the true classes).
    """
    y_true, y_pred = _check_labels(y_true, y_pred)
    n_true, n_pred = y_true.max() + 1, y_pred.max() + 1
    table = np.zeros((n_pred, n_true), dtype=np.int64)
    np.add.at(table, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_pred, -1)
    mapping[rows] = cols
    unmatched = np.flatnonzero(mapping < 0)
    mapping[unmatched] = np.arange(max(n_true, n_pred))[~np.isin(np.arange(max(n_true, n_pred)),
                                                                 cols)][: unmatched.size]
    return mapping


def match_labels(y_true, y_pred):
    """Predicted labels renamed to the true classes they overlap most (Hungarian matching)."""
    return label_mapping(y_true, y_pred)[np.asarray(y_pred)]


def align_to_truth(result, y_true):
    """A copy of ``result`` whose component ``k`` is the one matched to true class ``k``.

    Reorders means, covariances, weights, resp, labels, history and init_means, so that tables
    and colours line up with the true classes.
    """
    mapping = label_mapping(y_true, result.labels)
    K = result.means.shape[0]
    if mapping.size < K:  # components that own no point keep their order after the others
        mapping = np.concatenate([mapping, np.setdiff1d(np.arange(K), mapping)])
    order = np.argsort(mapping)  # order[k] = old index of the component matched to class k
    history = [{**h, "means": h["means"][order], "covariances": h["covariances"][order],
                "weights": h["weights"][order]} for h in result.history]
    return replace(result, means=result.means[order], covariances=result.covariances[order],
                   weights=result.weights[order], resp=result.resp[order],
                   labels=mapping[result.labels], history=history,
                   init_means=result.init_means[order],
                   reseeded=[(t, int(mapping[k])) for t, k in result.reseeded])


def clustering_scores(y_true, y_pred):
    """Accuracy after label matching, confusion matrix (rows: truth) and adjusted Rand index.

    Returns
    -------
    dict with keys ``accuracy`` (float), ``confusion`` (ndarray), ``ari`` (float).
    """
    from sklearn.metrics import accuracy_score, adjusted_rand_score, confusion_matrix

    y_true, y_pred = _check_labels(y_true, y_pred)
    matched = match_labels(y_true, y_pred)
    return {"accuracy": float(accuracy_score(y_true, matched)),
            "confusion": confusion_matrix(y_true, matched),
            "ari": float(adjusted_rand_score(y_true, y_pred))}


# ---------------------------------------------------------------------------------------------
# 6. Plotting helpers shared by the notebooks
# ---------------------------------------------------------------------------------------------

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def covariance_ellipse(mean, cov, n_std=1.0, **kwargs):
    """A matplotlib ``Ellipse`` of the points at Mahalanobis distance ``n_std`` from ``mean``."""
    from matplotlib.patches import Ellipse

    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"need a 2-D mean and a 2x2 covariance, got {mean.shape}, {cov.shape}")
    eigval, eigvec = np.linalg.eigh(cov)
    if (eigval < 0).any():
        raise ValueError("cov must be positive semi-definite")
    angle = np.degrees(np.arctan2(eigvec[1, 1], eigvec[0, 1]))
    width, height = 2 * n_std * np.sqrt(eigval[::-1])
    return Ellipse(xy=mean, width=width, height=height, angle=angle, **kwargs)


def plot_clusters(ax, X, labels, means=None, covariances=None, title=None,
                  names=CLASS_NAMES, show_missing=True, point_size=12):
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
            ax.plot(X[only_x1, 0], np.zeros(only_x1.sum()), "|", color=color, ms=12, mew=1.5,
                    transform=ax.get_xaxis_transform(), clip_on=False)
            ax.plot(np.zeros(only_x2.sum()), X[only_x2, 1], "_", color=color, ms=12, mew=1.5,
                    transform=ax.get_yaxis_transform(), clip_on=False)
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
    ax.legend(loc="best", fontsize="small")
    return ax
