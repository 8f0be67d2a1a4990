"""Tests of ``emlab.models.imputation``: conditional means and spreads against scipy's conditioning
formula, coverage of the intervals, the scikit-learn imputers, masks and scores."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.impute import SimpleImputer
from sklearn.metrics import mean_squared_error

import em_helpers as em
from emlab.models import imputation

# A known 2-D mixture with strongly correlated, partly overlapping components.
MEANS = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])


COVS = np.array([[[1.0, 0.8], [0.8, 1.0]],
                 [[1.5, -0.9], [-0.9, 1.0]],
                 [[0.8, 0.3], [0.3, 1.2]]])


WEIGHTS = np.array([0.4, 0.35, 0.25])


def sample_gmm(n, seed, means=MEANS, covs=COVS, weights=WEIGHTS):
    rng = np.random.default_rng(seed)
    z = rng.choice(len(weights), size=n, p=weights)
    X = np.empty((n, means.shape[1]))
    for k in range(len(weights)):
        X[z == k] = rng.multivariate_normal(means[k], covs[k], size=int((z == k).sum()))
    return X


def fitted(means, covs, weights, method="soft"):
    """An EMResult holding given parameters (as if run_em had found them)."""
    means, covs, weights = (np.array(a, dtype=float) for a in (means, covs, weights))
    return em.EMResult(means=means, covariances=covs, weights=weights,
                       resp=np.zeros((len(weights), 0)), labels=np.zeros(0, dtype=int),
                       n_iter=0, converged=True, objective=0.0, history=[],
                       init_means=means.copy(), method=method)


# Two overlapping 3-D components: rows observed on different subsets of coordinates.
TINY_MEANS = np.array([[0.0, 1.0, -1.0], [2.0, -1.0, 1.5]])


TINY_COVS = np.array([[[1.0, 0.5, 0.2], [0.5, 1.5, -0.4], [0.2, -0.4, 0.8]],
                      [[1.2, -0.6, 0.3], [-0.6, 1.0, 0.1], [0.3, 0.1, 0.9]]])


TINY_WEIGHTS = np.array([0.6, 0.4])


TINY_X = np.array([[0.9, np.nan, np.nan],      # two cells missing
                   [np.nan, 0.2, 0.4],         # one cell missing
                   [1.8, np.nan, 0.9],
                   [np.nan, np.nan, 1.2],
                   [-0.5, -0.2, 0.7]])         # complete


def _brute_force_moments(x, means, covs, weights):
    """Mean and variance of every missing coordinate of ``x`` under the density
    ``sum_k w_k N(x; mu_k, S_k)`` restricted to the observed cells: a trapezoid rule over a grid
    of the missing coordinates (normalised numerically, no conditioning formula used)."""
    mis = np.flatnonzero(np.isnan(x))
    axes = [np.linspace(-12.0, 12.0, 801 if len(mis) == 1 else 481) for _ in mis]
    grids = np.meshgrid(*axes, indexing="ij")
    points = np.tile(x, (grids[0].size, 1))
    for j, grid in zip(mis, grids):
        points[:, j] = grid.ravel()
    density = sum(w * multivariate_normal(m, c).pdf(points)
                  for m, c, w in zip(means, covs, weights)).reshape(grids[0].shape)

    def integrate(values):
        for axis in reversed(axes):
            values = np.trapezoid(values, axis, axis=-1)
        return values

    total = integrate(density)
    mean = np.array([integrate(g * density) / total for g in grids])
    var = np.array([integrate((g - mu) ** 2 * density) / total for g, mu in zip(grids, mean)])
    return mis, mean, var


def test_soft_imputation_is_the_conditional_mean_and_spread_of_the_mixture():
    result = fitted(TINY_MEANS, TINY_COVS, TINY_WEIGHTS, "soft")
    X_imp, std = imputation.impute(TINY_X, result, return_std=True)
    for n, x in enumerate(TINY_X):
        if not np.isnan(x).any():
            continue
        mis, mean, var = _brute_force_moments(x, TINY_MEANS, TINY_COVS, TINY_WEIGHTS)
        np.testing.assert_allclose(X_imp[n, mis], mean, rtol=0, atol=1e-6)
        np.testing.assert_allclose(std[n, mis], np.sqrt(var), rtol=0, atol=1e-6)
    observed = ~np.isnan(TINY_X)
    np.testing.assert_array_equal(X_imp[observed], TINY_X[observed])
    np.testing.assert_array_equal(std[observed], 0.0)


def test_hard_imputation_uses_the_assigned_component_alone():
    result = fitted(TINY_MEANS, TINY_COVS, TINY_WEIGHTS, "hard")
    X_imp, std = imputation.impute(TINY_X, result, return_std=True)
    assigned = np.argmax(em.e_step(TINY_X, TINY_MEANS), axis=0)
    assert set(assigned) == {0, 1}  # both components are exercised
    for n, x in enumerate(TINY_X):
        if not np.isnan(x).any():
            continue
        k = assigned[n]
        mis, mean, var = _brute_force_moments(x, TINY_MEANS[[k]], TINY_COVS[[k]], [1.0])
        np.testing.assert_allclose(X_imp[n, mis], mean, rtol=0, atol=1e-6)
        np.testing.assert_allclose(std[n, mis], np.sqrt(var), rtol=0, atol=1e-6)


def test_single_gaussian_imputation_matches_scipy_conditioning_formula():
    # one component: no mixing, so the result is the textbook Gaussian conditional, which we
    # rebuild from the precision matrix (a different formula from the Schur complement used).
    mean, cov = TINY_MEANS[0], TINY_COVS[0]
    x = np.array([np.nan, 0.3, np.nan])
    X_imp, std = imputation.impute(x[None], fitted(mean[None], cov[None], [1.0]), return_std=True)
    prec = np.linalg.inv(cov)
    m, o = [0, 2], [1]
    cond_cov = np.linalg.inv(prec[np.ix_(m, m)])
    cond_mean = mean[m] - cond_cov @ prec[np.ix_(m, o)] @ (x[o] - mean[o])
    np.testing.assert_allclose(X_imp[0, m], cond_mean, rtol=1e-12)
    np.testing.assert_allclose(std[0, m], np.sqrt(np.diag(cond_cov)), rtol=1e-12)


@pytest.fixture(scope="module")
def known_gmm_fit():
    X = sample_gmm(3000, seed=7)
    mask = imputation.mcar_mask(X.shape, 0.3, random_state=7)
    X_missing = np.where(mask, np.nan, X)
    result = em.run_em(X_missing, 3, method="soft", init="kmeans++", n_init=3, random_state=0)
    return X, mask, X_missing, result


def test_em_imputation_beats_mean_imputation_and_is_close_to_the_true_model(known_gmm_fit):
    X, mask, X_missing, result = known_gmm_fit
    rmse_em = imputation.imputation_rmse(imputation.impute(X_missing, result), X, mask)
    rmse_mean = imputation.imputation_rmse(SimpleImputer(strategy="mean").fit_transform(X_missing),
                                           X, mask)
    oracle = replace(result, means=MEANS, covariances=COVS, weights=WEIGHTS)
    rmse_oracle = imputation.imputation_rmse(imputation.impute(X_missing, oracle), X, mask)
    assert rmse_em < 0.8 * rmse_mean  # a clear margin, not a tie
    assert rmse_em < 1.02 * rmse_oracle  # as good as knowing the true parameters


def test_intervals_cover_about_95_percent_and_std_matches_the_error(known_gmm_fit):
    X, mask, X_missing, result = known_gmm_fit
    X_imp, std = imputation.impute(X_missing, result, return_std=True)
    n_cells = int(mask.sum())
    assert n_cells == 1800  # binomial sd of the coverage: sqrt(.95 * .05 / 1800) = 0.5 %
    coverage = imputation.interval_coverage(X_imp, std, X, mask, z=1.96)
    assert abs(coverage - 0.95) < 0.025
    # calibration: the mean predicted variance is the mean squared error
    rmse = imputation.imputation_rmse(X_imp, X, mask)
    assert 0.9 < np.sqrt(np.mean(std[mask] ** 2)) / rmse < 1.1


def test_mixing_widens_the_interval_of_an_ambiguous_cell():
    # x1 = 3 lies between the components centred at x1 = 0 and x1 = 6: the soft spread must
    # include the gap between their predictions, so it exceeds every within-component spread.
    X = np.array([[3.0, np.nan]])
    _, std_soft = imputation.impute(X, fitted(MEANS, COVS, WEIGHTS, "soft"), return_std=True)
    within = np.sqrt(COVS[:, 1, 1] - COVS[:, 1, 0] ** 2 / COVS[:, 0, 0])
    assert std_soft[0, 1] > within.max()


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_no_missing_cell_returns_an_equal_copy(method):
    X = sample_gmm(50, seed=1)
    X_imp, std = imputation.impute(X, fitted(MEANS, COVS, WEIGHTS, method), return_std=True)
    np.testing.assert_array_equal(X_imp, X)
    assert not np.shares_memory(X_imp, X)
    np.testing.assert_array_equal(std, np.zeros_like(X))


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_inputs_are_never_modified(method):
    X = sample_gmm(200, seed=2)
    X[imputation.mcar_mask(X.shape, 0.25, random_state=2)] = np.nan
    result = fitted(MEANS, COVS, WEIGHTS, method)
    X_before = X.copy()
    params_before = [a.copy() for a in (result.means, result.covariances, result.weights)]
    X_imp, _ = imputation.impute(X, result, return_std=True)
    np.testing.assert_array_equal(X, X_before)  # NaN compare equal here
    for after, before in zip((result.means, result.covariances, result.weights), params_before):
        np.testing.assert_array_equal(after, before)
    assert not np.shares_memory(X_imp, X) and not np.isnan(X_imp).any()
    # a list of lists is accepted too and gives the same answer
    np.testing.assert_array_equal(imputation.impute(X.tolist(), result), X_imp)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_all_missing_rows_get_the_mixture_mean_and_marginal_spread(method):
    X = np.array([[np.nan, np.nan], [1.0, np.nan], [np.nan, np.nan], [2.0, 3.0]])
    X_imp, std = imputation.impute(X, fitted(MEANS, COVS, WEIGHTS, method), return_std=True)
    # the marginal moments of the mixture, computed directly from its definition
    mixture_mean = WEIGHTS @ MEANS
    second_moment = sum(w * (c + np.outer(m, m)) for m, c, w in zip(MEANS, COVS, WEIGHTS))
    marginal_std = np.sqrt(np.diag(second_moment - np.outer(mixture_mean, mixture_mean)))
    for n in (0, 2):
        np.testing.assert_allclose(X_imp[n], mixture_mean, rtol=1e-12)
        np.testing.assert_allclose(std[n], marginal_std, rtol=1e-12)
    # a table holding nothing but an empty row is accepted as well
    only_empty = imputation.impute(np.full((1, 2), np.nan), fitted(MEANS, COVS, WEIGHTS, method))
    np.testing.assert_allclose(only_empty[0], mixture_mean, rtol=1e-12)


def test_impute_works_with_a_result_from_run_em_on_other_rows():
    X = sample_gmm(400, seed=3)
    result = em.run_em(X, 3, method="hard", init="kmeans++", n_init=2, random_state=0)
    new = np.array([[0.5, np.nan], [np.nan, 7.0]])
    X_imp = imputation.impute(new, result)
    k = np.argmax(em.e_step(new, result.means), axis=0)
    for n, j in ((0, 1), (1, 0)):
        mu, S = result.means[k[n]], result.covariances[k[n]]
        o = 1 - j
        expected = mu[j] + S[j, o] / S[o, o] * (new[n, o] - mu[o])
        np.testing.assert_allclose(X_imp[n, j], expected, rtol=1e-12)


def test_mcar_mask_has_the_rate_keeps_a_cell_per_row_and_follows_the_seed():
    for shape, rate in (((600, 2), 0.05), ((600, 2), 0.4), ((600, 2), 0.5), ((100, 3), 0.6)):
        mask = imputation.mcar_mask(shape, rate, random_state=4)
        assert mask.dtype == bool and mask.shape == shape
        assert mask.sum() == round(rate * shape[0] * shape[1])
        assert (~mask).any(axis=1).all()
    np.testing.assert_array_equal(imputation.mcar_mask((600, 2), 0.2, 5), imputation.mcar_mask((600, 2), 0.2, 5))
    assert not np.array_equal(imputation.mcar_mask((600, 2), 0.2, 5), imputation.mcar_mask((600, 2), 0.2, 6))
    assert not imputation.mcar_mask((10, 2), 0.0, 0).any()


def test_mcar_mask_treats_every_cell_alike():
    # over many seeds every cell is removed about equally often: 0.2 of the time
    freq = np.mean([imputation.mcar_mask((20, 2), 0.2, seed) for seed in range(2000)], axis=0)
    assert np.abs(freq - 0.2).max() < 0.05  # binomial sd 0.009 per cell


def test_rmse_and_coverage_match_scikit_learn_and_direct_counts():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 2))
    guess = truth + rng.normal(scale=0.5, size=truth.shape)
    std = np.full(truth.shape, 0.5)
    mask = imputation.mcar_mask(truth.shape, 0.3, random_state=0)
    assert imputation.imputation_rmse(guess, truth, mask) == pytest.approx(
        np.sqrt(mean_squared_error(truth[mask], guess[mask])), rel=1e-12)
    per_coordinate = imputation.imputation_rmse(guess, truth, mask, per_coordinate=True)
    for j in range(2):
        rows = mask[:, j]
        assert per_coordinate[j] == pytest.approx(
            np.sqrt(mean_squared_error(truth[rows, j], guess[rows, j])), rel=1e-12)
    inside = np.abs(guess - truth)[mask] <= 1.96 * 0.5
    assert imputation.interval_coverage(guess, std, truth, mask) == inside.sum() / mask.sum()
    # cells outside the mask may hold NaN (they are not scored)
    guess[~mask] = np.nan
    assert np.isfinite(imputation.imputation_rmse(guess, truth, mask))


GOOD_X = np.array([[1.0, np.nan], [2.0, 3.0]])


RESULT = fitted(MEANS, COVS, WEIGHTS)


RESULT_3D = fitted(TINY_MEANS, TINY_COVS, TINY_WEIGHTS)


NOT_PD = replace(RESULT, covariances=np.array([[[1.0, 2.0], [2.0, 1.0]]] * 3))


MASK = np.array([[True, False], [False, True]])


@pytest.mark.parametrize("call, message", [
    (lambda: imputation.impute(GOOD_X, RESULT_3D), "X has 2 columns but result was fitted on 3"),
    (lambda: imputation.impute(np.array([[1.0, np.inf]]), RESULT), "infinite value .row 0, column 1"),
    (lambda: imputation.impute([["a", "b"]], RESULT), "X must be a numeric array"),
    (lambda: imputation.impute("1,2", RESULT), "X must be a numeric array"),
    (lambda: imputation.impute(np.array([1.0, np.nan]), RESULT), r"X must have shape \(N, d\)"),
    (lambda: imputation.impute(np.empty((0, 2)), RESULT), r"X must have shape \(N, d\)"),
    (lambda: imputation.impute(GOOD_X, {"means": MEANS}), "result must be an EMResult .* got dict"),
    (lambda: imputation.impute(GOOD_X, RESULT, return_std="yes"), "return_std must be True or False"),
    (lambda: imputation.impute(GOOD_X, replace(RESULT, method="fuzzy")), "result.method must be"),
    (lambda: imputation.impute(GOOD_X, NOT_PD), "not positive definite"),
    (lambda: imputation.impute(GOOD_X, replace(RESULT, weights=np.array([0.5, 0.5, 0.5]))),
     "result.weights must sum to 1"),
    (lambda: imputation.mcar_mask((600, 2), 0.6), r"rate must be between 0 and \(d - 1\) / d = 0.5"),
    (lambda: imputation.mcar_mask((600, 2), -0.1), "rate must be between 0"),
    (lambda: imputation.mcar_mask((600, 2), "0.1"), "rate must be a number"),
    (lambda: imputation.mcar_mask([600, 2], 0.1), r"shape must be a tuple \(N, d\)"),
    (lambda: imputation.mcar_mask((600, 0), 0.1), r"shape must be a tuple \(N, d\)"),
    (lambda: imputation.mcar_mask((600, 2), 0.1, random_state=1.5), "random_state must be an integer"),
    (lambda: imputation.imputation_rmse(GOOD_X, GOOD_X, MASK.astype(int)), "mask must be a boolean"),
    (lambda: imputation.imputation_rmse(GOOD_X, GOOD_X, MASK[:1]), r"mask must have shape \(2, 2\)"),
    (lambda: imputation.imputation_rmse(GOOD_X, GOOD_X, np.zeros((2, 2), bool)), "selects no cell"),
    (lambda: imputation.imputation_rmse(GOOD_X, np.ones((2, 2)), np.ones((2, 2), bool)),
     "X_imputed has NaN or infinite values in the scored cells"),
    (lambda: imputation.imputation_rmse(GOOD_X[:1], np.ones((2, 2)), MASK),
     r"X_imputed must have shape \(2, 2\)"),
    (lambda: imputation.imputation_rmse(np.ones((2, 2)), np.ones((2, 2)), np.array([[True, False]] * 2),
                                        per_coordinate=True), "no cell in coordinate 1"),
    (lambda: imputation.interval_coverage(np.ones((2, 2)), -np.ones((2, 2)), np.ones((2, 2)), MASK),
     "std must be non-negative"),
    (lambda: imputation.interval_coverage(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), MASK, z=0),
     "z must be a positive number"),
])
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_compare_imputers_runs_each_method_as_documented():
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    X = sample_gmm(150, seed=5)
    X[imputation.mcar_mask(X.shape, 0.2, random_state=5)] = np.nan
    X_before = X.copy()
    fits, filled = imputation.compare_imputers(X, n_init=2, random_state=1)
    assert tuple(filled) == imputation.IMPUTER_NAMES and set(fits) == {"soft", "hard"}
    np.testing.assert_array_equal(X, X_before)
    for method in ("soft", "hard"):
        fit = em.run_em(X, 3, method=method, init="kmeans++", n_init=2, random_state=1,
                        max_iter=500)
        np.testing.assert_array_equal(fits[method].means, fit.means)
        for got, expected in zip(filled[f"{method} EM"], imputation.impute(X, fit, return_std=True)):
            np.testing.assert_array_equal(got, expected)
    expected = {"mean (SimpleImputer)": SimpleImputer(strategy="mean").fit_transform(X),
                "KNNImputer": KNNImputer().fit_transform(X),
                "IterativeImputer": IterativeImputer(random_state=1).fit_transform(X)}
    for name, X_expected in expected.items():
        X_filled, std = filled[name]
        assert std is None
        np.testing.assert_array_equal(X_filled, X_expected)


def test_imputation_rmse_per_coordinate_must_be_a_bool():
    X = np.arange(6.0).reshape(3, 2)
    mask = np.array([[True, False], [False, True], [False, False]])
    with pytest.raises(ValueError, match="per_coordinate must be True or False"):
        imputation.imputation_rmse(X, X, mask, per_coordinate="yes")


def test_a_row_of_zero_density_is_refused_instead_of_imputed_as_nan():
    X = np.array([[0.0, 0.1], [1.0, 0.9], [0.2, 0.0], [0.9, 1.1], [0.1, 0.2], [1.1, 1.0]])
    fit = em.run_em(X, 2, method="soft", random_state=0)
    far = np.array([[1e200, np.nan], [0.5, np.nan]])  # its density underflows: 0 / 0 weights
    with pytest.raises(ValueError, match="X row 0 has zero density under every component"):
        imputation.impute(far, fit)
