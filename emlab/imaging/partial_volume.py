"""Partial-volume fractions: how much of each tissue a voxel holds.

A voxel on the border of two tissues holds some of each, and its intensity is the mixture of
theirs (a "mixel"; Santago & Gage, IEEE TMI 1993; Shattuck et al., NeuroImage 2001; the mixed
classes of FSL FAST's PVE, Zhang, Brady & Smith 2001). The model here, on the (bias-corrected)
intensities ``y_n`` of ``K`` tissues numbered by increasing mean ``mu_1 < .. < mu_K``:

* a **pure** voxel of tissue ``k`` (weight ``pi_k``): ``y ~ N(mu_k, sigma^2)``;
* a **mixed** voxel of the adjacent tissues ``k, k+1`` (weight ``pi_{k,k+1}``) with a fraction
  ``a`` of tissue ``k``, ``a`` uniform on (0, 1): ``y ~ N(a mu_k + (1 - a) mu_{k+1}, sigma^2)``;
  ``a`` is discretised on ``G`` mid-points ``a_g = (g + 1/2) / G``.

So every component ``c`` (pure or a grid point of a mixed class) is a Gaussian whose mean is
``m_c . mu``, ``m_c`` its voxel's tissue fractions (a one-hot vector for a pure class), with one
noise variance ``sigma^2`` shared by all (the scanner's noise; the spread of a tissue's
intensities in a plain mixture fit is mostly partial volume). EM for this tied mixture:

* E-step: ``gamma_nc ∝ w_c N(y_n; m_c . mu, sigma^2)`` (``w_c = pi_k`` for a pure class,
  ``pi_{k,k+1} / G`` for a grid point);
* M-step: ``pi`` the summed ``gamma`` of each class over ``N``; ``mu`` the least-squares
  solution of ``(sum_c S0_c m_c m_c^T) mu = sum_c S1_c m_c`` (``S0_c = sum_n gamma_nc``,
  ``S1_c = sum_n gamma_nc y_n``); ``sigma^2 = sum_nc gamma_nc (y_n - m_c . mu)^2 / N``.

A voxel's fractions are its posterior expected fractions, ``f_nk = sum_c gamma_nc m_ck``:
each in [0, 1], summing to 1. Started from the tissue means and the smallest variance of a
plain mixture fit (``segment_image(..., partial_volume=True)``). The iterations are driven by
the one EM loop of ``emlab.engine.loop`` (convergence, history), through ``_MixelPass``.
The EM runs on a fine histogram of the intensities (bins of 1/50 of the starting noise's
standard deviation): the model is 1-D and the voxels independent, so this is the voxels' EM up
to the rounding of each intensity to its bin, and its cost does not grow with the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from emlab.engine.loop import Step, iterate
from emlab.engine.validation import check_int


@dataclass(frozen=True)
class PartialVolumeFit:
    """The fitted mixel model.

    Attributes
    ----------
    fractions : ndarray (K, N)
        Each voxel's expected tissue fractions (columns sum to 1).
    means : ndarray (K,)
        The pure tissues' intensities.
    variance : float
        The shared noise variance.
    weights : ndarray (2K - 1,)
        Pure classes 0..K-1, then the mixed classes (k, k+1) for k = 0..K-2.
    n_iter : int
    converged : bool
    log_likelihood : float
        Per voxel, of the final parameters.
    """

    fractions: np.ndarray
    means: np.ndarray
    variance: float
    weights: np.ndarray
    n_iter: int
    converged: bool
    log_likelihood: float


def mixing_matrix(K, grid):
    """``(C, K)`` rows ``m_c``: the K pure classes, then the ``grid`` points of each adjacent
    pair; and the class (0..2K-2) of each row."""
    a = (np.arange(grid) + 0.5) / grid
    rows, owner = [np.eye(K)], [np.arange(K)]
    for k in range(K - 1):
        mixed = np.zeros((grid, K))
        mixed[:, k], mixed[:, k + 1] = a, 1.0 - a
        rows.append(mixed)
        owner.append(np.full(grid, K + k))
    return np.vstack(rows), np.concatenate(owner)


def _log_weights(weights, owner, K, grid):
    counts = np.where(owner < K, 1.0, float(grid))
    with np.errstate(divide="ignore"):
        return np.log(weights[owner] / counts)


def _pass(y, counts, M, log_w, means, variance):
    """One pass over the intensity levels ``y`` (with multiplicities ``counts``): the
    posteriors ``gamma`` (C, L), per-component ``S0, S1, S2`` and the total log-likelihood."""
    centres = M @ means
    logp = (log_w[:, None] - 0.5 * np.log(2 * np.pi * variance)
            - (y[None, :] - centres[:, None]) ** 2 / (2 * variance))
    norm = logsumexp(logp, axis=0)
    gamma = np.exp(logp - norm)
    weighted = gamma * counts
    return (gamma, weighted.sum(axis=1), weighted @ y, weighted @ (y * y),
            float(norm @ counts))


class _MixelPass:
    """The mixel model's EM on a histogram, as a pass of ``emlab.engine.loop.iterate``: the
    parameters are ``(means (K,), [variance], weights (2K - 1,))`` and the objective is the
    total log-likelihood of the voxels."""

    def __init__(self, levels, counts, M, owner, K, grid, n_points, floor):
        self.levels, self.counts, self.M, self.owner = levels, counts, M, owner
        self.K, self.grid, self.n_points, self.floor = K, grid, n_points, floor

    def _e_step(self, means, variance, weights):
        return _pass(self.levels, self.counts, self.M,
                     _log_weights(weights, self.owner, self.K, self.grid), means, variance)

    def start_objective(self, means, variances, weights):
        return np.nan  # the first step's E-step measures it

    def step(self, means, variances, weights, iteration):
        _, S0, S1, S2, loglik = self._e_step(means, variances[0], weights)
        weights = np.bincount(self.owner, weights=S0, minlength=weights.size) / self.n_points
        new_means = np.linalg.lstsq((self.M * S0[:, None]).T @ self.M, self.M.T @ S1,
                                    rcond=None)[0]
        if np.all(np.diff(new_means) > 0):  # keep the tissues' order: no swapped update
            means = new_means
        centres = self.M @ means
        variance = max(float((S2 - 2 * centres * S1 + centres ** 2 * S0).sum()
                             / self.n_points), self.floor)
        return Step((means, np.array([variance]), weights), objective=loglik)

    def finish(self, means, variances, weights):
        return self._e_step(means, variances[0], weights)[-1]


def _histogram(y, spread):
    """Bin centres and counts of ``y`` at a width of ``spread / 50`` (at most 20 000 bins):
    the mixture is 1-D and the voxels independent given the parameters, so EM on the
    histogram differs from EM on the voxels by the rounding of each ``y`` to its bin's centre,
    a small fraction of the noise."""
    lo, hi = float(y.min()), float(y.max())
    n_bins = int(np.clip(np.ceil((hi - lo) / (spread / 50.0)), 1, 20_000))
    counts, edges = np.histogram(y, bins=n_bins, range=(lo, hi) if hi > lo else (lo, lo + 1))
    keep = counts > 0
    return 0.5 * (edges[:-1] + edges[1:])[keep], counts[keep].astype(float)


def fit_partial_volume(y, means, variance, weights=None, grid=20, max_iter=200, tol=1e-7):
    """Fit the mixel model of the module docstring to intensities ``y`` by EM.

    Parameters
    ----------
    y : array-like (N,)
        Intensities (bias-corrected), finite.
    means : array-like (K,), K >= 2
        Starting pure-tissue intensities, increasing.
    variance : float > 0
        Starting noise variance.
    weights : array-like (2K - 1,), optional
        Starting class weights (pure, then mixed); default: 1/2 shared by the pure classes in
        equal parts and 1/2 by the mixed ones.
    grid : int >= 2, default 20
        Grid points of each mixed class's fraction.
    max_iter : int, default 200
    tol : float, default 1e-7
        Stop when the log-likelihood per voxel improves by less than ``tol``.

    Returns
    -------
    PartialVolumeFit
    """
    y = np.asarray(y, dtype=float).ravel()
    means = np.asarray(means, dtype=float).ravel()
    K = means.size
    if K < 2:
        raise ValueError(f"partial volume needs at least 2 tissues, got {K}")
    if y.size == 0 or not np.isfinite(y).all():
        raise ValueError("y must be a non-empty array of finite intensities")
    if not (np.isfinite(means).all() and (np.diff(means) > 0).all()):
        raise ValueError(f"means must be finite and increasing, got {means}")
    if not (np.isfinite(variance) and variance > 0):
        raise ValueError(f"variance must be a positive number, got {variance!r}")
    grid = check_int(grid, "grid", minimum=2)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    M, owner = mixing_matrix(K, grid)
    n_classes = 2 * K - 1
    if weights is None:
        weights = np.r_[np.full(K, 0.5 / K), np.full(K - 1, 0.5 / (K - 1))]
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (n_classes,) or (weights < 0).any() or not np.isclose(weights.sum(), 1):
        raise ValueError(f"weights must be {n_classes} non-negative numbers summing to 1")
    levels, counts = _histogram(y, np.sqrt(variance))
    mixel = _MixelPass(levels, counts, M, owner, K, grid, y.size,
                       floor=1e-6 * float(np.var(y)) + np.finfo(float).tiny)
    fit = iterate(mixel, means, np.array([float(variance)]), weights, "soft", max_iter, tol)
    means, variance, weights = fit.means, float(fit.covariances[0]), fit.weights
    # each voxel's fractions: the posterior expected fractions on a fine grid of intensities
    # (a smooth function of y), interpolated linearly
    points = np.linspace(y.min(), y.max(), 8192)
    gamma, *_ = _pass(points, np.ones(points.size), M, _log_weights(weights, owner, K, grid),
                      means, variance)
    on_grid = M.T @ gamma
    fractions = np.stack([np.interp(y, points, row) for row in on_grid])
    fractions = np.clip(fractions, 0.0, 1.0)
    fractions /= fractions.sum(axis=0)
    return PartialVolumeFit(fractions=fractions, means=means, variance=float(variance),
                            weights=weights, n_iter=fit.n_iter, converged=fit.converged,
                            log_likelihood=fit.objective / y.size)


def class_posteriors(y, fit, grid=20):
    """Each voxel's posterior probability of each class of a fitted mixel model.

    Parameters
    ----------
    y : array-like (N,)
        Intensities (on the scale the model was fitted to).
    fit : PartialVolumeFit
    grid : int, default 20
        The grid the model was fitted with (``fit_partial_volume``'s ``grid``).

    Returns
    -------
    ndarray (2K - 1, N)
        Rows 0..K-1: the pure classes; row ``K + k``: the mixed class of tissues ``k, k+1``
        (summed over its grid points). Columns sum to 1. Computed, like the fractions, on a
        fine grid of intensities and interpolated linearly.
    """
    y = np.asarray(y, dtype=float).ravel()
    if y.size == 0 or not np.isfinite(y).all():
        raise ValueError("y must be a non-empty array of finite intensities")
    K = fit.means.size
    grid = check_int(grid, "grid", minimum=2)
    if fit.weights.shape != (2 * K - 1,):
        raise ValueError(f"fit has {fit.weights.size} class weights; expected {2 * K - 1}")
    M, owner = mixing_matrix(K, grid)
    points = np.linspace(y.min(), y.max(), 8192)
    gamma, *_ = _pass(points, np.ones(points.size), M, _log_weights(fit.weights, owner, K, grid),
                      fit.means, fit.variance)
    by_class = np.zeros((2 * K - 1, points.size))
    np.add.at(by_class, owner, gamma)
    posteriors = np.clip(np.stack([np.interp(y, points, row) for row in by_class]), 0.0, 1.0)
    return posteriors / posteriors.sum(axis=0)
