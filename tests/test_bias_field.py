"""Tests of ``emlab.imaging.bias_field`` through ``segment_image(..., bias_field=...)``: a known
polynomial field on a piecewise-constant volume is recovered up to a scale, with and without the
prior, in 2-D and 3-D; ``bias_field=False`` is today's fit exactly; bad inputs are refused."""

import numpy as np
import pytest

from emlab.imaging import bias_field, segmentation


def blocks(shape, seed=0, noise=0.02):
    """Three tissues (0.3, 0.6, 0.9) in tiles of 4 voxels (no smooth trend a field could
    take up), times a known degree-2 field, plus noise."""
    rng = np.random.default_rng(seed)
    truth = (sum(g // 4 for g in np.indices(shape)) % 3).astype(int)
    grid = np.indices(shape, dtype=float)
    u = [2 * g / (s - 1) - 1 for g, s in zip(grid, shape)]
    log_field = 0.15 * u[0] - 0.1 * u[-1] ** 2 + 0.08 * u[0] * u[-1]
    image = np.array([0.3, 0.6, 0.9])[truth] * np.exp(log_field)
    return image + rng.normal(0, noise, shape), truth, log_field


@pytest.mark.parametrize("shape, beta, method", [
    ((40, 44), 0.0, "soft"), ((40, 44), 0.5, "soft"), ((40, 44), 0.0, "hard"),
    ((40, 44), 0.5, "hard"), ((16, 18, 14), 0.0, "soft"), ((16, 18, 14), 0.3, "soft")])
def test_a_known_polynomial_field_is_recovered_up_to_a_scale(shape, beta, method):
    image, truth, log_field = blocks(shape)
    mask = np.ones(shape, dtype=bool)
    mask[:2] = False  # the field is 1 outside the mask
    labels, fit = segmentation.segment_image(image, mask, 3, method, beta=beta, bias_field=2)
    estimated = np.log(fit.bias_field[mask])
    true = log_field[mask] - log_field[mask].mean()
    assert np.abs(estimated - true).max() < 0.03
    assert np.corrcoef(estimated, true)[0, 1] > 0.99
    assert (fit.bias_field[~mask] == 1).all()
    np.testing.assert_allclose(fit.restored * fit.bias_field, image)
    assert (labels[mask] == truth[mask]).mean() > 0.99
    assert fit.n_field_updates >= 2


def test_without_the_field_the_polynomial_bias_costs_labels():
    image, truth, _ = blocks((40, 44), noise=0.05)
    plain, _ = segmentation.segment_image(image, n_components=3)
    corrected, _ = segmentation.segment_image(image, n_components=3, bias_field=True)
    assert (plain == truth).mean() < 0.97 and (corrected == truth).mean() > 0.99


@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_bias_field_false_is_todays_fit_exactly(beta):
    image, _, _ = blocks((30, 32), noise=0.05)
    labels, fit = segmentation.segment_image(image, beta=beta)
    again, other = segmentation.segment_image(image, beta=beta, bias_field=False,
                                              partial_volume=False)
    assert type(other) is type(fit)
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(fit.resp, other.resp)
    np.testing.assert_array_equal(fit.means, other.means)
    assert fit.n_iter == other.n_iter


def test_the_basis_is_the_legendre_products_of_total_degree_at_most_d():
    assert bias_field.exponents(2, 3).shape == (10, 2)
    assert bias_field.exponents(3, 3).shape == (20, 3)
    assert bias_field.exponents(3, 4).shape == (35, 3)
    mask = np.ones((5, 7), dtype=bool)
    basis = bias_field.PolynomialBasis.of(mask, 2)
    phi = basis.block(0, basis.size)
    u0 = np.repeat(np.linspace(-1, 1, 5), 7)
    u1 = np.tile(np.linspace(-1, 1, 7), 5)
    # P2(u) = (3u^2 - 1) / 2 along axis 1, P1 P1 the cross term
    columns = {tuple(e): phi[:, j] for j, e in enumerate(basis.powers)}
    np.testing.assert_allclose(columns[(0, 2)], (3 * u1 ** 2 - 1) / 2)
    np.testing.assert_allclose(columns[(1, 1)], u0 * u1)
    np.testing.assert_allclose(columns[(0, 0)], 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"bias_field": 0}, "bias_field must be True, False or a polynomial degree"),
    ({"bias_field": "yes"}, "bias_field must be True, False or a polynomial degree"),
    ({"bias_field": 9}, "bias_field must be True, False or a polynomial degree"),
])
def test_bad_bias_field_arguments_raise(kwargs, match):
    image, _, _ = blocks((20, 20))
    with pytest.raises(ValueError, match=match):
        segmentation.segment_image(image, **kwargs)


def test_a_mask_too_small_for_the_basis_and_non_positive_intensities_are_refused():
    image, _, _ = blocks((20, 20))
    mask = np.zeros(image.shape, dtype=bool)
    mask[:5, :10] = True  # 50 voxels, 10 functions at degree 3 need 100
    with pytest.raises(ValueError, match="needs at least 100 voxels in the mask, got 50"):
        segmentation.segment_image(image, mask, bias_field=True)
    shifted = image - 0.5
    with pytest.raises(ValueError, match="needs positive intensities inside the mask"):
        segmentation.segment_image(shifted, bias_field=True)


def test_a_field_update_that_lowers_the_objective_is_undone():
    """The safeguard: slabs (a smooth trend the field could take up) keep their labels, and a
    refit whose objective drops after the first update leaves no field at all."""
    from dataclasses import replace

    rng = np.random.default_rng(0)
    truth = (np.indices((40, 44))[1] * 3 // 44).astype(int)
    image = np.array([0.3, 0.6, 0.9])[truth] + rng.normal(0, 0.05, truth.shape)
    _, plain = segmentation.segment_image(image, n_components=3)
    labels, fit = segmentation.segment_image(image, n_components=3, bias_field=True)
    assert (labels == truth).mean() > 0.99 and fit.objective >= plain.objective
    calls = []

    def worse(corrected, start, iterations):
        calls.append(iterations)
        return replace(start, objective=start.objective - 1.0)

    mask = np.ones(image.shape, dtype=bool)
    result, log_field, n_updates, converged = bias_field.fit_with_field(
        image[mask], mask, 3, plain, worse, max_iter=7)
    assert n_updates == 0 and not converged and (log_field == 0).all()
    assert calls == [bias_field.INNER_ITERATIONS, 7]
