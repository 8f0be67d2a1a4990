"""Tests of ``emlab.dipy_hmrf``: the wrapper of dipy's HMRF classifier (format, seeding, checks)."""

import numpy as np
import pytest

from emlab import dipy_hmrf


def test_dipy_wrapper_format_and_determinism(t1_slice):
    from dipy.segment.tissue import TissueClassifierHMRF

    image, mask, _ = t1_slice
    before = image.copy()
    labels, info = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1, max_iter=20)
    assert labels.shape == image.shape
    assert (labels[~mask] == -1).all() and set(np.unique(labels[mask])) == {0, 1, 2}
    assert np.all(np.diff([image[labels == k].mean() for k in range(3)]) > 0)
    assert 1 <= info["n_iter"] <= 20 and info["n_background"] == 0
    again, _ = dipy_hmrf.segment_dipy_hmrf(image, mask, beta=0.1, max_iter=20)
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(image, before)
    # the wrapper only reformats: dipy called directly gives the same classes (shifted by 1)
    direct = TissueClassifierHMRF(verbose=False).classify(
        np.where(mask, image, 0.0)[:, :, None], 3, 0.1, max_iter=20)[1][:, :, 0]
    np.testing.assert_array_equal(labels[mask], direct[mask].astype(int) - 1)


def test_dipy_wrapper_rejects_non_positive_pixels(t1_slice):
    image, mask, _ = t1_slice
    shifted = image - 0.5
    with pytest.raises(ValueError, match="must be > 0 inside the mask"):
        dipy_hmrf.segment_dipy_hmrf(shifted, mask)
