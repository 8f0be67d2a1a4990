"""Synthetic data shared by several test files (a helper module, not a test file)."""

import numpy as np

from emlab.engine.covariance import constrain_covariances, to_sklearn_format
from emlab.imaging import label_maps


def mixture(seed, n=250, d=2, offset=0.0, scale=1.0):
    """n points of a seeded 3-component Gaussian mixture in d dimensions, scaled and shifted."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, d))
    z = rng.integers(0, 3, n)
    return offset + scale * (centres[z] + rng.normal(size=(n, d)))


def piecewise_image(noise_sd, seed=0, shape=(48, 48), levels=(0.0, 1.0, 2.0)):
    """Left half class 0, right half class 2, a central disc class 1; plus Gaussian noise."""
    rows, cols = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int64)
    truth[:, shape[1] // 2:] = 2
    truth[(rows - shape[0] / 2) ** 2 + (cols - shape[1] / 2) ** 2 < (shape[0] / 4) ** 2] = 1
    rng = np.random.default_rng(seed)
    image = np.asarray(levels)[truth] + rng.normal(0.0, noise_sd, shape)
    return image, truth


def mean_dice(truth, labels):
    return float(label_maps.dice(truth, label_maps.match_label_images(truth, labels)).mean())


def structured_start(X, covariance_type, seed):
    """A seeded 3-component start whose covariances follow ``covariance_type``, and the
    matching ``precisions_init`` of scikit-learn's GaussianMixture."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    A = rng.normal(size=(3, d, d))
    covs = constrain_covariances(A @ A.transpose(0, 2, 1) + np.eye(d), np.array([1.0, 2, 3]),
                                 covariance_type, 0.0)
    start = {"means": X[rng.choice(len(X), 3, replace=False)], "covariances": covs,
             "weights": np.array([0.5, 0.3, 0.2])}
    layout = to_sklearn_format(covs, covariance_type)
    precisions = np.linalg.inv(layout) if covariance_type in ("full", "tied") else 1.0 / layout
    return start, precisions
