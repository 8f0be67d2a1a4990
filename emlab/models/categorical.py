"""The categorical mixture model of theory question 5, fitted by EM.

Representation. ``Y`` has shape (N, C): one row per observation, one column per category.
A row holds one-hot indicators (one draw) or counts (several draws) of the categories. Several
categorical features are stacked side by side and described by ``feature_sizes = (C_1, ...,
C_F)`` with ``sum(feature_sizes) == C``: columns ``[0, C_1)`` belong to feature 1, the next
``C_2`` columns to feature 2, and so on. ``encode_categorical`` builds ``Y`` from integer codes.
Component k holds one probability vector per feature, stored side by side in row k of ``probs``
(K, C); each block of a row sums to 1. An all-zero block (a missing feature of that observation)
contributes ln 1 = 0: the feature is marginalised out. The log-likelihood of a row is
``ln sum_k pi_k prod_c theta_kc ** y_nc``: the probability of the observed draws in order, i.e.
without the multinomial coefficient of count data, which does not depend on the parameters.

- ``encode_categorical``: integer codes to the stacked one-hot ``Y``;
- ``cmm_e_step``, ``cmm_m_step`` (with optional Dirichlet smoothing ``alpha``),
  ``cmm_log_likelihood``;
- ``run_cmm_em`` returning a ``CMMResult``: its iterations, best start and stopping are
  those of the one EM loop (``emlab.engine.loop``), driving ``_CMMPass``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from emlab.engine.loop import Step, best_of, iterate, warn_unless_converged
from emlab.engine.validation import check_int, check_resp, check_weights


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
        given = [n_categories] * n_features if np.ndim(n_categories) == 0 else list(n_categories)
        if len(given) != n_features:
            raise ValueError(f"n_categories must be one integer or {n_features} (one per "
                             f"feature), got {len(given)}")
        sizes = tuple(check_int(c, f"n_categories[{j}]", minimum=1) for j, c in enumerate(given))
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
        Whether the per-observation change of ``objective`` was at most ``tol`` within
        ``max_iter`` iterations.
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
    return check_weights(weights, probs.shape[0], name=weights_name), probs


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
    with np.errstate(invalid="ignore"):  # 0 / 0 for an empty component: uniform below
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
    resp = check_resp(resp, Y_arr.shape[0], name="resp")
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


class _CMMPass:
    """One EM iteration of the categorical mixture: the pass that ``emlab.engine.loop.iterate``
    drives for ``run_cmm_em`` (see that module for the protocol).

    The loop's parameters ``(means, covariances, weights)`` carry ``(probs (K, C), an empty
    (K, 0, 0) placeholder, weights (K,))``; the objective is the MAP objective
    ``log_likelihood + alpha * sum(ln probs)``. Each E-step's responsibilities are kept for the
    next M-step (the loop hands back the parameters they were computed at), so an iteration is
    one M-step then the E-step of its parameters, whose objective is the new parameters' and
    whose change per observation is the pass's own measure of convergence (``Step.change``).
    ``log_likelihoods[t]`` and ``resp`` (the final one) are kept for ``CMMResult``.
    """

    def __init__(self, Y, feature_sizes, alpha):
        self.Y, self.feature_sizes, self.alpha = Y, feature_sizes, alpha
        self.n_points = Y.shape[0]
        self.resp, self.log_likelihoods, self._objective = None, [], None

    def _e_step(self, probs, weights):
        """E-step at ``(weights, probs)``: keeps resp and the log-likelihood; the objective."""
        self.resp, log_lik = _cmm_e_step(self.Y, weights, probs)
        self.log_likelihoods.append(log_lik)
        self._objective = log_lik + _cmm_log_prior(probs, self.alpha)
        return self._objective

    def start_objective(self, probs, placeholder, weights):
        return self._e_step(probs, weights)

    def step(self, probs, placeholder, weights, iteration):
        previous = self._objective
        weights, probs = _cmm_m_step(self.Y, self.resp, self.feature_sizes, self.alpha)
        objective = self._e_step(probs, weights)
        # the change of the new parameters' objective per observation, in absolute value: EM
        # never decreases the MAP objective, so it is the gain up to rounding
        change = abs(objective - previous) / self.n_points
        return Step((probs, placeholder, weights), objective=None, change=change,
                    new_objective=objective)

    def finish(self, probs, placeholder, weights):
        return None  # the last step's E-step measured the final parameters


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
    n_components = check_int(n_components, "n_components", 1)
    if n_components > Y_arr.shape[0]:
        raise ValueError(f"n_components ({n_components}) must not exceed the number of rows "
                         f"of Y ({Y_arr.shape[0]})")
    n_init = check_int(n_init, "n_init", 1)
    max_iter = check_int(max_iter, "max_iter", 1)
    alpha = _check_alpha(alpha, allow_zero=False)
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if not isinstance(init, str) and n_init != 1:
        raise ValueError("n_init must be 1 when init is an array (every run would be identical)")
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)) \
            or random_state < 0:
        raise ValueError(f"random_state must be an integer seed >= 0, got {random_state!r}")
    rng = np.random.default_rng(random_state)

    def run_from(weights0, probs0):
        em_pass = _CMMPass(Y_arr, sizes, alpha)
        # the loop's soft rule stops at change < its tol; run_cmm_em's rule is change <= tol
        # (tol=0 stops at an exact fixed point, e.g. the uniform start): for floats,
        # x < nextafter(tol, inf) exactly when x <= tol
        fit = iterate(em_pass, probs0, np.empty((n_components, 0, 0)), weights0, "soft",
                      max_iter, np.nextafter(tol, np.inf))
        history = [{"iteration": t, "weights": entry["weights"], "probs": entry["means"],
                    "log_likelihood": log_lik, "objective": entry["objective"]}
                   for t, (entry, log_lik) in enumerate(zip(fit.history,
                                                            em_pass.log_likelihoods))]
        return CMMResult(weights=fit.weights, probs=fit.means, feature_sizes=sizes,
                         resp=em_pass.resp, labels=em_pass.resp.argmax(axis=0),
                         log_likelihood=history[-1]["log_likelihood"],
                         objective=fit.objective, n_iter=fit.n_iter, converged=fit.converged,
                         history=history, init_weights=weights0, init_probs=probs0)

    # the starts are drawn one by one, each just before its run (EM draws nothing); a later
    # run is kept if its objective is higher by anything (margin 0): two starts that reach the
    # same optimum differ by rounding, and run_cmm_em has always kept the higher
    best = best_of((run_from(*_cmm_init(Y_arr, n_components, sizes, init, init_weights, rng))
                    for _ in range(n_init)), "soft", margin=0.0)
    warn_unless_converged(best.converged, "run_cmm_em", max_iter, stacklevel=2)
    return best
