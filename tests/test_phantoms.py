"""Tests of ``emlab.phantoms``: the implanted lesion paints exactly its ellipse, seeded noise."""

import numpy as np
import pytest

from emlab import phantoms


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
