"""The one EM loop: convergence, history, progress, best of the starts and the warning.

In the spirit of scikit-learn's ``BaseMixture.fit``: the bookkeeping of an EM fit is written
here once, and what an iteration does on its data is a *pass* object's business. These
passes use it:

* ``em_helpers``: the course's reference steps (any X, missing cells included) and the
  blocked complete-data fast path (``emlab.engine.fastpath``), both in memory;
* ``emlab.engine.chunked``: one pass over the chunks of a dask array per iteration;
* ``emlab.imaging.segmentation``: the Potts-coupled sweeps (mean field or ICM) of a segmentation;
* ``emlab.imaging.partial_volume``: the mixel model's EM on a histogram, whose parameters are
  ``(pure means (K,), [variance], component weights)``;
* ``emlab.models.categorical``: the categorical mixture's EM, whose parameters are
  ``(category probabilities (K, C), an empty (K, 0, 0) placeholder, weights (K,))``.

A pass has ``n_points`` and three methods, each given the current parameters
``(means, covariances, weights)`` (for a Gaussian mixture; otherwise any three arrays the pass
understands, as above: the loop only copies them into ``history``):

* ``start_objective(...)``: the objective of the start, or NaN when the first iteration's
  E-step measures it (history entry 0 then gets it from ``step``);
* ``step(..., iteration)``: one E-step and one M-step, returned as a ``Step``;
* ``finish(...)``: the objective of the final parameters (a last E-step, which the pass may
  keep for its labels and responsibilities), or None when the last ``Step`` gave it.

Convergence (``converged``): a pass that measures its own change (the Potts sweeps; the
categorical mixture, by its new parameters' objective per point) stops at no change (hard) or
a change below ``tol`` (soft); otherwise hard EM stops when the E-step's assignment equals the
previous one, and soft EM when the mean objective per point gains less than ``tol``.

This module imports nothing of ours (tqdm only when a bar is asked for).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


class EMConvergenceWarning(UserWarning):
    """Raised as a warning when an EM fit stops at ``max_iter`` without converging."""


def history_entry(means, covs, weights, objective=np.nan):
    """One entry of a fit's ``history``: copies of the parameters and their objective."""
    return {"means": means.copy(), "covariances": covs.copy(), "weights": weights.copy(),
            "objective": objective}


def improves(new, old, method, margin=1e-12):
    """True if objective ``new`` beats ``old`` by more than rounding (``margin`` relative;
    0: by anything).

    Lower is better for hard EM (sum of squares), higher for soft EM (log-likelihood).
    """
    margin = margin * max(abs(old), 1.0)
    return new < old - margin if method == "hard" else new > old + margin


def progress_bar(desc, max_iter):
    """A tqdm bar (a widget in notebooks) for one EM run of at most ``max_iter`` iterations."""
    from tqdm.auto import tqdm

    return tqdm(total=max_iter, desc=desc, unit="it")


def start_label(method, start, n_starts):
    """The progress bar's name of start ``start`` (0-based) of ``n_starts``."""
    return f"{method} EM" + (f" (start {start + 1}/{n_starts})" if n_starts > 1 else "")


@dataclass
class Step:
    """What a pass's ``step`` returns: the new parameters and what the loop needs to know.

    Attributes
    ----------
    params : (means, covariances, weights)
        After the M-step (any 3-tuple, e.g. ``em_helpers.MStepResult``).
    objective : float or None
        Of the parameters the E-step used (None: the pass does not measure it there).
    assignment : object, optional
        Hard EM: the E-step's assignment, compared with the previous one for convergence
        (an array, or any value with ``==``, e.g. the chunks' hashes).
    change : float, optional
        Set by a pass that measures its own change (the Potts sweeps); used for convergence.
    new_objective : float, optional
        Of the new parameters, when the pass computes it after the M-step.
    reseeded : tuple of int
        Components that the M-step re-seeded.
    """

    params: tuple
    objective: float | None
    assignment: object = None
    change: float | None = None
    new_objective: float | None = None
    reseeded: tuple = ()


@dataclass
class Fit:
    """The outcome of ``iterate``: the final parameters and the bookkeeping of the run.

    ``history[t]`` holds the parameters after ``t`` M-steps (entry 0: the start) and their
    objective; ``objective`` is the final parameters'. ``reseeded`` lists
    ``(iteration, component)`` pairs.
    """

    method: str
    means: np.ndarray  # the final parameters
    covariances: np.ndarray
    weights: np.ndarray
    objective: float  # theirs
    history: list = field(repr=False)
    init_means: np.ndarray = field(repr=False)
    reseeded: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def _same(assignment, previous):
    if isinstance(assignment, np.ndarray):
        return np.array_equal(assignment, previous)
    return assignment == previous


def iterate(em_pass, means, covs, weights, method, max_iter, tol, bar=None, shown=None):
    """EM from a start, driving ``em_pass`` (see the module docstring); a ``Fit``.

    Parameters
    ----------
    em_pass : a pass object
    means, covs, weights : ndarrays (K, d), (K, d, d), (K,)
        The complete start (or any three arrays the pass understands: module docstring).
    method : {"hard", "soft"}
    max_iter : int
    tol : float
        Soft EM's threshold (on the mean objective per point, or on the pass's change).
    bar : tqdm-like, optional
        Advanced once per iteration with the objective (or the change) shown; closed at the end.
    shown : callable, optional
        Turns an objective into the one the bar shows (e.g. in the data's units).
    """
    shown = shown or (lambda objective: objective)
    init_means = means.copy()
    history = [history_entry(means, covs, weights,
                             em_pass.start_objective(means, covs, weights))]
    reseeded, converged, n_iter = [], False, 0
    previous, previous_mean = None, -np.inf
    for n_iter in range(1, max_iter + 1):
        step = em_pass.step(means, covs, weights, n_iter)
        if step.objective is not None:
            history[-1]["objective"] = step.objective
        means, covs, weights = step.params
        reseeded += [(n_iter, int(k)) for k in step.reseeded]
        history.append(history_entry(means, covs, weights, np.nan if step.new_objective is None
                                     else step.new_objective))
        if step.change is not None:  # the pass measures its own change
            converged = step.change == 0 if method == "hard" else step.change < tol
        elif method == "hard":
            converged = previous is not None and _same(step.assignment, previous)
            previous = step.assignment
        else:
            mean = step.objective / em_pass.n_points
            converged, previous_mean = mean - previous_mean < tol, mean
        if bar is not None:
            bar.set_postfix_str(f"change={step.change:.3g}" if step.change is not None else
                                f"objective={shown(step.objective):.6g}", refresh=False)
            bar.update()
        if converged:
            break
    objective = em_pass.finish(means, covs, weights)
    if objective is not None:
        history[-1]["objective"] = objective
    if bar is not None:
        if objective is not None:
            bar.set_postfix_str(f"objective={shown(objective):.6g}")
        bar.close()
    return Fit(method, means, covs, weights, history[-1]["objective"], history, init_means,
               reseeded, n_iter, bool(converged))


def best_of(fits, method, margin=1e-12):
    """The fit of best objective among ``fits`` (an iterable, run lazily, in order); a later
    fit must beat an earlier one by more than rounding (``improves`` with ``margin``)."""
    best = None
    for fit in fits:
        if best is None or improves(fit.objective, best.objective, method, margin):
            best = fit
    return best


def warn_unless_converged(converged, what, max_iter, stacklevel=1):
    """An ``EMConvergenceWarning`` when a fit (``what``, e.g. "hard EM") did not converge.

    ``stacklevel`` as in ``warnings.warn``, counted from the line that calls this function
    (1: that line; 2: the line that called its function, e.g. ``run_em``'s caller).
    """
    if not converged:
        warnings.warn(f"{what} did not converge within max_iter={max_iter} iterations; "
                      "raise max_iter or tol", EMConvergenceWarning, stacklevel=stacklevel + 1)
