"""Tests of ``emlab.engine.validation``: every check names the argument and the problem, returns a new
array, and leaves the caller's array alone."""

import numpy as np
import pytest

from emlab.engine import validation


def test_check_points_returns_a_float_copy():
    X = np.array([[1, 2], [3, 4]])
    out = validation.check_points(X)
    assert out.dtype == float and out is not X
    out[0, 0] = 99.0
    assert X[0, 0] == 1


@pytest.mark.parametrize("X, match", [
    ("abc", "X must be a numeric array"),
    (None, "X must be a numeric array"),
    ([[1.0, "a"]], "X must be a numeric array"),
    (np.ones(3), r"shape \(N, d\)"),
    (np.ones((0, 2)), r"shape \(N, d\)"),
    ([[1.0, np.inf]], r"infinite value \(row 0, column 1\)"),
    ([[np.nan, 1.0], [np.nan, 2.0]], "column with every value missing"),
])
def test_check_points_refuses_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        validation.check_points(X)


def test_check_points_can_allow_an_empty_column():
    X = [[np.nan, 1.0], [np.nan, 2.0]]
    assert np.isnan(validation.check_points(X, allow_empty_columns=True)[:, 0]).all()


@pytest.mark.parametrize("call, match", [
    (lambda: validation.check_int(2.0, "n"), "n must be an integer"),
    (lambda: validation.check_int(True, "n"), "n must be an integer"),
    (lambda: validation.check_int(0, "n", minimum=1), "n must be >= 1"),
    (lambda: validation.check_means(np.ones((2, 3)), 2), r"means must have shape \(K, 2\)"),
    (lambda: validation.check_means([[np.nan, 0.0]], 2), "means must be finite"),
    (lambda: validation.check_covariances(np.ones((2, 2, 2)), 3, 2), r"shape \(3, 2, 2\)"),
    (lambda: validation.check_covariances([[[1.0, 0.5], [0.0, 1.0]]], 1, 2), "symmetric"),
    (lambda: validation.check_weights([0.5, 0.6], 2), "must sum to 1"),
    (lambda: validation.check_weights([1.5, -0.5], 2), "non-negative"),
    (lambda: validation.check_resp(np.ones((2, 3)), 3), "column 0 sums to 2"),
    (lambda: validation.check_resp(np.ones((2, 3)), 4), "N=4 points"),
    (lambda: validation.check_labels([0, 1], [0]), "same length"),
    (lambda: validation.check_labels([0, -1], [0, 1]), "y_true must hold non-negative"),
    (lambda: validation.check_beta(-1.0), "beta"),
    (lambda: validation.check_image(np.ones(3), None), "2-D array"),
    (lambda: validation.check_image(np.ones((2, 2)), np.ones((3, 3), bool)), "mask must have"),
    (lambda: validation.check_image(np.ones((2, 2)), np.zeros((2, 2), bool)), "mask is empty"),
    (lambda: validation.check_image([[np.nan, 1.0]], None), "non-finite pixel"),
])
def test_checks_name_the_argument_and_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_check_image_ignores_nan_outside_the_mask_and_copies():
    image = np.array([[np.nan, 1.0], [2.0, 3.0]])
    mask = np.array([[0, 1], [1, 1]])
    img, inside = validation.check_image(image, mask)
    assert inside.dtype == bool and inside.sum() == 3
    img[1, 1] = -1.0
    assert image[1, 1] == 3.0


def test_missing_patterns_group_rows_by_observed_coordinates():
    X = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, np.nan], [np.nan, np.nan]])
    groups = {tuple(obs): rows.tolist() for obs, rows in validation.missing_patterns(X)}
    assert groups == {(True, False): [0, 2], (True, True): [1], (False, False): [3]}


def test_cholesky_factors_and_names_a_covariance_that_is_not_positive_definite():
    covs = np.array([[[4.0, 2.0], [2.0, 3.0]], [[1.0, 2.0], [2.0, 1.0]]])
    L = validation.cholesky(covs[:1])
    np.testing.assert_allclose(L[0] @ L[0].T, covs[0])
    with pytest.raises(ValueError, match=r"covariances\[1\] is not positive definite"):
        validation.cholesky(covs)


def test_check_image_takes_a_volume_only_where_asked_and_names_a_bad_voxel():
    volume = np.ones((3, 4, 5))
    with pytest.raises(ValueError, match=r"must be a 2-D array \(H, W\) with every size"):
        validation.check_image(volume, None)
    img, inside = validation.check_image(volume, None, ndims=(2, 3))
    assert img.shape == inside.shape == (3, 4, 5)
    with pytest.raises(ValueError, match=r"2-D array \(H, W\) or a 3-D array \(X, Y, Z\)"):
        validation.check_image(np.ones((2, 2, 2, 2)), None, ndims=(2, 3))
    volume[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"first at voxel \(1, 2, 3\)"):
        validation.check_image(volume, None, ndims=(2, 3))


@pytest.mark.parametrize("d", [1, 2, 5, 62, 63, 70])
def test_missing_patterns_are_numpys_unique_masks_in_the_same_order(d):
    """The integer-coded grouping (d <= 62) and the fallback give the patterns and rows of
    np.unique(observed, axis=0), in its order (the M-step's sums run in that order)."""
    rng = np.random.default_rng(d)
    X = rng.normal(size=(3000, d))
    X[rng.random(X.shape) < 0.3] = np.nan
    patterns = validation.missing_patterns(X)
    expected, inverse = np.unique(~np.isnan(X), axis=0, return_inverse=True)
    assert len(patterns) == len(expected)
    for i, (observed, rows) in enumerate(patterns):
        np.testing.assert_array_equal(observed, expected[i])
        np.testing.assert_array_equal(rows, np.flatnonzero(inverse.ravel() == i))


def test_check_points_refuses_complex_values():
    with pytest.raises(ValueError, match="X must hold real numbers"):
        validation.check_points(np.ones((2, 2)) + 1j)


@pytest.mark.parametrize("value", [True, "1", None, -1.0, np.nan, np.inf])
def test_check_nonnegative_names_the_argument(value):
    with pytest.raises(ValueError, match="tol must be a non-negative number"):
        validation.check_nonnegative(value, "tol")


def test_check_density_names_the_first_row_of_zero_density():
    validation.check_density(np.array([-1e300, 0.0]))
    with pytest.raises(ValueError, match="X row 1 has zero density"):
        validation.check_density(np.array([0.0, -np.inf, np.nan]))


@pytest.mark.parametrize("check, args", [
    (validation.check_means, (2,)), (validation.check_covariances, (1, 2)),
    (validation.check_weights, (2,)), (validation.check_resp, (2,)),
])
def test_parameter_checks_name_the_argument_of_a_non_numeric_value(check, args):
    with pytest.raises(ValueError, match="theta must be a numeric array"):
        check("a", *args, name="theta")


@pytest.mark.parametrize("value", [0, 0.0, -1e-300, float("nan"), float("inf"), True,
                                   np.bool_(True), "1", None, [1.0], np.array([1.0, 2.0])])
def test_check_positive_names_the_argument(value):
    with pytest.raises(ValueError, match=r"^z must be a positive number"):
        validation.check_positive(value, "z")


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), np.int64(3), np.array(0.25)])
def test_check_positive_returns_a_float(value):
    out = validation.check_positive(value, "z")
    assert type(out) is float and out == float(value)
