"""EM for mixture models: the one helper module of this project.

Read top to bottom, it follows the course's order:

1. Loading the data: ``load_image`` reads a scan (any plausible CSV layout) into ``(X, y)``.
2. The E-step: ``e_step`` (hard assignment by Euclidean distance, the simulation questions),
   ``log_gaussian_density`` and ``e_step_soft`` (Gaussian responsibilities).
3. The M-step: ``m_step`` (means, covariances, weights; missing cells through expected
   sufficient statistics).
4. The EM loop: ``run_em`` returning an ``EMResult``.
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
        return cls(X, shift, np.ascontiguousarray((X - shift).T))

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
        scores = coef @ t[: 1 + d]
        best = scores.min(axis=0)
        hits = np.equal(scores, best, out=member[:, rows])
        min_scores += float(best.sum())
        stats += np.matmul(hits, t.T, dtype=float)
    if np.count_nonzero(member) > member.shape[1]:  # exact ties: recount without them
        member = _first_true(member)
        stats = _weighted_sums(data, member)
    objective = min_scores + float(stats[:, data.square_rows()].sum())  # + sum_n ||x_n||^2
    return member, max(objective, 0.0), stats


def _log_density_coefficients(shift, means, covariances, weights):
    """Coefficients (K, m) such that ``coef @ t(x) = ln pi_k + ln N(x; mu_k, Sigma_k)``.

    With ``P = Sigma^-1`` and centred ``x`` and ``mu``: ``-(x - mu)^T P (x - mu) / 2 =
    -x^T P x / 2 + x^T P mu - mu^T P mu / 2``; the quadratic term gives ``-P_ii / 2`` on
    ``x_i^2`` and ``-P_ij`` on ``x_i x_j`` (``i < j``).
    """
    K, d = means.shape
    chol = _cholesky(covariances)  # clear error if a covariance is not positive definite
    chol_inv = np.linalg.inv(chol)
    precision = np.swapaxes(chol_inv, 1, 2) @ chol_inv  # (L L^T)^-1 = L^-T L^-1
    centred = means - shift
    p_mu = np.einsum("kij,kj->ki", precision, centred)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)
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
    stats = np.zeros((means.shape[0], data.n_features))
    log_lik = 0.0
    for rows, t in data.feature_blocks():
        block_resp, block_log_lik = _normalise_log_rows(coef @ t)
        log_lik += block_log_lik
        stats += block_resp @ t.T
        if resp is not None:
            resp[:, rows] = block_resp
    return log_lik, stats


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
    tiny = 10 * np.finfo(float).eps * max(X.shape[0], 1)
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


def _has_empty_component(counts, n_points):
    """The emptiness test of ``_reseed_empty``."""
    return bool((counts <= 10 * np.finfo(float).eps * max(n_points, 1)).any())


def _weighted_sums(data, R):
    """``stats[k] = sum_n R[k, n] t(x_n)`` (K, m) for complete data, block by block.

    ``R`` (K, N) holds responsibilities or a (boolean) one-hot; t(x) is described in
    ``_CompleteData.feature_blocks``.
    """
    stats = np.zeros((R.shape[0], data.n_features))
    for rows, t in data.feature_blocks():
        stats += np.matmul(R[:, rows], t.T, dtype=float)
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
    if legend:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small",
                  frameon=False)
    return ax


# ---------------------------------------------------------------------------------------------
# Categorical mixture model (theory question 5)
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
