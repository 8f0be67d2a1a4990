"""Tests of ``emlab.potts``: the neighbour table against scipy's convolution, colour sets that
hold no two neighbours, and sweeps that improve their objectives."""

import numpy as np
import pytest
from scipy import ndimage

from emlab import potts

KERNELS = {4: np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]),
           8: np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])}


def random_mask(seed, shape=(13, 17)):
    return np.random.default_rng(seed).random(shape) < 0.7


def padded(Q):
    """Append the zero column that stands for absent neighbours."""
    return np.hstack([Q, np.zeros((Q.shape[0], 1))])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_neighbour_sums_equal_a_convolution_inside_the_mask(connectivity):
    mask = random_mask(0)
    table = potts.neighbour_table(mask, connectivity)
    values = np.random.default_rng(1).random(mask.sum())
    sums = potts.neighbour_sums(padded(values[None]), table)[0]
    image = np.zeros(mask.shape)
    image[mask] = values
    expected = ndimage.convolve(image, KERNELS[connectivity], mode="constant")[mask]
    np.testing.assert_allclose(sums, expected, atol=1e-12)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_colour_sets_partition_the_pixels_and_hold_no_two_neighbours(connectivity):
    mask = random_mask(2)
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    together = np.sort(np.concatenate(colours))
    np.testing.assert_array_equal(together, np.arange(mask.sum()))
    for pixels in colours:
        member = np.zeros(mask.sum() + 1, dtype=bool)
        member[pixels] = True
        assert not member[table[:, pixels]].any()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_mean_field_sweeps_never_lower_the_free_energy(connectivity):
    rng = np.random.default_rng(3)
    mask = random_mask(3)
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    log_data = rng.normal(size=(3, mask.sum()))
    Q = padded(rng.dirichlet(np.ones(3), size=mask.sum()).T)
    values = [potts.mean_field_objective(Q, log_data, 0.8, table)]
    for _ in range(5):
        potts.mean_field_sweep(Q, log_data, 0.8, colours, table)
        values.append(potts.mean_field_objective(Q, log_data, 0.8, table))
    assert np.all(np.diff(values) >= -1e-9), values
    np.testing.assert_allclose(Q[:, :-1].sum(axis=0), 1.0)
    assert np.all(Q[:, -1] == 0)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_icm_sweeps_never_raise_the_energy_and_stay_one_hot(connectivity):
    rng = np.random.default_rng(4)
    mask = random_mask(4)
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    cost = rng.random((3, mask.sum()))
    Q = padded(np.eye(3)[:, rng.integers(0, 3, mask.sum())])
    values = [potts.icm_objective(Q, cost, 1.0, 0.7, table)]
    for _ in range(5):
        potts.icm_sweep(Q, cost, 0.7, colours, table)
        values.append(potts.icm_objective(Q, cost, 1.0, 0.7, table))
    assert np.all(np.diff(values) <= 1e-9), values
    assert set(np.unique(Q[:, :-1])) <= {0.0, 1.0}
    np.testing.assert_array_equal(Q[:, :-1].sum(axis=0), 1.0)


def test_icm_objective_counts_agreeing_pairs_once():
    mask = np.ones((1, 3), dtype=bool)  # three pixels in a row: two neighbour pairs
    table = potts.neighbour_table(mask, 4)
    Q = padded(np.eye(2)[:, [0, 0, 1]])  # one agreeing pair
    cost = np.zeros((2, 3))
    energy = potts.icm_objective(Q, cost, 1.0, 1.0, table)
    np.testing.assert_allclose(energy, 1.5 * np.log(2 * np.pi) - 1.0)


@pytest.mark.parametrize("bad", [3, 6, True, "4", None])
def test_connectivity_must_be_4_or_8(bad):
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        potts.check_connectivity(bad)
