"""EM past one machine: ``run_em`` on a dask array, one pass over its chunks per iteration.

EM's sufficient statistics are sums over points: ``stats[k] = sum_n R[k, n] t(x_n)`` with
t(x) = (1, x, x_i x_j for i <= j) (see ``emlab.engine.fastpath``). So one iteration is one pass over
the row chunks of a dask array ``X`` (N, d): every chunk runs the fast path's own E-step on its
rows (``hard_pass`` / ``soft_pass``, the very code of the in-memory path) and returns its
(K, m) sums and its share of the objective; the client adds them up (in chunk order, so the sum
does not depend on which worker finished first) and runs the M-step
(``gaussians_from_statistics``). Nothing of size N reaches the client: the data stay in the
chunks, and the final labels and responsibilities are lazy dask arrays computed chunk by chunk
from the final parameters.

The same call works with dask's default (threaded) scheduler and with a
``dask.distributed.Client`` (local or remote): dask picks the active client. A worker that dies
mid-pass changes nothing: the scheduler recomputes its chunks, and every chunk's sums are a
deterministic function of the chunk and the parameters.

Differences from the in-memory path, on purpose:

* the centring ``shift`` (``CompleteData``) comes from one first pass over the chunks (means
  and spreads combined by Chan's formula), which also refuses missing or infinite cells: the
  chunked path handles complete data only;
* the fit runs in the units of X (centred by that shift), not in the standardised units of
  ``emlab.engine.scaling``; the statistics do not depend on the units, so the iterates agree to
  rounding, and ``ChunkedData.check_scale`` makes the same refusals as ``DataUnits.of`` (a
  spread float64 cannot square, a ``reg_covar`` that swamps the variance);
* a component that becomes empty is an error (``EmptyComponentError``): the in-memory path
  re-seeds it with the point farthest from its mean, which needs every point's distance;
* hard EM stops when no assignment changes, tested without keeping the assignments: every
  chunk returns a hash of its one-hot assignment, and the loop compares the hashes.

Workers: distributed's nannies start each worker with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``). Setting any glibc malloc threshold turns off its
adaptive mmap threshold, so the fast path's per-block temporaries (above 128 KiB) are mapped
and page-faulted again at every block: a chunk's E-step ran about 3 times slower
(``benchmarks/bench_scale.py`` measures it). Setting that entry to ``null`` in the workers'
dask configuration removes it.

This module imports dask only inside functions, so that ``import em_helpers`` never imports it.
``em_helpers.run_em`` dispatches here when ``X`` is a dask array.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from emlab.engine.fastpath import (
    CompleteData,
    empty_threshold,
    gaussians_from_statistics,
    has_empty_component,
    hard_pass,
    round_centre,
    soft_pass,
)
from emlab.engine.loop import Step, iterate
from emlab.engine.scaling import (
    check_reg_covar,
    check_spread,
    pooled_spread,
    power_of_two_scale,
)

SAMPLE_ROWS = 100_000  # rows drawn (seeded) for the random starts of run_em on a dask array


class EmptyComponentError(ValueError):
    """A component of a chunked EM fit holds no point (it cannot be re-seeded, see above)."""


def is_dask_array(X):
    """True if ``X`` is a ``dask.array.Array`` (tested without importing dask)."""
    return type(X).__module__.startswith("dask.") and hasattr(X, "dask") \
        and hasattr(X, "chunks")


def check_dask_points(X, name="X"):
    """A float (N, d) dask array, one chunk across the columns; lazy (no pass over the data).

    Parameters
    ----------
    X : dask.array.Array of shape (N, d)
        Chunked by rows, with known chunk sizes.
    name : str
        The argument's name in error messages.

    Returns
    -------
    dask.array.Array of shape (N, d), float64
        ``X`` itself if it already fits, else a lazy conversion / rechunk (never a copy now).
    """
    if not is_dask_array(X):
        raise ValueError(f"{name} must be a dask array, got {type(X).__name__}")
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got shape {X.shape}")
    if any(np.isnan(size) for sizes in X.chunks for size in sizes):
        raise ValueError(f"{name} has unknown chunk sizes (shape {X.shape}); call "
                         f"{name}.compute_chunk_sizes() first")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    if len(X.chunks[1]) > 1:  # every chunk needs whole rows
        X = X.rechunk({1: -1})
    return X


# ------------------------------------------------------------------------------- per chunk

def block_moments(block):
    """One chunk's (count, non-finite cells, mean (d,), sum of squared deviations (d,))."""
    n_nan = int(np.isnan(block).sum())
    n_inf = int(np.isinf(block).sum())
    n, d = block.shape
    if n == 0 or n_nan or n_inf:  # no moments: the caller refuses non-finite cells anyway
        return n, n_nan, n_inf, np.zeros(d), np.zeros(d)
    with np.errstate(over="ignore"):  # an overflow gives inf: check_scale refuses it
        mean = block.mean(axis=0)
        return n, n_nan, n_inf, mean, ((block - mean) ** 2).sum(axis=0)


def combine_moments(parts):
    """Chan's pairwise update: the count, mean and squared deviations of the union of chunks."""
    n, mean, m2 = 0, None, None
    with np.errstate(over="ignore", invalid="ignore"):
        for n_b, mean_b, m2_b in parts:
            if n_b == 0:
                continue
            if n == 0:
                n, mean, m2 = n_b, mean_b, m2_b
                continue
            delta = mean_b - mean
            total = n + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + delta ** 2 * (n * n_b / total)
            n = total
    return n, mean, m2


def complete_block(block, shift):
    """The ``CompleteData`` of one chunk, centred by the global ``shift`` (d,)."""
    centred_t = np.empty(block.shape[::-1])
    np.subtract(block.T, shift[:, None], out=centred_t)
    return CompleteData(block, shift, centred_t)


def assignment_digest(member):
    """A 16-byte hash of a one-hot assignment (K, b): equal hashes mean equal assignments."""
    return hashlib.blake2b(np.packbits(member, axis=None).tobytes(), digest_size=16).digest()


def block_pass(block, shift, method, means, covs, weights):
    """One chunk's E-step: ``(stats (K, m), objective, digest)``.

    ``objective`` is the chunk's sum of squared distances (hard) or log-likelihood (soft);
    ``digest`` the hash of its hard assignment (None for soft EM).
    """
    data = complete_block(block, shift)
    if method == "hard":
        member, objective, stats = hard_pass(data, means)
        return stats, objective, assignment_digest(member)
    log_lik, stats = soft_pass(data, means, covs, weights)
    return stats, log_lik, None


def block_resp(block, shift, method, means, covs, weights):
    """One chunk's final assignment (b, K): int one-hot (hard) or responsibilities (soft)."""
    data = complete_block(block, shift)
    if method == "hard":
        member, _, _ = hard_pass(data, means)
        return member.T.astype(np.int64)
    resp = np.empty((means.shape[0], block.shape[0]))
    soft_pass(data, means, covs, weights, resp)
    return resp.T


def block_labels(block, shift, method, means, covs, weights):
    """One chunk's labels (b,): the component of largest assignment, ties to the lowest."""
    return np.argmax(block_resp(block, shift, method, means, covs, weights), axis=1)


# ------------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class ChunkedData:
    """A complete dask array prepared for chunked EM (``ChunkedData.of(X)``).

    Attributes
    ----------
    X : dask.array.Array of shape (N, d)
        Float, chunked by rows only.
    shift : ndarray of shape (d,)
        The centring of every chunk (see ``CompleteData``), from the whole array.
    n_points : int
    variances : ndarray of shape (d,)
        The column variances.
    spread : float
        The standard deviation of all the cells together (as ``emlab.engine.scaling`` measures it).
    """

    X: object
    shift: np.ndarray
    n_points: int
    variances: np.ndarray
    spread: float

    @classmethod
    def of(cls, X, name="X"):
        """Check ``X`` (``check_dask_points``) and make one pass: refuse missing or infinite
        cells (ValueError) and compute the shift."""
        import dask

        X = check_dask_points(X, name)
        parts = dask.compute(*[dask.delayed(block_moments)(b) for b in X.to_delayed().ravel()])
        n_nan = sum(p[1] for p in parts)
        n_inf = sum(p[2] for p in parts)
        if n_nan:
            raise ValueError(
                f"{name} has {n_nan} missing (NaN) cells: EM on a dask array needs complete "
                "data; drop or impute those rows first, or load the data into memory (run_em on "
                "a NumPy array handles missing cells)")
        if n_inf:
            raise ValueError(f"{name} contains {n_inf} infinite values")
        n, mean, m2 = combine_moments([(p[0], p[3], p[4]) for p in parts])
        with np.errstate(over="ignore", invalid="ignore"):
            shift = round_centre(mean, np.sqrt(m2 / n))
        return cls(X, shift, int(n), m2 / n, pooled_spread(n, mean, m2))

    def check_scale(self, reg_covar):
        """The refusals of the in-memory path (``emlab.engine.scaling``): a spread whose squares
        float64 cannot hold, and a ``reg_covar`` not small against the data's variance."""
        scale = power_of_two_scale(self.spread) if self.spread > 0 else 1.0
        check_spread(self.spread, scale)
        check_reg_covar(reg_covar, float(self.variances.max()))

    def one_pass(self, method, means, covs=None, weights=None):
        """One E-step over every chunk: summed stats (K, m), objective, chunk digests."""
        import dask

        blocks = self.X.to_delayed().ravel()
        task = dask.delayed(block_pass, pure=True)
        parts = dask.compute(*[task(b, self.shift, method, means, covs, weights)
                               for b in blocks])
        stats = np.zeros_like(parts[0][0])
        objective = 0.0
        for block_stats, block_objective, _ in parts:  # in chunk order: reproducible sums
            stats += block_stats
            objective += block_objective
        if method == "hard":
            objective = max(objective, 0.0)
        return stats, objective, tuple(p[2] for p in parts)

    def sample_rows(self, size, rng):
        """``min(size, N)`` rows (n, d) in memory: all of them in order if N <= size, else a
        seeded sample without replacement (in row order)."""
        if self.n_points <= size:
            return np.asarray(self.X.compute())
        rows = np.sort(rng.choice(self.n_points, size=size, replace=False))
        return np.asarray(self.X[rows].compute())

    def assignments(self, method, means, covs, weights):
        """Lazy final resp (K, N) and labels (N,) of the parameters, computed per chunk."""
        K = means.shape[0]
        params = (self.shift, method, means, covs, weights)
        dtype = np.int64 if method == "hard" else np.float64
        resp = self.X.map_blocks(block_resp, *params, chunks=(self.X.chunks[0], (K,)),
                                 dtype=dtype, meta=np.empty((0, 0), dtype)).T
        labels = self.X.map_blocks(block_labels, *params, drop_axis=1, dtype=np.int64,
                                   meta=np.empty((0,), np.int64))
        return resp, labels


# ------------------------------------------------------------------------------- the EM loop

def m_step(data, stats, reg_covar, iteration, covariance_type="full"):
    """Means, covariances (of ``covariance_type``, see ``emlab.engine.covariance``) and weights from
    the summed stats (K, m); refuse an empty component.

    Raises
    ------
    EmptyComponentError
        If a component's total responsibility is (numerically) zero.
    """
    if has_empty_component(stats[:, 0], data.n_points):
        empty = np.flatnonzero(stats[:, 0] <= empty_threshold(data.n_points))
        raise EmptyComponentError(
            f"component(s) {empty.tolist()} hold no point at iteration {iteration}: EM on a "
            "dask array cannot re-seed an empty component (that needs every point's distance); "
            "start from other means (init), another random_state or fewer n_components")
    means, covs = gaussians_from_statistics(stats, data.shift, reg_covar, covariance_type)
    return means, covs, stats[:, 0] / data.n_points


class ChunkPass:
    """One EM iteration as one pass over the chunks: the pass that ``emlab.engine.loop.iterate``
    drives for a dask array (see that module for the protocol). A hard pass depends on the
    means alone, so the last one is kept and reused for the same means (the start's pass is
    the first iteration's, and after convergence the last pass is the final one)."""

    def __init__(self, data, method, reg_covar, covariance_type="full"):
        self.data, self.method = data, method
        self.reg_covar, self.covariance_type = reg_covar, covariance_type
        self.n_points = data.n_points
        self._last_hard = None

    def one_pass(self, method, means, covs=None, weights=None):
        """``ChunkedData.one_pass``, the last hard one reused for the same means."""
        if method != "hard":
            return self.data.one_pass(method, means, covs, weights)
        if self._last_hard is None or not np.array_equal(self._last_hard[0], means):
            self._last_hard = (means.copy(), self.data.one_pass("hard", means))
        return self._last_hard[1]

    def complete_start(self, means, covs, weights):
        """Missing covariances and weights: those of the partition the means induce."""
        if covs is None or weights is None:
            stats, _, _ = self.one_pass("hard", means)
            _, start_covs, start_weights = m_step(self.data, stats, self.reg_covar, 0,
                                                  self.covariance_type)
            covs = start_covs if covs is None else covs
            weights = start_weights if weights is None else weights
        return means, covs, weights

    def start_objective(self, means, covs, weights):
        return np.nan  # measured by the first pass

    def step(self, means, covs, weights, iteration):
        stats, objective, digests = self.one_pass(self.method, means, covs, weights)
        params = m_step(self.data, stats, self.reg_covar, iteration, self.covariance_type)
        return Step(params, objective, assignment=digests)

    def finish(self, means, covs, weights):
        return self.one_pass(self.method, means, covs, weights)[1]  # the final objective


def fit(data, means, covs, weights, method, max_iter, tol, reg_covar, bar=None,
        covariance_type="full"):
    """EM from a start, one pass over the chunks per iteration; an ``emlab.engine.loop.Fit``.

    The loop of ``em_helpers``'s in-memory path (``emlab.engine.loop``: ``history``,
    objective, convergence rules and the final E-step), so the same start gives the same
    iterates to rounding.

    Parameters
    ----------
    data : ChunkedData
    means : ndarray (K, d)
    covs, weights : ndarrays (K, d, d) and (K,), or None
        Missing ones are those of the partition that ``means`` induce (one hard pass).
    method : {"hard", "soft"}
    max_iter : int
    tol : float
        Soft EM: stop when the mean log-likelihood per point gains less than ``tol``.
    reg_covar : float
    bar : tqdm-like, optional
        Advanced once per iteration, closed at the end.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    """
    chunk_pass = ChunkPass(data, method, reg_covar, covariance_type)
    start = chunk_pass.complete_start(means, covs, weights)
    return iterate(chunk_pass, *start, method, max_iter, tol, bar)
