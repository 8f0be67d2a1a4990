"""The blocked complete-data fast path of ``em_helpers.run_em``.

A Gaussian's log-density is linear in the per-point statistics t(x) = (1, x, x_i x_j for
i <= j), and the M-step only needs the weighted sums of t(x) per component. So one pass over
the data, block by block, does an E-step (one (K, m) @ (m, b) product per block) and collects
what the M-step needs (one (K, b) @ (b, m) product per block). Blocks of _BLOCK_ROWS points
keep every temporary in the cache; there is no (N, K, d) temporary, no pass over X per
component, and soft EM never stores the (K, N) responsibilities inside the loop.

``em_helpers`` keeps the reference formulas (``e_step``, ``e_step_soft``, ``m_step``); the
tests (``tests/test_fastpath.py``) check that both paths agree to rounding.

- ``standardise_complete``: the set-up of ``run_em`` on complete data in one pass over X (its
  ``DataUnits`` and ``CompleteData``, without a standardised copy of X);
- ``CompleteData``: the centred points and the blocks of t(x); ``round_centre``, its shift;
- ``hard_pass`` and ``soft_pass``: one E-step with the sums that the M-step needs
  (``HardMemory``: hard passes update the previous pass's sums by the points that moved);
- ``weighted_sums``, ``gaussians_from_statistics``: from weights to sums to parameters;
- ``empty_threshold``, ``has_empty_component``: when a component counts as empty;
  ``argmax_rows``: the labels of a (K, N) assignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from emlab.engine.covariance import constrain_covariances
from emlab.engine.scaling import (
    DataUnits,
    check_reg_covar,
    check_spread,
    pooled_spread,
    power_of_two_scale,
)
from emlab.engine.validation import cholesky


@lru_cache(maxsize=16)
def _upper_pairs(d):
    """``np.triu_indices(d)`` as read-only arrays, computed once per d (every iteration uses
    them, and building them costs more than the 1-D M-step itself)."""
    first, second = np.triu_indices(d)
    first.setflags(write=False)
    second.setflags(write=False)
    return first, second


def empty_threshold(n_points):
    """Total responsibility at or below which a component counts as empty."""
    return 10 * np.finfo(float).eps * max(n_points, 1)


def has_empty_component(counts, n_points):
    """The emptiness test of ``_reseed_empty``."""
    return bool((counts <= empty_threshold(n_points)).any())


def weighted_sums(data, R):
    """``stats[k] = sum_n R[k, n] t(x_n)`` (K, m) for complete data, block by block.

    ``R`` (K, N) holds responsibilities or a (boolean) one-hot; t(x) is described in
    ``CompleteData.feature_blocks``.
    """
    stats = np.zeros((R.shape[0], data.n_features))
    for rows, t in data.feature_blocks():
        stats += _block_sums(R[:, rows], t)
    return stats


def gaussians_from_statistics(stats, shift, reg_covar, covariance_type="full"):
    """Means (K, d) and covariances (K, d, d) from the weighted sums of t(x).

    ``stats[k] = sum_n R[k, n] t(x_n)`` holds the count ``N_k``, the sum of the centred points
    and the sums of their products. Then ``mu_k = sum x / N_k`` and the scatter
    ``S_k = sum x x^T / N_k - mu_k mu_k^T`` (centred coordinates, see ``CompleteData``), which
    ``emlab.engine.covariance.constrain_covariances`` projects onto ``covariance_type`` and
    regularises with ``reg_covar`` (for "full": ``S_k`` plus ``reg_covar`` on the diagonal).
    """
    d = shift.shape[0]
    counts = stats[:, 0]
    centred_means = stats[:, 1: 1 + d] / counts[:, None]
    first, second = _upper_pairs(d)
    products = np.empty((stats.shape[0], d, d))
    products[:, first, second] = stats[:, 1 + d:]
    products[:, second, first] = stats[:, 1 + d:]
    covs = products / counts[:, None, None] - centred_means[:, :, None] * centred_means[:, None, :]
    if covariance_type == "full":  # the common case, in place
        covs[:, np.arange(d), np.arange(d)] += reg_covar
    else:
        covs = constrain_covariances(covs, counts, covariance_type, reg_covar)
    return centred_means + shift, covs


BLOCK_ROWS = 1 << 15


@dataclass(frozen=True)
class CompleteData:
    """Complete points prepared for the fast path (``CompleteData.of(X)``).

    Attributes
    ----------
    X : ndarray of shape (N, d), or None
        The points; None when only ``centred_t`` was made (``standardise_complete``).
    shift : ndarray of shape (d,)
        A round centre of X (``round_centre``). The statistics use ``x - shift``, which keeps
        ``E[x x^T] - mu mu^T`` and ``||x||^2 - 2 x.mu + ||mu||^2`` accurate: the cancellation is
        then relative to the spread of the data, not to its distance from the origin.
    centred_t : ndarray of shape (d, N)
        ``(X - shift).T``, contiguous, so that a block of coordinates is a plain copy.
    hard_memory : HardMemory
        The last ``hard_pass`` over these points, which the next one updates.
    """

    X: np.ndarray
    shift: np.ndarray
    centred_t: np.ndarray
    hard_memory: HardMemory = field(default_factory=lambda: HardMemory(), compare=False,
                                    repr=False)

    @classmethod
    def of(cls, X):
        shift = round_centre(X.mean(axis=0), X.std(axis=0))
        centred_t = np.empty(X.shape[::-1])
        np.subtract(X.T, shift[:, None], out=centred_t)
        return cls(X, shift, centred_t)

    @property
    def n_points(self):
        """N, the number of points."""
        return self.centred_t.shape[1]

    @property
    def n_features(self):
        """m = 1 + d + d (d + 1) / 2, the length of t(x)."""
        d = self.shift.shape[0]
        return 1 + d + d * (d + 1) // 2

    def feature_blocks(self, linear=False):
        """Yield ``(rows, t)`` for consecutive blocks of points.

        ``rows`` is the block's slice of ``range(N)`` and ``t`` (m, b) holds t(x) of its
        centred points: row 0 is 1, rows ``1..d`` the coordinates, then the products
        ``x_i x_j`` for ``i <= j`` in ``np.triu_indices(d)`` order. ``t`` is a buffer that
        the next block overwrites. ``linear=True``: only the rows ``0..d`` (the E-step of
        hard EM needs no more).
        """
        d, N = self.centred_t.shape
        buffer = np.empty((1 + d if linear else self.n_features, min(N, BLOCK_ROWS)))
        buffer[0] = 1.0
        for start in range(0, N, BLOCK_ROWS):
            rows = slice(start, min(start + BLOCK_ROWS, N))
            t = buffer[:, : rows.stop - start]
            t[1: 1 + d] = self.centred_t[:, rows]
            if not linear:
                _fill_products(t, d)
            yield rows, t

    def features_of(self, points):
        """t(x) (m, n) of the points of index ``points`` (n,), as in ``feature_blocks``."""
        d = self.shift.shape[0]
        t = np.empty((self.n_features, points.size))
        t[0] = 1.0
        np.take(self.centred_t, points, axis=1, out=t[1: 1 + d])
        _fill_products(t, d)
        return t

    def square_rows(self):
        """Indices of the rows ``x_i^2`` in t(x)."""
        d = self.shift.shape[0]
        first, second = _upper_pairs(d)
        return 1 + d + np.flatnonzero(first == second)


def _fill_products(t, d):
    """Write the rows ``x_i x_j`` (``i <= j``) of t(x) (m, b) from its rows ``1..d``."""
    coords = t[1: 1 + d]
    row = 1 + d
    for i in range(d):  # x_i x_j for j = i..d-1: the next d - i rows
        np.multiply(coords[i], coords[i:], out=t[row: row + d - i])
        row += d - i


def round_centre(mean, spread):
    """The column means (d,), rounded to a power of two at the scale of the columns' spreads.

    Close enough to the mean for accuracy, and exact for integer data (the centred values stay
    integers), so that exact ties between components break as in the reference formulas.
    """
    step = np.exp2(np.floor(np.log2(np.where(spread > 0, spread, 1.0))))
    return np.round(mean / step) * step


# Magnitudes of X for which its sums and squares need no pre-scaling (``DataUnits.of`` divides
# by a power of two first); outside them ``standardise_complete`` leaves X to the general path.
_DIRECT_RANGE = (2.0 ** -400, 2.0 ** 400)


def standardise_complete(X, reg_covar):
    """``(DataUnits.of(X, reg_covar), CompleteData.of(Z))`` for complete X, in one pass.

    One set of column moments of X gives the units (centre and power-of-two scale) and the
    fast path's shift; then ``centred_t = (X - centre) / scale - shift`` is written once,
    column by column, with the operations of ``standardise`` and ``CompleteData.of`` (the same
    numbers), without the standardised copy Z of X or a second pass to centre it. The
    refusals are those of ``DataUnits.of``.

    Returns None when X has a missing cell, no spread, or a magnitude outside
    ``_DIRECT_RANGE``: ``DataUnits.of`` then handles it.
    """
    top, bottom = X.max(), X.min()  # NaN propagates: a missing cell
    magnitude = max(abs(top), abs(bottom))
    if np.isnan(magnitude) or not _DIRECT_RANGE[0] <= magnitude <= _DIRECT_RANGE[1]:
        return None
    N, d = X.shape
    centred_t = np.empty((d, N))
    mean, m2 = np.empty(d), np.empty(d)
    for j in range(d):  # column moments, with centred_t as the scratch row (numpy's axis-0
        row = centred_t[j]  # reductions of an (N, d) array are many times slower)
        row[...] = X[:, j]
        mean[j] = row.sum() / N
        row -= mean[j]
        m2[j] = row @ row
    spread = pooled_spread(N, mean, m2)
    if not spread > 0:
        return None
    scale = power_of_two_scale(spread)
    check_spread(spread, scale)
    centre = np.round(mean / scale) * scale
    check_reg_covar(reg_covar, float(m2.max()) / N)
    shift = round_centre((mean - centre) / scale, np.sqrt(m2 / N) / scale)  # Z's moments
    for j in range(d):
        np.subtract(X[:, j], centre[j], out=centred_t[j])
        centred_t[j] /= scale
        centred_t[j] -= shift[j]
    units = DataUnits(centre, scale, reg_covar / scale ** 2, int(X.size))
    return units, CompleteData(None, shift, centred_t)


def argmax_rows(A):
    """``np.argmax(A, axis=0)`` of a (K, N) array without NaN (ties to the lowest k), row by
    row: numpy's axis-0 argmax of a C-ordered (K, N) array is several times slower."""
    labels = np.zeros(A.shape[1], dtype=np.intp)
    best = A[0].copy()
    for k in range(1, A.shape[0]):
        labels[A[k] > best] = k
        np.maximum(best, A[k], out=best)
    return labels


def _first_true(member):
    """Keep only the first True of every column of a boolean (K, N) array (ties to lowest k)."""
    return member & (np.cumsum(member, axis=0) == 1)


def _nearest_in_block(coef, t_linear, member):
    """Mark each point's nearest mean in ``member`` (K, b) and return ``sum_n min_k score``.

    ``coef @ t_linear`` gives the scores ``||mu_k||^2 - 2 x.mu_k`` (K, b); ties mark several
    components (``hard_pass`` resolves them).
    """
    scores = coef @ t_linear
    best = scores.min(axis=0)
    np.equal(scores, best, out=member)
    return float(best.sum())


def _block_sums(R, t):
    """``R @ t.T`` (K, m) in float: one block's share of the M-step's sums."""
    return np.matmul(R, t.T, dtype=float)


def _score_coefficients(data, means):
    """(K, 1 + d) such that ``coef @ t(x)[:1 + d] = ||mu_k||^2 - 2 x.mu_k`` (centred)."""
    centred = means - data.shift
    return np.column_stack([np.einsum("kd,kd->k", centred, centred), -2.0 * centred])


def hard_pass(data, means, update=True):
    """Hard E-step on complete data, with the sums that the M-step needs.

    ``||x - mu||^2 = ||x||^2 - 2 x.mu + ||mu||^2``: the first term does not depend on the
    component, so the nearest mean minimises ``||mu||^2 - 2 x.mu`` (one product per block).

    Late in a hard-EM fit few points change component, so the sums of t(x) per component are
    the previous pass's sums plus t(x) of the points that moved (added to their new component,
    subtracted from their old one): with ``update`` (the default), a pass after another one
    over the same ``data`` (see ``HardMemory``) scores every point but builds t(x) and sums it
    only for the moved points. The labels are the same; the sums agree with a fresh count to
    rounding.

    Parameters
    ----------
    data : CompleteData
    means : ndarray of shape (K, d)
    update : bool
        False: count the sums afresh (the memory of ``data`` is neither used nor changed).

    Returns
    -------
    member : ndarray of shape (K, N), bool
        One-hot assignment to the nearest mean, ties to the lowest component.
    objective : float
        ``sum_n min_k ||x_n - mu_k||^2``.
    stats : ndarray of shape (K, m)
        ``stats[k] = sum_{n in k} t(x_n)``.
    """
    memory, updated = data.hard_memory, None
    if update and memory.member is not None and memory.updates < HardMemory.MAX_UPDATES:
        member, min_scores = _nearest_members(data, means)
        if np.count_nonzero(member) > member.shape[1]:  # exact ties: to the lowest component
            member = _first_true(member)
        else:
            updated = memory.updated_sums(data, member)  # None: too many points moved
        stats = weighted_sums(data, member) if updated is None else updated
    else:
        member, min_scores, stats = _fresh_hard_pass(data, means)
    if update:
        memory.remember(member, stats, updated=updated is not None)
    return member, _hard_objective(data, min_scores, stats), stats


def _fresh_hard_pass(data, means):
    """``(member, min_scores, stats)`` of ``hard_pass``, the sums counted block by block."""
    K, d = means.shape
    coef = _score_coefficients(data, means)
    member = np.empty((K, data.n_points), dtype=bool)
    stats = np.zeros((K, data.n_features))
    min_scores = 0.0
    for rows, t in data.feature_blocks():
        min_scores += _nearest_in_block(coef, t[: 1 + d], member[:, rows])
        stats += _block_sums(member[:, rows], t)
    if np.count_nonzero(member) > member.shape[1]:  # exact ties: recount without them
        member = _first_true(member)
        stats = weighted_sums(data, member)
    return member, min_scores, stats


class HardMemory:
    """The last ``hard_pass`` over a ``CompleteData``, which the next one updates.

    Attributes
    ----------
    member, stats : ndarrays (K, N) bool and (K, m), or None
        The last pass's assignment (no ties) and its sums.
    updates : int
        Passes since the last fresh count (0: the last pass counted afresh).

    Rounding accumulates over the updates, relative to the sums they update, so a pass counts
    afresh after ``MAX_UPDATES`` updates in a row, and whenever the moved points are more
    than ``1 / MOVED_FRACTION`` of the smallest component: no component then shrinks by much
    within a run of updates, and the sums stay within ~``MAX_UPDATES`` roundings of a fresh
    count. Not for sharing between threads: each dask chunk makes its own ``CompleteData``.
    """

    MAX_UPDATES = 16
    MOVED_FRACTION = 16

    def __init__(self):
        self.member = self.stats = None
        self.updates = 0

    def updated_sums(self, data, member):
        """The sums of ``member`` (K, N, no ties) from the remembered ones; None if too many
        points moved (the caller counts afresh)."""
        if member.shape != self.member.shape:
            return None
        moved = np.flatnonzero(np.logical_or.reduce(member != self.member, axis=0))
        if moved.size * self.MOVED_FRACTION > self.stats[:, 0].min():
            return None
        change = np.subtract(member[:, moved], self.member[:, moved], dtype=float)
        return self.stats + change @ data.features_of(moved).T

    def remember(self, member, stats, updated):
        """Keep a pass's assignment and sums; ``updated``: the sums came from ``updated_sums``."""
        self.updates = self.updates + 1 if updated else 0
        self.member, self.stats = member, stats


def _nearest_members(data, means):
    """The E-step of ``hard_pass`` alone: ``member`` (K, N), ties marked in every tied
    component, and ``sum_n min_k (||mu_k||^2 - 2 x_n.mu_k)``."""
    coef = _score_coefficients(data, means)
    member = np.empty((means.shape[0], data.n_points), dtype=bool)
    min_scores = 0.0
    for rows, t in data.feature_blocks(linear=True):
        min_scores += _nearest_in_block(coef, t, member[:, rows])
    return member, min_scores


def _hard_objective(data, min_scores, stats):
    """``sum_n min_k ||x_n - mu_k||^2`` from the minimal scores and the sums of ``x_i^2``."""
    return max(min_scores + float(stats[:, data.square_rows()].sum()), 0.0)


def _log_density_coefficients(shift, means, covariances, weights):
    """Coefficients (K, m) such that ``coef @ t(x) = ln pi_k + ln N(x; mu_k, Sigma_k)``.

    With ``P = Sigma^-1`` and centred ``x`` and ``mu``: ``-(x - mu)^T P (x - mu) / 2 =
    -x^T P x / 2 + x^T P mu - mu^T P mu / 2``; the quadratic term gives ``-P_ii / 2`` on
    ``x_i^2`` and ``-P_ij`` on ``x_i x_j`` (``i < j``). A component of weight 0 gets ``ln 1``
    here (an infinite coefficient would make the product NaN); the caller sets its row to -inf.
    """
    K, d = means.shape
    chol = cholesky(covariances)  # clear error if a covariance is not positive definite
    chol_inv = np.linalg.inv(chol)
    precision = np.swapaxes(chol_inv, 1, 2) @ chol_inv  # (L L^T)^-1 = L^-T L^-1
    centred = means - shift
    p_mu = np.einsum("kij,kj->ki", precision, centred)
    log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    log_weights = np.log(np.where(weights > 0, weights, 1.0))  # weight 0: see soft_pass
    first, second = _upper_pairs(d)
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


def soft_pass(data, means, covariances, weights, resp=None):
    """Soft E-step on complete data, with the sums that the M-step needs.

    Parameters
    ----------
    data : CompleteData
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
