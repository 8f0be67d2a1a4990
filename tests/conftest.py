"""Shared test set-up.

Hypothesis runs derandomized: the same examples on every machine, so CI cannot turn red
(or green) by chance, and a failure seen once is seen again. The fixture ``t1_slice`` (dipy's
T1 slice, cropped) serves the segmentation and dipy tests."""

import numpy as np
import pytest
from hypothesis import settings

from emlab.imaging import label_maps
from emlab.models import course_scans

settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def t1_slice():
    """dipy's T1 coronal slice cropped to the brain, its mask and the crop's offset."""
    from dipy.data import get_fnames

    full = np.load(get_fnames(name="t1_coronal_slice"))
    return label_maps.crop_to_mask(full, full > 0)


@pytest.fixture(scope="module")
def images():
    """The course's two scans (the generated stand-ins of data/): {name: (X, y)}."""
    return course_scans.load_images()


@pytest.fixture(scope="module")
def truth():
    """data/truth.json, the parameters the scans were drawn from."""
    return course_scans.load_truth()
