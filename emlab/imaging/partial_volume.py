"""Partial-volume fractions: how much of each tissue a voxel holds.

A voxel on the border of tissues holds some of each, and its intensity is the mixture of
theirs (a "mixel"; Santago & Gage, IEEE TMI 1993; Shattuck et al., NeuroImage 2001; the mixed
classes of FSL FAST's PVE, Zhang, Brady & Smith 2001). The model here, on the (bias-corrected)
intensities ``y_n`` of ``K`` tissues numbered by increasing mean ``mu_1 < .. < mu_K``, is a
mixture of components ``c``, each a voxel composition ``m_c`` (tissue fractions summing to 1):

* **pure** tissue ``k``: ``m_c`` one-hot;
* **two-tissue** mixels of the adjacent tissues ``k, k+1``: a fraction ``a`` of tissue ``k`` on
  ``G`` mid-points ``a_g = (g + 1/2) / G``;
* **three-tissue** mixels of ``k, k+1, k+2`` (K >= 3): the interior points of the simplex
  ``(i, j, G - i - j) / G`` with ``i, j >= 1``, ``i + j <= G - 1``.

``y ~ N(m_c . mu, sigma^2)`` given the component, with one noise variance ``sigma^2`` shared by
all (the scanner's noise). The pure and two-tissue components' weights ``w_c`` are each learned
(so the distribution of the fraction along each pair of tissues is a histogram of ``G`` bins,
learned by EM, not assumed uniform), and sum to ``1 - rho``. The three-tissue components share
a **fixed** weight ``rho`` (``three_tissue``), uniform over their points.

Why fixed: a three-tissue voxel has the intensity of some two-tissue (or pure) one, e.g.
(0.2, 0.6, 0.2) of CSF/GM/WM has about GM's intensity, so the likelihood of the intensities
barely changes with ``rho`` (EM would keep it where it started) although the volumes do.
On the MNI152-based phantom of ``emlab.imaging.phantoms.brainweb_phantom`` (its fractions are
averages over subjects: a tenth of its CSF lies in voxels holding more than 5 % of each
tissue), ``rho = 0`` loses 15 % of the CSF. ``rho`` is a prior, chosen by hand: the default
0.08 is the value of {0, 0.06, 0.07, 0.08, 0.09, 0.1, 0.12} with the smallest largest volume
error (CSF / GM / WM -3.2 / -2.0 / +4.0 %; 0.07: -4.7 / -1.3 / +3.5; 0.09: -1.8 / -2.7 / +4.6)
on that phantom at 2 mm, 40 % INU, 3 % noise, ``random_state=1``, field divided out. Seed 1
has another noise and field than the default seed 0, but the same template fractions, so the
choice has seen that template's share of three-tissue voxels. ``rho`` reads as the prior
share of voxels holding all three tissues (each above 1/G): the template's own share of
voxels holding more than 5 % of each is 0.079 at 2 mm, and on a blurred-sphere volume whose
share is 0.040 (``tests/test_partial_volume.py``) ``rho = 0.040`` recovers the CSF within 2 %
where 0.08 overshoots it by 14 % and 0 loses 12 %. So 0.08 is an atlas-like prior for
template-smooth fractions; a single subject's sharper scan wants a smaller ``rho``. Spatial
context did not pin ``rho`` down: with a smoothness coupling of neighbouring voxels'
compositions (mean field) the learned ``rho`` depended on its start.

EM for this tied mixture:

* E-step: ``gamma_nc ∝ w_c N(y_n; m_c . mu, sigma^2)``;
* M-step: the learned ``w_c`` proportional to ``sum_n gamma_nc``, scaled to sum to ``1 - rho``;
  ``mu`` the least-squares solution of ``(sum_c S0_c m_c m_c^T) mu = sum_c S1_c m_c``
  (``S0_c = sum_n gamma_nc``, ``S1_c = sum_n gamma_nc y_n``);
  ``sigma^2 = sum_nc gamma_nc (y_n - m_c . mu)^2 / N``.

Learning each two-tissue bin's weight lets nearly-pure voxels (a WM voxel with 10 % GM) sit in
a mixel bin instead of widening the pure class: on that phantom (seed 1) the fitted pure
intensities are 0.308 / 0.616 / 0.871 and sigma 0.0280, against the generator's
0.30 / 0.62 / 0.88 and 0.0264, where one uniform fraction per pair gave 0.334 / 0.613 / 0.867
and 0.0356. The bins' weights are learned in a second stage, started from the fit with one
weight per class (the likelihood is nearly flat along the pure means once every bin is free).

A voxel's fractions are its posterior expected fractions, ``f_nk = sum_c gamma_nc m_ck``:
each in [0, 1], summing to 1. Started from the tissue means and the smallest variance of a
plain mixture fit (``segment_image(..., partial_volume=True)``). The iterations are driven by
the one EM loop of ``emlab.engine.loop`` (convergence, history), through ``_MixelPass``.
The EM runs on a fine histogram of the intensities (bins of 1/20 of the starting noise's
standard deviation): the model is 1-D and the voxels independent, so this is the voxels' EM up
to the rounding of each intensity to its bin, and its cost does not grow with the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from emlab.engine.loop import Step, iterate
from emlab.engine.validation import check_int, check_positive

DEFAULT_THREE_TISSUE = 0.08  # the prior weight of three-tissue voxels (module docstring)


@dataclass(frozen=True)
class PartialVolumeFit:
    """The fitted mixel model.

    Attributes
    ----------
    fractions : ndarray (K, N) or None
        Each voxel's expected tissue fractions (columns sum to 1); None if not asked for.
    means : ndarray (K,)
        The pure tissues' intensities.
    variance : float
        The shared noise variance.
    weights : ndarray (2K - 1,) or (3K - 3,)
        Each class's summed weight: pure classes 0..K-1, then the two-tissue classes
        (k, k+1) for k = 0..K-2, then (K >= 3 and ``three_tissue`` > 0) the three-tissue
        classes (k, k+1, k+2) for k = 0..K-3.
    component_weights : ndarray (C,)
        The weight of each row of ``mixing_matrix(K, grid, three_tissue=...)``.
    n_iter : int
    converged : bool
    log_likelihood : float
        Per voxel, of the final parameters.
    """

    fractions: np.ndarray
    means: np.ndarray
    variance: float
    weights: np.ndarray
    component_weights: np.ndarray
    n_iter: int
    converged: bool
    log_likelihood: float


def mixing_matrix(K, grid, three_tissue=False):
    """``(C, K)`` rows ``m_c``: the K pure classes, then the ``grid`` points of each adjacent
    pair, then (``three_tissue`` and K >= 3) the interior grid points of each face of three
    consecutive tissues; and the class of each row (0..K-1 pure, K..2K-2 the pairs, 2K-1..3K-4
    the faces)."""
    K, grid = check_int(K, "K", minimum=1), check_int(grid, "grid", minimum=1)
    a = (np.arange(grid) + 0.5) / grid
    rows, owner = [np.eye(K)], [np.arange(K)]
    for k in range(K - 1):
        mixed = np.zeros((grid, K))
        mixed[:, k], mixed[:, k + 1] = a, 1.0 - a
        rows.append(mixed)
        owner.append(np.full(grid, K + k))
    if three_tissue:
        i, j = np.meshgrid(np.arange(1, grid), np.arange(1, grid), indexing="ij")
        inside = i + j <= grid - 1
        face = np.stack([i[inside], j[inside], grid - i[inside] - j[inside]], axis=1) / grid
        for k in range(K - 2):
            mixed = np.zeros((len(face), K))
            mixed[:, k:k + 3] = face
            rows.append(mixed)
            owner.append(np.full(len(face), 2 * K - 1 + k))
    return np.vstack(rows), np.concatenate(owner)


_FINE = 8192  # points of the fine intensity grid on which fractions and posteriors are evaluated


def _interpolate(y, points, rows):
    """``np.interp(y, points, row)`` for every row of ``rows`` (R, P) at once, ``points``
    evenly spaced and spanning ``y``: one bracketing pass shared by all rows."""
    if points.size < 2 or points[-1] == points[0]:
        return np.repeat(rows[:, :1], y.size, axis=1)
    t = (y - points[0]) / (points[1] - points[0])
    left = np.clip(np.floor(t).astype(np.intp), 0, points.size - 2)
    w = np.clip(t - left, 0.0, 1.0)
    return rows[:, left] * (1.0 - w) + rows[:, left + 1] * w


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


def _on_fine_grid(y, M, component_weights, means, variance, rows):
    """``rows(gamma)`` (R, P) of the components' posteriors ``gamma`` on a fine grid of
    intensities spanning ``y``, interpolated at every ``y``: shape (R, N)."""
    points = np.linspace(y.min(), y.max(), _FINE)
    gamma, *_ = _pass(points, np.ones(points.size), M, _log(component_weights), means, variance)
    return _interpolate(y, points, rows(gamma))


def _log(weights):
    with np.errstate(divide="ignore"):
        return np.log(weights)


class _MixelPass:
    """The mixel model's EM on a histogram, as a pass of ``emlab.engine.loop.iterate``: the
    parameters are ``(means (K,), [variance], component weights (C,))`` and the objective is
    the total log-likelihood of the voxels. The components flagged ``fixed`` keep their
    weights; the others' are learned and scaled to sum to ``1 - fixed weights``."""

    def __init__(self, levels, counts, M, fixed, n_points, floor, owner=None):
        self.levels, self.counts, self.M, self.fixed = levels, counts, M, fixed
        self.n_points, self.floor, self.owner = n_points, floor, owner

    def _e_step(self, means, variance, weights):
        return _pass(self.levels, self.counts, self.M, _log(weights), means, variance)

    def start_objective(self, means, variances, weights):
        return np.nan  # the first step's E-step measures it

    def step(self, means, variances, weights, iteration):
        _, S0, S1, S2, loglik = self._e_step(means, variances[0], weights)
        learned = np.where(self.fixed, 0.0, S0)
        if self.owner is not None:  # one weight per class, spread evenly over its points
            per_class = np.bincount(self.owner)
            learned = (np.bincount(self.owner, weights=learned) / per_class)[self.owner]
        weights = np.where(self.fixed, weights,
                           learned * (1.0 - weights[self.fixed].sum()) / learned.sum())
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
    """Bin centres and counts of ``y`` at a width of ``spread / 20`` (at most 20 000 bins):
    the mixture is 1-D and the voxels independent given the parameters, so EM on the
    histogram differs from EM on the voxels by the rounding of each ``y`` to its bin's centre,
    a small fraction of the noise."""
    lo, hi = float(y.min()), float(y.max())
    n_bins = int(np.clip(np.ceil((hi - lo) / (spread / 20.0)), 1, 20_000))
    counts, edges = np.histogram(y, bins=n_bins, range=(lo, hi) if hi > lo else (lo, lo + 1))
    keep = counts > 0
    return 0.5 * (edges[:-1] + edges[1:])[keep], counts[keep].astype(float)


def _intensities(y):
    """``y`` as a flat float array of finite intensities, or a ValueError naming it."""
    try:
        y = np.asarray(y, dtype=float).ravel()
    except (TypeError, ValueError):
        y = np.empty(0)
    if y.size == 0 or not np.isfinite(y).all():
        raise ValueError("y must be a non-empty array of finite intensities")
    return y


def _floats(values, name, expected):
    """``values`` as a float array, or a ValueError naming ``name`` and ``expected``."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {values!r}") from None


def check_three_tissue(three_tissue):
    """``three_tissue`` as a float in [0, 1), or a ValueError naming it."""
    if isinstance(three_tissue, bool) \
            or not isinstance(three_tissue, (int, float, np.integer, np.floating)) \
            or not 0 <= three_tissue < 1:
        raise ValueError(f"three_tissue must be a number in [0, 1) (the prior weight of the "
                         f"three-tissue voxels), got {three_tissue!r}")
    return float(three_tissue)


def fit_partial_volume(y, means, variance, weights=None, grid=20, max_iter=1000, tol=1e-7,
                       three_tissue=DEFAULT_THREE_TISSUE, fractions=True):
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
        Starting class weights of the pure and two-tissue classes (each spread evenly over its
        grid points, then scaled to ``1 - three_tissue``); default: 1/2 shared by the pure
        classes in equal parts and 1/2 by the two-tissue ones.
    grid : int >= 2, default 20
        Grid points of each two-tissue fraction (and steps of the three-tissue simplex).
    max_iter : int, default 1000
        Of each of the two stages (one weight per class, then one per component).
    tol : float, default 1e-7
        Stop a stage when the log-likelihood per voxel improves by less than ``tol``.
    three_tissue : float in [0, 1), default DEFAULT_THREE_TISSUE (0.08)
        The fixed prior weight of the three-tissue voxels (K >= 3; ignored for K = 2); 0 gives
        the model of adjacent pairs only. How the default was chosen: module docstring.
    fractions : bool, default True
        Compute each voxel's fractions (False: ``fractions`` is None, for a caller that needs
        only the parameters, e.g. ``class_posteriors``).

    Returns
    -------
    PartialVolumeFit
    """
    y = _intensities(y)
    means = _floats(means, "means", "finite and increasing").ravel()
    K = means.size
    if K < 2:
        raise ValueError(f"partial volume needs at least 2 tissues, got {K}")
    if not (np.isfinite(means).all() and (np.diff(means) > 0).all()):
        raise ValueError(f"means must be finite and increasing, got {means}")
    variance = check_positive(variance, "variance")
    grid = check_int(grid, "grid", minimum=2)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_positive(tol, "tol")
    if not isinstance(fractions, (bool, np.bool_)):
        raise ValueError(f"fractions must be True or False, got {fractions!r}")
    rho = check_three_tissue(three_tissue) if K >= 3 else 0.0
    n_classes = 2 * K - 1
    if weights is None:
        weights = np.r_[np.full(K, 0.5 / K), np.full(K - 1, 0.5 / (K - 1))]
    weights = _floats(weights, "weights", f"{n_classes} non-negative numbers summing to 1")
    if weights.shape != (n_classes,) or (weights < 0).any() or not np.isclose(weights.sum(), 1):
        raise ValueError(f"weights must be {n_classes} non-negative numbers summing to 1")
    M, owner = mixing_matrix(K, grid, three_tissue=rho > 0)
    fixed = owner >= n_classes
    per_class = np.bincount(owner, minlength=owner.max() + 1).astype(float)
    start = np.where(fixed, rho / max(K - 2, 1) / per_class[owner],
                     (1.0 - rho) * weights[np.minimum(owner, n_classes - 1)] / per_class[owner])
    levels, counts = _histogram(y, np.sqrt(variance))
    # two stages: one weight per class (each class's fraction uniform), then every
    # component's own weight. The free weights make the likelihood nearly flat along the pure
    # means (a bin next to a pure class can stand in for it): started directly from the plain
    # mixture's means they stop at a GM intensity of 0.631 (generator: 0.62) on the phantom
    # of the module docstring, at a lower likelihood than from the tied fit's.
    floor = 1e-6 * float(np.var(y)) + np.finfo(float).tiny
    tied = iterate(_MixelPass(levels, counts, M, fixed, y.size, floor, owner=owner), means,
                   np.array([float(variance)]), start, "soft", max_iter, tol)
    fit = iterate(_MixelPass(levels, counts, M, fixed, y.size, floor), tied.means,
                  tied.covariances, tied.weights, "soft", max_iter, tol)
    means, variance, component_weights = fit.means, float(fit.covariances[0]), fit.weights
    voxel_fractions = None
    if fractions:
        # each voxel's fractions: the posterior expected fractions on a fine grid of intensities
        # (a smooth function of y), interpolated linearly
        voxel_fractions = np.clip(_on_fine_grid(y, M, component_weights, means, variance,
                                                lambda gamma: M.T @ gamma), 0.0, 1.0)
        voxel_fractions /= voxel_fractions.sum(axis=0)
    return PartialVolumeFit(fractions=voxel_fractions, means=means, variance=float(variance),
                            weights=np.bincount(owner, weights=component_weights),
                            component_weights=component_weights, n_iter=tied.n_iter + fit.n_iter,
                            converged=tied.converged and fit.converged,
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
    ndarray (n_classes, N)
        Rows 0..K-1: the pure classes; then the two-tissue classes ``(k, k+1)`` and, if the
        model has them, the three-tissue classes (each summed over its grid points; the order
        of ``mixing_matrix``). Columns sum to 1. Computed, like the fractions, on a fine grid
        of intensities and interpolated linearly.
    """
    y = _intensities(y)
    if not isinstance(fit, PartialVolumeFit):
        raise ValueError(f"fit must be a PartialVolumeFit (fit_partial_volume's result), got "
                         f"{type(fit).__name__}")
    K = fit.means.size
    grid = check_int(grid, "grid", minimum=2)
    M, owner = mixing_matrix(K, grid)
    if fit.component_weights.size != M.shape[0]:
        M, owner = mixing_matrix(K, grid, three_tissue=True)
    if fit.component_weights.size != M.shape[0]:
        raise ValueError(f"fit has {fit.component_weights.size} components; a model of {K} "
                         f"tissues on a grid of {grid} has {mixing_matrix(K, grid)[0].shape[0]} "
                         f"or {M.shape[0]}")
    def by_class(gamma):
        summed = np.zeros((owner.max() + 1, gamma.shape[1]))
        np.add.at(summed, owner, gamma)
        return summed

    posteriors = np.clip(_on_fine_grid(y, M, fit.component_weights, fit.means, fit.variance,
                                       by_class), 0.0, 1.0)
    return posteriors / posteriors.sum(axis=0)
