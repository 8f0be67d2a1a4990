"""Tests of ``emlab.models.model_selection``: parameter counts by hand, BIC and AIC against
scikit-learn's ``bic()``/``aic()`` of the same fit, ICL against the entropy, the observed-data
likelihood with missing cells against a brute-force integral, the grid's table (seeded, missing
cells, too large a K), degenerate fits flagged and skipped, bad arguments."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from sklearn.mixture import GaussianMixture
from synthetic import mixture

import em_helpers as em
from emlab.models import model_selection as ms
from emlab.engine.covariance import COVARIANCE_TYPES, constrain_covariances, to_sklearn_format


@pytest.mark.parametrize("K, d", [(1, 1), (3, 2), (5, 4)])
def test_n_parameters_by_hand(K, d):
    means, weights = K * d, K - 1
    by_hand = {"full": means + weights + K * d * (d + 1) // 2,
               "tied": means + weights + d * (d + 1) // 2,
               "diag": means + weights + K * d,
               "spherical": means + weights + K}
    assert {t: ms.n_parameters(K, d, t) for t in COVARIANCE_TYPES} == by_hand
    assert ms.n_parameters(3, 2, "full") == 17  # the course's model: 6 + 9 + 2


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_and_aic_equal_sklearns_of_the_same_fit(covariance_type):
    X = mixture(7, n=200)
    rng = np.random.default_rng(7)
    A = rng.normal(size=(3, 2, 2))
    covs = constrain_covariances(A @ A.transpose(0, 2, 1) + np.eye(2), np.ones(3),
                                 covariance_type, 0.0)
    start = {"means": X[:3], "covariances": covs, "weights": np.full(3, 1 / 3)}
    layout = to_sklearn_format(covs, covariance_type)
    precisions = np.linalg.inv(layout) if covariance_type in ("full", "tied") else 1 / layout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: neither converges
        ours = em.run_em(X, method="soft", init=start, tol=0, max_iter=10,
                         covariance_type=covariance_type)
        gm = GaussianMixture(3, covariance_type=covariance_type, means_init=start["means"],
                             weights_init=start["weights"], precisions_init=precisions,
                             tol=0, max_iter=10).fit(X)
    scores = ms.information_criteria(X, ours)
    assert scores["bic"] == pytest.approx(gm.bic(X), rel=1e-9)
    assert scores["aic"] == pytest.approx(gm.aic(X), rel=1e-9)
    assert scores["log_likelihood"] == pytest.approx(gm.score(X) * len(X), rel=1e-9)


def test_icl_is_bic_plus_twice_the_entropy_and_equals_bic_for_one_hot_responsibilities():
    X = mixture(2, n=150)
    fit = em.run_em(X, 3, method="soft", init="kmeans++")
    scores = ms.information_criteria(X, fit)
    entropy = stats.entropy(fit.resp, axis=0).sum()  # scipy: -sum r ln r per point
    assert entropy > 1.0
    assert scores["icl"] == pytest.approx(scores["bic"] + 2 * entropy, rel=1e-12)
    assert scores["icl"] > scores["bic"]
    # classes 1e4 standard deviations apart: every responsibility is 0 or 1 exactly
    rng = np.random.default_rng(0)
    far = np.vstack([rng.normal(c, 1.0, size=(40, 2)) for c in (0.0, 1e4, 2e4)])
    fit = em.run_em(far, 3, method="soft", init=far[[0, 40, 80]])
    assert set(np.unique(fit.resp)) == {0.0, 1.0}
    scores = ms.information_criteria(far, fit)
    assert scores["icl"] == scores["bic"]


def test_observed_log_likelihood_with_missing_cells_equals_a_brute_force_integral():
    # three points, one with its second cell missing and one with its first: the likelihood
    # of the observed cells is the joint mixture density integrated over the missing cell
    X = np.array([[0.3, -0.2], [1.1, np.nan], [np.nan, 0.7], [2.0, 1.5]])
    means = np.array([[0.0, 0.0], [1.5, 1.0]])
    covs = np.array([[[1.0, 0.4], [0.4, 0.8]], [[0.5, -0.1], [-0.1, 0.6]]])
    weights = np.array([0.6, 0.4])
    fit = em.EMResult(means=means, covariances=covs, weights=weights, resp=np.zeros((2, 4)),
                      labels=np.zeros(4, int), n_iter=0, converged=True, objective=np.nan,
                      history=[], init_means=means, method="soft")

    def density(x):
        return sum(w * stats.multivariate_normal(m, c).pdf(x)
                   for m, c, w in zip(means, covs, weights))

    brute = 0.0
    for row in X:
        if np.isnan(row).any():
            j = int(np.flatnonzero(np.isnan(row))[0])
            value, _ = integrate.quad(
                lambda t: density(np.where(np.arange(2) == j, t, row)), -np.inf, np.inf,
                epsabs=1e-13, epsrel=1e-12)
        else:
            value = density(row)
        brute += np.log(value)
    scores = ms.information_criteria(X, fit)
    assert scores["log_likelihood"] == pytest.approx(brute, rel=1e-9)
    assert scores["bic"] == pytest.approx(-2 * brute + 11 * np.log(4), rel=1e-9)


def test_hard_em_is_refused_with_a_clear_message():
    X = mixture(0, n=90)
    fit = em.run_em(X, 3, method="hard")
    with pytest.raises(ValueError, match="hard-EM fit.*method='soft'"):
        ms.information_criteria(X, fit)


def test_information_criteria_bad_arguments():
    X = mixture(0, n=90)
    fit = em.run_em(X, 2, method="soft")
    with pytest.raises(ValueError, match="result must be an EMResult"):
        ms.information_criteria(X, {"means": fit.means})
    with pytest.raises(ValueError, match="X has 3 columns"):
        ms.information_criteria(np.hstack([X, X[:, :1]]), fit)
    with pytest.raises(ValueError, match="X has 50 rows"):
        ms.information_criteria(X[:50], fit)


def test_select_model_table_is_seeded_and_agrees_with_its_fits():
    X = mixture(3, n=150)
    table, fits = ms.select_model(X, [1, 2, 3], ("full", "spherical"), n_init=2,
                                  random_state=4, return_fits=True)
    assert list(table.columns) == list(ms.COLUMNS)
    assert table.index.names == ["covariance_type", "n_components"]
    assert list(table.index) == [(t, k) for t in ("full", "spherical") for k in (1, 2, 3)]
    pd.testing.assert_frame_equal(table, ms.select_model(X, [1, 2, 3], ("full", "spherical"),
                                                         n_init=2, random_state=4))
    for key, fit in fits.items():
        assert fit.covariance_type == key[0] and fit.means.shape[0] == key[1]
        assert table.loc[key, "bic"] == ms.information_criteria(X, fit)["bic"]
    same = em.run_em(X, 3, method="soft", init="kmeans++", n_init=2, random_state=4,
                     covariance_type="spherical", max_iter=300)
    assert table.loc[("spherical", 3), "log_likelihood"] == pytest.approx(same.objective,
                                                                          rel=1e-12)
    assert not table["degenerate"].any() and table["converged"].all()
    assert ms.best_model(table) == ("spherical", 3)  # mixture(): 3 unit-variance round classes


def test_select_model_works_with_missing_cells():
    X = mixture(5, n=120)
    X[np.random.default_rng(5).random(X.shape) < 0.1] = np.nan
    table, fits = ms.select_model(X, [2, 3], ("tied", "diag"), n_init=1, return_fits=True)
    assert np.isfinite(table[["log_likelihood", "bic", "aic", "icl"]].to_numpy()).all()
    for key, fit in fits.items():  # the likelihood of the observed cells only
        assert table.loc[key, "log_likelihood"] == pytest.approx(
            em.log_likelihood(X, fit.means, fit.covariances, fit.weights), rel=1e-12)


def test_a_k_larger_than_the_data_support_is_a_clear_error_not_a_nan_row():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [3.0, 2.0]])
    with pytest.raises(ValueError, match="n_components=5 is more than the 4 distinct"):
        ms.select_model(X, [1, 5], n_init=1)
    # two components of a full model in 2-D: 11 parameters for 12 observed values is fine,
    # three need 17
    with pytest.raises(ValueError, match="17 free parameters, not fewer than the 12 observed"):
        ms.select_model(X, [3], ("full",), n_init=1)


def faithful_like(seed=0, n=272):
    """A stand-in for R's ``faithful`` (not shipped in our packages): two clusters of
    (eruption minutes, waiting minutes), with the waiting times rounded to whole minutes."""
    rng = np.random.default_rng(seed)
    short = rng.random(n) < 0.36
    eruptions = np.where(short, rng.normal(2.04, 0.27, n), rng.normal(4.29, 0.41, n))
    waiting = np.where(short, rng.normal(54.5, 5.9, n), rng.normal(80.0, 5.9, n))
    return np.column_stack([np.round(eruptions, 3), np.round(waiting)])


def test_degenerate_fits_are_flagged_and_never_chosen():
    # As on the real faithful data, a diagonal fit with many components puts one component on
    # a single whole-minute waiting time: its variance there is reg_covar and its likelihood
    # soars, so that the plain minimum of BIC would pick it.
    X = faithful_like()
    table, fits = ms.select_model(X, range(1, 7), ("diag",), n_init=3, return_fits=True)
    raw_best = table["bic"].idxmin()
    assert table.loc[raw_best, "degenerate"]
    fit = fits[raw_best]
    k = ms.collapsed_components(fit)[0]
    owned = fit.labels == k
    assert np.unique(X[owned, 1]).size == 1  # one waiting time
    assert fit.covariances[k, 1, 1] == pytest.approx(1e-6, rel=1e-6)  # 0 + reg_covar
    chosen = ms.best_model(table)
    assert not table.loc[chosen, "degenerate"] and chosen == ("diag", 2)
    assert table.loc[chosen, "bic"] > table.loc[raw_best, "bic"]


def test_collapsed_components_by_weight_and_by_eigenvalue():
    X = mixture(1, n=60)
    fit = em.run_em(X, 2, method="soft")
    assert ms.collapsed_components(fit).size == 0
    light = em.EMResult(**{**fit.__dict__, "weights": np.array([1 - 2.5 / 60, 2.5 / 60])})
    np.testing.assert_array_equal(ms.collapsed_components(light), [1])  # 2.5 < d + 1 points
    thin = fit.covariances.copy()
    thin[0] = np.diag([1.0, 5e-6])
    flat = em.EMResult(**{**fit.__dict__, "covariances": thin})
    np.testing.assert_array_equal(ms.collapsed_components(flat), [0])
    assert ms.collapsed_components(flat, reg_covar=1e-7).size == 0
    with pytest.raises(ValueError, match="reg_covar must be a non-negative number"):
        ms.collapsed_components(fit, reg_covar=-1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_components": []}, "n_components is empty"),
    ({"n_components": [2, 2]}, "n_components has repeated values"),
    ({"n_components": [0, 1]}, "n_components must be >= 1"),
    ({"n_components": [1.5]}, "n_components must be an integer"),
    ({"n_components": "3"}, "n_components must be an integer"),
    ({"covariance_type": ()}, "covariance_type is empty"),
    ({"covariance_type": ("full", "VVV")}, "covariance_type must be one of"),
    ({"covariance_type": ("diag", "diag")}, "covariance_type has repeated values"),
    ({"n_init": 0}, "n_init must be >= 1"),
    ({"init": np.zeros((2, 2))}, "init must be 'kmeans\\+\\+' or 'random'"),
    ({"return_fits": 1}, "return_fits must be True or False"),
    ({"tol": -1.0}, "tol must be a non-negative number"),
])
def test_select_model_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ms.select_model(mixture(0, n=60), **{"n_components": [1, 2], **kwargs})


def test_best_model_bad_arguments():
    table = ms.select_model(mixture(0, n=60), [1, 2], n_init=1)
    assert ms.best_model(table, "icl") in table.index
    with pytest.raises(ValueError, match="criterion must be one of"):
        ms.best_model(table, "loglik")
    with pytest.raises(ValueError, match="table must be the DataFrame of select_model"):
        ms.best_model(table.drop(columns="degenerate"))
    with pytest.raises(ValueError, match="every fit in the table is degenerate"):
        ms.best_model(table.assign(degenerate=True))


def test_best_model_breaks_rounding_ties_towards_fewer_parameters():
    index = pd.MultiIndex.from_tuples([("full", 3), ("spherical", 3), ("full", 2)],
                                      names=["covariance_type", "n_components"])
    table = pd.DataFrame({"bic": [100.0, 100.0 * (1 + 1e-12), 100.5], "n_parameters": [8, 6, 5],
                          "degenerate": False}, index=index)
    assert ms.best_model(table) == ("spherical", 3)  # a tie: fewer parameters
    assert ms.best_model(table.assign(bic=[100.0, 100.1, 100.5])) == ("full", 3)


@pytest.fixture(scope="module")
def small_grid():
    X = mixture(5, n=150, d=1)
    table, fits = ms.select_model(X, range(1, 5), ("full", "tied"), n_init=1, random_state=0,
                                  return_fits=True)
    return X, table, fits


def test_notebook_tables_are_views_of_the_grid(small_grid):
    X, table, fits = small_grid
    wide = ms.criteria_table(table)
    assert wide.loc[2, ("bic", "tied")] == round(table.loc[("tied", 2), "bic"], 1)
    picks = ms.choices(table, ("bic", "icl"))
    assert tuple(picks.loc["BIC"]) == ms.best_model(table, "bic")
    gains = ms.bic_gains(table, len(X), up_to=4)
    full = table.loc["full"]
    np.testing.assert_allclose(gains["gain in log-likelihood"].iloc[0],
                               round(full.loc[2, "log_likelihood"] - full.loc[1, "log_likelihood"],
                                     1))
    np.testing.assert_allclose(gains["BIC's price"].iloc[0],
                               round(0.5 * 3 * np.log(len(X)), 1))  # mean, variance, weight
    comp = ms.component_table(fits[("full", 3)])
    assert comp["mean"].is_monotonic_increasing
    np.testing.assert_allclose(comp["weight"].sum(), 1.0)


def test_collapsed_table_lists_every_collapsed_component():
    X = np.concatenate([mixture(1, n=60, d=1), np.full((3, 1), 50.0)])  # 3 identical points
    table, fits = ms.select_model(X, range(3, 5), ("full",), n_init=1, random_state=0,
                                  return_fits=True)
    assert table["degenerate"].any()  # a component sits on the three identical points
    out = ms.collapsed_table(table, fits, X)
    for key in table.index[table["degenerate"]]:
        listed = out.xs(key, level=[0, 1]).index
        assert set(listed) == set(int(k) for k in ms.collapsed_components(fits[key]))
    with pytest.raises(ValueError, match="fits has no fit"):
        ms.collapsed_table(table, {}, X)


@pytest.mark.parametrize("call, match", [
    (lambda t: ms.criteria_table(t.drop(columns="icl")), "DataFrame of select_model"),
    (lambda t: ms.bic_gains(t, 10, up_to=3, covariance_type="diag"), "no 'diag' rows"),
    (lambda t: ms.bic_gains(t, 0, up_to=3), "n_points must be >= 1"),
])
def test_table_helpers_refuse_bad_arguments(small_grid, call, match):
    with pytest.raises(ValueError, match=match):
        call(small_grid[1])


def test_component_table_is_for_one_dimensional_fits():
    fit = em.run_em(mixture(2), 3, method="soft", random_state=0)
    with pytest.raises(ValueError, match="1-D fits"):
        ms.component_table(fit)


@pytest.mark.parametrize("resp", [[[-0.5, 1.0], [1.5, 0.0]], [[np.nan, 1.0], [0.5, 0.0]],
                                  [0.5, 0.5], [[0.5, 0.5], [0.2, 0.2]]])
def test_responsibility_entropy_refuses_what_is_not_a_responsibility_matrix(resp):
    with pytest.raises(ValueError, match="resp must"):
        ms.responsibility_entropy(resp)


def test_bad_grid_arguments_and_tables_are_named(small_grid):
    X, table, fits = small_grid
    with pytest.raises(ValueError, match="covariance_type must be a str or a sequence"):
        ms.select_model(mixture(0, n=60), [1, 2], covariance_type=None)
    with pytest.raises(ValueError, match="random_state must be an integer"):
        ms.select_model(mixture(0, n=60), [1, 2], random_state="a")
    with pytest.raises(ValueError, match="'bic' column has a missing or infinite value"):
        ms.best_model(table.assign(bic=np.nan))
    with pytest.raises(ValueError, match="fits must be the dict of select_model"):
        ms.collapsed_table(table.assign(degenerate=True), None, X)
    with pytest.raises(ValueError, match="result must be an EMResult"):
        ms.component_table("fit")
    with pytest.raises(ValueError, match="reg_covar must be a non-negative number"):
        ms.collapsed_components(next(iter(fits.values())), reg_covar=True)


def test_best_model_names_a_missing_n_parameters_column(small_grid):
    _, table, _ = small_grid
    with pytest.raises(ValueError, match="table must be the DataFrame of select_model"):
        ms.best_model(table.drop(columns="n_parameters"))  # was a KeyError
