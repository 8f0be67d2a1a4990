"""Tests of the categorical mixture model (CMM) EM in ``emlab.models.categorical`` (theory question 5).

Every expected value is computed independently: brute-force enumeration of the latent labels,
Bayes' rule in probability space, scipy's multinomial pmf, group frequencies, or the parameters
the data were sampled from.
"""

import itertools
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln
from scipy.stats import multinomial

from em_helpers import EMConvergenceWarning
from emlab.models.categorical import (
    CMMResult,
    cmm_e_step,
    cmm_log_likelihood,
    cmm_m_step,
    encode_categorical,
    run_cmm_em,
)

# --------------------------------------------------------------------------- helpers

def sample_cmm(rng, n, weights, probs_per_feature):
    """Sample integer codes (n, F) and labels from a CMM with one categorical draw per feature."""
    z = rng.choice(len(weights), size=n, p=weights)
    codes = np.empty((n, len(probs_per_feature)), dtype=int)
    for j, theta in enumerate(probs_per_feature):
        cum = theta.cumsum(axis=1)[z]  # (n, C_j)
        codes[:, j] = (rng.random((n, 1)) > cum).sum(axis=1)
    return codes, z


def brute_force_log_likelihood(Y, weights, probs):
    """ln sum over every label vector z in {0..K-1}^N of prod_n pi_{z_n} prod_c theta_{z_n c}^y_nc."""
    n, k = Y.shape[0], len(weights)
    total = 0.0
    for z in itertools.product(range(k), repeat=n):
        p = 1.0
        for i, zi in enumerate(z):
            p *= weights[zi] * np.prod(probs[zi] ** Y[i])
        total += p
    return np.log(total)


def expected_complete_loglik(Y, resp, weights, probs):
    """Q = sum_n sum_k q_nk (ln pi_k + sum_c y_nc ln theta_kc), in plain numpy."""
    return float(np.sum(resp * (np.log(weights)[:, None] + np.log(probs) @ Y.T)))


def match_components(est, true):
    """Permutation p with est[p[k]] closest to true[k] (Hungarian matching on L1 distance)."""
    cost = np.abs(true[:, None, :] - est[None, :, :]).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


@pytest.fixture
def five_feature_model():
    weights = np.array([0.5, 0.3, 0.2])
    probs = [
        np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
        np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]),
        np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.4, 0.1]]),
        np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.3, 0.6, 0.1]]),
        np.array([[0.1, 0.9], [0.5, 0.5], [0.85, 0.15]]),
    ]
    return weights, probs


SIZES = [3, 2, 4, 3, 2]


# --------------------------------------------------------------------------- likelihood and E-step

def test_log_likelihood_equals_brute_force_enumeration():
    rng = np.random.default_rng(0)
    Y = rng.multinomial(3, [0.2, 0.3, 0.5], size=5).astype(float)  # counts, N=5, C=3
    weights = np.array([0.6, 0.4])
    probs = rng.dirichlet(np.ones(3), size=2)
    assert cmm_log_likelihood(Y, weights, probs) == pytest.approx(
        brute_force_log_likelihood(Y, weights, probs), rel=1e-12)


def test_log_likelihood_with_two_features_and_missing_block_equals_brute_force():
    codes = np.array([[0, 1], [2, -1], [1, 0], [-1, 1]])  # -1: missing value
    Y, sizes = encode_categorical(codes, n_categories=[3, 2])
    assert sizes == (3, 2)
    assert Y[1, 3:].sum() == 0 and Y[3, :3].sum() == 0
    weights = np.array([0.3, 0.7])
    probs = np.array([[0.2, 0.3, 0.5, 0.9, 0.1], [0.6, 0.3, 0.1, 0.4, 0.6]])
    expected = brute_force_log_likelihood(Y, weights, probs)
    assert cmm_log_likelihood(Y, weights, probs, sizes) == pytest.approx(expected, rel=1e-12)
    # the missing feature is marginalised out: row 1 only involves feature 0
    row1 = np.log(weights @ probs[:, 2])
    _, row_others = cmm_e_step(np.delete(Y, 1, axis=0), weights, probs, sizes)
    assert row1 + row_others == pytest.approx(expected, rel=1e-12)


def test_log_likelihood_of_counts_matches_scipy_multinomial_up_to_the_coefficient():
    rng = np.random.default_rng(1)
    Y = rng.multinomial(12, [0.1, 0.2, 0.3, 0.4], size=30)
    weights = np.array([0.2, 0.5, 0.3])
    probs = rng.dirichlet(np.ones(4), size=3)
    n_trials = Y.sum(axis=1)
    log_pmf = np.stack([multinomial.logpmf(Y, n_trials, p) for p in probs])  # (K, N)
    log_coef = gammaln(n_trials + 1) - gammaln(Y + 1).sum(axis=1)
    expected = np.sum(np.log(np.exp(log_pmf + np.log(weights)[:, None]).sum(axis=0)) - log_coef)
    assert cmm_log_likelihood(Y, weights, probs) == pytest.approx(expected, rel=1e-10)


def test_e_step_is_bayes_rule_in_probability_space():
    rng = np.random.default_rng(2)
    Y = rng.multinomial(4, [0.25] * 4, size=20)
    weights = np.array([0.1, 0.6, 0.3])
    probs = rng.dirichlet(np.ones(4), size=3)
    joint = weights[:, None] * np.prod(probs[:, None, :] ** Y[None, :, :], axis=2)  # (K, N)
    resp, log_lik = cmm_e_step(Y, weights, probs)
    assert resp.shape == (3, 20)
    np.testing.assert_allclose(resp, joint / joint.sum(axis=0), rtol=1e-12)
    assert log_lik == pytest.approx(np.log(joint.sum(axis=0)).sum(), rel=1e-12)


def test_e_step_stays_finite_where_probability_space_underflows():
    Y = np.array([[2000.0, 0.0], [0.0, 2000.0]])  # prod theta^y underflows to 0 in float64
    weights = np.array([0.5, 0.5])
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])
    resp, log_lik = cmm_e_step(Y, weights, probs)
    assert np.all(np.isfinite(resp)) and np.isfinite(log_lik)
    np.testing.assert_allclose(resp, np.eye(2), atol=1e-12)
    assert log_lik == pytest.approx(2 * (np.log(0.5) + 2000 * np.log(0.9)), rel=1e-9)


def test_zero_probability_of_an_unobserved_category_gives_no_nan():
    Y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    ll = cmm_log_likelihood(Y, [0.5, 0.5], probs)
    assert ll == pytest.approx(np.log(0.35) + np.log(0.65), rel=1e-12)


# --------------------------------------------------------------------------- M-step

def test_m_step_with_hard_assignments_gives_group_frequencies():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, size=(40, 2))
    Y, sizes = encode_categorical(codes, [3, 3])
    labels = rng.integers(0, 2, size=40)
    labels[:2] = [0, 1]
    resp = np.eye(2)[labels].T
    weights, probs = cmm_m_step(Y, resp, sizes, alpha=0.0)
    for k in range(2):
        members = codes[labels == k]
        assert weights[k] == pytest.approx(len(members) / 40)
        for j in range(2):
            freq = np.bincount(members[:, j], minlength=3) / len(members)
            np.testing.assert_allclose(probs[k, 3 * j:3 * j + 3], freq, rtol=1e-12)


def test_m_step_beats_random_perturbations_of_the_expected_complete_loglik():
    rng = np.random.default_rng(4)
    Y = rng.multinomial(5, [0.1, 0.2, 0.3, 0.4], size=50).astype(float)
    resp = rng.dirichlet(np.ones(3), size=50).T  # arbitrary soft responsibilities (K, N)
    weights, probs = cmm_m_step(Y, resp, alpha=0.0)
    best = expected_complete_loglik(Y, resp, weights, probs)
    for _ in range(300):
        w = rng.dirichlet(200 * weights)
        p = np.stack([rng.dirichlet(200 * row) for row in probs])
        assert expected_complete_loglik(Y, resp, w, p) < best


def test_smoothed_m_step_is_laplace_rule_for_one_component():
    Y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)  # category 2 never seen
    weights, probs = cmm_m_step(Y, np.ones((1, 3)), alpha=1.0)
    np.testing.assert_allclose(probs, [[3 / 6, 2 / 6, 1 / 6]])
    assert weights.tolist() == [1.0]


# --------------------------------------------------------------------------- EM loop

def test_parameter_recovery_on_several_features(five_feature_model):
    weights, probs = five_feature_model
    rng = np.random.default_rng(5)
    codes, _ = sample_cmm(rng, 4000, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    true_probs = np.concatenate(probs, axis=1)
    res = run_cmm_em(Y, 3, sizes, n_init=4, alpha=0.01, random_state=0)
    assert isinstance(res, CMMResult) and res.converged
    perm = match_components(res.probs, true_probs)
    n_k = weights * len(Y)
    # 5 standard errors of a frequency with known labels (the latent-label MLE is a bit noisier)
    se_probs = np.sqrt(true_probs * (1 - true_probs) / n_k[:, None])
    assert np.all(np.abs(res.probs[perm] - true_probs) <= 5 * se_probs)
    assert np.all(np.abs(res.weights[perm] - weights) <= 5 * np.sqrt(weights * (1 - weights) / len(Y)))
    # a maximum-likelihood fit must not be worse than the parameters that generated the data
    assert res.log_likelihood >= cmm_log_likelihood(Y, weights, true_probs, sizes)
    for block in res.probs_per_feature():
        np.testing.assert_allclose(block.sum(axis=1), 1.0)


def test_parameter_recovery_on_counts():
    rng = np.random.default_rng(6)
    weights = np.array([0.4, 0.35, 0.25])
    probs = np.array([[0.4, 0.3, 0.1, 0.1, 0.05, 0.05],
                      [0.05, 0.05, 0.4, 0.3, 0.1, 0.1],
                      [0.1, 0.1, 0.05, 0.05, 0.3, 0.4]])
    z = rng.choice(3, size=600, p=weights)
    Y = np.stack([rng.multinomial(25, probs[k]) for k in z])
    res = run_cmm_em(Y, 3, alpha=0.01, random_state=1)
    perm = match_components(res.probs, probs)
    draws_k = weights * 600 * 25
    assert np.all(np.abs(res.probs[perm] - probs) <= 4 * np.sqrt(probs * (1 - probs) / draws_k[:, None]) + 0.01)
    # the components are well separated: labels agree with the truth up to the permutation
    assert np.mean(perm[z] == res.labels) > 0.97


@pytest.mark.filterwarnings("ignore::em_helpers.EMConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [1e-3, 1.0])
def test_objective_never_decreases(five_feature_model, seed, alpha):
    weights, probs = five_feature_model
    codes, _ = sample_cmm(np.random.default_rng(10 + seed), 500, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    res = run_cmm_em(Y, 4, sizes, alpha=alpha, max_iter=60, tol=0.0, random_state=seed)
    objective = res.objective_trace
    assert len(objective) == 61 and objective[-1] > objective[0]
    assert np.all(np.diff(objective) >= -1e-9 * np.abs(objective[:-1]))
    # each history entry is consistent with its parameters
    for h in res.history[::20]:
        assert h["log_likelihood"] == pytest.approx(cmm_log_likelihood(Y, h["weights"], h["probs"], sizes))
        assert h["objective"] == pytest.approx(h["log_likelihood"] + alpha * np.log(h["probs"]).sum())


def test_symmetric_initialisation_is_a_fixed_point_and_dirichlet_init_is_not(five_feature_model):
    weights, probs = five_feature_model
    codes, _ = sample_cmm(np.random.default_rng(7), 800, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    uniform = np.concatenate([np.full((3, s), 1 / s) for s in sizes], axis=1)
    sym = run_cmm_em(Y, 3, sizes, init=uniform, alpha=0.5, max_iter=50)
    # responsibilities are 1/K at every row, every component has the same parameters ...
    np.testing.assert_allclose(sym.resp, 1 / 3, rtol=1e-12)
    np.testing.assert_allclose(sym.probs, np.repeat(sym.probs[:1], 3, axis=0), rtol=1e-12)
    # ... namely the (smoothed) overall category frequencies, reached after a single M-step
    n_rows = len(Y)
    freq = np.concatenate([(b.sum(axis=0) / 3 + 0.5) / (n_rows / 3 + 0.5 * b.shape[1])
                           for b in np.split(Y, np.cumsum(sizes)[:-1], axis=1)])
    np.testing.assert_allclose(sym.probs[0], freq, rtol=1e-12)
    np.testing.assert_allclose(sym.history[1]["probs"], sym.history[-1]["probs"], rtol=1e-12)
    assert sym.converged and sym.n_iter <= 2
    # its likelihood is that of a single categorical per feature: the mixture is wasted
    one = run_cmm_em(Y, 1, sizes, alpha=0.5 * 3)  # K pseudo-counts pooled into one component
    assert sym.log_likelihood == pytest.approx(one.log_likelihood, rel=1e-10)
    # any start with identical components stays identical, too
    row = np.concatenate([[0.2, 0.3, 0.5], [0.9, 0.1], [0.1, 0.1, 0.1, 0.7], [0.3, 0.3, 0.4], [0.5, 0.5]])
    equal_start = np.repeat(row[None], 3, axis=0)
    np.testing.assert_allclose(run_cmm_em(Y, 3, sizes, init=equal_start, alpha=0.5).resp, 1 / 3, rtol=1e-12)
    # the seeded Dirichlet start breaks the symmetry and finds a much better fit
    ours = run_cmm_em(Y, 3, sizes, alpha=0.5, random_state=0)
    assert ours.resp.std(axis=0).max() > 0.1
    assert ours.log_likelihood > sym.log_likelihood + 50


def test_unseen_category_keeps_positive_probability():
    codes = np.array([[0, 0], [1, 0], [0, 1], [1, 1]] * 5)
    Y, sizes = encode_categorical(codes, [3, 2])  # category 2 of feature 0 never occurs
    res = run_cmm_em(Y, 2, sizes, alpha=1.0)
    assert np.all(res.probs > 0) and np.isfinite(res.log_likelihood)
    assert cmm_log_likelihood(np.array([[0, 0, 1, 1, 0]]), res.weights, res.probs, sizes) > -np.inf


@pytest.mark.filterwarnings("ignore::em_helpers.EMConvergenceWarning")
def test_seeded_runs_are_reproducible_and_seeds_matter(five_feature_model):
    weights, probs = five_feature_model
    codes, _ = sample_cmm(np.random.default_rng(8), 300, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    a = run_cmm_em(Y, 3, sizes, random_state=3, max_iter=5, tol=0.0)
    b = run_cmm_em(Y, 3, sizes, random_state=3, max_iter=5, tol=0.0)
    c = run_cmm_em(Y, 3, sizes, random_state=4, max_iter=5, tol=0.0)
    np.testing.assert_array_equal(a.init_probs, b.init_probs)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not np.allclose(a.init_probs, c.init_probs)


def test_n_init_keeps_the_best_run(five_feature_model):
    weights, probs = five_feature_model
    codes, _ = sample_cmm(np.random.default_rng(9), 300, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    best = run_cmm_em(Y, 3, sizes, n_init=5, random_state=0)
    rng = np.random.default_rng(0)
    singles = []
    for _ in range(5):  # the same five starts, run one by one
        init = np.concatenate([rng.dirichlet(np.ones(s), size=3) for s in sizes], axis=1)
        singles.append(run_cmm_em(Y, 3, sizes, init=init).objective)
    assert best.objective == pytest.approx(max(singles))


def hand_written_cmm_em(Y, sizes, weights, probs, alpha, max_iter, tol):
    """The EM of the module written out with its public steps: an M-step then an E-step per
    iteration, stopping when the MAP objective per row changes by at most ``tol``."""
    resp, log_lik = cmm_e_step(Y, weights, probs, sizes)
    history = [(weights, probs, log_lik, log_lik + alpha * np.log(probs).sum())]
    for n_iter in range(1, max_iter + 1):
        weights, probs = cmm_m_step(Y, resp, sizes, alpha)
        resp, log_lik = cmm_e_step(Y, weights, probs, sizes)
        history.append((weights, probs, log_lik, log_lik + alpha * np.log(probs).sum()))
        if abs(history[-1][3] - history[-2][3]) / len(Y) <= tol:
            return history, resp, n_iter, True
    return history, resp, max_iter, False


@pytest.mark.filterwarnings("ignore::em_helpers.EMConvergenceWarning")
@pytest.mark.parametrize("start, alpha, max_iter, tol, converged", [
    ("dirichlet", 0.3, 500, 1e-6, True),
    ("dirichlet", 1.0, 4, 0.0, False),
    ("uniform", 0.5, 10, 0.0, True),  # a fixed point: the change is exactly 0 <= tol
])
def test_run_cmm_em_is_the_hand_written_em(five_feature_model, start, alpha, max_iter, tol,
                                           converged):
    weights, probs = five_feature_model
    codes, _ = sample_cmm(np.random.default_rng(11), 400, weights, probs)
    Y, sizes = encode_categorical(codes, SIZES)
    if start == "uniform":
        init = np.concatenate([np.full((3, s), 1 / s) for s in sizes], axis=1)
    else:
        init = np.concatenate([np.random.default_rng(2).dirichlet(np.ones(s), size=3)
                               for s in sizes], axis=1)
    res = run_cmm_em(Y, 3, sizes, init=init, alpha=alpha, max_iter=max_iter, tol=tol)
    history, resp, n_iter, hand_converged = hand_written_cmm_em(
        Y, sizes, np.full(3, 1 / 3), init, alpha, max_iter, tol)
    assert (res.n_iter, res.converged) == (n_iter, hand_converged)
    assert hand_converged == converged and len(res.history) == n_iter + 1
    for t, (entry, (w, p, log_lik, objective)) in enumerate(zip(res.history, history)):
        assert entry["iteration"] == t
        np.testing.assert_array_equal(entry["weights"], w)
        np.testing.assert_array_equal(entry["probs"], p)
        assert (entry["log_likelihood"], entry["objective"]) == (log_lik, objective)
    np.testing.assert_array_equal(res.resp, resp)
    np.testing.assert_array_equal(res.probs, history[-1][1])
    assert (res.log_likelihood, res.objective) == history[-1][2:]


def test_not_converged_warns():
    Y, sizes = encode_categorical(np.random.default_rng(0).integers(0, 3, size=(50, 3)))
    with pytest.warns(EMConvergenceWarning, match="run_cmm_em did not converge within max_iter=2"):
        res = run_cmm_em(Y, 2, sizes, max_iter=2, tol=0.0)
    assert not res.converged and res.n_iter == 2 and len(res.history) == 3


def test_converged_run_does_not_warn():
    Y, sizes = encode_categorical(np.random.default_rng(0).integers(0, 3, size=(50, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cmm_em(Y, 2, sizes).converged


def test_inputs_are_not_modified():
    Y = np.random.default_rng(0).multinomial(4, [0.3, 0.3, 0.4], size=20).astype(float)
    init = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    init_weights = np.array([0.5, 0.5])
    resp = np.full((2, 20), 0.5)
    copies = [a.copy() for a in (Y, init, init_weights, resp)]
    run_cmm_em(Y, 2, init=init, init_weights=init_weights)
    cmm_m_step(Y, resp)
    cmm_e_step(Y, init_weights, init)
    for original, copy in zip((Y, init, init_weights, resp), copies):
        np.testing.assert_array_equal(original, copy)


# --------------------------------------------------------------------------- bad input

GOOD_Y = np.eye(3)[[0, 1, 2, 0, 1, 2]]


@pytest.mark.parametrize(
    "Y, kwargs, message",
    [
        (GOOD_Y[0], {}, "Y must be 2-D"),
        (np.empty((0, 3)), {}, "at least one row"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "numeric"),
        (np.where(GOOD_Y == 1, np.nan, 0), {}, "NaN"),
        (-GOOD_Y, {}, "non-negative"),
        (np.zeros((4, 3)), {}, "all zero"),
        (np.array([[0], [2], [1]]), {}, "at least 2"),
        (GOOD_Y, {"feature_sizes": (2, 2)}, "sum to 4 but Y has 3 columns"),
        (GOOD_Y, {"feature_sizes": (1, 2)}, "feature 0 has 1 category"),
        (GOOD_Y, {"n_components": 0}, "n_components must be >= 1"),
        (GOOD_Y, {"n_components": 2.5}, "n_components must be an integer"),
        (GOOD_Y, {"n_components": 7}, "must not exceed the number of rows"),
        (GOOD_Y, {"alpha": 0.0}, "alpha must be finite and > 0"),
        (GOOD_Y, {"alpha": -1}, "alpha must be finite and > 0"),
        (GOOD_Y, {"alpha": "1"}, "alpha must be a number"),
        (GOOD_Y, {"max_iter": 0}, "max_iter must be >= 1"),
        (GOOD_Y, {"tol": -1.0}, "tol must be a number >= 0"),
        (GOOD_Y, {"n_init": 0}, "n_init must be >= 1"),
        (GOOD_Y, {"init": "kmeans"}, "init must be 'dirichlet' or an array"),
        (GOOD_Y, {"init": np.full((2, 3), 0.5)}, "must sum to 1"),
        (GOOD_Y, {"init": np.full((2, 4), 0.25)}, r"init must have shape \(K, 3\)"),
        (GOOD_Y, {"init": np.full((3, 3), 1 / 3)}, "init must have 2 rows"),
        (GOOD_Y, {"init": np.full((2, 3), 1 / 3), "n_init": 2}, "n_init must be 1 when init is an array"),
        (GOOD_Y, {"init_weights": [0.2, 0.2]}, "init_weights must sum to 1"),
        (GOOD_Y, {"random_state": None}, "random_state must be an integer seed"),
    ],
)
def test_run_cmm_em_rejects_bad_input(Y, kwargs, message):
    kwargs = {"n_components": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_cmm_em(Y, **kwargs)


def test_step_functions_reject_bad_input():
    with pytest.raises(ValueError, match=r"resp must have shape \(K, N\) with N=6"):
        cmm_m_step(GOOD_Y, np.full((2, 5), 0.5))
    with pytest.raises(ValueError, match="columns summing to 1"):
        cmm_m_step(GOOD_Y, np.full((2, 6), 0.7))
    with pytest.raises(ValueError, match="alpha must be finite"):
        cmm_m_step(GOOD_Y, np.full((2, 6), 0.5), alpha=-0.1)
    with pytest.raises(ValueError, match=r"weights must have shape \(2,\)"):
        cmm_e_step(GOOD_Y, [1.0], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="probability 0 under every component"):
        cmm_e_step(GOOD_Y, [0.5, 0.5], np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]))


@pytest.mark.parametrize(
    "codes, n_categories, message",
    [
        (np.array([[0.5, 1]]), None, "integers"),
        (np.array([[0, -2]]), None, ">= 0"),
        (np.array([[0, 3]]), [2, 3], "reach 3 but n_categories"),
        (np.zeros((0, 2), dtype=int), None, "non-empty"),
    ],
)
def test_encode_categorical_rejects_bad_input(codes, n_categories, message):
    with pytest.raises(ValueError, match=message):
        encode_categorical(codes, n_categories)


@pytest.mark.parametrize("n_categories, match", [
    (3.5, r"n_categories\[0\] must be an integer"),
    ("3", r"n_categories\[0\] must be an integer"),
    ([3, 3, 3], r"n_categories must be one integer or 2 \(one per feature\)"),
])
def test_encode_categorical_refuses_bad_n_categories(n_categories, match):
    with pytest.raises(ValueError, match=match):
        encode_categorical(np.array([[0, 1], [2, 0]]), n_categories)


def test_bad_start_weights_and_seed_are_named():
    Y, sizes = encode_categorical(np.array([[0, 1], [2, 0], [1, 1], [0, 2]]))
    with pytest.raises(ValueError, match="init_weights must be a numeric array"):
        run_cmm_em(Y, 2, sizes, init_weights="a")
    with pytest.raises(ValueError, match="random_state must be an integer seed >= 0"):
        run_cmm_em(Y, 2, sizes, random_state=-1)


def test_m_step_with_an_empty_component_and_no_smoothing_warns_nothing():
    Y, sizes = encode_categorical(np.array([0, 1, 2, 1]))
    resp = np.vstack([np.ones(4), np.zeros(4)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights, probs = cmm_m_step(Y, resp, sizes, alpha=0.0)
    np.testing.assert_allclose(probs[1], 1 / 3)  # the empty component: uniform
