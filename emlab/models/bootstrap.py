"""Standard errors of the fitted parameters by a stratified bootstrap (notebooks 03-05).

``bootstrap_parameters`` resamples the points of each true class with replacement, refits EM from
the same start and aligns every refit to the true classes; ``BootstrapResult`` holds the
replicates and gives their standard deviations as a ``Parameters``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from em_helpers import EMConvergenceWarning, align_to_truth, run_em
from emlab.models.course_scans import Parameters, as_parameters
from emlab.engine.validation import check_int, check_means, check_points


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

    X = check_points(X)
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"y must hold {X.shape[0]} non-negative integer labels (one per row of "
                         f"X), got shape {y.shape} and dtype {y.dtype}")
    n_boot = check_int(n_boot, "n_boot", minimum=2)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    random_state = check_int(random_state, "random_state", minimum=0)
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
        params = as_parameters(init, "init")
        return {"means": params.means, "covariances": params.covariances,
                "weights": params.weights}
    if isinstance(init, dict):
        if "means" not in init:
            raise ValueError(f"an init dict needs 'means' and may have 'covariances' and "
                             f"'weights'; got keys {sorted(init)}")
        return dict(init)
    if isinstance(init, str):
        raise ValueError(f"init must be an EMResult, Parameters, an array of means (K, d) or a "
                         f"dict, got {init!r}")
    return {"means": check_means(init, X.shape[1], "init")}
