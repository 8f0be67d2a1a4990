"""Tests of ``emlab.engine.scaling``: the power-of-two standardisation under which run_em fits."""

import numpy as np
import pytest
from synthetic import mixture

from emlab.engine.scaling import MAX_SPREAD, MIN_SPREAD, DataUnits


@pytest.mark.parametrize("factor", [1e-140, 1e-3, 1.0, 7.5, 1e140])
def test_scale_is_a_power_of_two_near_the_spread_and_z_is_of_order_one(factor):
    X = factor * mixture(1) + 3.0 * factor
    units = DataUnits.of(X, reg_covar=0.0)
    assert np.log2(units.scale) == np.round(np.log2(units.scale))
    Z = units.standardise(X)
    assert 0.5 <= Z.std() <= 2.0
    assert np.abs(Z.mean(axis=0)).max() <= 1.0
    assert MIN_SPREAD <= units.scale <= MAX_SPREAD


def test_missing_cells_are_ignored_and_counted_out_of_the_log_likelihood_shift():
    X = mixture(2)
    X[::7, 1] = np.nan
    units = DataUnits.of(X, reg_covar=1e-6)
    assert units.n_observed == np.count_nonzero(~np.isnan(X))
    assert np.isnan(units.standardise(X)[::7, 1]).all()
    np.testing.assert_allclose(units.objective(-10.0, "soft"),
                               -10.0 - units.n_observed * np.log(units.scale))
    np.testing.assert_allclose(units.objective(3.0, "hard"), 3.0 * units.scale ** 2)
    np.testing.assert_allclose(units.reg_covar, 1e-6 / units.scale ** 2)


def test_covariances_scale_by_the_square_and_none_stays_none():
    units = DataUnits.of(1e10 * mixture(3), reg_covar=0.0)
    covs = np.eye(2)[None] * 4.0
    np.testing.assert_allclose(units.standardise_covariances(covs), covs / units.scale ** 2)
    assert units.standardise_covariances(None) is None


def test_constant_data_keep_scale_of_their_magnitude():
    units = DataUnits.of(np.full((5, 2), 12.0), reg_covar=1e-6)  # no spread: no refusal
    assert units.scale == 8.0
    Z = units.standardise(np.full((5, 2), 12.0))
    assert np.all(Z == Z[0, 0]) and abs(Z[0, 0]) <= 0.5  # centre: a multiple of the scale


@pytest.mark.parametrize("X, reg, match", [
    (1e200 * mixture(4), 0.0, "would overflow float64"),
    (1e-200 * mixture(4), 0.0, "would underflow float64"),
    (1e-6 * mixture(4), 1e-6, "reg_covar=1e-06 is not small against the variance"),
])
def test_refusals_name_the_cause(X, reg, match):
    with pytest.raises(ValueError, match=match):
        DataUnits.of(X, reg)
