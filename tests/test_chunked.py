"""``run_em`` on a dask array (``emlab.engine.chunked``): the same iterates as the in-memory path
from the same start, under dask's default scheduler and a ``dask.distributed`` cluster of two
worker processes (started here, closed at the end, no process left behind), lazy labels, clear
errors, and a worker killed mid-fit that changes nothing."""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import pytest

import em_helpers as em
from emlab.engine import chunked
from emlab.engine.fastpath import CompleteData

ROOT = Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-10, "atol": 1e-10}


CENTRES = np.array([[0.0, 0.0], [6.0, 1.0], [12.0, 6.0]])
OFFSET = 100.0


def mixture(d, n_per=700, seed=0, offset=OFFSET):
    """Three Gaussians in d dimensions (n_per points each, shuffled), far from the origin."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, [1.5, 1.0][:d], (n_per, d)) for c in CENTRES[:, :d]])
    return X[rng.permutation(len(X))] + offset


def start_of(X):
    """A fixed start, off the centres, so that EM takes several iterations."""
    return CENTRES[:, : X.shape[1]] + OFFSET + np.array([2.0, -1.5])[: X.shape[1]]


def run(X, method="hard", **kwargs):
    """run_em with three components and tol=1e-4 (fewer soft iterations to compare)."""
    return em.run_em(X, 3, method=method, tol=1e-4, **kwargs)


def assert_same_fit(ours, reference):
    """Same iterates to 1e-10: every history entry, the final fit and its labels/resp."""
    assert ours.n_iter == reference.n_iter and ours.converged == reference.converged
    assert len(ours.history) == len(reference.history)
    for mine, theirs in zip(ours.history, reference.history):
        for key in ("means", "covariances", "weights"):
            np.testing.assert_allclose(mine[key], theirs[key], **TOL)
        np.testing.assert_allclose(mine["objective"], theirs["objective"], rtol=1e-10)
    for key in ("means", "covariances", "weights"):
        np.testing.assert_allclose(getattr(ours, key), getattr(reference, key), **TOL)
    np.testing.assert_allclose(ours.objective, reference.objective, rtol=1e-10)
    np.testing.assert_array_equal(ours.labels.compute(), reference.labels)
    np.testing.assert_allclose(ours.resp.compute(), reference.resp, **TOL)


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())}


# ------------------------------------------------------------------------------- the same EM

@pytest.mark.parametrize("method", ["hard", "soft"])
@pytest.mark.parametrize("d", [1, 2])
def test_same_start_same_iterates_default_scheduler(method, d):
    X = mixture(d)
    reference = run(X, method, init=start_of(X))
    with dask.config.set(scheduler="threads"):
        ours = run(da.from_array(X, chunks=500), method, init=start_of(X))
    assert ours.n_iter > 2  # the start is poor: several iterations are compared
    assert_same_fit(ours, reference)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_every_covariance_model_gives_the_in_memory_iterates(covariance_type):
    X = mixture(2, seed=16)
    with dask.config.set(scheduler="threads"):
        ours = run(da.from_array(X, chunks=500), "soft", init=start_of(X),
                   covariance_type=covariance_type)
    assert ours.covariance_type == covariance_type
    assert_same_fit(ours, run(X, "soft", init=start_of(X), covariance_type=covariance_type))
    full = {"means": start_of(X), "covariances": np.array([[[1.0, 0.5], [0.5, 1.0]]] * 2
                                                           + [[[2.0, 0.0], [0.0, 1.0]]]),
            "weights": np.full(3, 1 / 3)}
    with pytest.raises(ValueError, match="do not follow covariance_type"):
        run(da.from_array(X, chunks=500), "soft", init=full, covariance_type=covariance_type)


def test_a_full_start_and_several_random_starts_match_the_in_memory_path():
    X = mixture(2, seed=2)
    start = {"means": start_of(X), "covariances": np.stack([np.eye(2)] * 3),
             "weights": np.full(3, 1 / 3)}
    assert_same_fit(run(da.from_array(X, chunks=400), "soft", init=start),
                    run(X, "soft", init=start))
    # N <= SAMPLE_ROWS: the "sample" is every row in order, so the seeded starts coincide
    for init in ("kmeans++", "random"):
        assert_same_fit(run(da.from_array(X, chunks=400), init=init, n_init=2, random_state=5),
                        run(X, init=init, n_init=2, random_state=5))


def test_random_starts_come_from_a_seeded_sample_of_rows(monkeypatch):
    X = mixture(2, seed=3)
    monkeypatch.setattr(chunked, "SAMPLE_ROWS", 50)
    dX = da.from_array(X, chunks=400)
    first = run(dX, "soft", init="kmeans++", random_state=7)
    again = run(dX, "soft", init="kmeans++", random_state=7)
    np.testing.assert_array_equal(first.means, again.means)
    rows = [np.flatnonzero((X == m).all(axis=1)) for m in first.init_means]
    assert all(r.size == 1 for r in rows)  # every start is a row of X
    assert_same_fit(first, run(X, "soft", init=first.init_means))


def test_the_shift_is_the_in_memory_one():
    rng = np.random.default_rng(4)
    for X in (mixture(1), mixture(2, offset=-3e4), rng.integers(0, 255, (999, 2)).astype(float),
              rng.normal(0, 1e-6, (1001, 3)) + 0.25):
        data = chunked.ChunkedData.of(da.from_array(X, chunks=173))
        np.testing.assert_array_equal(data.shift, CompleteData.of(X).shift)
        assert data.n_points == len(X)


def test_moments_combine_like_numpy():
    X = mixture(2, seed=5)
    parts = [chunked.block_moments(X[i: i + 97]) for i in range(0, len(X), 97)]
    n, mean, m2 = chunked.combine_moments([(p[0], p[3], p[4]) for p in parts])
    assert n == len(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m2 / n, X.var(axis=0), rtol=1e-12)


# ------------------------------------------------------------------------------- the result

def test_labels_and_resp_are_lazy_dask_arrays():
    X = mixture(2, seed=6)
    for method, dtype in (("hard", np.int64), ("soft", np.float64)):
        result = run(da.from_array(X, chunks=300), method, init=start_of(X))
        assert isinstance(result.labels, da.Array) and isinstance(result.resp, da.Array)
        assert result.labels.shape == (len(X),) and result.resp.shape == (3, len(X))
        assert result.resp.dtype == dtype
        np.testing.assert_array_equal(result.labels.compute(),
                                      np.argmax(result.resp.compute(), axis=0))
        assert isinstance(result.means, np.ndarray)


def test_import_em_helpers_does_not_import_dask():
    code = "import sys, em_helpers; sys.exit('dask' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


# ------------------------------------------------------------------------------- bad input

def test_missing_or_infinite_cells_are_refused_clearly():
    X = mixture(2, seed=7)
    X[123, 1] = np.nan
    with pytest.raises(ValueError, match=r"X has 1 missing \(NaN\) cells.*complete data"):
        em.run_em(da.from_array(X, chunks=500), 3)
    X[123, 1] = np.inf
    with pytest.raises(ValueError, match="X contains 1 infinite values"):
        em.run_em(da.from_array(X, chunks=500), 3)


def test_bad_dask_arrays_and_arguments_are_refused():
    X = mixture(2, seed=8)
    dX = da.from_array(X, chunks=500)
    with pytest.raises(ValueError, match=r"X must have shape \(N, d\)"):
        em.run_em(dX[:, 0], 3)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        em.run_em(dX[dX[:, 0] > 100], 3)
    with pytest.raises(ValueError, match="real numbers"):
        em.run_em(dX.astype(complex), 3)
    with pytest.raises(ValueError, match="n_components=5 is more than the 4 rows"):
        em.run_em(dX[:4], 5)
    with pytest.raises(ValueError, match="method must be"):
        em.run_em(dX, 3, method="fuzzy")
    with pytest.raises(ValueError, match="init has 2 means"):
        em.run_em(dX, 3, init=X[:2])
    with pytest.raises(ValueError, match="n_init > 1 needs a random init"):
        em.run_em(dX, 3, init=X[:3], n_init=2)


@pytest.mark.parametrize(("factor", "reg", "match"), [
    (1e-5, 1e-6, "reg_covar=1e-06 is not small against the variance of X"),
    (1e160, 1e-6, "its variances would overflow float64"),
    (1e-160, 0.0, "its variances would underflow float64")])
def test_the_in_memory_refusals_of_scale_apply(factor, reg, match):
    X = factor * (mixture(2, seed=14) - OFFSET)
    for points in (X, da.from_array(X, chunks=500)):
        with pytest.raises(ValueError, match=match):
            em.run_em(points, 3, reg_covar=reg)


def test_large_and_small_units_give_the_in_memory_iterates():
    for factor in (1e-40, 1e40):
        X = factor * mixture(2, seed=15)
        reg = 1e-6 * factor ** 2
        ours = run(da.from_array(X, chunks=500), "soft", init=start_of(X) * factor,
                   reg_covar=reg)
        reference = run(X, "soft", init=start_of(X) * factor, reg_covar=reg)
        assert ours.n_iter == reference.n_iter > 2
        for mine, theirs in zip(ours.history, reference.history):  # in units of the data
            np.testing.assert_allclose(mine["means"] / factor, theirs["means"] / factor, **TOL)
            np.testing.assert_allclose(mine["covariances"] / factor ** 2,
                                       theirs["covariances"] / factor ** 2, **TOL)
            np.testing.assert_allclose(mine["weights"], theirs["weights"], **TOL)
        np.testing.assert_array_equal(ours.labels.compute(), reference.labels)


def test_an_empty_component_is_an_error_not_a_silent_reseed():
    X = mixture(2, seed=9)
    far = np.vstack([X[:2], [[1e4, 1e4]]])  # the third mean owns no point
    with pytest.raises(chunked.EmptyComponentError, match=r"component\(s\) \[2\] hold no "
                                                              r"point at iteration 0"):
        em.run_em(da.from_array(X, chunks=500), 3, init=far)
    assert issubclass(chunked.EmptyComponentError, ValueError)
    assert em.run_em(X, 3, init=far).n_iter >= 1  # in memory it is re-seeded


def test_non_integer_dtypes_and_column_chunks_are_accepted():
    X = np.round(mixture(2, seed=10)).astype(np.int32)
    dX = da.from_array(X, chunks=(500, 1))  # split columns: rechunked to whole rows
    assert_same_fit(run(dX, init=start_of(X)), run(X, init=start_of(X)))


def test_not_converging_warns_as_in_memory():
    X = mixture(2, seed=11)
    with pytest.warns(em.EMConvergenceWarning, match="did not converge within max_iter=1"):
        result = em.run_em(da.from_array(X, chunks=500), 3, "soft", init=start_of(X),
                           max_iter=1)
    assert not result.converged


# ------------------------------------------------------------------------------- on a cluster
# (last in the file: once the fixture has started, its Client is dask's default scheduler)

@contextlib.contextmanager
def local_cluster(n_workers):
    """A LocalCluster of single-threaded worker processes and its Client, closed on exit.

    distributed writes its workers' pre-spawn environment (``MALLOC_TRIM_THRESHOLD_=65536``,
    ...) into this process's ``os.environ`` and leaves it there: every process started later
    (the notebooks' kernels under nbval) would inherit it, and that malloc setting makes numpy's
    temporaries about 3 times slower. The environment is restored on exit.
    """
    from dask.distributed import Client, LocalCluster

    environment = dict(os.environ)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.CRITICAL)
    client = Client(cluster)
    try:
        client.wait_for_workers(n_workers, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()
        os.environ.clear()
        os.environ.update(environment)


def test_a_cluster_leaves_the_environment_as_it_found_it():
    environment = dict(os.environ)
    with local_cluster(1):
        pass
    assert dict(os.environ) == environment


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes and its Client, closed after the
    module's tests; the teardown fails if a process started for it is still alive."""
    before = _children()
    with local_cluster(2) as client:
        yield client
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _children() - before, f"processes left behind: {_children() - before}"


@pytest.mark.parametrize(("method", "d"), [("hard", 1), ("soft", 2)])
def test_same_start_same_iterates_on_a_cluster(client, method, d):
    from dask.distributed import get_task_stream

    X = mixture(d, seed=1)
    reference = run(X, method, init=start_of(X))
    with get_task_stream(client) as stream:
        ours = run(da.from_array(X, chunks=700), method, init=start_of(X))
    assert any(str(task["key"]).startswith("('block_pass") or "block_pass" in str(task["key"])
               for task in stream.data)  # the passes ran on the cluster's workers
    assert_same_fit(ours, reference)


# ------------------------------------------------------------------------------- faults

def kill_once(block, marker_dir, after):
    """Pass the block through; on call number ``after + 1`` (counted across processes in
    ``marker_dir``), SIGKILL the calling worker process, once."""
    marker_dir = Path(marker_dir)
    with open(marker_dir / "calls", "a") as calls:
        calls.write(".")
    if (marker_dir / "calls").stat().st_size > after:
        try:
            fd = os.open(marker_dir / "killed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return block
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return block


def test_a_worker_killed_mid_fit_changes_nothing(client, tmp_path):
    X = mixture(2, seed=12)
    reference = run(X, "soft", init=start_of(X))
    n_chunks = 6
    dX = da.from_array(X, chunks=len(X) // n_chunks)
    workers_before = set(client.run(os.getpid).values())
    # passes: moments, start, then one per iteration: the kill falls in the third iteration
    faulty = dX.map_blocks(kill_once, str(tmp_path), 4 * n_chunks + 2, dtype=float)
    ours = run(faulty, "soft", init=start_of(X))
    killed = int((tmp_path / "killed").read_text())
    assert killed in workers_before and not psutil.pid_exists(killed)
    assert ours.n_iter > 3
    assert_same_fit(ours, reference)
    client.wait_for_workers(2, timeout=60)  # the nanny has started a new worker

