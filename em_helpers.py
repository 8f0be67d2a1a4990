"""EM for mixture models: the one helper module of this project.

Read top to bottom, it follows the course's order: the EM machinery of sections 1-2 of the
statement, then what the simulation questions and the real application (section 3) need.

1. Loading the data: ``load_image`` reads a scan (any plausible CSV layout) into ``(X, y)``.
2. The E-step: ``e_step`` (hard assignment by Euclidean distance, the simulation questions),
   ``log_gaussian_density``, ``e_step_soft`` (Gaussian responsibilities), ``log_likelihood``.
3. The M-step: ``m_step`` (means, covariances, weights; missing cells through expected
   sufficient statistics).
4. The EM loop: ``run_em`` returning an ``EMResult`` (with a fast path for complete data).
5. The categorical mixture of theory question 5: ``encode_categorical``, ``cmm_e_step``,
   ``cmm_m_step``, ``cmm_log_likelihood``, ``run_cmm_em`` returning a ``CMMResult``.
6. Metrics against the true labels: ``label_mapping``, ``match_labels``, ``align_to_truth``,
   ``clustering_scores``.
7. Tables and the bootstrap for the simulation notebooks: ``load_images``, ``load_truth``,
   ``initial_means``, ``fit_hard_and_soft``, ``parameter_table``, ``scores_table``,
   ``bootstrap_parameters``, ``image_comparison_table`` and friends.
8. Filling in missing data: ``impute`` (conditional means and standard deviations under a
   fitted mixture), ``compare_imputers`` (ours and scikit-learn's), ``mcar_mask``,
   ``imputation_rmse``, ``interval_coverage``.
9. Images: ``segment_image`` (EM on the intensities inside a mask, optional Potts prior by mean
   field or ICM), ``dice``, ``region_stats``, ``implant_lesion``, ``add_gaussian_noise``,
   ``crop_to_mask``, ``segment_dipy_hmrf``, ``plot_label_image``, ``plot_intensity_fit``.
10. Plotting helpers shared by the notebooks: ``plot_clusters``, ``covariance_ellipse``,
    ``shared_legend``.

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
    """Parse a string frame: floats (NaN for missing tokens), the text mask and the missing mask."""
    missing = cells.apply(lambda col: col.str.lower().isin(_MISSING_TOKENS))
    numbers = cells.apply(pd.to_numeric, errors="coerce").astype(float)
    text = numbers.isna() & ~missing
    return numbers, text, missing


def _is_index(column):
    """True if ``column`` is 0..n-1 or 1..n exactly."""
    n = len(column)
    return bool(np.all(np.isfinite(column))) and (
        np.array_equal(column, np.arange(n)) or np.array_equal(column, np.arange(1, n + 1)))


def _table_to_points(table, path):
    """Turn a table of strings into an (N, 2) float array, detecting the layout."""
    numbers, bad, missing = _parse_numbers(table)
    # A header row has text beyond its first cell (or text in its first cell only, when the
    # rest of the first column is numeric); row names of a 2 x N file fill the first column.
    if bad.iloc[0, 1:].any() or (bad.iloc[0, 0] and not bad.iloc[1:, 0].any()):
        numbers, bad, missing = numbers.iloc[1:], bad.iloc[1:], missing.iloc[1:]
    first_col = bad.iloc[:, 0]
    if numbers.shape[1] > 1 and first_col.any() and (first_col | missing.iloc[:, 0]).all():
        numbers, bad = numbers.iloc[:, 1:], bad.iloc[:, 1:]
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


def _check_points(X, name="X", allow_empty_columns=False):
    """Return X as a float (N, d) array (a new array), NaN allowed, inf not.

    A column with every value missing is refused unless ``allow_empty_columns`` (imputation can
    fill one from the fitted mixture; fitting cannot learn from it).
    """
    if isinstance(X, (str, bytes)) or X is None:
        raise ValueError(f"{name} must be a numeric array of shape (N, d), got "
                         f"{type(X).__name__}")
    try:
        X = np.array(X, dtype=float)  # a copy: the caller's array is never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, d): {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got shape {X.shape}")
    if np.isinf(X).any():
        r, c = np.argwhere(np.isinf(X))[0]
        raise ValueError(f"{name} contains an infinite value (row {r}, column {c}); use NaN for "
                         "missing cells")
    if not allow_empty_columns and np.isnan(X).all(axis=0).any():
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
    """Int one-hot (K, N) of labels (N,)."""
    return (labels == np.arange(n_components)[:, None]).astype(np.int64)


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
    try:
        return np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        for k, cov in enumerate(covariances):
            if not np.all(np.linalg.eigvalsh(cov) > 0):
                raise ValueError(
                    f"covariances[{k}] is not positive definite; increase reg_covar") from None
        raise


def _log_gaussian_complete(X, means, chol):
    """ln N(x_n; mu_k, L_k L_k^T) for complete rows: (K, N).

    With the precision factor ``P_k = L_k^{-T}`` (so ``Sigma_k^{-1} = P_k P_k^T``), the
    Mahalanobis term is ``||(x - mu_k) P_k||^2``: one small (N, d) @ (d, d) product per component.
    """
    K, d = means.shape
    out = np.empty((K, X.shape[0]))
    for k in range(K):
        prec_chol = np.linalg.inv(chol[k]).T  # d x d: numpy beats a LAPACK call's overhead
        z = (X - means[k]) @ prec_chol
        log_det = 2.0 * np.log(np.diag(chol[k])).sum()
        out[k] = -0.5 * (d * np.log(2 * np.pi) + log_det + np.einsum("nd,nd->n", z, z))
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
    component, which then holds it alone. A point is only taken from a component that keeps
    other points, so no new empty component appears. Returns the new R and the re-seeded
    components.
    """
    tiny = _empty_threshold(X.shape[0])
    empty = np.flatnonzero(counts <= tiny)
    if empty.size == 0:
        return R, ()
    R = R.copy()
    counts = counts.copy()
    filled = np.where(np.isnan(X), np.nanmean(X, axis=0), X)
    full = np.setdiff1d(np.arange(R.shape[0]), empty)
    means = (R[full] @ filled) / counts[full, None]
    owner = np.argmax(R[full], axis=0)  # index into full
    dist = ((filled - means[owner]) ** 2).sum(axis=1)
    candidates = iter(np.argsort(-dist, kind="stable"))
    for k in empty:
        for n in candidates:
            if counts[full[owner[n]]] - R[full[owner[n]], n] > tiny:
                counts -= R[:, n]
                R[:, n] = 0.0
                R[k, n] = 1.0
                counts[k] += 1.0
                break
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
    gain = np.linalg.solve(s_oo, s_mo.T).T  # Sigma_mo Sigma_oo^-1
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


def _empty_threshold(n_points):
    """Total responsibility at or below which a component counts as empty."""
    return 10 * np.finfo(float).eps * max(n_points, 1)


def _has_empty_component(counts, n_points):
    """The emptiness test of ``_reseed_empty``."""
    return bool((counts <= _empty_threshold(n_points)).any())


def _weighted_sums(data, R):
    """``stats[k] = sum_n R[k, n] t(x_n)`` (K, m) for complete data, block by block.

    ``R`` (K, N) holds responsibilities or a (boolean) one-hot; t(x) is described in
    ``_CompleteData.feature_blocks``.
    """
    stats = np.zeros((R.shape[0], data.n_features))
    for rows, t in data.feature_blocks():
        stats += _block_sums(R[:, rows], t)
    return stats


def _gaussians_from_statistics(stats, shift, reg_covar):
    """Means (K, d) and covariances (K, d, d) from the weighted sums of t(x).

    ``stats[k] = sum_n R[k, n] t(x_n)`` holds the count ``N_k``, the sum of the centred points
    and the sums of their products. Then ``mu_k = sum x / N_k`` and
    ``Sigma_k = sum x x^T / N_k - mu_k mu_k^T`` (centred coordinates, see ``_CompleteData``),
    plus ``reg_covar`` on the diagonal.
    """
    d = shift.shape[0]
    counts = stats[:, 0]
    centred_means = stats[:, 1: 1 + d] / counts[:, None]
    first, second = np.triu_indices(d)
    products = np.empty((stats.shape[0], d, d))
    products[:, first, second] = stats[:, 1 + d:]
    products[:, second, first] = stats[:, 1 + d:]
    covs = products / counts[:, None, None] - centred_means[:, :, None] * centred_means[:, None, :]
    covs[:, np.arange(d), np.arange(d)] += reg_covar
    return centred_means + shift, covs


def _m_step_from_statistics(stats, data, reg_covar):
    """The M-step on complete data from ``stats`` (K, m); an ``MStepResult``.

    Equal to ``m_step(data.X, R)`` when ``stats`` are the sums of t(x) weighted by ``R`` and no
    component is empty (the EM loop checks that first).
    """
    means, covs = _gaussians_from_statistics(stats, data.shift, reg_covar)
    return MStepResult(means, covs, stats[:, 0] / data.X.shape[0])


# ---------------------------------------------------------------------------------------------
# 4. The EM loop
# ---------------------------------------------------------------------------------------------

# Fast path for complete data, used by the EM loop ---------------------------------------------
#
# A Gaussian's log-density is linear in the per-point statistics t(x) = (1, x, x_i x_j for
# i <= j), and the M-step only needs the weighted sums of t(x) per component. So one pass over
# the data, block by block, does an E-step (one (K, m) @ (m, b) product per block) and collects
# what the M-step needs (one (K, b) @ (b, m) product per block). Blocks of _BLOCK_ROWS points
# keep every temporary in the cache; there is no (N, K, d) temporary, no pass over X per
# component, and soft EM never stores the (K, N) responsibilities inside the loop. The functions
# above stay the reference formulas; tests check that both paths agree.

_BLOCK_ROWS = 1 << 15


@dataclass(frozen=True)
class _CompleteData:
    """Complete points prepared for the fast path (``_CompleteData.of(X)``).

    Attributes
    ----------
    X : ndarray of shape (N, d)
    shift : ndarray of shape (d,)
        A round centre of X (``_round_centre``). The statistics use ``x - shift``, which keeps
        ``E[x x^T] - mu mu^T`` and ``||x||^2 - 2 x.mu + ||mu||^2`` accurate: the cancellation is
        then relative to the spread of the data, not to its distance from the origin.
    centred_t : ndarray of shape (d, N)
        ``(X - shift).T``, contiguous, so that a block of coordinates is a plain copy.
    """

    X: np.ndarray
    shift: np.ndarray
    centred_t: np.ndarray

    @classmethod
    def of(cls, X):
        shift = _round_centre(X)
        centred_t = np.empty(X.shape[::-1])
        np.subtract(X.T, shift[:, None], out=centred_t)
        return cls(X, shift, centred_t)

    @property
    def n_features(self):
        """m = 1 + d + d (d + 1) / 2, the length of t(x)."""
        d = self.shift.shape[0]
        return 1 + d + d * (d + 1) // 2

    def feature_blocks(self):
        """Yield ``(rows, t)`` for consecutive blocks of points.

        ``rows`` is the block's slice of ``range(N)`` and ``t`` (m, b) holds t(x) of its
        centred points: row 0 is 1, rows ``1..d`` the coordinates, then the products
        ``x_i x_j`` for ``i <= j`` in ``np.triu_indices(d)`` order. ``t`` is a buffer that
        the next block overwrites.
        """
        d, N = self.centred_t.shape
        buffer = np.empty((self.n_features, min(N, _BLOCK_ROWS)))
        buffer[0] = 1.0
        for start in range(0, N, _BLOCK_ROWS):
            rows = slice(start, min(start + _BLOCK_ROWS, N))
            t = buffer[:, : rows.stop - start]
            coords = t[1: 1 + d]
            coords[...] = self.centred_t[:, rows]
            row = 1 + d
            for i in range(d):  # x_i x_j for j = i..d-1: the next d - i rows
                np.multiply(coords[i], coords[i:], out=t[row: row + d - i])
                row += d - i
            yield rows, t

    def square_rows(self):
        """Indices of the rows ``x_i^2`` in t(x)."""
        d = self.shift.shape[0]
        first, second = np.triu_indices(d)
        return 1 + d + np.flatnonzero(first == second)


def _round_centre(X):
    """The column means of X (d,), rounded to a power of two at the scale of the spread.

    Close enough to the mean for accuracy, and exact for integer data (the centred values stay
    integers), so that exact ties between components break as in the reference formulas.
    """
    mean, spread = X.mean(axis=0), X.std(axis=0)
    step = np.exp2(np.floor(np.log2(np.where(spread > 0, spread, 1.0))))
    return np.round(mean / step) * step


def _first_true(member):
    """Keep only the first True of every column of a boolean (K, N) array (ties to lowest k)."""
    return member & (np.cumsum(member, axis=0) == 1)


def _nearest_in_block(coef, t_linear, member):
    """Mark each point's nearest mean in ``member`` (K, b) and return ``sum_n min_k score``.

    ``coef @ t_linear`` gives the scores ``||mu_k||^2 - 2 x.mu_k`` (K, b); ties mark several
    components (``_hard_pass`` resolves them).
    """
    scores = coef @ t_linear
    best = scores.min(axis=0)
    np.equal(scores, best, out=member)
    return float(best.sum())


def _block_sums(R, t):
    """``R @ t.T`` (K, m) in float: one block's share of the M-step's sums."""
    return np.matmul(R, t.T, dtype=float)


def _hard_pass(data, means):
    """Hard E-step on complete data, with the sums that the M-step needs.

    ``||x - mu||^2 = ||x||^2 - 2 x.mu + ||mu||^2``: the first term does not depend on the
    component, so the nearest mean minimises ``||mu||^2 - 2 x.mu`` (one product per block).

    Parameters
    ----------
    data : _CompleteData
    means : ndarray of shape (K, d)

    Returns
    -------
    member : ndarray of shape (K, N), bool
        One-hot assignment to the nearest mean, ties to the lowest component.
    objective : float
        ``sum_n min_k ||x_n - mu_k||^2``.
    stats : ndarray of shape (K, m)
        ``stats[k] = sum_{n in k} t(x_n)``.
    """
    K, d = means.shape
    centred = means - data.shift
    coef = np.column_stack([np.einsum("kd,kd->k", centred, centred), -2.0 * centred])
    member = np.empty((K, data.X.shape[0]), dtype=bool)
    stats = np.zeros((K, data.n_features))
    min_scores = 0.0
    for rows, t in data.feature_blocks():
        min_scores += _nearest_in_block(coef, t[: 1 + d], member[:, rows])
        stats += _block_sums(member[:, rows], t)
    if np.count_nonzero(member) > member.shape[1]:  # exact ties: recount without them
        member = _first_true(member)
        stats = _weighted_sums(data, member)
    objective = min_scores + float(stats[:, data.square_rows()].sum())  # + sum_n ||x_n||^2
    return member, max(objective, 0.0), stats


def _log_density_coefficients(shift, means, covariances, weights):
    """Coefficients (K, m) such that ``coef @ t(x) = ln pi_k + ln N(x; mu_k, Sigma_k)``.

    With ``P = Sigma^-1`` and centred ``x`` and ``mu``: ``-(x - mu)^T P (x - mu) / 2 =
    -x^T P x / 2 + x^T P mu - mu^T P mu / 2``; the quadratic term gives ``-P_ii / 2`` on
    ``x_i^2`` and ``-P_ij`` on ``x_i x_j`` (``i < j``). A component of weight 0 gets ``ln 1``
    here (an infinite coefficient would make the product NaN); the caller sets its row to -inf.
    """
    K, d = means.shape
    chol = _cholesky(covariances)  # clear error if a covariance is not positive definite
    chol_inv = np.linalg.inv(chol)
    precision = np.swapaxes(chol_inv, 1, 2) @ chol_inv  # (L L^T)^-1 = L^-T L^-1
    centred = means - shift
    p_mu = np.einsum("kij,kj->ki", precision, centred)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    log_weights = np.log(np.where(weights > 0, weights, 1.0))  # weight 0: see _soft_pass
    first, second = np.triu_indices(d)
    coef = np.empty((K, 1 + d + first.size))
    coef[:, 0] = log_weights - 0.5 * (d * np.log(2 * np.pi) + log_det
                                      + np.einsum("ki,ki->k", centred, p_mu))
    coef[:, 1: 1 + d] = p_mu
    coef[:, 1 + d:] = np.where(first == second, -0.5, -1.0) * precision[:, first, second]
    return coef


def _normalise_log_rows(log_prob):
    """Turn ``ln pi_k N(x_n | k)`` (K, b) into responsibilities, in place.

    Returns the same array, now holding ``p(z_n = k | x_n)``, and the block's log-likelihood:
    a log-sum-exp over the K rows (max, subtract, exp, sum, divide) with no other (K, b)
    temporary.
    """
    top = log_prob.max(axis=0)
    log_prob -= top
    np.exp(log_prob, out=log_prob)
    norm = log_prob.sum(axis=0)
    log_prob /= norm
    log_norm = np.log(norm)
    log_norm += top
    return log_prob, float(log_norm.sum())


def _soft_pass(data, means, covariances, weights, resp=None):
    """Soft E-step on complete data, with the sums that the M-step needs.

    Parameters
    ----------
    data : _CompleteData
    means, covariances, weights : ndarrays (K, d), (K, d, d), (K,)
    resp : ndarray of shape (K, N), optional
        Filled with the responsibilities if given (the EM loop itself only needs the sums).

    Returns
    -------
    log_lik : float
        The total log-likelihood.
    stats : ndarray of shape (K, m)
        ``stats[k] = sum_n R[k, n] t(x_n)``.
    """
    coef = _log_density_coefficients(data.shift, means, covariances, weights)
    absent = weights <= 0  # ln 0: these components explain no point
    stats = np.zeros((means.shape[0], data.n_features))
    log_lik = 0.0
    for rows, t in data.feature_blocks():
        log_prob = coef @ t
        if absent.any():
            log_prob[absent] = -np.inf
        block_resp, block_log_lik = _normalise_log_rows(log_prob)
        log_lik += block_log_lik
        stats += _block_sums(block_resp, t)
        if resp is not None:
            resp[:, rows] = block_resp
    return log_lik, stats



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


def _permute_components(result, order):
    """A copy of ``result`` with its components renumbered: new ``k`` is old ``order[k]``.

    Reorders means, covariances, weights, resp, history and init_means, and renames labels and
    re-seeding records to match.
    """
    order = np.asarray(order)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)  # rank[old] = new
    history = [{**h, "means": h["means"][order], "covariances": h["covariances"][order],
                "weights": h["weights"][order]} for h in result.history]
    return replace(result, means=result.means[order], covariances=result.covariances[order],
                   weights=result.weights[order], resp=result.resp[order],
                   labels=rank[result.labels], history=history,
                   init_means=result.init_means[order],
                   reseeded=[(t, int(rank[k])) for t, k in result.reseeded])


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


def _hard_e_step(X, data, means):
    """Hard E-step of the loop: one-hot (K, N) bool, objective, stats (K, m) or None.

    ``data`` is the ``_CompleteData`` of X (fast path, which also returns the M-step's sums) or
    None when cells are missing (reference ``_assign``; no sums).
    """
    if data is not None:
        return _hard_pass(data, means)
    labels, dist = _assign(X, means)
    return labels == np.arange(means.shape[0])[:, None], float(dist.sum()), None


def _soft_e_step(X, data, means, covs, weights, keep_resp):
    """Soft E-step of the loop: responsibilities (K, N) or None, log-likelihood, stats or None.

    On the fast path the responsibilities are only stored when ``keep_resp`` is True.
    """
    if data is None:
        resp, log_lik = _soft_assign(X, means, covs, weights)
        return resp, log_lik, None
    resp = np.empty((means.shape[0], X.shape[0])) if keep_resp else None
    log_lik, stats = _soft_pass(data, means, covs, weights, resp)
    return resp, log_lik, stats


def _em_iteration(X, data, method, means, covs, weights, reg_covar):
    """One E-step and one M-step from the current parameters.

    Parameters
    ----------
    X : ndarray (N, d)
    data : _CompleteData or None
        None when X has missing cells; the reference E-steps and ``m_step`` then do the work.
    method : {"hard", "soft"}
    means, covs, weights : the current parameters; ``covs`` and ``weights`` may be None for
        hard EM (the start of a run, before any M-step).
    reg_covar : float

    Returns
    -------
    fit : MStepResult
    objective : float
        Of the current parameters: within-cluster sum of squares (hard) or log-likelihood.
    member : ndarray (K, N) of bool, or None
        Hard EM: this E-step's assignment (for the convergence test); soft EM: None.
    """
    if method == "hard":
        member, objective, stats = _hard_e_step(X, data, means)
        R = member
    else:
        member = None
        R, objective, stats = _soft_e_step(X, data, means, covs, weights, keep_resp=False)
    if stats is None:  # missing cells: expected statistics under the current parameters
        current = (means, covs) if covs is not None else (None, None)
        return m_step(X, R, *current, reg_covar), objective, member
    if _has_empty_component(stats[:, 0], X.shape[0]):  # re-seeding needs R: reference M-step
        if R is None:
            R, _, _ = _soft_e_step(X, data, means, covs, weights, keep_resp=True)
        return m_step(X, R, reg_covar=reg_covar), objective, member
    return _m_step_from_statistics(stats, data, reg_covar), objective, member


def _final_e_step(X, data, method, means, covs, weights):
    """The E-step of the final parameters: resp (K, N), labels (N,) and the objective.

    ``resp`` is an int one-hot for hard EM, responsibilities for soft EM.
    """
    if method == "hard":
        member, objective, _ = _hard_e_step(X, data, means)
        labels = np.argmax(member, axis=0)
        return _one_hot(labels, means.shape[0]), labels, objective
    resp, objective, _ = _soft_e_step(X, data, means, covs, weights, keep_resp=True)
    return resp, np.argmax(resp, axis=0), objective


def _starting_point(X, data, means, covs, weights, reg_covar):
    """Complete a start given by means only: covariances and weights of the partition the
    means induce (one hard E-step), the means kept as given."""
    if covs is None or weights is None:
        fit, _, _ = _em_iteration(X, data, "hard", means, None, None, reg_covar)
        covs = fit.covariances if covs is None else covs
        weights = fit.weights if weights is None else weights
    return means, covs, weights


def _snapshot(means, covs, weights, objective=np.nan):
    return {"means": means.copy(), "covariances": covs.copy(), "weights": weights.copy(),
            "objective": objective}


def _progress_bar(method, max_iter, start, n_starts):
    """A tqdm bar (a widget in notebooks) for one EM run."""
    from tqdm.auto import tqdm

    desc = f"{method} EM" + (f" (start {start + 1}/{n_starts})" if n_starts > 1 else "")
    return tqdm(total=max_iter, desc=desc, unit="it")


def _improves(new, old, method):
    """True if objective ``new`` beats ``old`` by more than rounding (1e-12 relative).

    Lower is better for hard EM (sum of squares), higher for soft EM (log-likelihood).
    """
    margin = 1e-12 * max(abs(old), 1.0)
    return new < old - margin if method == "hard" else new > old + margin


def _em_once(X, data, means, covs, weights, method, max_iter, tol, reg_covar, bar=None):
    """One EM run from a start; returns an EMResult.

    ``data`` is the ``_CompleteData`` of X, or None with missing cells; ``bar`` an optional
    tqdm bar, advanced once per iteration with the objective shown.
    """
    N = X.shape[0]
    init_means = means.copy()
    history = [_snapshot(means, covs, weights)]
    reseeded = []
    converged = False
    prev_member, prev_mean_ll = None, -np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        fit, objective, member = _em_iteration(X, data, method, means, covs, weights, reg_covar)
        history[-1]["objective"] = objective
        means, covs, weights = fit
        reseeded += [(n_iter, k) for k in fit.reseeded]
        history.append(_snapshot(means, covs, weights))
        if method == "hard":
            converged = prev_member is not None and np.array_equal(member, prev_member)
            prev_member = member
        else:
            converged = objective / N - prev_mean_ll < tol
            prev_mean_ll = objective / N
        if bar is not None:
            bar.set_postfix_str(f"objective={objective:.6g}", refresh=False)
            bar.update()
        if converged:
            break
    # a last E-step so that resp, labels and the objective belong to the final parameters
    resp, labels, objective = _final_e_step(X, data, method, means, covs, weights)
    history[-1]["objective"] = objective
    if bar is not None:
        bar.set_postfix_str(f"objective={objective:.6g}")
        bar.close()
    return EMResult(means=means, covariances=covs, weights=weights, resp=resp, labels=labels,
                    n_iter=n_iter, converged=bool(converged), objective=objective,
                    history=history, init_means=init_means, method=method, reseeded=reseeded)


def run_em(X, n_components=3, method="hard", init="random", n_init=1, max_iter=100, tol=1e-6,
           random_state=0, reg_covar=1e-6, progress=False):
    """Fit a mixture of Gaussians by EM.

    ``method="hard"`` is the algorithm of the simulation questions: the E-step assigns each
    point to the nearest mean (``e_step``), the M-step re-estimates means, covariances and
    weights (``m_step``); it stops when no assignment changes. Without missing cells this is
    Lloyd's k-means. ``method="soft"`` is full-covariance Gaussian-mixture EM: the E-step computes
    posterior responsibilities (``e_step_soft``, log space); it stops when the mean
    log-likelihood per point improves by less than ``tol``. Missing cells are marginalised out in
    the soft E-step and handled by expected sufficient statistics in the M-step; soft EM's
    log-likelihood then still never decreases, but hard EM's objective (scaled partial
    distances) carries no such guarantee, since its M-step fills cells by conditional means.

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
        Number of starts (only with a string ``init``); the best objective wins. A later start
        must beat an earlier one by more than rounding (1e-12 relative): the same optimum
        reached from two starts keeps the first.
    max_iter : int, default 100
    tol : float, default 1e-6
        Soft EM only: threshold on the gain in mean log-likelihood per point.
    random_state : int, default 0
        Seed of every random choice.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance.
    progress : bool, default False
        Show a tqdm progress bar (a widget in notebooks) with the iteration and the
        objective, one bar per start. Off by default so that notebook outputs stay stable.

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
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    n_complete = int(np.count_nonzero(~np.isnan(X).any(axis=1)))
    if n_complete < K:
        raise ValueError(f"n_components={K} is more than the {n_complete} complete rows of X")
    rng = np.random.default_rng(random_state)
    if isinstance(init, str):
        starts = [(_init_means(X, K, init, rng), None, None) for _ in range(n_init)]
    else:
        if n_init != 1:
            raise ValueError("n_init > 1 needs a random init ('random' or 'kmeans++')")
        starts = [_parse_init(X, K, init)]
    data = None if np.isnan(X).any() else _CompleteData.of(X)  # the fast path
    best = None
    for start, (means, covs, weights) in enumerate(starts):
        means, covs, weights = _starting_point(X, data, means, covs, weights, reg_covar)
        bar = _progress_bar(method, max_iter, start, len(starts)) if progress else None
        result = _em_once(X, data, means, covs, weights, method, max_iter, tol, reg_covar, bar)
        if best is None or _improves(result.objective, best.objective, method):
            best = result
    if not best.converged:
        warnings.warn(f"{method} EM did not converge within max_iter={max_iter} iterations; "
                      "raise max_iter or tol", EMConvergenceWarning, stacklevel=2)
    return best


# ---------------------------------------------------------------------------------------------
# 5. Categorical mixture model (theory question 5)
# ---------------------------------------------------------------------------------------------
#
# Representation. ``Y`` has shape (N, C): one row per observation, one column per category.
# A row holds one-hot indicators (one draw) or counts (several draws) of the categories. Several
# categorical features are stacked side by side and described by ``feature_sizes = (C_1, ...,
# C_F)`` with ``sum(feature_sizes) == C``: columns ``[0, C_1)`` belong to feature 1, the next
# ``C_2`` columns to feature 2, and so on. ``encode_categorical`` builds ``Y`` from integer codes.
# Component k holds one probability vector per feature, stored side by side in row k of ``probs``
# (K, C); each block of a row sums to 1. An all-zero block (a missing feature of that observation)
# contributes ln 1 = 0: the feature is marginalised out. The log-likelihood of a row is
# ``ln sum_k pi_k prod_c theta_kc ** y_nc``: the probability of the observed draws in order, i.e.
# without the multinomial coefficient of count data, which does not depend on the parameters.

def encode_categorical(codes, n_categories=None):
    """One-hot encode integer category codes, one column block per feature.

    Parameters
    ----------
    codes : array-like of int, shape (N,) or (N, F)
        Category of each observation for each of the F features, in ``0 .. C_j - 1``;
        ``-1`` marks a missing value (its block is left all zero, i.e. marginalised out).
    n_categories : int or sequence of int of length F, optional
        Number of categories C_j of each feature. Default: ``max code + 1`` per feature.

    Returns
    -------
    Y : ndarray of float, shape (N, sum(C_j))
        One-hot rows, the input expected by :func:`run_cmm_em`.
    feature_sizes : tuple of int, length F
        The block sizes ``(C_1, ..., C_F)``.
    """
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError("codes must be a non-empty array of shape (N,) or (N, F), "
                         f"got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        if not (np.issubdtype(codes.dtype, np.floating) and np.all(np.isfinite(codes))
                and np.all(codes == np.round(codes))):
            raise ValueError("codes must hold integers (category indices, -1 for missing)")
        codes = codes.astype(int)
    if np.any(codes < -1):
        raise ValueError("codes must be >= 0 (or -1 for a missing value)")
    n_features = codes.shape[1]
    if n_categories is None:
        sizes = tuple(int(max(codes[:, j].max(), 0)) + 1 for j in range(n_features))
    else:
        sizes = tuple(np.broadcast_to(np.asarray(n_categories, dtype=int), (n_features,)).tolist())
        for j, size in enumerate(sizes):
            if codes[:, j].max() >= size:
                raise ValueError(f"codes of feature {j} reach {codes[:, j].max()} "
                                 f"but n_categories[{j}] is {size}")
    Y = np.zeros((codes.shape[0], sum(sizes)))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for j in range(n_features):
        seen = codes[:, j] >= 0
        Y[np.flatnonzero(seen), offsets[j] + codes[seen, j]] = 1.0
    return Y, sizes


@dataclass
class CMMResult:
    """Result of :func:`run_cmm_em`.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Mixing proportions pi_k.
    probs : ndarray, shape (K, C)
        Category probabilities theta_kc, one block per feature (each block of a row sums to 1).
    feature_sizes : tuple of int
        Block sizes (C_1, ..., C_F) of the columns of ``Y`` and ``probs``.
    resp : ndarray, shape (K, N)
        Responsibilities p(z_n = k | y_n) at the final parameters; columns sum to 1.
    labels : ndarray of int, shape (N,)
        ``resp.argmax(axis=0)``.
    log_likelihood : float
        Total log-likelihood sum_n ln p(y_n) at the final parameters.
    objective : float
        ``log_likelihood + alpha * sum(ln probs)``: the smoothed (MAP) objective that EM never
        decreases. Equal to ``log_likelihood`` when ``alpha == 0``.
    n_iter : int
        Number of EM iterations (M-steps) run in the kept initialisation.
    converged : bool
        Whether the per-observation change of ``objective`` fell below ``tol``.
    history : list of dict
        One entry per parameter set, starting with the initialisation (``iteration`` 0), with keys
        ``iteration``, ``weights``, ``probs``, ``log_likelihood`` and ``objective``.
    init_weights, init_probs : ndarray, shapes (K,) and (K, C)
        The initial parameters of the kept run.
    """

    weights: np.ndarray
    probs: np.ndarray
    feature_sizes: tuple
    resp: np.ndarray
    labels: np.ndarray
    log_likelihood: float
    objective: float
    n_iter: int
    converged: bool
    history: list = field(repr=False)
    init_weights: np.ndarray = field(repr=False)
    init_probs: np.ndarray = field(repr=False)

    @property
    def objective_trace(self):
        """The ``objective`` of every entry of ``history``, as an array (length n_iter + 1)."""
        return np.array([h["objective"] for h in self.history])

    def probs_per_feature(self):
        """Split ``probs`` into one (K, C_j) array per feature."""
        return _split_blocks(self.probs, self.feature_sizes)


def _split_blocks(A, feature_sizes):
    """Split the last axis of ``A`` into the feature blocks (views, not copies)."""
    return np.split(A, np.cumsum(feature_sizes)[:-1], axis=-1)


def _check_cmm_data(Y, feature_sizes):
    """Validate ``Y`` and ``feature_sizes``; return a float copy of Y and the sizes as a tuple."""
    Y_arr = np.asarray(Y)
    if Y_arr.dtype == object or not (np.issubdtype(Y_arr.dtype, np.number) or Y_arr.dtype == bool):
        raise ValueError("Y must be a numeric array of one-hot rows or counts, "
                         f"got dtype {Y_arr.dtype}")
    Y_arr = np.array(Y_arr, dtype=float)  # a copy: the caller's array is never touched
    if Y_arr.ndim != 2:
        raise ValueError(f"Y must be 2-D of shape (N, C), got {Y_arr.ndim}-D shape {Y_arr.shape}")
    if Y_arr.shape[0] == 0 or Y_arr.shape[1] == 0:
        raise ValueError(f"Y must have at least one row and one column, got shape {Y_arr.shape}")
    if not np.all(np.isfinite(Y_arr)):
        raise ValueError("Y contains NaN or inf; encode a missing feature as an all-zero "
                         "block instead")
    if np.any(Y_arr < 0):
        raise ValueError("Y must be non-negative (one-hot indicators or counts)")
    if not np.any(Y_arr > 0):
        raise ValueError("Y is all zero: there is no observed category to fit")
    if feature_sizes is None:
        sizes = (Y_arr.shape[1],)
    else:
        sizes = tuple(int(s) for s in np.atleast_1d(feature_sizes))
        if any(s != f for s, f in zip(sizes, np.atleast_1d(feature_sizes))):
            raise ValueError(f"feature_sizes must hold integers, got {feature_sizes!r}")
        if sum(sizes) != Y_arr.shape[1]:
            raise ValueError(f"feature_sizes {sizes} sum to {sum(sizes)} "
                             f"but Y has {Y_arr.shape[1]} columns")
    for j, size in enumerate(sizes):
        if size < 2:
            raise ValueError(
                f"feature {j} has {size} category; every feature needs at least 2 (pass "
                "one-hot rows or counts, e.g. from encode_categorical(codes), not the integer "
                "codes themselves)")
    return Y_arr, sizes


def _check_cmm_params(weights, probs, feature_sizes, n_columns, name="probs",
                      weights_name="weights"):
    """Validate mixture parameters; return float copies (weights (K,), probs (K, C))."""
    probs = np.array(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != n_columns:
        raise ValueError(f"{name} must have shape (K, {n_columns}), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    for j, block in enumerate(_split_blocks(probs, feature_sizes)):
        if not np.allclose(block.sum(axis=1), 1.0, atol=1e-8):
            raise ValueError(f"each row of {name} must sum to 1 within feature {j}; "
                             f"got sums {block.sum(axis=1)}")
    return _check_weights(weights, probs.shape[0], name=weights_name), probs


def _safe_log(a):
    """Natural log that maps 0 to -inf without a divide-by-zero warning."""
    out = np.full(a.shape, -np.inf)
    np.log(a, out=out, where=a > 0)
    return out


def _cmm_log_prob_components(Y, probs):
    """ln p(y_n | z_n = k) = sum_c y_nc ln theta_kc, shape (K, N), with 0 * ln 0 taken as 0."""
    log_probs = _safe_log(probs)
    finite = np.where(np.isfinite(log_probs), log_probs, 0.0)
    out = finite @ Y.T
    impossible = ((probs == 0).astype(float) @ (Y > 0).T.astype(float)) > 0
    out[impossible] = -np.inf
    return out


def _cmm_log_joint(Y, weights, probs):
    """ln pi_k + ln p(y_n | z_n = k), shape (K, N)."""
    return _safe_log(weights)[:, None] + _cmm_log_prob_components(Y, probs)


def _cmm_e_step(Y, weights, probs):
    """Responsibilities (K, N) and total log-likelihood from validated inputs."""
    log_joint = _cmm_log_joint(Y, weights, probs)
    log_norm = logsumexp(log_joint, axis=0)  # ln p(y_n), shape (N,)
    if not np.all(np.isfinite(log_norm)):
        bad = np.flatnonzero(~np.isfinite(log_norm))
        raise ValueError(f"rows {bad[:5].tolist()} of Y have probability 0 under every component "
                         "(an observed category has probability 0); use alpha > 0")
    resp = np.exp(log_joint - log_norm)
    return resp, float(log_norm.sum())


def _cmm_m_step(Y, resp, feature_sizes, alpha):
    """Closed-form (smoothed) M-step from validated inputs: weights (K,), probs (K, C)."""
    n_k = resp.sum(axis=1) + 10 * np.finfo(float).eps  # keeps an empty component's weight > 0
    weights = n_k / n_k.sum()
    counts = resp @ Y + alpha  # expected counts of each category in each component, (K, C)
    blocks = [block / block.sum(axis=1, keepdims=True)
              for block in _split_blocks(counts, feature_sizes)]
    probs = np.concatenate(blocks, axis=1)
    uniform = np.concatenate([np.full((resp.shape[0], s), 1.0 / s) for s in feature_sizes], axis=1)
    # a component with no expected count in a feature (possible only when alpha == 0): uniform
    empty = ~np.isfinite(probs)
    probs[empty] = uniform[empty]
    return weights, probs


def _cmm_log_prior(probs, alpha):
    """alpha * sum ln theta_kc: the log density, up to a constant, of a Dirichlet(1 + alpha)
    prior on every probability vector."""
    if alpha == 0:
        return 0.0
    return float(alpha * np.log(probs).sum())


def cmm_log_likelihood(Y, weights, probs, feature_sizes=None):
    """Total log-likelihood of a categorical mixture.

    Parameters
    ----------
    Y : array-like, shape (N, C)
        One-hot rows or counts (see the section comment for several features).
    weights : array-like, shape (K,)
        Mixing proportions, summing to 1.
    probs : array-like, shape (K, C)
        Category probabilities; each feature block of a row sums to 1.
    feature_sizes : sequence of int, optional
        Block sizes (C_1, ..., C_F); default one feature with C categories.

    Returns
    -------
    float
        sum_n ln sum_k pi_k prod_c theta_kc ** y_nc (``-inf`` if some row is impossible).
    """
    Y_arr, sizes = _check_cmm_data(Y, feature_sizes)
    weights, probs = _check_cmm_params(weights, probs, sizes, Y_arr.shape[1])
    return float(logsumexp(_cmm_log_joint(Y_arr, weights, probs), axis=0).sum())


def cmm_e_step(Y, weights, probs, feature_sizes=None):
    """E-step of the categorical mixture: posterior of the component of each row.

    Parameters
    ----------
    Y, weights, probs, feature_sizes
        As in :func:`cmm_log_likelihood`.

    Returns
    -------
    resp : ndarray, shape (K, N)
        q_nk = pi_k p(y_n | theta_k) / sum_j pi_j p(y_n | theta_j), computed in log space.
    log_lik : float
        Total log-likelihood at these parameters.
    """
    Y_arr, sizes = _check_cmm_data(Y, feature_sizes)
    weights, probs = _check_cmm_params(weights, probs, sizes, Y_arr.shape[1])
    return _cmm_e_step(Y_arr, weights, probs)


def cmm_m_step(Y, resp, feature_sizes=None, alpha=0.0):
    """M-step of the categorical mixture: closed-form maximiser of the expected log-likelihood.

    Parameters
    ----------
    Y : array-like, shape (N, C)
        One-hot rows or counts.
    resp : array-like, shape (K, N)
        Responsibilities (soft) or one-hot assignments (hard); columns sum to 1.
    feature_sizes : sequence of int, optional
        Block sizes (C_1, ..., C_F); default one feature with C categories.
    alpha : float, default 0.0
        Additive smoothing (pseudo-count per category and component). ``0`` gives the
        maximum-likelihood update pi_k = N_k / N, theta_kc = sum_n q_nk y_nc / sum_n q_nk n_nj
        (n_nj: draws of feature j in row n); ``alpha > 0`` gives the MAP update under a
        symmetric Dirichlet(1 + alpha) prior on each theta_k.

    Returns
    -------
    weights : ndarray, shape (K,)
    probs : ndarray, shape (K, C)
    """
    Y_arr, sizes = _check_cmm_data(Y, feature_sizes)
    resp = _check_resp(resp, Y_arr.shape[0], name="resp")
    alpha = _check_alpha(alpha, allow_zero=True)
    return _cmm_m_step(Y_arr, resp, sizes, alpha)


def _check_alpha(alpha, allow_zero):
    """Validate the smoothing pseudo-count."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a number, got {alpha!r}")
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha < 0 or (alpha == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0 (an unseen category would get probability 0)"
        raise ValueError(f"alpha must be finite and {bound}, got {alpha}")
    return alpha


def _cmm_init(Y, n_components, feature_sizes, init, init_weights, rng):
    """Initial (weights, probs). ``"dirichlet"``: each theta_k block ~ Dirichlet(1, ..., 1)."""
    n_columns = Y.shape[1]
    if isinstance(init, str):
        if init != "dirichlet":
            raise ValueError(f"init must be 'dirichlet' or an array of shape (K, C), got {init!r}")
        probs = np.concatenate(
            [rng.dirichlet(np.ones(size), size=n_components) for size in feature_sizes], axis=1)
    else:
        probs = init
    if np.ndim(probs) == 2 and np.shape(probs)[0] != n_components:
        raise ValueError(f"init must have {n_components} rows (n_components), "
                         f"got {np.shape(probs)[0]}")
    weights = np.full(n_components, 1.0 / n_components) if init_weights is None else init_weights
    return _check_cmm_params(weights, probs, feature_sizes, n_columns, name="init",
                             weights_name="init_weights")


def _cmm_history_entry(iteration, weights, probs, log_lik, alpha):
    """One ``history`` record: copies of the parameters and their two objectives."""
    return {"iteration": iteration, "weights": weights.copy(), "probs": probs.copy(),
            "log_likelihood": log_lik, "objective": log_lik + _cmm_log_prior(probs, alpha)}


def _cmm_single_run(Y, feature_sizes, weights, probs, alpha, max_iter, tol):
    """EM from one initialisation; returns (weights, probs, resp, history, n_iter, converged)."""
    resp, log_lik = _cmm_e_step(Y, weights, probs)
    history = [_cmm_history_entry(0, weights, probs, log_lik, alpha)]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        weights, probs = _cmm_m_step(Y, resp, feature_sizes, alpha)
        resp, log_lik = _cmm_e_step(Y, weights, probs)
        history.append(_cmm_history_entry(n_iter, weights, probs, log_lik, alpha))
        change = (history[-1]["objective"] - history[-2]["objective"]) / Y.shape[0]
        if abs(change) <= tol:
            converged = True
            break
    return weights, probs, resp, history, n_iter, converged


def run_cmm_em(Y, n_components, feature_sizes=None, init="dirichlet", init_weights=None,
               n_init=1, alpha=1.0, max_iter=500, tol=1e-6, random_state=0):
    """Fit a categorical mixture model by EM (theory question 5).

    Parameters
    ----------
    Y : array-like, shape (N, C)
        One-hot rows or category counts; several features as column blocks (``feature_sizes``).
        Not modified.
    n_components : int
        Number of mixture components K (1 <= K <= N).
    feature_sizes : sequence of int, optional
        Block sizes (C_1, ..., C_F), each >= 2, summing to C. Default: one feature with C
        categories.
    init : {"dirichlet"} or array-like of shape (K, C), default "dirichlet"
        ``"dirichlet"`` draws each theta_k block from a flat Dirichlet(1, ..., 1) with the seeded
        generator, which breaks the symmetry between components. An array is used as the initial
        ``probs`` as given (e.g. the all-uniform start, a fixed point of EM; see the theory
        notebook).
    init_weights : array-like of shape (K,), optional
        Initial mixing proportions; default uniform 1/K.
    n_init : int, default 1
        Number of initialisations (only with ``init="dirichlet"``); the run with the highest final
        objective is kept.
    alpha : float, default 1.0
        Additive (Laplace) smoothing, > 0: a pseudo-count per category and component, so that an
        unseen category never gets probability 0. EM then maximises the MAP objective
        ``log_likelihood + alpha * sum(ln probs)`` (Dirichlet(1 + alpha) prior).
    max_iter : int, default 500
        Maximum number of EM iterations per initialisation.
    tol : float, default 1e-6
        Convergence threshold on the change of the objective divided by N.
    random_state : int, default 0
        Seed of ``numpy.random.default_rng`` for the initialisations.

    Returns
    -------
    CMMResult

    Warns
    -----
    EMConvergenceWarning
        If the kept run did not converge within ``max_iter`` iterations.
    """
    Y_arr, sizes = _check_cmm_data(Y, feature_sizes)
    n_components = _check_int(n_components, "n_components", 1)
    if n_components > Y_arr.shape[0]:
        raise ValueError(f"n_components ({n_components}) must not exceed the number of rows "
                         f"of Y ({Y_arr.shape[0]})")
    n_init = _check_int(n_init, "n_init", 1)
    max_iter = _check_int(max_iter, "max_iter", 1)
    alpha = _check_alpha(alpha, allow_zero=False)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if not isinstance(init, str) and n_init != 1:
        raise ValueError("n_init must be 1 when init is an array (every run would be identical)")
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise ValueError(f"random_state must be an integer seed, got {random_state!r}")
    rng = np.random.default_rng(random_state)

    best = None
    for _ in range(n_init):
        weights0, probs0 = _cmm_init(Y_arr, n_components, sizes, init, init_weights, rng)
        run = _cmm_single_run(Y_arr, sizes, weights0, probs0, alpha, max_iter, tol)
        if best is None or run[3][-1]["objective"] > best[0][3][-1]["objective"]:
            best = (run, weights0, probs0)
    (weights, probs, resp, history, n_iter, converged), weights0, probs0 = best
    if not converged:
        warnings.warn(f"run_cmm_em did not converge in {max_iter} iterations (tol={tol}); "
                       "raise max_iter or tol", EMConvergenceWarning, stacklevel=2)
    return CMMResult(weights=weights, probs=probs, feature_sizes=sizes, resp=resp,
                     labels=resp.argmax(axis=0), log_likelihood=history[-1]["log_likelihood"],
                     objective=history[-1]["objective"], n_iter=n_iter, converged=converged,
                     history=history, init_weights=weights0, init_probs=probs0)


# ---------------------------------------------------------------------------------------------
# 6. Metrics against the true labels
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
    return _permute_components(result, np.argsort(mapping))


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
# 7. Tables and the bootstrap for the simulation notebooks
# ---------------------------------------------------------------------------------------------

# Shared by notebooks 01-05: both scans and the truth, tables, the bootstrap.

DATA_DIR = Path(__file__).resolve().parent / "data"
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
    means = _check_means(truth["means"], len(truth["means"][0]), "truth['means']")
    K, d = means.shape
    covs = _check_covariances(covariances[image], K, d, f"truth['covariances'][{image!r}]")
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
        X = _check_points(X, f"images[{image!r}] X")
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise ValueError(f"images[{image!r}]: y must have shape ({X.shape[0]},), got {y.shape}")
        missing = np.isnan(X)
        groups = [(_class_name(k, names), y == k) for k in np.unique(y)]
        for label, sel in groups + [("all", np.ones(len(y), dtype=bool))]:
            rows[(image, label)] = {"points": int(sel.sum()),
                                    "x1 missing": int(missing[sel, 0].sum()),
                                    "x2 missing": int(missing[sel, 1].sum()),
                                    "complete rows": int((~missing[sel].any(axis=1)).sum())}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["image", "class"]
    return table


def _class_name(k, names):
    return names[k] if k < len(names) else f"class {k}"


def initial_means(X, n_components=3, init="kmeans++", random_state=0, y=None):
    """The seeded initial means that ``run_em`` draws for its first start.

    ``initial_means(X, K, init, s)`` equals ``run_em(X, K, init=init, random_state=s).init_means``
    (same generator, same draws), so a notebook can show the start before running EM from it.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell; only complete rows are candidates.
    n_components : int, default 3
    init : {"kmeans++", "random"}, default "kmeans++"
    random_state : int, default 0
    y : array-like of shape (N,), optional
        True classes. When given, the means are renumbered so that mean ``k`` is the one whose
        nearest-mean cell overlaps true class ``k`` most (Hungarian matching). The numbering of
        a mixture is arbitrary; this only makes tables and colours line up with the classes.

    Returns
    -------
    means : ndarray of shape (K, d)
    """
    X = _check_points(X)
    K = _check_int(n_components, "n_components", minimum=1)
    if not isinstance(init, str):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    means = _init_means(X, K, init, np.random.default_rng(random_state))
    if y is None:
        return means
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    labels, _ = _assign(X, means)
    mapping = label_mapping(y, labels)
    if mapping.size < K:  # means that own no point keep their order after the others
        mapping = np.concatenate([mapping, np.setdiff1d(np.arange(K), mapping)])
    return means[np.argsort(mapping)]


def _as_parameters(params, name):
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
    estimate = _as_parameters(result, "result")
    if estimate.means.shape != expected.means.shape:
        raise ValueError(f"result has means of shape {estimate.means.shape}, the truth of "
                         f"{image} has {expected.means.shape}")
    names = list(truth["class_names"]) if names is None else list(names)
    K = expected.means.shape[0]
    index = pd.MultiIndex.from_product([[_class_name(k, names) for k in range(K)],
                                        PARAMETER_NAMES], names=["class", "parameter"])
    columns = {"truth": _flatten_parameters(expected).ravel(),
               "estimate": _flatten_parameters(estimate).ravel()}
    columns["error"] = columns["estimate"] - columns["truth"]
    if se is not None:
        se = _as_parameters(se, "se")
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

    X = _check_points(X)
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
    labels = [_class_name(k, names) for k in range(confusion.shape[0])]
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
    X = _check_points(X)
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


@dataclass
class BootstrapResult:
    """The outcome of ``bootstrap_parameters``: the refitted parameters of every replicate.

    Attributes
    ----------
    means : ndarray (B, K, d)
    covariances : ndarray (B, K, d, d)
    weights : ndarray (B, K)
        Replicate ``b``'s estimates, component ``k`` aligned to true class ``k``.
    method : str
    n_not_converged : int
        Refits that stopped at ``max_iter`` (a warning is issued when it is not 0).
    random_state : int
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    method: str
    n_not_converged: int
    random_state: int

    @property
    def n_boot(self):
        return self.means.shape[0]

    @property
    def se(self):
        """Bootstrap standard errors (standard deviation over replicates, ``ddof=1``) as
        ``Parameters``: ``means`` (K, d), ``covariances`` (K, d, d), ``weights`` (K,)."""
        return Parameters(self.means.std(axis=0, ddof=1), self.covariances.std(axis=0, ddof=1),
                          self.weights.std(axis=0, ddof=1))


def _stratified_indices(y, rng):
    """One bootstrap sample: for every class, as many rows as it has, drawn with replacement
    from its own rows. Returned sorted by class (the blocks stay in order)."""
    return np.concatenate([rows[rng.integers(0, len(rows), size=len(rows))]
                           for rows in (np.flatnonzero(y == c) for c in np.unique(y))])


def bootstrap_parameters(X, y, n_boot=100, method="soft", init=None, random_state=0,
                         max_iter=500, tol=1e-6):
    """Seeded bootstrap standard errors of the EM estimates.

    Every replicate resamples the rows of each true class with replacement (the class sizes are
    kept, as in the scan, where each tissue contributes a fixed number of points), refits by EM
    from the same fixed start, and renumbers the fitted components to the true classes
    (``align_to_truth``), so that the spread over replicates measures sampling noise and not
    label switching. The resampled rows depend only on ``y``, ``n_boot`` and ``random_state``:
    two data sets with the same labels (e.g. a scan with and without missing cells) are
    resampled with the same rows, which makes their standard errors directly comparable.

    BLAS is limited to one thread during the refits (many tiny problems: threads only add
    overhead).

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell (rows keep their gaps when resampled).
    y : array-like of shape (N,), int
        True class of each row; each class must have at least one row.
    n_boot : int, default 100
        Number of replicates (>= 2).
    method : {"soft", "hard"}, default "soft"
    init : EMResult, Parameters, array of shape (K, d) or dict, optional
        The fixed start of every refit, typically the fit on the full data. Default: the mean of
        the observed cells of each true class.
    random_state : int, default 0
    max_iter, tol
        Passed to ``run_em``.

    Returns
    -------
    BootstrapResult
        ``.se`` holds the standard errors.

    Warns
    -----
    EMConvergenceWarning
        Once, if some refits did not converge within ``max_iter`` (count in ``n_not_converged``).
    """
    from threadpoolctl import threadpool_limits

    X = _check_points(X)
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"y must hold {X.shape[0]} non-negative integer labels (one per row of "
                         f"X), got shape {y.shape} and dtype {y.dtype}")
    n_boot = _check_int(n_boot, "n_boot", minimum=2)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    start = _bootstrap_start(X, y, init)
    K = len(start["means"])
    rng = np.random.default_rng(random_state)
    fits = []
    n_not_converged = 0
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", EMConvergenceWarning)
        for _ in range(n_boot):
            rows = _stratified_indices(y, rng)
            fit = run_em(X[rows], K, method=method, init=start, max_iter=max_iter, tol=tol)
            n_not_converged += not fit.converged
            fits.append(align_to_truth(fit, y[rows]))
    if n_not_converged:
        warnings.warn(f"{n_not_converged} of {n_boot} bootstrap refits did not converge within "
                      f"max_iter={max_iter}", EMConvergenceWarning, stacklevel=2)
    return BootstrapResult(means=np.stack([f.means for f in fits]),
                           covariances=np.stack([f.covariances for f in fits]),
                           weights=np.stack([f.weights for f in fits]), method=method,
                           n_not_converged=int(n_not_converged), random_state=random_state)


def _bootstrap_start(X, y, init):
    """The fixed start of the bootstrap refits, as a ``run_em`` init."""
    if init is None:
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))):
            raise ValueError(f"y must use the labels 0..K-1, got {classes.tolist()}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class with a column all missing
            means = np.array([np.nanmean(X[y == k], axis=0) for k in classes])
        if not np.isfinite(means).all():
            raise ValueError("init=None needs every class to observe every coordinate; "
                             "give init explicitly")
        return {"means": means}
    if hasattr(init, "means"):
        params = _as_parameters(init, "init")
        return {"means": params.means, "covariances": params.covariances,
                "weights": params.weights}
    if isinstance(init, dict):
        return dict(init)
    return {"means": _check_means(init, X.shape[1], "init")}


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
                   "true labels": m_step(X, _one_hot(np.asarray(y), K)).covariances}
        for method in methods:
            if (image, method) in fits:
                columns[method] = _as_parameters(fits[(image, method)], "fits").covariances
        frames[image] = pd.DataFrame(
            {label: np.trace(covs, axis1=1, axis2=2) for label, covs in columns.items()},
            index=pd.Index([_class_name(k, names) for k in range(K)], name="class"))
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
        shift = (_as_parameters(fits[(second, method)], "fits").covariances
                 - _as_parameters(fits[(first, method)], "fits").covariances)
        for entry, values in (("var x1", shift[:, 0, 0]), ("var x2", shift[:, 1, 1]),
                              ("mean var", 0.5 * (shift[:, 0, 0] + shift[:, 1, 1])),
                              ("cov x1,x2", shift[:, 0, 1])):
            columns[(method, entry)] = np.append(values, values.mean())
    K = len(next(iter(columns.values()))) - 1
    return pd.DataFrame(columns, index=pd.Index(
        [_class_name(k, names) for k in range(K)] + ["mean"], name="class"))

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
    params = _as_parameters(params, "params")
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
    y_true, y_pred = _check_labels(y_true, y_pred)
    rows = np.asarray(rows)
    if rows.shape != y_true.shape or rows.dtype != bool or not rows.any():
        raise ValueError(f"rows must be a boolean mask of shape {y_true.shape} selecting at "
                         "least one point")
    return float(np.mean(match_labels(y_true, y_pred)[rows] == y_true[rows]))


# ---------------------------------------------------------------------------------------------
# 8. Filling in missing data
# ---------------------------------------------------------------------------------------------

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
    X = _check_points(X, allow_empty_columns=True)
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

    X = _check_points(X)
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
# 9. Images: tissue segmentation with an optional spatial prior
# ---------------------------------------------------------------------------------------------
#
# An image is segmented by fitting the mixture to the intensities of the pixels inside a mask
# (X of shape (N, 1), N = mask.sum(), pixels in row-major order) with ``run_em``. With
# ``beta > 0`` a Potts prior couples each pixel's class with its neighbours' (hidden Markov
# random field). The exact posterior is then intractable; we use two standard approximations,
# each the natural extension of one of the two E-steps of this module:
#
# * soft: a mean-field E-step (Zhang 1992; Celeux, Forbes & Peyrard 2003). Each pixel's
#   responsibilities are q_n(k) ∝ N(x_n; mu_k, sigma_k^2) exp(beta * sum_{m ~ n} q_m(k)):
#   the log-prior of class k is beta times the neighbours' summed responsibilities for k;
# * hard: iterated conditional modes (ICM, Besag 1986). Each pixel takes the class minimising
#   (x_n - mu_k)^2 / (2 sigma^2) - beta * #{m ~ n : z_m = k}, sigma^2 the pooled within-class
#   variance: at beta = 0 this is exactly the nearest-mean rule of ``e_step``.
#
# Under the prior the class proportions are left to the Potts field: no mixing weight pi_k
# enters the E-step (as in dipy and in Zhang, Brady & Smith 2001). We tried keeping pi_k
# (re-estimated as the mean responsibility): on the noisy slice the prior and pi_k fed each
# other until one class held 99.9 % of the brain, a known failure of a Potts field combined
# with a free external field. ``weights`` still reports the class proportions.
#
# The pixels are updated one colour at a time (two colours for the 4-neighbourhood, a
# checkerboard; four for the 8-neighbourhood, the 2 x 2 pattern): no two pixels of one colour
# are neighbours, so a colour's simultaneous update is the same as updating its pixels one by one
# (Gauss-Seidel, as in sequential ICM), which is what makes each sweep improve the objective;
# updating every pixel at once from the old neighbours (as dipy does) can oscillate. With
# coloured sweeps the mean-field free energy (soft) increases and the ICM energy (hard) decreases
# at every step, E and M alike, so ``history`` is monotone (up to the tiny shift that reg_covar
# adds to the M-step's variances): a check that the tests use.

NEIGHBOURHOODS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)),
}


def _check_image(image, mask, name="image"):
    """Return ``(image, mask)`` as new arrays: float (H, W) and bool (H, W).

    The image must be finite inside the mask (outside it, anything goes, NaN included).
    """
    try:
        img = np.array(image, dtype=float)  # a copy: the caller's array is never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric 2-D array: {exc}") from None
    if img.ndim != 2 or 0 in img.shape:
        raise ValueError(f"{name} must be a 2-D array (H, W) with H, W >= 1, got shape "
                         f"{img.shape}")
    if mask is None:
        inside = np.ones(img.shape, dtype=bool)
    else:
        inside = np.array(mask)
        if inside.shape != img.shape:
            raise ValueError(f"mask must have the {name}'s shape {img.shape}, got "
                             f"{inside.shape}")
        if inside.dtype != bool:
            if not (np.issubdtype(inside.dtype, np.number) and np.isin(inside, (0, 1)).all()):
                raise ValueError("mask must hold booleans (or only 0 and 1)")
            inside = inside.astype(bool)
    if not inside.any():
        raise ValueError("mask is empty: it selects no pixel")
    bad = inside & ~np.isfinite(img)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name} has {int(bad.sum())} non-finite pixel(s) inside the mask, the "
                         f"first at (row {r}, column {c}); expected finite intensities")
    return img, inside


def _check_beta(beta):
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0 (0: no spatial prior), got {beta!r}")
    return float(beta)


def _check_connectivity(connectivity):
    if isinstance(connectivity, bool) or connectivity not in NEIGHBOURHOODS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def _neighbour_table(mask, connectivity):
    """Neighbours of every masked pixel as indices into ``image[mask]``.

    Returns an int array of shape (n_neighbours, N); a neighbour that is off the grid or
    outside the mask gets index ``N``, which points at a column of zeros appended to the
    responsibilities, so that it adds nothing to the neighbour sums.
    """
    N = int(mask.sum())
    index = np.full((mask.shape[0] + 2, mask.shape[1] + 2), N, dtype=np.intp)
    index[1:-1, 1:-1][mask] = np.arange(N)
    rows, cols = np.nonzero(mask)  # row-major, the order of image[mask]
    return np.stack([index[rows + 1 + dr, cols + 1 + dc]
                     for dr, dc in NEIGHBOURHOODS[connectivity]])


def _colour_sets(mask, connectivity):
    """Indices into ``image[mask]`` of each colour; no two pixels of a colour are neighbours
    (4-neighbourhood: a checkerboard; 8-neighbourhood: the four cells of a 2 x 2 pattern)."""
    rows, cols = np.nonzero(mask)
    codes = (rows + cols) % 2 if connectivity == 4 else 2 * (rows % 2) + cols % 2
    return [np.flatnonzero(codes == c) for c in range(2 if connectivity == 4 else 4)]


def _neighbour_sums(Q, table, pixels=slice(None)):
    """``S[k, n] = sum over the neighbours m of n of Q[k, m]``, for the ``pixels`` asked.

    ``Q`` has shape (K, N + 1), its last column zero (the index of absent neighbours).
    """
    neighbours = table[:, pixels]
    total = np.take(Q, neighbours[0], axis=1)
    for column in neighbours[1:]:  # np.take and a loop of adds: ~5x faster than Q[:, table]
        total += np.take(Q, column, axis=1)
    return total


def _mean_field_sweep(Q, log_data, beta, colours, table):
    """One mean-field pass over the colours; updates ``Q`` (K, N + 1) in place."""
    for pixels in colours:
        logits = np.take(log_data, pixels, axis=1) + beta * _neighbour_sums(Q, table, pixels)
        weights = np.exp(logits - logits.max(axis=0))
        Q[:, pixels] = weights / weights.sum(axis=0)


def _icm_sweep(Q, cost, beta, colours, table):
    """One ICM pass over the colours; updates the one-hot ``Q`` (K, N + 1) in place."""
    K = Q.shape[0]
    for pixels in colours:
        energy = np.take(cost, pixels, axis=1) - beta * _neighbour_sums(Q, table, pixels)
        Q[:, pixels] = np.eye(K)[:, np.argmin(energy, axis=0)]


def _log_gaussian_1d(x, means, variances):
    """ln N(x_n; mu_k, sigma_k^2) for scalar data: (K, N)."""
    return -0.5 * (np.log(2 * np.pi * variances)[:, None]
                   + (x[None, :] - means[:, None]) ** 2 / variances[:, None])


def _mean_field_objective(Q, log_data, beta, table):
    """Mean-field objective (higher is better), up to the Potts normalising constant:
    sum_n sum_k q_nk (ln N(x_n; theta_k) - ln q_nk) + beta/2 sum_n sum_{m~n} q_n.q_m."""
    from scipy.special import xlogy

    q = Q[:, :-1]
    pairs = 0.5 * beta * (q * _neighbour_sums(Q, table)).sum()
    return float((q * log_data).sum() - xlogy(q, q).sum() + pairs)


def _icm_objective(Q, cost, sigma2, beta, table):
    """ICM energy (lower is better): sum_n (x_n - mu_{z_n})^2 / (2 sigma^2)
    + N/2 ln(2 pi sigma^2) - beta * #{neighbour pairs in the same class}."""
    q = Q[:, :-1]
    pairs = 0.5 * beta * (q * _neighbour_sums(Q, table)).sum()
    return float((q * cost).sum() + 0.5 * q.shape[1] * np.log(2 * np.pi * sigma2) - pairs)


def _potts_em(X, mask, start, method, beta, connectivity, max_iter, tol, reg_covar):
    """EM with a Potts prior, started from a plain-EM result ``start``; returns an EMResult.

    Each iteration is one coloured sweep of the E-step (mean field or ICM) followed by the
    usual M-step (``m_step``) on the resulting responsibilities. Stops when no label changes
    (hard) or no responsibility moves by more than ``tol`` (soft).
    """
    x = X[:, 0]
    K, N = start.means.shape[0], x.shape[0]
    table = _neighbour_table(mask, connectivity)
    colours = _colour_sets(mask, connectivity)
    means, covs, weights = start.means, start.covariances, start.weights
    Q = np.zeros((K, N + 1))  # the last column: absent neighbours
    Q[:, :-1] = start.resp

    def data_term():
        """Soft: ln N(x_n; mu_k, sigma_k^2). Hard: (x_n - mu_k)^2 / (2 sigma^2) and
        the pooled variance sigma^2. Both (K, N)."""
        if method == "soft":
            with np.errstate(divide="ignore"):
                return _log_gaussian_1d(x, means[:, 0], covs[:, 0, 0]), None
        sq = (x[None, :] - means[:, 0][:, None]) ** 2
        sigma2 = float((Q[:, :-1] * sq).sum() / N + reg_covar)
        return sq / (2.0 * sigma2), sigma2

    def objective(term, sigma2):
        if method == "soft":
            return _mean_field_objective(Q, term, beta, table)
        return _icm_objective(Q, term, sigma2, beta, table)

    term, sigma2 = data_term()
    history = [_snapshot(means, covs, weights, objective(term, sigma2))]
    reseeded, converged, n_iter = [], False, 0
    for n_iter in range(1, max_iter + 1):
        before = Q.copy()
        if method == "soft":
            _mean_field_sweep(Q, term, beta, colours, table)
        else:
            _icm_sweep(Q, term, beta, colours, table)
        fit = m_step(X, Q[:, :-1], reg_covar=reg_covar)
        # an emptied class is re-seeded by m_step; the next sweep then lets it claim pixels
        reseeded += [(n_iter, k) for k in fit.reseeded]
        means, covs, weights = fit
        term, sigma2 = data_term()
        history.append(_snapshot(means, covs, weights, objective(term, sigma2)))
        change = np.abs(Q - before).max()
        converged = change == 0 if method == "hard" else change < tol
        if converged:
            break
    resp = Q[:, :-1].copy()
    if method == "hard":
        resp = resp.astype(np.int64)
    return EMResult(means=means, covariances=covs, weights=weights, resp=resp,
                    labels=np.argmax(resp, axis=0), n_iter=n_iter, converged=bool(converged),
                    objective=history[-1]["objective"], history=history,
                    init_means=start.means.copy(), method=method, reseeded=reseeded)


def _order_by_intensity(result):
    """A copy of ``result`` whose components are numbered by increasing mean (d = 1)."""
    return _permute_components(result, np.argsort(result.means[:, 0], kind="stable"))


def _plain_em(X, K, method, n_init, max_iter, random_state, reg_covar):
    """Intensity-only EM. Hard: k-means++ starts, best of ``n_init``. Soft: started from that
    hard solution (its means, covariances and weights), as scikit-learn starts from k-means."""
    hard = run_em(X, K, method="hard", init="kmeans++", n_init=n_init, max_iter=max_iter,
                  random_state=random_state, reg_covar=reg_covar)
    if method == "hard":
        return hard
    start = {"means": hard.means, "covariances": hard.covariances, "weights": hard.weights}
    return run_em(X, K, method="soft", init=start, max_iter=max_iter, reg_covar=reg_covar)


_BLAS_CONTROLLER = []  # filled on first use


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (built once: it scans the process)."""
    if not _BLAS_CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0]


def _check_start(start, X, K, method, beta):
    """A plain fit handed to ``segment_image`` must fit the same pixels with the same model."""
    if beta == 0:
        raise ValueError("start is only used with beta > 0 (it replaces the plain fit)")
    if not isinstance(start, EMResult):
        raise ValueError(f"start must be the EMResult of segment_image(..., beta=0), got "
                         f"{type(start).__name__}")
    if start.method != method or start.means.shape != (K, 1) \
            or np.shape(start.resp) != (K, X.shape[0]):
        raise ValueError(
            f"start does not match: it is a {start.method} fit with means {start.means.shape} "
            f"and resp {np.shape(start.resp)}; expected a {method} fit with means ({K}, 1) and "
            f"resp ({K}, {X.shape[0]}) (the same image, mask and n_components, beta=0)")


def segment_image(image, mask=None, n_components=3, method="soft", beta=0.0, random_state=0,
                  *, connectivity=4, n_init=4, max_iter=500, tol=1e-4, reg_covar=1e-6,
                  start=None):
    """Segment a grey-level image by EM on the intensities, with an optional Potts prior.

    The intensities of the pixels inside ``mask`` are fitted by a ``n_components``-Gaussian
    mixture with ``run_em`` (``method="hard"``: nearest-mean assignments; ``"soft"``: Gaussian
    responsibilities). The hard fit is started from k-means++ seeds (best of ``n_init``) and
    the soft fit from the hard solution. With ``beta > 0`` that fit is then continued under a
    Potts / Markov-random-field prior that rewards a pixel for sharing its class with its
    neighbours (``connectivity`` 4 or 8; neighbours outside the mask do not count):

    * soft: mean-field EM. E-step: ``q_n(k) ∝ N(x_n; mu_k, sigma_k^2)
      exp(beta * sum_{m ~ n} q_m(k))``, i.e. the log-prior of class ``k`` at pixel ``n`` is
      ``beta`` times the neighbours' summed responsibilities for ``k``;
    * hard: ICM. Each pixel takes the class minimising ``(x_n - mu_k)^2 / (2 sigma^2) - beta *
      (number of neighbours in class k)``, ``sigma^2`` the pooled within-class variance (so that
      ``beta = 0`` is exactly the nearest-mean rule).

    Both E-steps update the pixels one colour of a checkerboard at a time (see the comment at
    the head of this section) and are followed by the usual M-step (``m_step``). Mean field was
    chosen for soft EM because it keeps responsibilities (the M-step stays the weighted one of
    this module) and, unlike ICM, does not freeze a pixel's class after one decision.
    Under the prior no mixing weight enters the E-step: the class proportions are left to the
    Potts field, as in dipy (with free weights the prior drove the noisy slice to a single
    class; see the comment at the head of this section). ``beta`` is in nats per neighbour:
    with 4 neighbours, ``beta = 1`` lets a unanimous neighbourhood outweigh a log-likelihood
    ratio of up to 4 nats (a likelihood ratio of ``e^4``). (dipy's
    ``TissueClassifierHMRF`` adds ``+beta_dipy`` per disagreeing neighbour and ``-beta_dipy``
    per agreeing one, so its ``beta_dipy`` corresponds to ``beta = 2 * beta_dipy`` here.)

    Parameters
    ----------
    image : array-like of shape (H, W)
        Intensities; must be finite inside the mask. Not modified.
    mask : array-like of bool, shape (H, W), optional
        The pixels to segment (e.g. the brain: ``image > 0``). Default: every pixel.
    n_components : int, default 3
    method : {"soft", "hard"}, default "soft"
    beta : float >= 0, default 0.0
        Strength of the spatial prior; 0 switches it off (plain ``run_em``).
    random_state : int, default 0
        Seed of the k-means++ starts.
    connectivity : {4, 8}, default 4
        Neighbourhood of the prior.
    n_init : int, default 4
        Number of k-means++ starts of the hard fit.
    max_iter : int, default 500
        For each of the plain fit and the prior-coupled fit.
    tol : float, default 1e-4
        Soft EM with the prior: stop when no responsibility moves by more than ``tol`` in an
        iteration. (Hard EM stops when no label changes.)
    reg_covar : float, default 1e-6
    start : EMResult, optional
        With ``beta > 0``: the ``result`` of an earlier ``segment_image`` call with
        ``beta=0`` and the same ``method`` on the same image and mask. The prior-coupled fit
        then starts from it instead of fitting the plain mixture again (same outcome, less
        time; ``random_state`` and ``n_init`` are then unused).

    Returns
    -------
    label_image : ndarray of shape (H, W), int
        The class of each pixel, ``-1`` outside the mask; classes are numbered by increasing
        mean intensity (``0`` the darkest).
    result : EMResult
        The fit, components in the same order. ``resp`` and ``labels`` cover the masked pixels
        in row-major order (``image[mask]``). With ``beta > 0``, ``history`` and ``objective``
        hold the quantity that the coupled iterations improve monotonically: the mean-field
        objective (soft, higher is better, up to the Potts normalising constant) or the ICM
        energy (hard, lower is better), and ``init_means`` are the plain-EM means it started from.

    Raises
    ------
    ValueError
        If the image is not 2-D, the mask's shape differs from the image's, the mask is empty,
        a pixel inside the mask is not finite, ``beta`` is negative or not finite, or any other
        argument is invalid.

    Warns
    -----
    EMConvergenceWarning
        If an EM loop stops at ``max_iter`` without converging.
    """
    img, inside = _check_image(image, mask)
    K = _check_int(n_components, "n_components", minimum=1)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    beta = _check_beta(beta)
    connectivity = _check_connectivity(connectivity)
    n_init = _check_int(n_init, "n_init", minimum=1)
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    X = img[inside][:, None]
    if start is not None:
        _check_start(start, X, K, method, beta)
    if len(np.unique(X)) < K:
        raise ValueError(f"n_components={K} is more than the {len(np.unique(X))} distinct "
                         "intensities inside the mask")
    # N x 1 products are far too small to gain from BLAS threads, and on a busy machine the
    # threads' spinning made each EM iteration ~30 times slower: run single-threaded.
    with _blas_controller().limit(limits=1, user_api="blas"):
        result = start if start is not None else _plain_em(X, K, method, n_init, max_iter,
                                                             random_state, reg_covar)
        if beta > 0:
            result = _potts_em(X, inside, result, method, beta, connectivity, max_iter, tol,
                               reg_covar)
            if not result.converged:
                warnings.warn(f"{method} EM with the spatial prior did not converge within "
                              f"max_iter={max_iter} iterations", EMConvergenceWarning,
                              stacklevel=2)
    result = _order_by_intensity(result)
    label_image = np.full(img.shape, -1, dtype=np.int64)
    label_image[inside] = result.labels
    return label_image, result


def dice(a, b, labels=None):
    """Dice coefficient of each class between two label images.

    ``Dice_k = 2 |A_k ∩ B_k| / (|A_k| + |B_k|)``, where ``A_k`` is the set of pixels that
    ``a`` puts in class ``k`` (the same as the per-class F1 score). Negative labels (``-1``:
    outside the mask) belong to no class.

    Parameters
    ----------
    a, b : array-like of int, same shape
        Label images (or label vectors).
    labels : sequence of int, optional
        The classes to score. Default: every non-negative label found in ``a`` or ``b``.

    Returns
    -------
    pandas.Series
        Dice per class, indexed by class label, name ``"dice"``.

    Raises
    ------
    ValueError
        If the shapes differ, the labels are not integers, no class is present, or a requested
        class is in neither ``a`` nor ``b`` (its Dice would be 0/0).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    for name, arr in (("a", a), ("b", b)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if labels is None:
        labels = np.union1d(a[a >= 0], b[b >= 0])
        if labels.size == 0:
            raise ValueError("a and b hold no class (every label is negative)")
    scores = {}
    for k in labels:
        in_a, in_b = a == k, b == k
        total = int(in_a.sum() + in_b.sum())
        if total == 0:
            raise ValueError(f"class {k} is in neither a nor b: its Dice is undefined")
        scores[int(k)] = 2.0 * int((in_a & in_b).sum()) / total
    return pd.Series(scores, name="dice", dtype=float)


def match_label_images(reference, other):
    """``other`` with its classes renamed to the ``reference`` classes they overlap most.

    Hungarian matching (``label_mapping``) on the pixels that both images label (``>= 0``);
    every other pixel is ``-1`` in the output. A new array: the inputs are not modified.
    """
    reference = np.asarray(reference)
    other = np.asarray(other)
    if reference.shape != other.shape:
        raise ValueError(f"reference and other must have the same shape, got "
                         f"{reference.shape} and {other.shape}")
    both = (reference >= 0) & (other >= 0)
    if not both.any():
        raise ValueError("reference and other label no pixel in common")
    out = np.full(other.shape, -1, dtype=np.int64)
    out[both] = match_labels(reference[both], other[both])
    return out


def label_agreement(reference, labels, mask, names):
    """How far a label image agrees with a reference segmentation, after matching classes.

    ``labels`` has its classes renamed to the reference classes they overlap most
    (``match_label_images``); then the share of the ``mask`` pixels with the same label in both,
    whether the matching kept the numbering, and the Dice of each class.

    Parameters
    ----------
    reference, labels : array-like of int, same shape
        Label images, ``-1`` outside the region they label.
    mask : array-like of bool, same shape
        The pixels over which the agreement is counted.
    names : sequence of str
        ``names[k]`` names class ``k`` in the Dice entries.

    Returns
    -------
    dict
        ``agreement`` (float), ``same numbering`` (bool) and ``Dice <name>`` per class.
    """
    mask = np.asarray(mask)
    reference = np.asarray(reference)
    if mask.shape != reference.shape or mask.dtype != bool or not mask.any():
        raise ValueError(f"mask must be a boolean array of shape {reference.shape} with at "
                         "least one True pixel")
    matched = match_label_images(reference, labels)
    row = {"agreement": float(np.mean(matched[mask] == reference[mask])),
           "same numbering": bool(np.array_equal(matched, np.asarray(labels)))}
    row.update({f"Dice {name}": d for name, d in zip(names, dice(reference, matched))})
    return row


def region_stats(label_image, names=None, offset=(0, 0)):
    """Area and centroid of every class of a label image.

    Parameters
    ----------
    label_image : array-like of int, shape (H, W)
        ``-1`` (any negative label) outside the region of interest.
    names : sequence of str, optional
        ``names[k]`` names class ``k``; the table then has exactly ``len(names)`` rows, classes
        with no pixel included (their centroid is NaN, their area 0). Default: one row per
        class present, named by its number.
    offset : (int, int), default (0, 0)
        Added to the centroids: the (row, column) of the label image's top-left pixel in a
        larger image, so that the centroids of a crop (``crop_to_mask``) are in the full image.

    Returns
    -------
    pandas.DataFrame
        Indexed by class name, columns ``pixels`` (area in pixels), ``fraction`` (of the
        labelled pixels), ``centroid_row`` and ``centroid_col`` (mean pixel coordinates).
    """
    labels = np.asarray(label_image)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_image must be a 2-D integer array, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    offset = np.asarray(offset, dtype=float)
    if offset.shape != (2,) or not np.isfinite(offset).all():
        raise ValueError(f"offset must be a (row, column) pair of numbers, got {offset!r}")
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("label_image labels no pixel (every label is negative)")
    classes = np.arange(len(names)) if names is not None else np.unique(labels[labelled])
    if names is not None and labels.max() >= len(names):
        raise ValueError(f"label_image has class {labels.max()} but only {len(names)} names")
    rows, cols = np.indices(labels.shape)
    records = []
    for k in classes:
        sel = labels == k
        n = int(sel.sum())
        records.append({"class": names[k] if names is not None else int(k), "pixels": n,
                        "fraction": n / int(labelled.sum()),
                        "centroid_row": rows[sel].mean() + offset[0] if n else np.nan,
                        "centroid_col": cols[sel].mean() + offset[1] if n else np.nan})
    return pd.DataFrame.from_records(records, index="class")


def crop_to_mask(image, mask, margin=1):
    """Crop an image and its mask to the mask's bounding box plus ``margin`` pixels.

    Returns
    -------
    image_crop, mask_crop : ndarray (h, w)
        New arrays (copies).
    offset : tuple (row, col)
        Position of the crop's top-left pixel in the original image (add it to coordinates
        measured in the crop to get coordinates in the original).
    """
    img, inside = _check_image(image, mask)
    margin = _check_int(margin, "margin", minimum=0)
    rows, cols = np.nonzero(inside)
    r0, c0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    r1, c1 = rows.max() + margin + 1, cols.max() + margin + 1
    return img[r0:r1, c0:c1].copy(), inside[r0:r1, c0:c1].copy(), (int(r0), int(c0))


def implant_lesion(image, center, semi_axes, angle=0.0, intensity=1.0, texture_sd=0.0,
                   mask=None, random_state=0):
    """Paint a synthetic elliptical lesion into a copy of an image.

    The lesion's pixels get ``intensity`` plus independent Gaussian "texture" noise of
    standard deviation ``texture_sd`` (seeded).

    Parameters
    ----------
    image : array-like (H, W)
    center : (row, col)
        Centre of the ellipse, in pixel coordinates.
    semi_axes : (a, b)
        Semi-axes in pixels; ``a`` lies along the rows when ``angle = 0``.
    angle : float, default 0
        Rotation of the ellipse in degrees (from the row axis towards the column axis).
    intensity : float, default 1.0
    texture_sd : float >= 0, default 0
    mask : array-like of bool (H, W), optional
        If given, the whole lesion must lie inside it (e.g. inside the brain).
    random_state : int, default 0

    Returns
    -------
    lesioned : ndarray (H, W)
        A new image with the lesion painted in.
    truth : ndarray of bool (H, W)
        The lesion's pixels: ``(u / a)^2 + (v / b)^2 <= 1`` in the ellipse's own axes.
    """
    img, inside = _check_image(image, mask)
    try:
        r0, c0 = (float(v) for v in center)
        a, b = (float(v) for v in semi_axes)
    except (TypeError, ValueError):
        raise ValueError(f"center and semi_axes must be pairs of numbers, got {center!r} and "
                         f"{semi_axes!r}") from None
    if not (np.isfinite([r0, c0]).all() and 0 <= r0 < img.shape[0] and 0 <= c0 < img.shape[1]):
        raise ValueError(f"center must lie inside the image {img.shape}, got {center!r}")
    if not (np.isfinite([a, b]).all() and a > 0 and b > 0):
        raise ValueError(f"semi_axes must be positive, got {semi_axes!r}")
    for name, value in (("angle", angle), ("intensity", intensity), ("texture_sd", texture_sd)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)) \
                or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if texture_sd < 0:
        raise ValueError(f"texture_sd must be >= 0, got {texture_sd}")
    rows, cols = np.indices(img.shape)
    theta = np.deg2rad(angle)
    u = (rows - r0) * np.cos(theta) + (cols - c0) * np.sin(theta)
    v = -(rows - r0) * np.sin(theta) + (cols - c0) * np.cos(theta)
    truth = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if not truth.any():
        raise ValueError("the ellipse covers no pixel centre; enlarge semi_axes")
    if mask is not None and (truth & ~inside).any():
        raise ValueError(f"the lesion leaves the mask at {int((truth & ~inside).sum())} "
                         "pixel(s); move it or make it smaller")
    rng = np.random.default_rng(random_state)
    img[truth] = intensity + rng.normal(0.0, texture_sd, size=int(truth.sum()))
    return img, truth


def add_gaussian_noise(image, sigma, mask=None, magnitude=False, random_state=0):
    """A copy of ``image`` with seeded Gaussian noise of standard deviation ``sigma`` added to
    the pixels inside ``mask`` (default: every pixel); outside the mask nothing changes.

    With ``magnitude=True`` the noisy pixels are replaced by their absolute value, as an MRI
    scanner stores the magnitude of a noisy signal: never negative, and without the spike at
    the bound that clipping would create (a spike is a point mass that a Gaussian component
    can collapse onto).
    """
    img, inside = _check_image(image, mask)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(random_state)
    img[inside] += rng.normal(0.0, sigma, size=int(inside.sum()))
    if magnitude:
        img[inside] = np.abs(img[inside])
    return img


def segment_dipy_hmrf(image, mask=None, n_components=3, beta=0.1, max_iter=100,
                      tolerance=1e-5, random_state=0):
    """dipy's ``TissueClassifierHMRF`` on a 2-D image, returned in ``segment_image``'s format.

    dipy classifies a 3-D volume into ``n_components`` tissue classes plus a background class
    made of the zero voxels; it alternates an EM update of the class means and variances with
    one synchronous ICM pass under a Potts prior (6-neighbourhood in 3-D, so the 4-neighbourhood
    within a single slice; energy ``+beta`` per disagreeing and ``-beta`` per agreeing
    neighbour, equal class proportions). Here the slice becomes a volume of depth 1, the
    pixels outside ``mask`` are set to 0 (dipy's background), and the background class is
    dropped. dipy perturbs the zero voxels with unseeded noise; that noise is seeded here with
    ``random_state`` (by passing a seeded generator to the ``add_noise`` it calls), so the
    result is reproducible.

    Parameters
    ----------
    image : array-like (H, W)
        Must be > 0 inside the mask (dipy would take a pixel <= 0 for background).
    mask : array-like of bool (H, W), optional
        Default: the non-zero pixels.
    n_components : int, default 3
    beta : float >= 0, default 0.1
        dipy's smoothness parameter (its tutorial's value; ``segment_image``'s ``beta`` is
        ``2 *`` this for the same prior strength).
    max_iter : int, default 100
        dipy's default.
    tolerance : float, default 1e-5
        dipy's default early-stopping tolerance on the energy.
    random_state : int, default 0

    Returns
    -------
    label_image : ndarray (H, W), int
        ``-1`` outside the mask, tissue classes ``0..n_components - 1`` by increasing mean
        intensity (dipy orders them so).
    info : dict
        ``n_iter``: the iterations dipy ran (it stops early when its energy settles);
        ``n_background``: mask pixels that dipy put in its background class (intensities near
        0, e.g. after noise); they are counted in the darkest tissue class, class 0.
    """
    from functools import partial
    from unittest import mock

    from dipy.segment import tissue

    img = np.array(image, dtype=float)
    img, inside = _check_image(img, img != 0 if mask is None else mask)
    K = _check_int(n_components, "n_components", minimum=1)
    beta = _check_beta(beta)
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    if (img[inside] <= 0).any():
        raise ValueError("image must be > 0 inside the mask: dipy reads pixels <= 0 as "
                         "background (shift the intensities, or add noise with magnitude=True)")
    volume = np.where(inside, img, 0.0)[:, :, None]
    seeded_noise = partial(tissue.add_noise, rng=np.random.default_rng(random_state))
    with mock.patch.object(tissue, "add_noise", seeded_noise):
        hmrf = tissue.TissueClassifierHMRF(save_history=True, verbose=False)
        _, segmentation, _ = hmrf.classify(volume, K, beta, tolerance=tolerance,
                                           max_iter=max_iter)
    labels = segmentation[:, :, 0].astype(np.int64) - 1  # background 0 -> -1
    stray = inside & (labels < 0)  # mask pixels dipy found closest to its background class
    labels[stray] = 0
    labels[~inside] = -1
    return labels, {"n_iter": len(hmrf.energies_sum), "n_background": int(stray.sum())}


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
    if result.means.shape[1] != 1:
        raise ValueError(f"need a fit on scalar intensities, got d={result.means.shape[1]}")
    grid = np.linspace(values.min(), values.max(), 400)
    densities = np.exp(_log_gaussian_1d(grid, result.means[:, 0], result.covariances[:, 0, 0]))
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


# ---------------------------------------------------------------------------------------------
# 10. Plotting helpers shared by the notebooks
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
