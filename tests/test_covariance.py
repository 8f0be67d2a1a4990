"""Tests of ``emlab.engine.covariance``: the projection equals scikit-learn's estimators of each
covariance model on the same responsibilities, the structure check, the parameter counts and the
layout conversion, bad arguments."""

import numpy as np
import pytest
from sklearn.mixture import _gaussian_mixture as skgm
from synthetic import mixture

from emlab.engine import covariance


def responsibilities(seed, n, K=3):
    rng = np.random.default_rng(seed)
    R = rng.random((n, K)) ** 3  # uneven soft responsibilities
    return R / R.sum(axis=1, keepdims=True)


def weighted_scatter(X, resp, means):
    """S_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k, by brute force: (K, d, d)."""
    counts = resp.sum(axis=0)
    return np.stack([(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / counts[k]
                     for k in range(resp.shape[1])])


@pytest.mark.parametrize("covariance_type", covariance.COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_projection_equals_sklearns_estimator_of_each_model(covariance_type, d):
    X = mixture(d, n=120, d=d)
    resp = responsibilities(d, len(X))
    counts = resp.sum(axis=0)
    means = resp.T @ X / counts[:, None]
    got = covariance.constrain_covariances(weighted_scatter(X, resp, means), counts,
                                           covariance_type, reg_covar=1e-3)
    estimate = getattr(skgm, f"_estimate_gaussian_covariances_{covariance_type}")
    want = estimate(resp, X, counts, means, 1e-3)
    np.testing.assert_allclose(covariance.to_sklearn_format(got, covariance_type), want,
                               rtol=1e-10, atol=1e-12)
    assert covariance.has_structure(got, covariance_type)


def test_projection_does_not_touch_its_input():
    scatter = np.stack([np.array([[2.0, 0.5], [0.5, 1.0]]), np.eye(2)])
    before = scatter.copy()
    for t in covariance.COVARIANCE_TYPES:
        covariance.constrain_covariances(scatter, np.array([1.0, 3.0]), t, 0.1)
    np.testing.assert_array_equal(scatter, before)


def test_structure_check_tells_the_models_apart():
    full = np.stack([np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])])
    tied = np.stack([full[0], full[0]])
    diag = np.stack([np.diag([2.0, 1.0]), np.diag([1.0, 3.0])])
    spherical = np.stack([2.0 * np.eye(2), 0.5 * np.eye(2)])
    expected = {  # which models each set of covariances follows
        "full": {"full"}, "tied": {"full", "tied"}, "diag": {"full", "diag"},
        "spherical": {"full", "diag", "spherical"}}
    for name, covs in [("full", full), ("tied", tied), ("diag", diag),
                       ("spherical", spherical)]:
        follows = {t for t in covariance.COVARIANCE_TYPES if covariance.has_structure(covs, t)}
        assert follows == expected[name], name


@pytest.mark.parametrize("K, d", [(1, 1), (3, 2), (4, 5)])
def test_covariance_parameter_counts_by_hand(K, d):
    by_hand = {"full": K * d * (d + 1) / 2,  # a symmetric d x d matrix per component
               "tied": d * (d + 1) / 2,  # one for all
               "diag": K * d,  # d variances per component
               "spherical": K}  # one variance per component
    for t, n in by_hand.items():
        assert covariance.n_covariance_parameters(K, d, t) == n


def test_to_sklearn_format_shapes():
    covs = np.stack([3.0 * np.eye(2), 2.0 * np.eye(2), np.eye(2)])
    shapes = {"full": (3, 2, 2), "tied": (2, 2), "diag": (3, 2), "spherical": (3,)}
    for t, shape in shapes.items():
        assert covariance.to_sklearn_format(covs, t).shape == shape
    np.testing.assert_array_equal(covariance.to_sklearn_format(covs, "spherical"), [3, 2, 1])


@pytest.mark.parametrize("bad", ["Full", "VVV", "", None, 3, ("full",)])
def test_an_unknown_covariance_type_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        covariance.check_covariance_type(bad)
    with pytest.raises(ValueError, match="covariance_type"):
        covariance.constrain_covariances(np.stack([np.eye(2)]), np.ones(1), bad, 0.0)


def test_public_helpers_name_bad_arguments():
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        covariance.n_covariance_parameters(-1, 2, "full")
    with pytest.raises(ValueError, match="n_features must be an integer"):
        covariance.n_covariance_parameters(2, "a", "full")
    with pytest.raises(ValueError, match=r"covariances must have shape \(K, d, d\)"):
        covariance.to_sklearn_format(np.eye(2), "diag")
