"""Tests of ``emlab.imaging.mni152``: the MNI152 arrays match nilearn's files, are our own copies,
and the reference maps follow the statement's rule (CSF = brain - GM - WM, clipped at 0)."""

import numpy as np
import pytest
from nilearn import datasets

from emlab.imaging import mni152


@pytest.fixture(scope="module")
def mni2():
    return mni152.load_mni152(resolution=2)


def test_the_2mm_template_is_nilearns(mni2):
    t1 = datasets.load_mni152_template(resolution=2)
    assert mni2.image.shape == (99, 117, 95) == t1.shape
    np.testing.assert_allclose(mni2.image, t1.get_fdata())
    np.testing.assert_allclose(mni2.affine, t1.affine)
    assert mni2.mask.dtype == bool and int(mni2.mask.sum()) == 235_375
    np.testing.assert_array_equal(
        mni2.mask, datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    np.testing.assert_allclose(mni2.probabilities[1][mni2.mask], np.clip(gm[mni2.mask], 0, 1))


def test_reference_maps_follow_the_rule(mni2):
    csf, gm, wm = mni2.probabilities
    assert (mni2.probabilities >= 0).all() and (mni2.probabilities[:, ~mni2.mask] == 0).all()
    np.testing.assert_allclose(csf[mni2.mask], np.clip(1 - gm - wm, 0, None)[mni2.mask])
    labels = mni152.reference_labels(mni2.probabilities, mni2.mask)
    assert (labels[~mni2.mask] == -1).all()
    np.testing.assert_array_equal(labels[mni2.mask],
                                  np.argmax(mni2.probabilities[:, mni2.mask], axis=0))
    volumes = mni152.reference_volumes_ml(mni2.probabilities, mni2.mask, mni2.affine)
    np.testing.assert_allclose(volumes, mni2.probabilities[:, mni2.mask].sum(axis=1) * 8 / 1000)


def test_our_arrays_are_copies_of_nilearns_cached_images(mni2):
    saved = mni2.image.copy(), mni2.mask.copy()
    try:  # nilearn hands out the same cached image at every call: ours must be copies
        mni2.image[:] = -5.0
        mni2.mask[:] = False
        cached = datasets.load_mni152_template(resolution=2)
        assert cached.get_fdata().min() >= -1e-6  # (its resampling leaves -0.0 values)
        mask = datasets.load_mni152_brain_mask(resolution=2).get_fdata()
        assert int((mask > 0).sum()) == 235_375
    finally:
        mni2.image[:], mni2.mask[:] = saved


def test_bad_arguments():
    with pytest.raises(ValueError, match="resolution must be 1 or 2"):
        mni152.load_mni152(resolution=3)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(K, X, Y, Z\)"):
        mni152.reference_volumes_ml(np.ones((3, 4, 4)), np.ones((3, 4, 4), bool), np.eye(4))
    with pytest.raises(ValueError, match=r"probabilities must have shape \(K, X, Y, Z\)"):
        mni152.reference_labels(np.ones((3, 4, 4)), np.ones((3, 4, 4), bool))
    with pytest.raises(ValueError, match="mask is empty"):
        mni152.reference_labels(np.ones((3, 2, 2, 2)), np.zeros((2, 2, 2), bool))


@pytest.mark.parametrize("function", ["reference_labels", "reference_volumes_ml"])
def test_reference_maps_refuse_non_finite_or_missing_probabilities(function):
    """A NaN probability inside the mask once gave a NaN volume (or an arbitrary argmax)."""
    mask = np.ones((2, 2, 2), dtype=bool)
    extra = (np.eye(4),) if function == "reference_volumes_ml" else ()
    P = np.full((3, 2, 2, 2), 1 / 3)
    P[2, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"probabilities\[2\] has 1 non-finite value"):
        getattr(mni152, function)(P, mask, *extra)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(K, X, Y, Z\) with K >= 1"):
        getattr(mni152, function)(np.ones((0, 2, 2, 2)), mask, *extra)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(K, X, Y, Z\)"):
        getattr(mni152, function)("abc", mask, *extra)
