"""Tests of ``emlab.imaging.dipy_hmrf``: the wrapper of dipy's HMRF classifier (format, seeding, checks),
on the dipy slice and on a masked volume where dipy alone fails (NaN, every voxel -1)."""

import warnings

import numpy as np
import pytest

from emlab.imaging import dipy_hmrf


def masked_volume(seed=0, shape=(16, 18, 14), levels=(0.3, 0.55, 0.8), noise_sd=0.03):
    """A box of tissue (three levels: a low half, a high half, a ball) in exact zeros, like a
    brain-masked template: every tissue voxel is far from 0. Returns image, mask, truth."""
    grid = np.indices(shape)
    inside = np.zeros(shape, dtype=bool)
    inside[2:-2, 2:-2, 2:-2] = True
    truth = np.where(grid[0] >= shape[0] // 2, 2, 0)
    centre = np.array(shape)[:, None, None, None] / 2
    truth[((grid - centre) ** 2).sum(axis=0) < 16] = 1
    truth[~inside] = -1
    rng = np.random.default_rng(seed)
    tissue = np.asarray(levels)[np.maximum(truth, 0)] + rng.normal(0.0, noise_sd, shape)
    return np.where(inside, tissue, 0.0), inside, truth


def test_dipy_wrapper_format_and_determinism(t1_slice):
    from dipy.segment.tissue import TissueClassifierHMRF

    image, mask, _ = t1_slice
    before = image.copy()
    labels, info = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1, max_iter=20)
    assert labels.shape == image.shape
    assert (labels[~mask] == -1).all() and set(np.unique(labels[mask])) == {0, 1, 2}
    assert np.all(np.diff([image[labels == k].mean() for k in range(3)]) > 0)
    assert 1 <= info["n_iter"] <= 20 and info["n_background"] == 0
    assert info["floored_classes"] == []  # no variance floored: dipy ran unchanged
    again, _ = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1, max_iter=20)
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(image, before)
    # the wrapper only reformats: dipy called directly gives the same classes (shifted by 1)
    direct = TissueClassifierHMRF(verbose=False).classify(
        np.where(mask, image, 0.0)[:, :, None], 3, 0.1, max_iter=20)[1][:, :, 0]
    np.testing.assert_array_equal(labels[mask], direct[mask].astype(int) - 1)


def test_dipy_alone_fails_on_a_masked_volume_with_zero_background():
    """The failure a new user meets on the masked MNI152 template, on a small volume."""
    from dipy.segment.tissue import TissueClassifierHMRF

    image, _, _ = masked_volume()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, segmentation, pve = TissueClassifierHMRF(verbose=False).classify(image, 3, 0.1,
                                                                            max_iter=5)
    assert np.isnan(pve).all()
    assert (segmentation == -1).all()  # every voxel, tissue and background alike
    assert any("invalid value" in str(w.message) for w in caught)


def test_dipy_wrapper_fixes_the_masked_volume():
    image, mask, truth = masked_volume()
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN, no RuntimeWarning
        labels, info = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1)
    assert info["floored_classes"] == [0]  # the all-zero background had variance 0
    assert labels.shape == image.shape and (labels[~mask] == -1).all()
    np.testing.assert_array_equal(labels[mask], truth[mask])  # well separated: every voxel
    np.testing.assert_array_equal(image, before)
    again, _ = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1)
    np.testing.assert_array_equal(labels, again)
    cropped, _ = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1, crop=True)
    np.testing.assert_array_equal(cropped, labels)


def test_dipy_wrapper_takes_float32_and_a_noisy_volume():
    image, mask, truth = masked_volume(seed=1, noise_sd=0.08)
    labels, _ = dipy_hmrf.segment_dipy_hmrf(image.astype(np.float32), mask, beta=0.3, crop=True)
    assert (labels[mask] == truth[mask]).mean() > 0.9


def test_dipy_wrapper_rejects_non_positive_pixels(t1_slice):
    image, mask, _ = t1_slice
    shifted = image - 0.5
    with pytest.raises(ValueError, match="must be > 0 inside the mask"):
        dipy_hmrf.segment_dipy_hmrf(shifted, mask)


@pytest.mark.parametrize("kwargs, match", [
    ({"image": np.ones((3, 4, 5, 2))}, r"or a 3-D array \(X, Y, Z\)"),
    ({"mask": np.ones((16, 18), dtype=bool)}, r"mask must have the image's shape"),
    ({"mask": np.zeros((16, 18, 14), dtype=bool)}, "mask is empty"),
    ({"image": np.full((16, 18, 14), np.nan)}, "non-finite"),
    ({"crop": "yes"}, "crop must be True or False"),
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"tolerance": -1.0}, "tolerance must be a finite number >= 0"),
    ({"tolerance": "small"}, "tolerance must be a finite number >= 0"),
    ({"random_state": "abc"}, "random_state must be an integer"),
    ({"image": np.ones((16, 18, 14))}, "n_components=3 is more than the 1 distinct"),
])
def test_dipy_wrapper_bad_inputs(kwargs, match):
    image, mask, _ = masked_volume()
    call = {"image": image, "mask": mask} | kwargs
    with pytest.raises(ValueError, match=match):
        dipy_hmrf.segment_dipy_hmrf(**call)


def test_bounding_box_names_an_empty_mask_and_a_negative_margin():
    with pytest.raises(ValueError, match="inside selects no voxel"):
        dipy_hmrf.bounding_box(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="margin must be >= 0"):
        dipy_hmrf.bounding_box(np.ones((3, 3), dtype=bool), margin=-1)
