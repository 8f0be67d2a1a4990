"""Tests of ``bootstrap_parameters``: its standard errors against closed-form ones on simulated
data, the within-class resampling, the alignment of components, seeding and input checks."""

import warnings

import numpy as np
import pytest

import em_helpers as em
from emlab.models import bootstrap

N_PER_CLASS = 150
MEANS = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
# standard deviation of each coordinate, per class: far smaller than the gaps between the means,
# so that EM recovers the classes exactly and the estimates are the class sample moments
SDS = np.array([[0.5, 1.0], [1.0, 2.0], [2.0, 0.7]])


def separated_sample(seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(MEANS[k], SDS[k], size=(N_PER_CLASS, 2)) for k in range(3)])
    return X, np.repeat(np.arange(3), N_PER_CLASS)


@pytest.fixture(scope="module")
def sample():
    return separated_sample()


@pytest.fixture(scope="module")
def hard_boot(sample):
    X, y = sample
    return bootstrap.bootstrap_parameters(X, y, n_boot=400, method="hard", init=MEANS, random_state=3)


def test_se_of_means_is_sigma_over_sqrt_n(hard_boot):
    analytic = SDS / np.sqrt(N_PER_CLASS)
    ratio = hard_boot.se.means / analytic
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    assert abs(ratio.mean() - 1) < 0.1, ratio


def test_se_of_means_matches_the_plug_in_formula(sample, hard_boot):
    # the ideal bootstrap SE of a mean is the sample SD (ddof=0) over sqrt(n)
    X, y = sample
    plug_in = np.array([X[y == k].std(axis=0) for k in range(3)]) / np.sqrt(N_PER_CLASS)
    np.testing.assert_allclose(hard_boot.se.means, plug_in, rtol=0.12)


def test_se_of_variances_matches_the_normal_and_plug_in_formulas(sample, hard_boot):
    X, y = sample
    se_var = np.diagonal(hard_boot.se.covariances, axis1=1, axis2=2)
    normal_theory = SDS ** 2 * np.sqrt(2.0 / N_PER_CLASS)  # SD of s^2 for Gaussian data
    ratio = se_var / normal_theory
    assert np.all(np.abs(ratio - 1) < 0.35), ratio
    assert abs(ratio.mean() - 1) < 0.15, ratio
    centred = [X[y == k] - X[y == k].mean(axis=0) for k in range(3)]
    plug_in = np.array([np.sqrt(((c ** 2) ** 2).mean(axis=0) - ((c ** 2).mean(axis=0)) ** 2)
                        for c in centred]) / np.sqrt(N_PER_CLASS)
    np.testing.assert_allclose(se_var, plug_in, rtol=0.12)


def test_resampling_keeps_every_class_size(hard_boot):
    # classes are resampled within their own rows, so with separated classes every replicate
    # holds exactly N_PER_CLASS points per component
    assert hard_boot.n_boot == 400
    np.testing.assert_allclose(hard_boot.weights, 1 / 3, rtol=1e-12)
    np.testing.assert_allclose(hard_boot.se.weights, 0.0, atol=1e-12)


def test_components_are_aligned_to_the_true_classes(sample):
    X, y = sample
    shuffled_start = MEANS[[2, 0, 1]]
    boot = bootstrap.bootstrap_parameters(X, y, n_boot=20, method="hard", init=shuffled_start,
                                          random_state=0)
    class_means = np.array([X[y == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(boot.means.mean(axis=0), class_means, atol=0.5)
    assert np.all(boot.se.means < 0.5)  # no label switching inflating the spread


def test_soft_method_agrees_with_the_plug_in_formula(sample):
    X, y = sample
    fit = em.run_em(X, 3, method="soft", init=MEANS)
    boot = bootstrap.bootstrap_parameters(X, y, n_boot=100, method="soft", init=fit, random_state=1)
    plug_in = np.array([X[y == k].std(axis=0) for k in range(3)]) / np.sqrt(N_PER_CLASS)
    np.testing.assert_allclose(boot.se.means, plug_in, rtol=0.2)
    assert boot.method == "soft" and boot.n_not_converged == 0


def test_same_labels_and_seed_resample_the_same_rows(sample):
    X, y = sample
    shift = np.array([5.0, -3.0])
    a = bootstrap.bootstrap_parameters(X, y, n_boot=10, method="hard", random_state=7)
    b = bootstrap.bootstrap_parameters(X + shift, y, n_boot=10, method="hard", random_state=7)
    np.testing.assert_allclose(b.means - a.means, np.broadcast_to(shift, a.means.shape),
                               atol=1e-9)
    np.testing.assert_allclose(b.covariances, a.covariances, atol=1e-9)


def test_seed_reproduces_and_changes_the_replicates(sample):
    X, y = sample
    a = bootstrap.bootstrap_parameters(X, y, n_boot=5, method="hard", random_state=11)
    b = bootstrap.bootstrap_parameters(X, y, n_boot=5, method="hard", random_state=11)
    c = bootstrap.bootstrap_parameters(X, y, n_boot=5, method="hard", random_state=12)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    assert not np.allclose(a.means, c.means)


def test_missing_cells_give_finite_errors_and_inputs_are_not_modified(sample):
    X, y = sample
    X = X.copy()
    rng = np.random.default_rng(5)
    rows = rng.choice(len(X), size=30, replace=False)
    X[rows, rng.integers(0, 2, size=30)] = np.nan
    X_before, y_before = X.copy(), y.copy()
    start = {"means": MEANS.copy()}
    boot = bootstrap.bootstrap_parameters(X, y, n_boot=10, method="soft", init=start, random_state=0)
    assert np.isfinite(boot.se.means).all() and np.isfinite(boot.se.covariances).all()
    assert (boot.se.means > 0).all()
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(start["means"], MEANS)


def test_refits_that_do_not_converge_are_counted_and_warned_once(sample):
    X, y = sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boot = bootstrap.bootstrap_parameters(X, y, n_boot=4, method="soft", init=MEANS, max_iter=1,
                                              random_state=0)
    assert boot.n_not_converged == 4
    assert len(caught) == 1
    assert issubclass(caught[0].category, em.EMConvergenceWarning)
    assert "4 of 4 bootstrap refits" in str(caught[0].message)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_boot": 1}, "n_boot"),
    ({"n_boot": 2.5}, "n_boot"),
    ({"n_boot": True}, "n_boot"),
    ({"method": "medium"}, "method"),
])
def test_bad_arguments_are_named(sample, kwargs, match):
    X, y = sample
    with pytest.raises(ValueError, match=match):
        bootstrap.bootstrap_parameters(X, y, **kwargs)


def test_bad_labels_are_rejected(sample):
    X, y = sample
    with pytest.raises(ValueError, match="y must hold"):
        bootstrap.bootstrap_parameters(X, y[:-1])
    with pytest.raises(ValueError, match="y must hold"):
        bootstrap.bootstrap_parameters(X, y.astype(float))
    with pytest.raises(ValueError, match="y must hold"):
        bootstrap.bootstrap_parameters(X, y - 1)
    with pytest.raises(ValueError, match="labels 0..K-1"):
        bootstrap.bootstrap_parameters(X, 2 * y)


@pytest.mark.parametrize("kwargs, match", [
    ({"init": "kmeans++"}, "init must be an EMResult, Parameters, an array of means"),
    ({"init": {"covariances": np.stack([np.eye(2)] * 3)}}, "init dict needs 'means'"),
    ({"random_state": "a"}, "random_state must be an integer"),
    ({"random_state": -1}, "random_state must be >= 0"),
])
def test_bad_start_and_seed_are_named(sample, kwargs, match):
    X, y = sample
    with pytest.raises(ValueError, match=match):
        bootstrap.bootstrap_parameters(X, y, n_boot=2, **kwargs)
