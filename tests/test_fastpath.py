"""Tests of ``emlab.engine.fastpath``: the blocked complete-data loop equals the public steps chained
(hard and soft, several d, offsets, scales and block sizes), exact ties, empty components."""

import warnings

import numpy as np
import pytest
from synthetic import mixture

import em_helpers as em
from emlab.engine import fastpath


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 64 points, so that every test runs several blocks and a partial last one."""
    monkeypatch.setattr(fastpath, "BLOCK_ROWS", 64)


def reference_history(X, method, means, covs, weights, n_iter, reg_covar=1e-6,
                      covariance_type="full"):
    """Parameters after each of ``n_iter`` EM iterations built from the public steps."""
    history = []
    for _ in range(n_iter):
        if method == "hard":
            R = em.e_step(X, means)
        else:
            R, _ = em.e_step_soft(X, means, covs, weights)
        means, covs, weights = em.m_step(X, R, reg_covar=reg_covar,
                                         covariance_type=covariance_type)
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


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
@pytest.mark.parametrize("method", ["hard", "soft"])
@pytest.mark.parametrize("d, offset", [(1, 0.0), (3, 1e4)])
def test_constrained_loop_equals_the_public_steps_chained(covariance_type, method, d, offset):
    X = mixture(20 + d, d=d, offset=offset)
    start = X[:3].copy()
    first = em.m_step(X, em.e_step(X, start), covariance_type=covariance_type)
    init = start if method == "hard" else {"means": start, "covariances": first.covariances,
                                           "weights": first.weights}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method=method, init=init, max_iter=4, tol=0,
                           covariance_type=covariance_type)
    expected = reference_history(X, method, start, first.covariances, first.weights,
                                 result.n_iter, covariance_type=covariance_type)
    assert_same_iterates(result, expected)


@pytest.mark.parametrize("offset, scale", [(0.0, 1.0), (1e4, 1.0), (0.5, 1e-3), (-3.0, 1e100)])
def test_the_one_pass_set_up_equals_the_units_then_the_centring(offset, scale):
    """``standardise_complete`` = ``DataUnits.of`` then ``CompleteData.of`` of Z, without Z."""
    from emlab.engine.scaling import DataUnits

    for X, reg_covar in ((mixture(7, d=3, offset=offset, scale=scale), 1e-6 * scale ** 2),
                         (np.random.default_rng(1).integers(0, 255, (999, 2)) + offset, 1e-6)):
        units, data = fastpath.standardise_complete(X, reg_covar)
        reference = DataUnits.of(X, reg_covar)
        assert (units.scale, units.reg_covar, units.n_observed) == \
            (reference.scale, reference.reg_covar, reference.n_observed)
        np.testing.assert_array_equal(units.centre, reference.centre)
        expected = fastpath.CompleteData.of(reference.standardise(X))
        np.testing.assert_array_equal(data.shift, expected.shift)
        np.testing.assert_array_equal(data.centred_t, expected.centred_t)  # the same numbers
        assert data.n_points == len(X)


def test_the_one_pass_set_up_leaves_missing_cells_and_constant_data_to_the_units():
    X = mixture(8)
    X[3, 1] = np.nan
    assert fastpath.standardise_complete(X, 1e-6) is None
    assert fastpath.standardise_complete(np.full((5, 2), 12.0), 1e-6) is None
    assert fastpath.standardise_complete(1e150 * mixture(8), 0.0) is None  # pre-scaled there
    with pytest.raises(ValueError, match="reg_covar=1 is not small"):
        fastpath.standardise_complete(1e-3 * mixture(8), 1.0)


def test_argmax_rows_is_numpys_argmax_over_components_ties_to_the_lowest():
    rng = np.random.default_rng(3)
    for A in (rng.random((4, 999)), rng.integers(0, 3, (3, 500)).astype(float),
              rng.random((3, 400)) < 0.4, np.zeros((2, 7), dtype=bool)):
        np.testing.assert_array_equal(fastpath.argmax_rows(A), np.argmax(A, axis=0))


@pytest.mark.parametrize("integer", [False, True])
def test_hard_passes_update_the_sums_to_those_of_a_fresh_count(small_blocks, integer):
    # means that drift slowly (few points move: the sums are updated), jump (many move: a
    # fresh count) and, on integer points, fall halfway between points (exact ties)
    rng = np.random.default_rng(5)
    X = rng.integers(-4, 5, (600, 2)).astype(float) if integer else mixture(11, n=900)
    data = fastpath.CompleteData.of(X)
    start = X[rng.choice(len(X), 3, replace=False)] + 0.01
    path = [start + 0.02 * i for i in range(24)] + [start[::-1]]
    path += [start[::-1] + 0.5 * np.array([[1, 0], [0, 1], [1, 1]])] if integer else []
    updated = 0
    for means in path:
        member, objective, stats = fastpath.hard_pass(data, means)
        fresh = fastpath.hard_pass(data, means, update=False)
        np.testing.assert_array_equal(member, fresh[0])
        np.testing.assert_allclose(stats, fresh[2], rtol=1e-12,
                                   atol=1e-12 * np.abs(fresh[2]).max())
        np.testing.assert_allclose(objective, fresh[1], rtol=1e-12)
        assert data.hard_memory.updates <= fastpath.HardMemory.MAX_UPDATES
        updated += data.hard_memory.updates > 0
    assert data.hard_memory.updates == 0  # the last jump moved many points: counted afresh
    assert updated > fastpath.HardMemory.MAX_UPDATES  # and the updates were exercised
