"""Tests of ``emlab.imaging.potts``: the neighbour table against scipy's convolution (2-D and 3-D,
weighted or not), colour sets that hold no two neighbours, and sweeps that improve their
objectives."""

import numpy as np
import pytest
from scipy import ndimage, optimize
from scipy.special import logsumexp

import potts_reference
from emlab.imaging import potts


def kernel(connectivity):
    """The neighbourhood as a 0/1 convolution kernel (scipy's binary structures)."""
    ndim = 2 if connectivity in (4, 8) else 3
    full = connectivity in (8, 26)
    k = ndimage.generate_binary_structure(ndim, ndim if full else 1).astype(float)
    k[(1,) * ndim] = 0.0
    return k


SHAPES = {4: (13, 17), 8: (13, 17), 6: (7, 9, 8), 26: (7, 9, 8)}
CONNECTIVITIES = [4, 8, 6, 26]


def random_mask(seed, shape=(13, 17)):
    return np.random.default_rng(seed).random(shape) < 0.7


def padded(Q):
    """Append the zero column that stands for absent neighbours."""
    return np.hstack([Q, np.zeros((Q.shape[0], 1))])


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_neighbour_sums_equal_a_convolution_inside_the_mask(connectivity):
    mask = random_mask(0, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    assert table.shape == (connectivity, mask.sum())
    values = np.random.default_rng(1).random(mask.sum())
    sums = potts_reference.neighbour_sums(padded(values[None]), table)[0]
    image = np.zeros(mask.shape)
    image[mask] = values
    expected = ndimage.convolve(image, kernel(connectivity), mode="constant")[mask]
    np.testing.assert_allclose(sums, expected, atol=1e-12)


@pytest.mark.parametrize("connectivity", [6, 26])
def test_weighted_neighbour_sums_equal_a_convolution_with_inverse_distances(connectivity):
    spacing = np.array([1.0, 2.0, 3.5])
    mask = random_mask(5, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    weights = potts.neighbour_weights(connectivity, spacing)
    values = np.random.default_rng(6).random(mask.sum())
    sums = potts_reference.neighbour_sums(padded(values[None]), table, weights=weights)[0]
    grid = np.indices((3, 3, 3)).transpose(1, 2, 3, 0) - 1  # offsets of the 3 x 3 x 3 kernel
    distance = np.linalg.norm(grid * spacing, axis=-1)
    distance[1, 1, 1] = 1.0  # the centre, not a neighbour (its kernel entry is 0)
    weighted = kernel(connectivity) * spacing.min() * np.linalg.norm(grid, axis=-1) / distance
    assert np.isfinite(weighted).all() and weighted[1, 1, 1] == 0
    image = np.zeros(mask.shape)
    image[mask] = values
    expected = ndimage.correlate(image, weighted, mode="constant")[mask]
    np.testing.assert_allclose(sums, expected, atol=1e-12)


def test_neighbour_weights():
    assert potts.neighbour_weights(6, (2.0, 2.0, 2.0)) is None  # isotropic: unweighted
    assert potts.neighbour_weights(26, (0.7, 0.7, 0.7)) is None
    assert potts.neighbour_weights(8, (1.0, 1.0)) is None
    np.testing.assert_allclose(potts.neighbour_weights(6, (1.0, 1.0, 3.0)),
                               [1, 1, 1, 1, 1 / 3, 1 / 3])
    np.testing.assert_allclose(potts.neighbour_weights(4, (2.0, 1.0)), [0.5, 0.5, 1, 1])


def test_neighbour_offsets_keep_the_2d_order():
    np.testing.assert_array_equal(potts.neighbour_offsets(2, 4), [(-1, 0), (1, 0), (0, -1), (0, 1)])
    np.testing.assert_array_equal(potts.neighbour_offsets(2, 8)[4:],
                                  [(-1, -1), (-1, 1), (1, -1), (1, 1)])
    six = potts.neighbour_offsets(3, 6)
    np.testing.assert_array_equal(six[:4, :2], potts.neighbour_offsets(2, 4))
    assert len({tuple(o) for o in potts.neighbour_offsets(3, 26)}) == 26


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_colour_sets_partition_the_pixels_and_hold_no_two_neighbours(connectivity):
    mask = random_mask(2, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    together = np.sort(np.concatenate(colours))
    np.testing.assert_array_equal(together, np.arange(mask.sum()))
    for pixels in colours:
        member = np.zeros(mask.sum() + 1, dtype=bool)
        member[pixels] = True
        assert not member[table[:, pixels]].any()


@pytest.mark.parametrize("connectivity, spacing", [(4, None), (8, None), (6, None),
                                                    (26, None), (6, (1.0, 1.0, 3.0)),
                                                    (26, (0.5, 1.0, 2.0))])
def test_mean_field_sweeps_never_lower_the_free_energy(connectivity, spacing):
    rng = np.random.default_rng(3)
    mask = random_mask(3, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    weights = None if spacing is None else potts.neighbour_weights(connectivity, spacing)
    log_data = rng.normal(size=(3, mask.sum()))
    Q = padded(rng.dirichlet(np.ones(3), size=mask.sum()).T)
    values = [potts_reference.mean_field_objective(Q, log_data, 0.8, table, weights)]
    for _ in range(5):
        potts_reference.mean_field_sweep(Q, log_data, 0.8, colours, table, weights)
        values.append(potts_reference.mean_field_objective(Q, log_data, 0.8, table, weights))
    assert np.all(np.diff(values) >= -1e-9), values
    np.testing.assert_allclose(Q[:, :-1].sum(axis=0), 1.0)
    assert np.all(Q[:, -1] == 0)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_icm_sweeps_never_raise_the_energy_and_stay_one_hot(connectivity):
    rng = np.random.default_rng(4)
    mask = random_mask(4, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    cost = rng.random((3, mask.sum()))
    Q = padded(np.eye(3)[:, rng.integers(0, 3, mask.sum())])
    values = [potts_reference.icm_objective(Q, cost, 1.0, 0.7, table)]
    for _ in range(5):
        potts_reference.icm_sweep(Q, cost, 0.7, colours, table)
        values.append(potts_reference.icm_objective(Q, cost, 1.0, 0.7, table))
    assert np.all(np.diff(values) <= 1e-9), values
    assert set(np.unique(Q[:, :-1])) <= {0.0, 1.0}
    np.testing.assert_array_equal(Q[:, :-1].sum(axis=0), 1.0)


def test_icm_objective_counts_agreeing_pairs_once():
    mask = np.ones((1, 3), dtype=bool)  # three pixels in a row: two neighbour pairs
    table = potts.neighbour_table(mask, 4)
    Q = padded(np.eye(2)[:, [0, 0, 1]])  # one agreeing pair
    cost = np.zeros((2, 3))
    energy = potts_reference.icm_objective(Q, cost, 1.0, 1.0, table)
    np.testing.assert_allclose(energy, 1.5 * np.log(2 * np.pi) - 1.0)


@pytest.mark.parametrize("bad", [3, 6, 26, True, "4", None])
def test_connectivity_must_be_4_or_8_in_2d(bad):
    with pytest.raises(ValueError, match="connectivity must be 4 or 8 for a 2-D image"):
        potts.check_connectivity(bad)


@pytest.mark.parametrize("bad", [4, 8, 27, True, "6", None])
def test_connectivity_must_be_6_or_26_in_3d(bad):
    with pytest.raises(ValueError, match="connectivity must be 6 or 26 for a 3-D image"):
        potts.check_connectivity(bad, ndim=3)


# the last two are large enough for the gathers one class row at a time (colours >= 2^15)
@pytest.mark.parametrize("connectivity, spacing, shape", [
    (4, None, None), (8, None, None), (6, None, None), (26, None, None),
    (6, (1.0, 1.0, 3.0), None), (26, (0.5, 1.0, 2.0), None),
    (6, (1.0, 1.0, 3.0), (50, 50, 40)), (26, (0.5, 1.0, 2.0), (80, 80, 60))])
def test_coloured_sweeps_give_the_same_numbers_as_the_plain_ones(connectivity, spacing, shape):
    from scipy.special import xlogy

    rng = np.random.default_rng(7)
    mask = random_mask(8, shape or SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    weights = None if spacing is None else potts.neighbour_weights(connectivity, spacing)
    layout = potts.ColouredNeighbours.of(mask, connectivity, spacing)
    np.testing.assert_array_equal(np.sort(layout.order), np.arange(mask.sum()))
    np.testing.assert_array_equal(layout.order[layout.inverse], np.arange(mask.sum()))
    log_data = rng.normal(size=(3, mask.sum()))
    inner_log_data = layout.to_inner(log_data)
    Q = padded(rng.dirichlet(np.ones(3), size=mask.sum()).T)
    inner = padded(layout.to_inner(Q[:, :-1]))
    work = {}
    for _ in range(2 if shape else 3):
        before = Q.copy()
        potts_reference.mean_field_sweep(Q, log_data, 0.8, colours, table, weights)
        change, pairs, entropy = potts.coloured_mean_field_sweep(inner, inner_log_data, 0.8,
                                                                 layout, work)
        np.testing.assert_array_equal(layout.to_mask_order(inner), Q[:, :-1])
        assert change == np.abs(Q - before).max()
        np.testing.assert_allclose(entropy, xlogy(Q, Q).sum(), rtol=1e-10)
        expected = potts_reference.mean_field_objective(Q, log_data, 0.8, table, weights)
        for known in ((pairs, entropy), (None, None)):
            got = potts.coloured_mean_field_objective(inner, inner_log_data, 0.8, layout, *known)
            np.testing.assert_allclose(got, expected, rtol=1e-10)
        assert (pairs is not None) == (connectivity in (4, 6))
        if pairs is not None:
            np.testing.assert_allclose(pairs, potts.coloured_pairs(inner, layout), rtol=1e-12)


@pytest.mark.parametrize("connectivity", CONNECTIVITIES)
def test_coloured_icm_sweep_gives_the_same_labels_as_the_plain_one(connectivity):
    rng = np.random.default_rng(9)
    mask = random_mask(10, SHAPES[connectivity])
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    layout = potts.ColouredNeighbours.of(mask, connectivity)
    cost = rng.random((3, mask.sum()))
    Q = padded(np.eye(3)[:, rng.integers(0, 3, mask.sum())])
    inner = padded(layout.to_inner(Q[:, :-1]))
    for _ in range(3):
        before = Q.copy()
        potts_reference.icm_sweep(Q, cost, 0.7, colours, table)
        changed, pairs, _ = potts.coloured_icm_sweep(inner, layout.to_inner(cost), 0.7, layout)
        np.testing.assert_array_equal(layout.to_mask_order(inner), Q[:, :-1])
        assert changed == float(not np.array_equal(Q, before))
        np.testing.assert_allclose(
            potts.coloured_icm_objective(inner, layout.to_inner(cost), 1.0, 0.7, layout, pairs),
            potts_reference.icm_objective(Q, cost, 1.0, 0.7, table), rtol=1e-12)


@pytest.mark.parametrize("connectivity, spacing", [(4, None), (8, None), (6, None),
                                                    (26, (0.5, 1.0, 2.0))])
def test_mean_neighbours_is_the_mean_of_the_convolved_mask(connectivity, spacing):
    """``z``: each pixel's summed neighbour weights inside the mask, averaged over the mask
    (scipy's convolution of the mask with the weighted kernel)."""
    mask = random_mask(5, SHAPES[connectivity])
    weights = None if spacing is None else potts.neighbour_weights(connectivity, spacing)
    k = kernel(connectivity)
    if weights is not None:
        for offset, w in zip(potts.neighbour_offsets(mask.ndim, connectivity), weights):
            k[tuple(1 - offset)] = w  # convolution flips the kernel (symmetric weights anyway)
    expected = ndimage.convolve(mask.astype(float), k, mode="constant", cval=0.0)[mask].mean()
    layout = potts.ColouredNeighbours.of(mask, connectivity, spacing)
    assert layout.mean_neighbours() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pi", [(0.1, 0.6, 0.3), (0.05, 0.15, 0.8), (0.2, 0.3, 0.5)])
def test_homogeneous_field_gives_the_prior_its_proportions(pi):
    """Mean-field sweeps of the prior alone (no data) on a 3-D lattice: in the interior (6
    neighbours each) the marginals settle at ``pi`` with ``homogeneous_field(pi, 6 beta)``;
    with the field ``ln pi`` the largest class gets more than its share, with no field every
    class gets ``1 / K``."""
    beta, shape = 0.3, (16, 16, 16)
    mask = np.ones(shape, dtype=bool)
    layout = potts.ColouredNeighbours.of(mask, 6)
    inner = np.zeros(shape, dtype=bool)
    inner[5:-5, 5:-5, 5:-5] = True  # far from the faces, where voxels have fewer neighbours
    inner = layout.to_inner(inner[mask][None, :].astype(float))[0] > 0
    pi = np.array(pi)

    def settled(alpha):
        Q = padded(np.full((3, mask.sum()), 1 / 3))
        log_data = np.repeat(np.asarray(alpha, dtype=float)[:, None], mask.sum(), axis=1)
        for _ in range(300):
            if potts.coloured_mean_field_sweep(Q, log_data, beta, layout).change < 1e-12:
                break
        return Q[:, :-1][:, inner].mean(axis=1)

    field = potts.homogeneous_field(pi, 6 * beta)
    np.testing.assert_allclose(settled(field), pi, atol=2e-3)  # the faces' pull fades inwards
    np.testing.assert_allclose(potts.homogeneous_marginals(field, 6 * beta), pi, atol=1e-10)
    np.testing.assert_allclose(settled(np.zeros(3)), 1 / 3, atol=1e-9)  # no field: 1 / K
    naive = settled(np.log(pi))
    assert naive[np.argmax(pi)] > pi.max() + 0.02
    np.testing.assert_allclose(potts.homogeneous_marginals(np.log(pi), 6 * beta), naive,
                               atol=2e-3)


def test_homogeneous_marginals_checks_its_inputs():
    for field, coupling in (([0.0, np.nan], 1.0), ([0.0, 1.0], 2.0), ([0.0, 1.0], -0.1)):
        with pytest.raises(ValueError, match="field must be finite and coupling in"):
            potts.homogeneous_marginals(field, coupling)


@pytest.mark.parametrize("seed", [0, 1])
def test_pseudo_likelihood_field_matches_scipy_and_gives_its_shares(seed):
    """The field whose conditionals ``softmax(alpha + beta s_n)`` average to ``shares``: the same
    maximiser as scipy's BFGS on the pseudo-likelihood, and the summed log normalisers."""
    rng = np.random.default_rng(seed)
    beta, shares = 0.4, np.array([0.15, 0.55, 0.3])
    sums = rng.dirichlet(np.ones(3), size=2000).T * rng.integers(0, 7, size=2000)
    alpha, log_normalisers = potts.pseudo_likelihood_field(sums, beta, shares)
    logits = alpha[:, None] + beta * sums
    conditionals = np.exp(logits - logsumexp(logits, axis=0))
    np.testing.assert_allclose(conditionals.mean(axis=1), shares, atol=1e-9)
    assert log_normalisers == pytest.approx(logsumexp(logits, axis=0).sum(), rel=1e-12)

    def minus(free):
        a = np.r_[0.0, free]
        return -(sums.shape[1] * shares @ a - logsumexp(a[:, None] + beta * sums, axis=0).sum())

    found = optimize.minimize(minus, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(alpha, np.r_[0.0, found], atol=1e-5)
    one_step, _ = potts.pseudo_likelihood_field(sums, beta, shares, field=alpha, max_iter=1)
    np.testing.assert_allclose(one_step, alpha, atol=1e-12)  # the solution is its fixed point


def test_coloured_neighbour_sums_equal_a_convolution():
    mask = random_mask(7, SHAPES[6])
    layout = potts.ColouredNeighbours.of(mask, 6)
    R = np.random.default_rng(7).dirichlet(np.ones(3), size=mask.sum()).T
    Q = padded(layout.to_inner(R))
    sums = layout.to_mask_order(padded(potts.coloured_neighbour_sums(Q, layout)))
    for k in range(3):
        grid = np.zeros(mask.shape)
        grid[mask] = R[k]
        expected = ndimage.convolve(grid, kernel(6), mode="constant", cval=0.0)[mask]
        np.testing.assert_allclose(sums[k], expected, atol=1e-12)


def test_pseudo_likelihood_field_survives_one_hot_conditionals():
    """A strong prior (beta 100, every neighbourhood unanimous) makes each conditional one-hot
    and the Newton Hessian exactly 0: a gradient step instead of a LinAlgError, the objective
    no lower than at its start, and the log normalisers still those of the field returned."""
    rng = np.random.default_rng(0)
    sums = 4.0 * np.eye(3)[rng.integers(0, 3, size=500)].T
    beta, shares = 100.0, np.array([0.2, 0.5, 0.3])

    def objective(a):
        return sums.shape[1] * shares @ a - logsumexp(a[:, None] + beta * sums, axis=0).sum()

    alpha, log_normalisers = potts.pseudo_likelihood_field(sums, beta, shares)
    assert np.all(np.isfinite(alpha)) and alpha[0] == 0.0
    start = np.log(shares) - np.log(shares[0])
    assert objective(alpha) >= objective(start)
    assert log_normalisers == pytest.approx(
        logsumexp(alpha[:, None] + beta * sums, axis=0).sum(), rel=1e-12)
