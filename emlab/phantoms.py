"""Known changes made to a scan, so that a segmentation can be checked against them.

- ``implant_lesion``: an elliptical lesion of given centre, size, orientation, intensity and
  texture, returned with its truth mask;
- ``add_gaussian_noise``: seeded Gaussian (or Rician, ``magnitude=True``) noise.
"""

from __future__ import annotations

import numpy as np

from emlab.validation import check_image


def implant_lesion(image, center, semi_axes, angle=0.0, intensity=1.0, texture_sd=0.0,
                   mask=None, random_state=0):
    """Paint a synthetic elliptical lesion into a copy of an image.

    The lesion's pixels get ``intensity`` plus independent Gaussian "texture" noise of
    standard deviation ``texture_sd`` (seeded).

    Parameters
    ----------
    image : array-like (H, W)
    center : (row, col)
        Centre of the ellipse, in pixel coordinates.
    semi_axes : (a, b)
        Semi-axes in pixels; ``a`` lies along the rows when ``angle = 0``.
    angle : float, default 0
        Rotation of the ellipse in degrees (from the row axis towards the column axis).
    intensity : float, default 1.0
    texture_sd : float >= 0, default 0
    mask : array-like of bool (H, W), optional
        If given, the whole lesion must lie inside it (e.g. inside the brain).
    random_state : int, default 0

    Returns
    -------
    lesioned : ndarray (H, W)
        A new image with the lesion painted in.
    truth : ndarray of bool (H, W)
        The lesion's pixels: ``(u / a)^2 + (v / b)^2 <= 1`` in the ellipse's own axes.
    """
    img, inside = check_image(image, mask)
    try:
        r0, c0 = (float(v) for v in center)
        a, b = (float(v) for v in semi_axes)
    except (TypeError, ValueError):
        raise ValueError(f"center and semi_axes must be pairs of numbers, got {center!r} and "
                         f"{semi_axes!r}") from None
    if not (np.isfinite([r0, c0]).all() and 0 <= r0 < img.shape[0] and 0 <= c0 < img.shape[1]):
        raise ValueError(f"center must lie inside the image {img.shape}, got {center!r}")
    if not (np.isfinite([a, b]).all() and a > 0 and b > 0):
        raise ValueError(f"semi_axes must be positive, got {semi_axes!r}")
    for name, value in (("angle", angle), ("intensity", intensity), ("texture_sd", texture_sd)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)) \
                or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if texture_sd < 0:
        raise ValueError(f"texture_sd must be >= 0, got {texture_sd}")
    rows, cols = np.indices(img.shape)
    theta = np.deg2rad(angle)
    u = (rows - r0) * np.cos(theta) + (cols - c0) * np.sin(theta)
    v = -(rows - r0) * np.sin(theta) + (cols - c0) * np.cos(theta)
    truth = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if not truth.any():
        raise ValueError("the ellipse covers no pixel centre; enlarge semi_axes")
    if mask is not None and (truth & ~inside).any():
        raise ValueError(f"the lesion leaves the mask at {int((truth & ~inside).sum())} "
                         "pixel(s); move it or make it smaller")
    rng = np.random.default_rng(random_state)
    img[truth] = intensity + rng.normal(0.0, texture_sd, size=int(truth.sum()))
    return img, truth


def add_gaussian_noise(image, sigma, mask=None, magnitude=False, random_state=0):
    """A copy of ``image`` with seeded Gaussian noise of standard deviation ``sigma`` added to
    the pixels inside ``mask`` (default: every pixel); outside the mask nothing changes.

    With ``magnitude=True`` the noisy pixels are replaced by their absolute value, as an MRI
    scanner stores the magnitude of a noisy signal: never negative, and without the spike at
    the bound that clipping would create (a spike is a point mass that a Gaussian component
    can collapse onto).
    """
    img, inside = check_image(image, mask)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(random_state)
    img[inside] += rng.normal(0.0, sigma, size=int(inside.sum()))
    if magnitude:
        img[inside] = np.abs(img[inside])
    return img
