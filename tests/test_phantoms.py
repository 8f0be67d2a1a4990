"""Tests of ``emlab.imaging.phantoms``: the implanted lesion paints exactly its ellipse, seeded noise."""

import numpy as np
import pytest

from emlab.imaging import phantoms


def test_implant_lesion_paints_exactly_the_ellipse():
    image = np.full((40, 50), 0.5)
    mask = np.ones_like(image, dtype=bool)
    before = image.copy()
    centre, (a, b), angle = (20.3, 24.6), (9.0, 4.0), 30.0
    out, truth = phantoms.implant_lesion(image, centre, (a, b), angle=angle, intensity=2.0,
                                         texture_sd=0.1, mask=mask, random_state=3)
    t = np.deg2rad(angle)
    brute = np.zeros_like(truth)
    for r in range(40):
        for c in range(50):
            u = (r - centre[0]) * np.cos(t) + (c - centre[1]) * np.sin(t)
            v = -(r - centre[0]) * np.sin(t) + (c - centre[1]) * np.cos(t)
            brute[r, c] = (u / a) ** 2 + (v / b) ** 2 <= 1
    np.testing.assert_array_equal(truth, brute)
    assert abs(truth.sum() - np.pi * a * b) < 0.1 * np.pi * a * b
    np.testing.assert_array_equal(out[~truth], before[~truth])
    assert abs(out[truth].mean() - 2.0) < 0.05 and 0.05 < out[truth].std() < 0.15
    np.testing.assert_array_equal(image, before)
    again, _ = phantoms.implant_lesion(image, centre, (a, b), angle=angle, intensity=2.0,
                                       texture_sd=0.1, mask=mask, random_state=3)
    np.testing.assert_array_equal(out, again)


def test_implant_lesion_bad_inputs():
    image = np.ones((20, 20))
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    with pytest.raises(ValueError, match="leaves the mask"):
        phantoms.implant_lesion(image, (10, 10), (8, 3), mask=mask)
    with pytest.raises(ValueError, match="semi_axes must be positive"):
        phantoms.implant_lesion(image, (10, 10), (0, 3))
    with pytest.raises(ValueError, match="center must lie inside"):
        phantoms.implant_lesion(image, (30, 10), (2, 3))
    with pytest.raises(ValueError, match="texture_sd must be >= 0"):
        phantoms.implant_lesion(image, (10, 10), (2, 3), texture_sd=-1.0)


def test_add_gaussian_noise():
    image = np.full((200, 200), 0.5)
    mask = np.zeros_like(image, dtype=bool)
    mask[20:180, 10:190] = True
    noisy = phantoms.add_gaussian_noise(image, 0.1, mask, random_state=4)
    np.testing.assert_array_equal(noisy[~mask], image[~mask])
    assert abs((noisy[mask] - 0.5).std() - 0.1) < 0.005
    assert abs((noisy[mask] - 0.5).mean()) < 0.005
    np.testing.assert_array_equal(noisy, phantoms.add_gaussian_noise(image, 0.1, mask, random_state=4))
    assert (image == 0.5).all()
    magnitude = phantoms.add_gaussian_noise(np.zeros((50, 50)), 1.0, magnitude=True)
    assert (magnitude >= 0).all() and magnitude.mean() > 0.5  # E|N(0, 1)| = 0.80
    with pytest.raises(ValueError, match="sigma must be"):
        phantoms.add_gaussian_noise(image, -1.0)


AFFINE = np.array([[2.0, 0, 0, -40.0], [0, 1.0, 0, 25.0], [0, 0, 1.5, -12.0], [0, 0, 0, 1]])


def brute_force_ellipsoid(shape, centre, semi, rotation, affine):
    truth = np.zeros(shape, dtype=bool)
    for idx in np.ndindex(*shape):
        d = affine[:3, :3] @ (np.array(idx) - centre)  # mm from the centre
        u = rotation.T @ d  # in the ellipsoid's axes
        truth[idx] = ((u / semi) ** 2).sum() <= 1
    return truth


def test_implant_lesion_3d_paints_the_ellipsoid_in_millimetres():
    from scipy.spatial.transform import Rotation

    image = np.full((24, 40, 30), 0.5)
    before = image.copy()
    centre, semi, angles = np.array([11.3, 19.6, 14.2]), np.array([12.0, 7.0, 9.0]), (20, -35, 50)
    out, truth = phantoms.implant_lesion(image, centre, semi, angle=angles, intensity=2.0,
                                         texture_sd=0.1, affine=AFFINE, random_state=3)
    R = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    np.testing.assert_array_equal(truth, brute_force_ellipsoid(image.shape, centre, semi, R,
                                                               AFFINE))
    analytic_mm3 = 4 / 3 * np.pi * semi.prod()
    assert abs(truth.sum() * 3.0 - analytic_mm3) < 0.02 * analytic_mm3
    np.testing.assert_allclose(np.argwhere(truth).mean(axis=0), centre, atol=0.1)
    np.testing.assert_array_equal(out[~truth], before[~truth])
    assert abs(out[truth].mean() - 2.0) < 0.02 and 0.08 < out[truth].std() < 0.12
    np.testing.assert_array_equal(image, before)
    # a single angle turns about z; no affine means 1 mm voxels
    _, about_z = phantoms.implant_lesion(image, centre, semi, angle=30.0)
    Rz = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    np.testing.assert_array_equal(about_z, brute_force_ellipsoid(image.shape, centre, semi, Rz,
                                                                 np.eye(4)))


def test_implant_lesion_3d_bad_inputs():
    image = np.ones((10, 10, 10))
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:8, 2:8, 2:8] = True
    with pytest.raises(ValueError, match="center must be 3 finite numbers"):
        phantoms.implant_lesion(image, (5, 5), (2, 2, 2))
    with pytest.raises(ValueError, match="leaves the mask"):
        phantoms.implant_lesion(image, (5, 5, 5), (4, 2, 2), mask=mask)
    with pytest.raises(ValueError, match="affine is singular"):
        phantoms.implant_lesion(image, (5, 5, 5), (2, 2, 2), affine=np.diag([1.0, 0, 1, 1]))
    with pytest.raises(ValueError, match="affine must be a 4 x 4"):
        phantoms.implant_lesion(image, (5, 5, 5), (2, 2, 2), affine=np.eye(3))
    with pytest.raises(ValueError, match="angle must be a finite number or three"):
        phantoms.implant_lesion(image, (5, 5, 5), (2, 2, 2), angle=(1, 2))
    with pytest.raises(ValueError, match="image must be a 2-D array"):
        phantoms.implant_lesion(np.ones((3, 3, 3, 3)), (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="non-finite"):
        bad = image.copy()
        bad[5, 5, 5] = np.nan
        phantoms.implant_lesion(bad, (5, 5, 5), (2, 2, 2), mask=mask)
    with pytest.raises(ValueError, match="mask must have the image's shape"):
        phantoms.implant_lesion(image, (5, 5, 5), (2, 2, 2), mask=mask[:9])
    with pytest.raises(ValueError, match="mask is empty"):
        phantoms.implant_lesion(image, (5, 5, 5), (2, 2, 2), mask=np.zeros_like(mask))
    with pytest.raises(ValueError, match="affine is for a 3-D image"):
        phantoms.implant_lesion(np.ones((10, 10)), (5, 5), (2, 2), affine=np.eye(4))


def test_add_gaussian_noise_in_3d_only_inside_the_mask():
    image = np.full((20, 20, 20), 0.5)
    mask = np.zeros(image.shape, dtype=bool)
    mask[5:15] = True
    noisy = phantoms.add_gaussian_noise(image, 0.1, mask, random_state=2)
    np.testing.assert_array_equal(noisy[~mask], image[~mask])
    assert abs(noisy[mask].std() - 0.1) < 0.005
    assert (image == 0.5).all()


def test_smooth_field_spans_the_requested_inu():
    mask = np.zeros((20, 24, 18), dtype=bool)
    mask[2:18, 3:21, 2:16] = True
    for inu in (0.2, 0.4):
        field = phantoms.smooth_field(mask, inu, random_state=3)
        assert field[mask].min() == pytest.approx(1 - inu / 2)
        assert field[mask].max() == pytest.approx(1 + inu / 2)
        assert (field[~mask] == 1).all()
        # smooth: neighbouring voxels differ by a small part of the span
        assert np.abs(np.diff(field, axis=0)[mask[1:] & mask[:-1]]).max() < inu / 4
    np.testing.assert_array_equal(phantoms.smooth_field(mask, 0.0), np.ones(mask.shape))
    with pytest.raises(ValueError, match="inu must be in"):
        phantoms.smooth_field(mask, 2.5)


def test_brainweb_phantom_mixes_the_fractions_and_adds_rician_noise():
    rng = np.random.default_rng(0)
    mask = np.zeros((24, 26, 20), dtype=bool)
    mask[2:22, 2:24, 2:18] = True
    P = rng.dirichlet([1, 1, 1], size=mask.shape).transpose(3, 0, 1, 2)
    clean = phantoms.brainweb_phantom(P, mask, inu=0.0, noise=0.0)
    np.testing.assert_allclose(clean.image[mask],
                               np.array([0.30, 0.62, 0.88]) @ P[:, mask])
    assert (clean.image[~mask] == 0).all()
    np.testing.assert_array_equal(clean.labels[mask], P[:, mask].argmax(axis=0))
    assert (clean.labels[~mask] == -1).all()
    np.testing.assert_allclose(clean.fractions.sum(axis=0), 1.0)
    biased = phantoms.brainweb_phantom(P, mask, inu=0.4, noise=0.0, random_state=1)
    np.testing.assert_allclose(biased.image[mask], clean.image[mask] * biased.field[mask])
    assert biased.field[mask].min() == pytest.approx(0.8)
    assert biased.field[mask].max() == pytest.approx(1.2)
    noisy = phantoms.brainweb_phantom(P, mask, inu=0.0, noise=0.05, random_state=1)
    assert noisy.noise_sd == pytest.approx(0.05 * 0.88)
    residual = noisy.image[mask] - clean.image[mask]
    assert abs(residual.std() - 0.044) < 0.004 and (noisy.image[mask] >= 0).all()
    again = phantoms.brainweb_phantom(P, mask, inu=0.0, noise=0.05, random_state=1)
    np.testing.assert_array_equal(noisy.image, again.image)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        phantoms.brainweb_phantom(P, mask, noise=-0.1)
    with pytest.raises(ValueError, match="probabilities must have shape"):
        phantoms.brainweb_phantom(P[0, 0], mask[0])


def test_brainweb_phantom_refuses_what_would_make_its_image_non_finite():
    mask = np.ones((4, 5, 3), dtype=bool)
    P = np.full((3, *mask.shape), 1 / 3)
    P[1, 0, 0, 0] = np.nan  # once a NaN voxel in the image, silently
    with pytest.raises(ValueError, match=r"probabilities\[1\] has 1 non-finite value"):
        phantoms.brainweb_phantom(P, mask)
    with pytest.raises(ValueError, match="probabilities must have shape .* with K >= 1"):
        phantoms.brainweb_phantom(np.ones((0, *mask.shape)), mask)
    with pytest.raises(ValueError, match="probabilities must have shape"):
        phantoms.brainweb_phantom("abc", mask)
    with pytest.raises(ValueError, match="intensities must be >= 0"):
        phantoms.brainweb_phantom(np.full((3, *mask.shape), 1 / 3), mask,
                                  intensities=(-0.3, -0.6, -0.9))


@pytest.mark.parametrize("call", [
    lambda rs: phantoms.implant_lesion(np.ones((9, 9)), (4, 4), (2, 2), random_state=rs),
    lambda rs: phantoms.add_gaussian_noise(np.ones((9, 9)), 0.1, random_state=rs),
    lambda rs: phantoms.smooth_field(np.ones((9, 9), dtype=bool), 0.4, random_state=rs),
    lambda rs: phantoms.brainweb_phantom(np.full((3, 4, 4), 1 / 3), np.ones((4, 4), bool),
                                         random_state=rs),
])
@pytest.mark.parametrize("seed, match", [("abc", "random_state must be an integer"),
                                         (1.5, "random_state must be an integer"),
                                         (-1, "random_state must be >= 0")])
def test_phantoms_name_a_bad_random_state(call, seed, match):
    with pytest.raises(ValueError, match=match):
        call(seed)


def test_smooth_field_and_noise_check_their_options():
    with pytest.raises(ValueError, match="mask must hold booleans"):
        phantoms.smooth_field(np.full((5, 5), 0.5), 0.4)
    with pytest.raises(ValueError, match="mask must be a 2-D array"):
        phantoms.smooth_field("abc", 0.4)
    with pytest.raises(ValueError, match="spacing must be 2 positive finite numbers"):
        phantoms.smooth_field(np.ones((5, 5), dtype=bool), 0.4, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="magnitude must be True or False"):
        phantoms.add_gaussian_noise(np.ones((5, 5)), 0.1, magnitude="no")
