"""Tissue segmentation of an image by EM on its intensities, with an optional Potts prior.

``beta > 0`` a Potts prior couples each pixel's class with its neighbours' (hidden Markov
random field). The exact posterior is then intractable; we use two standard approximations,
each the natural extension of one of the two E-steps of this module:

* soft: a mean-field E-step (Zhang 1992; Celeux, Forbes & Peyrard 2003). Each pixel's
  responsibilities are q_n(k) ∝ N(x_n; mu_k, sigma_k^2) exp(beta * sum_{m ~ n} q_m(k)):
  the log-prior of class k is beta times the neighbours' summed responsibilities for k;
* hard: iterated conditional modes (ICM, Besag 1986). Each pixel takes the class minimising
  (x_n - mu_k)^2 / (2 sigma^2) - beta * #{m ~ n : z_m = k}, sigma^2 the pooled within-class
  variance: at beta = 0 this is exactly the nearest-mean rule of ``e_step``.

Class proportions under the prior. A Potts prior with an external field ``alpha`` (a constant
log-prior per class) and ``z`` neighbours has, at its homogeneous mean-field fixed point, the
class shares ``r`` that solve ``r_k ∝ exp(alpha_k + beta z r_k)``
(``potts.homogeneous_marginals``). ``proportions`` picks the field of the mean-field E-step,
``q_n(k) ∝ N(x_n; mu_k, sigma_k^2) exp(alpha_k + beta * sum_{m ~ n} q_m(k))``; the default
(``None``) is ``"estimated"`` with a tied variance (below):

* ``False`` (as in dipy and Zhang, Brady & Smith 2001; the comparisons with dipy pass it, with
  ``covariance_type="full"``: ``DIPY_MODEL``): ``alpha = 0``, whose prior gives every class
  ``1 / K``. On the 3-D template (notebook 09) the CSF prior is then 1/3 instead of about 0.14,
  and CSF more than doubles, taking dark grey-matter voxels;
* ``"fixed"`` (or ``True``): ``alpha_k = ln pi_k`` of the plain fit, held fixed (a constant
  field: the objective rises at every step; ``history[0]`` holds them, ``weights`` reports the
  final proportions). ``ln pi_k`` counts a class's abundance a second time on top of the
  neighbours' votes (for the template's weights its prior gives grey matter 90 % of the brain),
  and re-estimating ``pi_k`` as the mean responsibility inside it feeds that back until one
  class holds the brain;
* ``"estimated"`` (the default): ``alpha`` is the M-step of the mixture weights with each
  voxel's prior normalised over the classes, ``p_nk = exp(alpha_k + beta s_nk) / sum_j
  exp(alpha_j + beta s_nj)``, ``s_n`` the neighbours' current responsibilities (the
  mean-field-like EM of Celeux, Forbes & Peyrard 2003): ``alpha`` maximises ``sum_nk q_nk ln
  p_nk``, i.e. the mean of the conditionals ``p_nk`` equals the mean responsibility ``pi_k``
  (``weights``), by one Newton step per iteration (``potts.pseudo_likelihood_field``). A class's
  share is then counted once. ``history`` holds ``sum_nk q_nk (ln N(x_n; ..) + ln p_nk) - sum q
  ln q``, which need not rise at every step (the E-step does not see ``p``'s normaliser). The
  homogeneous field ``ln pi_k - beta z pi_k`` (``potts.homogeneous_field``, whose mean-field
  prior has the shares ``pi``) was tried first (with the tied variance): on the template without
  noise it did about as well (CSF 206.4 mL), but on the template with noise 0.15 (as in notebook
  09's sweep) it let CSF fall to 28.5 mL (Dice 0.193), and on noisy slices the middle class
  vanished: in the posterior's clustered configurations a shrinking class keeps losing prior.
  The conditionals above see those configurations; with them CSF was 131.5 mL there.

``covariance_type="tied"`` (soft EM with the prior; its default) gives every class one variance,
the pooled one (the start's pooled with the plain fit's weights, then the M-step's): a scanner's
noise is the same in every tissue, and a class's own spread in a plain fit is mostly partial
volume. With per-class variances the mean field narrows grey matter (its responsibilities become
confident only for typical intensities) and the broad CSF Gaussian takes the dark grey matter.
The pair was chosen on the BrainWeb-style phantom with ``random_state=1``
(``phantoms.brainweb_phantom``, no INU, 3, 5 and 9 % noise, ``beta = 1/3``: summed
responsibilities within 7 % of the summed fractions, CSF +6.5, +6.2 and +7.0 %), not on the
template; on the 2 mm template (notebook 09) it gives CSF 211.6 mL against the reference's
216.7 (summed probabilities; 475.8 mL with ``proportions=False, covariance_type="full"``) and
the best mean Dice of notebook 09's fits at every noise level, hence the default of soft EM
with ``beta > 0``. ICM (hard) has no weights and always a
pooled variance: its rule is the nearest-mean rule of ``e_step``.

The pixels are updated one colour at a time (two colours for the 4-neighbourhood of a slice or
the 6-neighbourhood of a volume, a checkerboard: the parity of the sum of the coordinates; four
for the 8-neighbourhood, the 2 x 2 pattern, and eight for the 26-neighbourhood, the 2 x 2 x 2
pattern): no two pixels of one colour are neighbours, so a colour's simultaneous update is the
same as updating its pixels one by one (Gauss-Seidel, as in sequential ICM), which is what makes
each sweep improve the objective; updating every pixel at once from the old neighbours (as dipy
does) can oscillate. With coloured sweeps the mean-field free energy (soft) increases and the
ICM energy (hard) decreases at every step, E and M alike, so ``history`` is monotone (up to the
tiny shift that reg_covar adds to the M-step's exact maximiser), except with estimated
proportions (the default of soft EM with ``beta > 0``), whose M-step for ``alpha`` maximises a
pseudo-likelihood rather than this objective.

Volumes work the same way, voxel for voxel. With ``spacing`` (anisotropic voxels) each
neighbour's vote is weighted by ``min(spacing) |o| / |o * spacing|`` for its offset ``o``
(inversely proportional to its physical distance, 1 for every neighbour of isotropic voxels):
the prior then couples voxels across thick slices less. Without ``spacing`` the prior counts
neighbours on the voxel grid whatever their physical distance.

``segment_image`` is the entry point; the prior's primitives live in ``emlab.imaging.potts``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

from em_helpers import (
    EMConvergenceWarning,
    EMResult,
    MStepResult,
    log_gaussian_1d,
    m_step,
    permute_components,
    run_em,
)
from emlab.engine import chunked
from emlab.engine.fastpath import has_empty_component
from emlab.engine.loop import Step, improves, iterate, progress_bar
from emlab.imaging import bias_field as bias, dask_volumes, partial_volume as pve
from emlab.engine.covariance import constrain_covariances
from emlab.imaging.potts import (
    NEIGHBOURHOODS,
    ColouredNeighbours,
    check_connectivity,
    coloured_icm_objective,
    coloured_icm_sweep,
    coloured_mean_field_objective,
    coloured_mean_field_sweep,
    coloured_neighbour_sums,
    pseudo_likelihood_field,
)
from emlab.engine.validation import check_beta, check_image, check_int, check_positive


def _m_step_1d(X, R, reg_covar):
    """``m_step(X, R, reg_covar=reg_covar)`` for the complete (N, 1) intensities of the prior's
    loop, without its input checks and copies (the loop's ``R`` is valid by construction):
    the same operations in the same order, so the same numbers. An empty class goes to
    ``m_step`` itself, which re-seeds it."""
    counts = R.sum(axis=1)
    if has_empty_component(counts, X.shape[0]):
        return m_step(X, R, reg_covar=reg_covar)
    means = (R @ X) / counts[:, None]
    covs = np.empty((R.shape[0], 1, 1))
    for k in range(R.shape[0]):
        diff = X - means[k]
        covs[k] = (R[k][:, None] * diff).T @ diff / counts[k]
        covs[k].flat[::2] += reg_covar
    return MStepResult(means, covs, counts / X.shape[0])


class _LogDensities:
    """``ln N(x_n; mu_k, sigma_k^2)`` (K, N) of the pixels in the internal order, into one
    buffer. When the pixels take few distinct values (an 8-bit scan: a few hundred), the
    densities are computed once per value and gathered: the same numbers (the formula is
    applied to the same values), without the ~7 passes over (K, N)."""

    def __init__(self, x_inner, K):
        self.x = x_inner
        self.out = np.empty((K, x_inner.size))
        levels, codes = np.unique(x_inner, return_inverse=True)
        self.levels, self.codes = (levels, codes.ravel()) if levels.size <= x_inner.size // 8 \
            else (None, None)

    def __call__(self, means, variances):
        with np.errstate(divide="ignore"):
            if self.levels is None:
                self.out[...] = log_gaussian_1d(self.x, means, variances)
                return self.out
            table = log_gaussian_1d(self.levels, means, variances)
        for k in range(table.shape[0]):
            table[k].take(self.codes, out=self.out[k], mode="clip")
        return self.out


class _PottsPass:
    """One Potts-coupled iteration, the pass that ``emlab.engine.loop.iterate`` drives: a
    coloured sweep of the E-step (mean field or ICM), then the usual M-step (``m_step``) on the
    resulting responsibilities; its ``change`` (largest responsibility move, or number of
    changed labels) decides convergence, and the objective of the new parameters goes to
    ``history``.

    The sweeps run on the pixels renumbered colour by colour (``potts.ColouredNeighbours``:
    a colour is a slice of ``Q``); ``R`` holds the same responsibilities in the order of
    ``image[mask]``, for the M-step and the result.
    """

    def __init__(self, X, mask, start, method, beta, connectivity, spacing, reg_covar,
                 proportions=False, tied=False):
        self.X, self.x, self.method = X, X[:, 0], method
        self.beta, self.reg_covar, self.tied = beta, reg_covar, tied
        K, self.n_points = start.means.shape[0], X.shape[0]
        self.layout = ColouredNeighbours.of(mask, connectivity, spacing)
        proportions = proportions if method == "soft" else False
        self.R = np.array(start.resp, dtype=float)
        self.Q = np.zeros((K, self.n_points + 1))  # internal order; last column: no neighbour
        self.layout.to_inner(self.R, out=self.Q[:, :-1])
        self.log_densities = _LogDensities(self.x[self.layout.order], K) \
            if method == "soft" else None
        self.work = {}
        self.log_proportions = _log_proportions(start.weights, self.n_points) \
            if proportions == "fixed" else None
        # "estimated": the field alpha (K,) of the prior's conditionals, for the neighbour
        # sums of the current responsibilities (kept in self.sums)
        self.sums = self.field = self.log_normalisers = None
        if proportions == "estimated":
            self.sums = coloured_neighbour_sums(self.Q, self.layout)
            self.field, self.log_normalisers = pseudo_likelihood_field(
                self.sums, beta, _shares(start.weights, self.n_points))

    def data_term(self, means, covs, weights):
        """Soft: ln N(x_n; mu_k, sigma_k^2), plus the external field of the proportions if
        any. Hard: (x_n - mu_k)^2 / (2 sigma^2) and the pooled variance sigma^2. Both (K, N),
        in the internal order."""
        if self.method == "soft":
            densities = self.log_densities(means[:, 0], covs[:, 0, 0])
            if self.log_proportions is not None:  # "fixed": ln pi_k of the start
                densities = densities + self.log_proportions
            elif self.field is not None:  # "estimated": the current field alpha
                densities = densities + self.field[:, None]
            return densities, None
        sq = (self.x[None, :] - means[:, 0][:, None]) ** 2
        sigma2 = float((self.R * sq).sum() / self.n_points + self.reg_covar)
        return self.layout.to_inner(sq / (2.0 * sigma2)), sigma2

    def objective(self, means, covs, weights, sweep=None):
        term, sigma2 = self.term = self.data_term(means, covs, weights)
        pairs, entropy = (None, None) if sweep is None else (sweep.pairs, sweep.entropy)
        if self.method == "soft" and self.field is not None:  # "estimated"
            # sum_nk q_nk [ln N + ln p_nk] - sum q ln q, ln p_nk = alpha_k + beta s_nk -
            # ln sum_j exp(alpha_j + beta s_nj); sum_nk q_nk s_nk is twice the pair term
            return coloured_mean_field_objective(self.Q, term, 2.0 * self.beta, self.layout,
                                                 pairs, entropy) - self.log_normalisers
        if self.method == "soft":
            return coloured_mean_field_objective(self.Q, term, self.beta, self.layout, pairs,
                                                 entropy)
        return coloured_icm_objective(self.Q, term, sigma2, self.beta, self.layout, pairs)

    def start_objective(self, means, covs, weights):
        return self.objective(means, covs, weights)

    def step(self, means, covs, weights, iteration):
        term = self.term[0]  # of the current parameters
        sweep = (coloured_mean_field_sweep if self.method == "soft" else coloured_icm_sweep)(
            self.Q, term, self.beta, self.layout, self.work)
        self.layout.to_mask_order(self.Q, out=self.R)  # back to the order of image[mask]
        # an emptied class is re-seeded by m_step; the next sweep then lets it claim pixels
        fit = _m_step_1d(self.X, self.R, self.reg_covar)
        if self.tied:  # one variance: the classes' pooled about their own means
            fit = MStepResult(fit.means, _tied(fit.covariances, fit.weights), fit.weights,
                              fit.reseeded)
        if self.field is not None:  # "estimated": the field's M-step for the new votes
            coloured_neighbour_sums(self.Q, self.layout, out=self.sums)
            # one Newton step from the last field (a generalised M-step: it raises the
            # objective; a converged fit is its fixed point all the same)
            self.field, self.log_normalisers = pseudo_likelihood_field(
                self.sums, self.beta, _shares(fit.weights, self.n_points), self.field,
                max_iter=1)
        return Step(fit, None, change=sweep.change, reseeded=fit.reseeded,
                    new_objective=self.objective(fit.means, fit.covariances, fit.weights,
                                                 sweep))

    def finish(self, means, covs, weights):
        return None  # the last step measured the final parameters' objective


def _potts_em(X, mask, start, method, beta, connectivity, spacing, max_iter, tol, reg_covar,
              progress=False, proportions=False, tied=False):
    """EM with a Potts prior, started from a plain-EM result ``start``; returns an EMResult.

    Each iteration is one coloured sweep of the E-step (mean field or ICM) followed by the
    usual M-step (``m_step``) on the resulting responsibilities (``_PottsPass``, driven by
    ``emlab.engine.loop.iterate``). Stops when no label changes (hard) or no responsibility
    moves by more than ``tol`` (soft). ``proportions``: False, "fixed" or "estimated";
    ``tied``: one variance for every class (the start's pooled, then the M-step's).
    """
    potts = _PottsPass(X, mask, start, method, beta, connectivity, spacing, reg_covar,
                       proportions, tied)
    name = "mean field" if method == "soft" else "ICM"
    bar = progress_bar(f"{method} EM + {name}", max_iter) if progress else None
    covs = _tied(start.covariances, start.weights) if tied else start.covariances
    fit = iterate(potts, start.means, covs, start.weights, method, max_iter, tol, bar)
    resp = potts.R.astype(np.int64) if method == "hard" else potts.R
    return EMResult(means=fit.means, covariances=fit.covariances, weights=fit.weights,
                    resp=resp, labels=np.argmax(resp, axis=0), n_iter=fit.n_iter,
                    converged=fit.converged, objective=fit.objective, history=fit.history,
                    init_means=start.means.copy(), method=method, reseeded=fit.reseeded)


def _floored(weights, N):
    """Class proportions floored at ``1 / N`` (one pixel), so that their logarithm is finite."""
    return np.maximum(np.asarray(weights, dtype=float), 1.0 / N)


def _shares(weights, N):
    """``_floored`` proportions, renormalised to sum to 1."""
    shares = _floored(weights, N)
    return shares / shares.sum()


def _log_proportions(weights, N):
    """The class proportions of the mean-field E-step, ``ln pi_k`` (K, 1): those of the plain
    fit the prior starts from, held fixed (see the module docstring)."""
    return np.log(_floored(weights, N))[:, None]


def _tied(covs, weights):
    """Every class's variance replaced by their average weighted by ``weights`` (K, 1, 1)."""
    weights = np.asarray(weights, dtype=float)
    return constrain_covariances(covs, weights / weights.sum(), "tied", 0.0)


def _order_by_intensity(result):
    """A copy of ``result`` whose components are numbered by increasing mean (d = 1)."""
    return permute_components(result, np.argsort(result.means[:, 0], kind="stable"))


@dataclass
class ScanResult(EMResult):
    """``segment_image``'s result with ``bias_field=`` or ``partial_volume=``: the fit's
    ``EMResult`` (on the corrected intensities) plus ``bias_field`` (the image's shape, 1
    outside the mask) and ``restored`` (the image divided by it), or ``None``;
    ``fractions`` (K, N) over the masked voxels like ``resp``, or ``None``; and
    ``n_field_updates`` (0 without the field)."""

    bias_field: np.ndarray | None = None
    restored: np.ndarray | None = None
    fractions: np.ndarray | None = None
    n_field_updates: int = 0

    @property
    def fraction_labels(self):
        """(N,) the tissue holding the largest fraction of each masked voxel (FSL FAST's
        ``pveseg``), or ``None`` without fractions. Against a truth defined the same way (the
        argmax of true fractions) it is the natural hard label; ``labels`` stays the EM's."""
        return None if self.fractions is None else self.fractions.argmax(axis=0)


def _plain_em(X, K, method, n_init, max_iter, random_state, reg_covar, progress=False):
    """Intensity-only EM. Hard: k-means++ starts, best of ``n_init``. Soft: started from that
    hard solution (its means, covariances and weights), as scikit-learn starts from k-means,
    and, when that hard solution leaves intensities more than 3 standard deviations beyond
    its extreme components, also from ``_tail_start`` (that tail in a component of its own,
    tried only if it is still distinct after a short probe, ``_tail_survives``, and kept only
    if it ends distinct: ``_distinct_last``); the start
    whose soft EM reaches the higher log-likelihood wins. k-means inertia alone prefers
    splitting a large tissue to isolating a small distinct class (a lesion of 0.5 % of the
    voxels never gets a k-means start of its own); the likelihood is what soft EM maximises."""
    hard = run_em(X, K, method="hard", init="kmeans++", n_init=n_init, max_iter=max_iter,
                  random_state=random_state, reg_covar=reg_covar, progress=progress)
    if method == "hard":
        return hard
    starts = [{"means": hard.means, "covariances": hard.covariances, "weights": hard.weights}]
    tail = _tail_start(X, K, n_init, max_iter, random_state, reg_covar) \
        if _outlying_tail(X[:, 0], hard).sum() >= K else None
    if tail is not None and _tail_survives(X, K, tail, reg_covar):
        starts.append(tail)
    best, best_warnings = None, []
    for start in starts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit = run_em(X, K, method="soft", init=start, max_iter=max_iter,
                             reg_covar=reg_covar, progress=progress)
            except ValueError:
                if best is None:
                    raise
                continue  # the tail's component collapsed (reg_covar=0): drop that start
        if best is not None and not _distinct_last(fit):
            continue  # the tail merged back into a tissue: not a class of its own
        # a later start must beat an earlier one by more than rounding (as in run_em)
        if best is None or improves(fit.objective, best.objective, "soft"):
            best, best_warnings = fit, caught
    for w in best_warnings:  # the warnings of the start kept, as if it had been the only one
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return best


PROBE_ITERATIONS = 20  # soft-EM iterations after which a tail start must still be distinct


def _tail_survives(X, K, start, reg_covar):
    """Whether the tail's component is still distinct (``_distinct_last``) after
    ``PROBE_ITERATIONS`` of soft EM from the tail start ``start``. The full fit from a start
    whose tail has merged into a tissue would be discarded at the end; a few stray intensities
    (13 dark pixels of dipy's T1 slice, whose tail merges within 5 iterations) then cost one
    short probe instead of a whole fit, which more than doubled that slice's plain fit. A probe
    that fails (a collapsing component) leaves the decision to the full fit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = run_em(X, K, method="soft", init=start, max_iter=PROBE_ITERATIONS,
                           reg_covar=reg_covar)
    except ValueError:
        return True
    return _distinct_last(probe)


def _distinct_last(fit, typicality=3.0):
    """Whether the last component (the tail's, in a fit from ``_tail_start``) ended more than
    ``typicality`` standard deviations of every other component from that component's mean."""
    mu, sd = fit.means[:, 0], np.sqrt(fit.covariances[:, 0, 0])
    return bool(np.all(np.abs(mu[-1] - mu[:-1]) > typicality * sd[:-1]))


def atypicality(x, fit):
    """How many standard deviations each intensity lies beyond the brightest component's mean
    (if brighter) or below the darkest's (if darker); 0 in between, where tissues blend.

    Parameters
    ----------
    x : ndarray (N,)
    fit : EMResult of a 1-D mixture (means (K, 1), covariances (K, 1, 1))

    Returns
    -------
    ndarray (N,), >= 0
    """
    means, covs = np.shape(getattr(fit, "means", None)), np.shape(getattr(fit, "covariances", None))
    if len(means) != 2 or means[1] != 1 or covs != (means[0], 1, 1):
        raise ValueError(f"fit must be the EMResult of a 1-D mixture (means (K, 1), covariances "
                         f"(K, 1, 1)), got {type(fit).__name__} with means {means}")
    try:
        x = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"x must be an array of intensities, got {type(x).__name__}") from None
    mu, sd = fit.means[:, 0], np.sqrt(fit.covariances[:, 0, 0])
    top, bottom = np.argmax(mu), np.argmin(mu)
    return np.maximum(np.maximum((x - mu[top]) / sd[top], (mu[bottom] - x) / sd[bottom]), 0.0)


def _outlying_tail(x, fit, typicality=3.0):
    """The larger of the groups of ``x`` more than ``typicality`` standard deviations above the
    brightest component of ``fit`` or below the darkest (bool, like ``x``)."""
    beyond = atypicality(x, fit) > typicality
    mu = fit.means[:, 0]
    bright, dark = beyond & (x > mu.max()), beyond & (x < mu.min())
    return bright if bright.sum() >= dark.sum() else dark


def _tail_start(X, K, n_init, max_iter, random_state, reg_covar, typicality=3.0):
    """A soft-EM start with the most outlying tail in a component of its own, or ``None``.

    Hard EM with ``K - 1`` components (k-means++, best of ``n_init``); the tail is
    ``_outlying_tail`` of that fit (at least ``K`` intensities). The start: the ``K - 1``
    components and the tail's mean, variance and share. ``_plain_em`` tries it only when the
    ``K``-component hard fit itself leaves such a tail (a class it did not isolate)."""
    if K < 2:
        return None
    fit = run_em(X, K - 1, method="hard", init="kmeans++", n_init=n_init, max_iter=max_iter,
                 random_state=random_state, reg_covar=reg_covar)
    x = X[:, 0]
    tail = _outlying_tail(x, fit, typicality)
    if tail.sum() < K or np.unique(x[tail]).size < 2:
        return None
    share = tail.mean()
    return {"means": np.r_[fit.means[:, 0], x[tail].mean()][:, None],
            "covariances": np.r_[fit.covariances[:, 0, 0], x[tail].var() + reg_covar][:, None,
                                                                                       None],
            "weights": np.r_[fit.weights * (1.0 - share), share]}


# the Potts model of dipy's TissueClassifierHMRF in segment_image's options: no class
# proportions in the mean-field prior and one variance per class (the module docstring; the
# default of soft EM with beta > 0 has both). Passed as ``**DIPY_MODEL``.
DIPY_MODEL = {"proportions": False, "covariance_type": "full"}
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


def _fit_with_field(X, inside, plain, degree, method, beta, connectivity, spacing, max_iter, tol,
                    reg_covar, proportions, tied):
    """``bias_field.fit_with_field`` started from the plain fit, then this module's mixture
    refitted to the corrected intensities: ``run_em`` warm-started, and with ``beta > 0`` the
    prior's loop after it (its class proportions, fixed or the start of the estimated ones,
    the plain fit's). Returns the fit, ``ln b`` and the number of field updates."""
    log_field, _, n_updates, _ = bias.fit_with_field(
        X[:, 0], inside, degree, plain.means[:, 0], float(plain.covariances[:, 0, 0].min()),
        tol=1e-3)
    corrected = X * np.exp(-log_field)[:, None]
    begin = {"means": plain.means, "covariances": plain.covariances, "weights": plain.weights}
    with warnings.catch_warnings():  # the prior's loop below decides convergence
        if beta > 0:
            warnings.simplefilter("ignore", EMConvergenceWarning)
        result = run_em(corrected, plain.means.shape[0], method=method, init=begin,
                        max_iter=max_iter, reg_covar=reg_covar)
    if beta > 0:
        result = _potts_em(corrected, inside, replace(result, weights=plain.weights), method,
                           beta, connectivity, spacing, max_iter, tol, reg_covar, False,
                           proportions, tied)
    return result, log_field, n_updates


def _scan_result(result, img, inside, field, n_updates, partial_volume, three_tissue):
    """A ``ScanResult``: the field as an image (1 outside the mask), the restored image, and
    the partial-volume fractions of the (corrected) intensities."""
    extra = {"n_field_updates": n_updates}
    corrected = img[inside] if field is None else img[inside] / field
    if field is not None:
        extra["bias_field"] = np.ones(img.shape)
        extra["bias_field"][inside] = field
        extra["restored"] = img / extra["bias_field"]
    if partial_volume:
        rho = pve.DEFAULT_THREE_TISSUE if three_tissue is None else three_tissue
        extra["fractions"] = pve.fit_partial_volume(
            corrected, result.means[:, 0], float(result.covariances[:, 0, 0].min()),
            three_tissue=rho).fractions
    fields = {name: value for name, value in asdict(result).items()
              if name in EMResult.__dataclass_fields__}
    return ScanResult(**fields, **extra)


def _check_proportions(proportions, method, beta):
    """``proportions`` as False, "fixed" (also ``True``) or "estimated"; ``None`` is
    "estimated" for soft EM with ``beta > 0`` (the mean-field loop) and False otherwise (where
    the option does not apply)."""
    if proportions is None:
        return "estimated" if method == "soft" and beta > 0 else False
    if isinstance(proportions, (bool, np.bool_)):
        return "fixed" if proportions else False
    if isinstance(proportions, str) and proportions in ("fixed", "estimated"):
        return proportions
    raise ValueError(f"proportions must be None, False, True, 'fixed' or 'estimated', got "
                     f"{proportions!r}")


def _check_covariance_type(covariance_type, method, beta):
    """Whether the prior's loop ties the variances: ``covariance_type`` "full" or "tied"
    (the latter for the mean-field loop only: soft EM with ``beta > 0``); ``None`` is "tied"
    there and "full" otherwise."""
    if covariance_type is None:
        return method == "soft" and beta > 0
    if not isinstance(covariance_type, str) or covariance_type not in ("full", "tied"):
        raise ValueError(f"covariance_type must be None, 'full' or 'tied', got "
                         f"{covariance_type!r}")
    if covariance_type == "tied" and (method != "soft" or beta == 0):
        raise ValueError("covariance_type='tied' applies to the mean-field prior's loop: it "
                         f"needs method='soft' and beta > 0, got method={method!r}, "
                         f"beta={beta!r}")
    return covariance_type == "tied"


def _check_spacing(spacing, ndim):
    """``None``, or the voxel size as ``ndim`` positive finite floats."""
    if spacing is None:
        return None
    try:
        values = np.array(spacing, dtype=float)
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (ndim,) or not np.all(np.isfinite(values)) \
            or not np.all(values > 0):
        raise ValueError(f"spacing must be {ndim} positive finite numbers (the voxel size along "
                         f"each axis of the {ndim}-D image), got {spacing!r}")
    return values


def segment_image(image, mask=None, n_components=3, method="soft", beta=0.0, random_state=0,
                  *, connectivity=None, spacing=None, n_init=4, max_iter=500, tol=1e-4,
                  reg_covar=1e-6, start=None, progress=False, bias_field=False,
                  partial_volume=False, proportions=None, covariance_type=None,
                  three_tissue=None):
    """Segment a grey-level image by EM on the intensities, with an optional Potts prior.

    The intensities of the pixels inside ``mask`` are fitted by a ``n_components``-Gaussian
    mixture with ``run_em`` (``method="hard"``: nearest-mean assignments; ``"soft"``: Gaussian
    responsibilities). The hard fit is started from k-means++ seeds (best of ``n_init``) and
    the soft fit from the hard solution. With ``beta > 0`` that fit is then continued under a
    Potts / Markov-random-field prior that rewards a pixel for sharing its class with its
    neighbours (``connectivity``; neighbours outside the mask do not count). Images are 2-D
    slices (H, W) or 3-D volumes (X, Y, Z); a volume of depth 1 gives the slice's answer:

    * soft: mean-field EM. E-step: ``q_n(k) ∝ N(x_n; mu_k, sigma_k^2)
      exp(beta * sum_{m ~ n} q_m(k))``, i.e. the log-prior of class ``k`` at pixel ``n`` is
      ``beta`` times the neighbours' summed responsibilities for ``k``;
    * hard: ICM. Each pixel takes the class minimising ``(x_n - mu_k)^2 / (2 sigma^2) - beta *
      (number of neighbours in class k)``, ``sigma^2`` the pooled within-class variance (so that
      ``beta = 0`` is exactly the nearest-mean rule).

    Both E-steps update the pixels one colour of a checkerboard at a time (see the module
    docstring) and are followed by the usual M-step (``m_step``). Mean field was
    chosen for soft EM because it keeps responsibilities (the M-step stays the weighted one of
    this module) and, unlike ICM, does not freeze a pixel's class after one decision.
    Under the mean-field prior the class proportions enter the E-step by default, re-estimated
    at every M-step, and the classes share one variance (``proportions="estimated"``,
    ``covariance_type="tied"``; see the module docstring); ``proportions=False,
    covariance_type="full"`` is dipy's model (no proportions: the Potts field alone, per-class
    variances), which doubled CSF on the 3-D template. ``beta`` is in nats per neighbour:
    with 4 neighbours, ``beta = 1`` lets a unanimous neighbourhood outweigh a log-likelihood
    ratio of up to 4 nats (a likelihood ratio of ``e^4``). (dipy's
    ``TissueClassifierHMRF`` adds ``+beta_dipy`` per disagreeing neighbour and ``-beta_dipy``
    per agreeing one, so its ``beta_dipy`` corresponds to ``beta = 2 * beta_dipy`` here.)

    A dask array ``image`` (too large for memory) is fitted and labelled chunk by chunk by
    ``emlab.imaging.dask_volumes.segment_dask_volume`` (no prior: ``beta`` must be 0, the prior
    stays in memory); the label volume then comes back as a lazy dask array.

    Parameters
    ----------
    image : array-like of shape (H, W) or (X, Y, Z)
        Intensities; must be finite inside the mask. Not modified.
    mask : array-like of bool, same shape as ``image``, optional
        The pixels to segment (e.g. the brain: ``image > 0``). Default: every pixel.
    n_components : int, default 3
    method : {"soft", "hard"}, default "soft"
    beta : float >= 0, default 0.0
        Strength of the spatial prior; 0 switches it off (plain ``run_em``).
    random_state : int, default 0
        Seed of the k-means++ starts.
    connectivity : {4, 8} for a slice, {6, 26} for a volume, optional
        Neighbourhood of the prior. Default: 4 for a slice (the edge neighbours), 6 for a
        volume (the face neighbours); 8 and 26 add the diagonal ones.
    spacing : sequence of ``image.ndim`` positive floats, optional
        The voxel size along each axis (e.g. in mm). Given, each neighbour's vote in the prior
        is weighted by ``min(spacing) * |o| / |o * spacing|`` for its offset ``o`` (all weights
        are 1 for isotropic voxels, whatever their size). Default: every neighbour counts 1.
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
    progress : bool, default False
        Show tqdm progress bars (on stderr; widgets in notebooks): one per start of the plain
        fit (``run_em(progress=True)``) and one for the iterations under the prior, with the
        largest change of a responsibility or the number of changed labels. Off by default so
        that notebook outputs stay stable.
    bias_field : bool or int, default False
        Estimate a smooth multiplicative intensity non-uniformity inside EM
        (``emlab.imaging.bias_field``: a Legendre polynomial of the log field, of degree 3 for
        ``True`` or the given degree, fitted by posterior-weighted least squares, alternated
        with the mixture's EM on the corrected intensities). Needs positive intensities in the
        mask. ``False`` gives exactly the fit without it.
    proportions : {None, False, True, "fixed", "estimated"}, default None
        Soft EM with ``beta > 0`` (ignored otherwise): the class proportions in the mean-field
        E-step's external field ``alpha``. ``None``: ``"estimated"``. ``"estimated"``:
        ``alpha`` re-estimated at every M-step so that each voxel's prior ``softmax(alpha +
        beta s_n)`` (``s_n`` its neighbours' summed responsibilities) averages to the mean
        responsibilities (``weights``). ``"fixed"`` (``True``): ``ln pi_k`` of the plain fit,
        held fixed (``history[0]["weights"]``). ``False``: none (``alpha = 0``, as in dipy);
        with ``covariance_type="full"`` CSF doubled on the 3-D template. See the module
        docstring.
    covariance_type : {None, "full", "tied"}, default None
        ``"tied"``: one variance for every class in the mean-field loop (soft EM with
        ``beta > 0`` only), the pooled within-class variance; ``"full"``: one per class.
        ``None``: ``"tied"`` for soft EM with ``beta > 0``, ``"full"`` otherwise (the plain
        fit and ICM have no choice: ICM always uses the pooled variance).
    partial_volume : bool, default False
        Soft EM only: each voxel's tissue fractions (``emlab.imaging.partial_volume``: pure
        voxels, two-tissue voxels of adjacent tissues and three-tissue voxels), fitted after
        the segmentation on the (corrected) intensities, in ``result.fractions``, and the
        tissue holding the largest fraction in ``result.fraction_labels``.
    three_tissue : float in [0, 1), optional
        With ``partial_volume``: the fixed prior weight of three-tissue voxels (default
        ``partial_volume.DEFAULT_THREE_TISSUE``, 0.08, an atlas-like prior for smooth
        fractions such as the MNI152 maps'; 0: adjacent tissues only; a single subject's
        sharper scan wants a smaller value; see ``emlab.imaging.partial_volume``).

    Returns
    -------
    label_image : ndarray of the image's shape, int64
        The class of each pixel (voxel), ``-1`` outside the mask; classes are numbered by
        increasing mean intensity (``0`` the darkest).
    result : EMResult
        The fit, components in the same order. ``resp`` and ``labels`` cover the masked pixels
        in row-major (C) order, that of ``image[mask]``. With ``beta > 0``, ``history`` and
        ``objective`` hold the coupled iterations' objective: the mean-field objective (soft,
        higher is better, up to the Potts normalising constant; it rises at every step except
        with estimated proportions, the default, see the module docstring) or the ICM energy
        (hard, lower is better, never rises), and ``init_means`` are the plain-EM means it
        started from.
        With ``bias_field`` or ``partial_volume``: a ``ScanResult`` (an ``EMResult`` with
        ``bias_field``, ``restored``, ``fractions`` and ``n_field_updates``); its fit is the last
        one on the corrected intensities.

    Raises
    ------
    ValueError
        If the image is not 2-D or 3-D, the mask's shape differs from the image's, the mask is
        empty, a pixel inside the mask is not finite, ``beta`` is negative or not finite,
        ``connectivity`` does not fit the image's dimension, ``spacing`` is not ``image.ndim``
        positive numbers, or any other argument is invalid.

    Warns
    -----
    EMConvergenceWarning
        If an EM loop stops at ``max_iter`` without converging.
    """
    if chunked.is_dask_array(image):  # larger than memory: fitted and labelled by chunks
        if check_beta(beta) > 0:
            raise ValueError("beta > 0 needs the image in memory (the Potts prior couples each "
                             "pixel with its neighbours); use beta=0 on a dask array")
        return dask_volumes.segment_dask_volume(image, mask, n_components, method, random_state,
                                                n_init=n_init, max_iter=max_iter,
                                                reg_covar=reg_covar)
    img, inside = check_image(image, mask, ndims=(2, 3))
    K = check_int(n_components, "n_components", minimum=1)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    beta = check_beta(beta)
    connectivity = check_connectivity(
        NEIGHBOURHOODS[img.ndim][0] if connectivity is None else connectivity, img.ndim)
    spacing = _check_spacing(spacing, img.ndim)
    n_init = check_int(n_init, "n_init", minimum=1)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    random_state = check_int(random_state, "random_state", minimum=0)
    tol = check_positive(tol, "tol")
    proportions = _check_proportions(proportions, method, beta)
    tied = _check_covariance_type(covariance_type, method, beta)
    degree = bias.check_degree(bias_field)
    if not isinstance(partial_volume, (bool, np.bool_)):
        raise ValueError(f"partial_volume must be True or False, got {partial_volume!r}")
    if three_tissue is not None:
        if not partial_volume:
            raise ValueError("three_tissue is the partial-volume model's prior: it needs "
                             "partial_volume=True")
        pve.check_three_tissue(three_tissue)
    if partial_volume and method != "soft":
        raise ValueError("partial_volume needs method='soft' (hard EM has no probabilities "
                         "to start the fractions from)")
    X = img[inside][:, None]
    if degree:
        bias.check_field_inputs(X[:, 0], inside, degree)
    if start is not None:
        _check_start(start, X, K, method, beta)
    if len(np.unique(X)) < K:
        raise ValueError(f"n_components={K} is more than the {len(np.unique(X))} distinct "
                         "intensities inside the mask")
    # N x 1 products are far too small to gain from BLAS threads, and on a busy machine the
    # threads' spinning made each EM iteration ~30 times slower: run single-threaded.
    with _blas_controller().limit(limits=1, user_api="blas"):
        result = start if start is not None else _plain_em(X, K, method, n_init, max_iter,
                                                             random_state, reg_covar, progress)
        if beta > 0 and not degree:
            result = _potts_em(X, inside, result, method, beta, connectivity, spacing,
                               max_iter, tol, reg_covar, progress, proportions, tied)
        if degree:  # the field (alternated with the mixel EM), then the mixture on x / b
            result, log_field, n_updates = _fit_with_field(X, inside, result, degree, method,
                                                           beta, connectivity, spacing, max_iter,
                                                           tol, reg_covar, proportions, tied)
        if beta > 0 and not result.converged:
            warnings.warn(f"{method} EM with the spatial prior did not converge within "
                          f"max_iter={max_iter} iterations", EMConvergenceWarning,
                          stacklevel=2)
    result = _order_by_intensity(result)
    if degree or partial_volume:
        result = _scan_result(result, img, inside, np.exp(log_field) if degree else None,
                              n_updates if degree else 0, partial_volume, three_tissue)
    label_image = np.full(img.shape, -1, dtype=np.int64)
    label_image[inside] = result.labels
    return label_image, result
