"""The EM loop's fast path for complete data (blocked sufficient statistics) against the
reference formulas of the public steps (e_step, e_step_soft, m_step), and run_em(progress=True).

The loop below is the brute-force reference: it chains the public steps, which compute
distances and densities per component and the M-step from R directly."""

import warnings

import numpy as np
import pytest

import em_helpers as em


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 64 points, so that every test runs several blocks and a partial last one."""
    monkeypatch.setattr(em, "_BLOCK_ROWS", 64)


def mixture(seed, n=250, d=2, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, d))
    z = rng.integers(0, 3, n)
    return offset + scale * (centres[z] + rng.normal(size=(n, d)))


def reference_history(X, method, means, covs, weights, n_iter, reg_covar=1e-6):
    """Parameters after each of ``n_iter`` EM iterations built from the public steps."""
    history = []
    for _ in range(n_iter):
        if method == "hard":
            R = em.e_step(X, means)
        else:
            R, _ = em.e_step_soft(X, means, covs, weights)
        means, covs, weights = em.m_step(X, R, reg_covar=reg_covar)
        history.append((means, covs, weights))
    return history


def assert_same_iterates(result, expected, scale=1.0):
    assert result.n_iter == len(expected)
    for entry, (means, covs, weights) in zip(result.history[1:], expected):
        np.testing.assert_allclose(entry["means"], means, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(entry["covariances"], covs, rtol=1e-10,
                                   atol=1e-12 * scale ** 2)
        np.testing.assert_allclose(entry["weights"], weights, rtol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e4, 1.0), (0.5, 1e-3)])
def test_hard_loop_equals_the_public_steps_chained(d, offset, scale):
    X = mixture(d, d=d, offset=offset, scale=scale)
    start = X[:3].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method="hard", init=start, max_iter=4)
    first = em.m_step(X, em.e_step(X, start))  # the start's covariances and weights
    expected = reference_history(X, "hard", start, first.covariances, first.weights,
                                 result.n_iter)
    assert_same_iterates(result, expected, scale)
    np.testing.assert_array_equal(result.resp, em.e_step(X, result.means))
    distances = ((X[:, None, :] - result.means[None]) ** 2).sum(axis=2)  # brute force
    np.testing.assert_allclose(result.objective, distances.min(axis=1).sum(), rtol=1e-9)


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e4, 1.0), (0.5, 1e-3)])
def test_soft_loop_equals_the_public_steps_chained(d, offset, scale):
    X = mixture(10 + d, d=d, offset=offset, scale=scale)
    rng = np.random.default_rng(d)
    A = rng.normal(size=(3, d, d)) * scale
    covariances = A @ A.transpose(0, 2, 1) + scale ** 2 * np.eye(d)
    start = {"means": X[:3].copy(), "covariances": covariances,
             "weights": np.array([0.5, 0.3, 0.2])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method="soft", init=start, max_iter=5, tol=0, reg_covar=1e-9)
    expected = reference_history(X, "soft", start["means"], start["covariances"],
                                 start["weights"], result.n_iter, reg_covar=1e-9)
    assert_same_iterates(result, expected, scale)
    resp, log_lik = em.e_step_soft(X, result.means, result.covariances, result.weights)
    np.testing.assert_allclose(result.resp, resp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.objective, log_lik, rtol=1e-10)


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_an_empty_component_is_reseeded_as_by_m_step(method):
    # hard: the third mean is far from every point; soft: its weight is 0, so its
    # responsibilities are exactly 0. The fast path must hand over to m_step, which re-seeds.
    X = mixture(4)
    means = np.vstack([X[:2], [[100.0, 100.0]]])
    weights = np.array([0.6, 0.4, 0.0])
    covs = np.stack([np.eye(2)] * 3)
    init = means if method == "hard" else {"means": means, "covariances": covs,
                                           "weights": weights}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method=method, init=init, max_iter=2, tol=0)
    assert result.reseeded[0] == (1, 2)
    if method == "hard":
        first = em.m_step(X, em.e_step(X, means))
        covs, weights = first.covariances, first.weights
    assert_same_iterates(result, reference_history(X, method, means, covs, weights, 2))


def test_exact_ties_go_to_the_lowest_component_as_in_e_step():
    # integer points halfway between two means: the fast path must not split or double count
    X = np.array([[x, y] for x in range(5) for y in range(3)], dtype=float)
    start = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # x = 1 and x = 3 are ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method="hard", init=start, max_iter=1)
    R = em.e_step(X, start)
    np.testing.assert_array_equal(R.sum(axis=0), 1)
    np.testing.assert_allclose(result.history[1]["means"], em.m_step(X, R).means, rtol=1e-12)
    np.testing.assert_allclose(result.history[0]["objective"],
                               ((X - start[R.argmax(axis=0)]) ** 2).sum(), rtol=1e-12)


def test_a_later_start_must_beat_the_kept_one_by_more_than_rounding():
    # the same optimum reached from two starts differs in the last bits (component order
    # changes the order of the sums): the first start is kept, whatever the rounding
    kept = 1234.5
    for method, better in (("hard", -1.0), ("soft", 1.0)):  # lower / higher is better
        assert not em._improves(kept + better * 1e-10, kept, method)  # 8e-14 relative
        assert not em._improves(kept - better * 1e-6, kept, method)
        assert em._improves(kept + better * 1e-6, kept, method)
    X = mixture(3, n=300) * 3.0  # well separated: every start finds the same partition
    single = em.run_em(X, method="hard", init="kmeans++", random_state=5)
    multi = em.run_em(X, method="hard", init="kmeans++", n_init=4, random_state=5)
    np.testing.assert_array_equal(multi.init_means, single.init_means)


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_progress_bar_shows_iterations_and_objective_and_changes_nothing(method, capsys):
    X = mixture(7)
    quiet = em.run_em(X, method=method, init="kmeans++", n_init=2, random_state=1)
    capsys.readouterr()
    shown = em.run_em(X, method=method, init="kmeans++", n_init=2, random_state=1,
                      progress=True)
    err = capsys.readouterr().err
    assert f"{method} EM (start 1/2)" in err and f"{method} EM (start 2/2)" in err
    assert f"objective={quiet.objective:.6g}" in err
    assert f"{quiet.n_iter}/100" in err
    for name in ("means", "covariances", "weights", "resp", "labels"):
        np.testing.assert_array_equal(getattr(shown, name), getattr(quiet, name))
    assert (shown.n_iter, shown.objective) == (quiet.n_iter, quiet.objective)


@pytest.mark.parametrize("progress", ["yes", 1, None])
def test_progress_must_be_a_bool(progress):
    with pytest.raises(ValueError, match="progress must be True or False"):
        em.run_em(mixture(0), progress=progress)
