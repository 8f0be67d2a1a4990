"""Tests of ``emlab.report.comparison``: running several segmenters side by side gives what each
segmenter gives alone, and the timing helper times."""

import time

import numpy as np
import pytest
from synthetic import piecewise_image

from emlab.report import comparison
from emlab.imaging import dipy_hmrf, segmentation


@pytest.fixture(scope="module")
def image():
    img, truth = piecewise_image(0.3, seed=5, shape=(24, 24))
    return img + 1.0, np.ones(img.shape, dtype=bool)  # positive intensities for dipy


def test_each_method_gives_what_its_segmenter_gives_alone(image):
    img, mask = image
    methods = {"plain": ("ours", 0.0), "prior": ("ours", 0.5), "dipy": ("dipy", 0.1)}
    runs = comparison.segment_with_methods(img, mask, methods, random_state=3)
    plain, plain_fit = segmentation.segment_image(img, mask, 3, "soft", random_state=3)
    prior, prior_fit = segmentation.segment_image(img, mask, 3, "soft", beta=0.5,
                                                  random_state=3, proportions=False,
                                                  covariance_type="full")
    dipy_labels, info = dipy_hmrf.segment_dipy_hmrf(img, mask, 3, beta=0.1, random_state=3)
    np.testing.assert_array_equal(runs["plain"][0], plain)
    assert runs["plain"][1] == plain_fit.n_iter
    np.testing.assert_array_equal(runs["prior"][0], prior)
    assert runs["prior"][1] == prior_fit.n_iter
    np.testing.assert_array_equal(runs["dipy"][0], dipy_labels)
    assert runs["dipy"][1] == info["n_iter"]


@pytest.mark.parametrize("methods, match", [
    ({}, "non-empty dict"),
    ({"a": ("theirs", 0.0)}, "kind in"),
    ({"a": ("ours",)}, "pair"),
    ({"a": ("ours", -1.0)}, "beta must be a number >= 0"),
])
def test_bad_methods_are_named(image, methods, match):
    with pytest.raises(ValueError, match=match):
        comparison.segment_with_methods(*image, methods)


def test_wall_time_measures_the_call_and_refuses_a_non_callable():
    assert comparison.wall_time(lambda: time.sleep(0.02)) >= 0.015
    with pytest.raises(ValueError, match="callable"):
        comparison.wall_time(3)
