"""Known changes made to a scan, so that a segmentation can be checked against them.

- ``implant_lesion``: an elliptical (slice) or ellipsoidal (volume, semi-axes in mm through
  the affine) lesion of given centre, size, orientation, intensity and texture, returned with
  its truth mask;
- ``add_gaussian_noise``: seeded Gaussian (or Rician, ``magnitude=True``) noise.
"""

from __future__ import annotations

import numpy as np

from emlab.imaging.nifti import check_affine
from emlab.engine.validation import check_image


def _check_number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _triple(value, name, ndim):
    """``value`` as ``ndim`` finite floats, or a ValueError naming ``name``."""
    try:
        out = np.array([float(v) for v in value])
    except (TypeError, ValueError):
        out = None
    if out is None or out.shape != (ndim,) or not np.isfinite(out).all():
        raise ValueError(f"{name} must be {ndim} finite numbers, got {value!r}")
    return out


def rotation_matrix(angles):
    """3 x 3 rotation from Euler angles in degrees (scipy's extrinsic ``"xyz"``: about the
    world x axis, then y, then z); a single number turns about z only."""
    from scipy.spatial.transform import Rotation

    angles = np.atleast_1d(np.asarray(angles, dtype=float))
    if angles.shape not in ((1,), (3,)) or not np.isfinite(angles).all():
        raise ValueError(f"angle must be a finite number or three (degrees about x, y, z), "
                         f"got {angles!r}")
    if angles.shape == (1,):
        angles = np.array([0.0, 0.0, angles[0]])
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def _ellipse_2d(shape, center, semi_axes, angle):
    rows, cols = np.indices(shape)
    theta = np.deg2rad(angle)
    r0, c0 = center
    a, b = semi_axes
    u = (rows - r0) * np.cos(theta) + (cols - c0) * np.sin(theta)
    v = -(rows - r0) * np.sin(theta) + (cols - c0) * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _ellipsoid_3d(shape, center, semi_axes_mm, rotation, affine):
    """Voxels whose centre ``p`` has ``|diag(1/s) R^T A3 (p - c)|^2 <= 1`` (A3: the affine's
    3 x 3 part, so distances are in mm); only the ellipsoid's bounding box is evaluated."""
    A3 = affine[:3, :3]
    # the ellipsoid lies within radius max(s) mm of its centre: at most that many mm along
    # each world axis, i.e. |inv(A3)| row norms x max(s) voxels along each voxel axis
    reach = np.linalg.norm(np.linalg.inv(A3), axis=1) * semi_axes_mm.max()
    lo = np.maximum(np.floor(center - reach), 0).astype(int)
    hi = np.minimum(np.ceil(center + reach) + 1, shape).astype(int)
    truth = np.zeros(shape, dtype=bool)
    if (hi <= lo).any():
        return truth
    grid = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"),
                    axis=-1)
    local = (grid - center) @ A3.T @ rotation  # mm, in the ellipsoid's own axes
    truth[tuple(slice(l, h) for l, h in zip(lo, hi))] = \
        ((local / semi_axes_mm) ** 2).sum(axis=-1) <= 1.0
    return truth


def implant_lesion(image, center, semi_axes, angle=0.0, intensity=1.0, texture_sd=0.0,
                   mask=None, random_state=0, affine=None):
    """Paint a synthetic elliptical (2-D) or ellipsoidal (3-D) lesion into a copy of an image.

    The lesion's pixels (voxels) get ``intensity`` plus independent Gaussian "texture" noise
    of standard deviation ``texture_sd`` (seeded).

    Parameters
    ----------
    image : array-like (H, W) or (X, Y, Z)
    center : (row, col) or (i, j, k)
        Centre of the lesion, in pixel (voxel) coordinates.
    semi_axes : (a, b) or (a, b, c)
        A slice: semi-axes in pixels, ``a`` along the rows when ``angle = 0``. A volume:
        semi-axes in millimetres, measured through ``affine``; ``a, b, c`` lie along the world
        x, y, z axes before the rotation.
    angle : float, or 3 floats for a volume, default 0
        A slice: rotation in degrees from the row axis towards the column axis. A volume: the
        ellipsoid's rotation in world space, Euler angles in degrees about x, y, z
        (``rotation_matrix``); a single number turns it about z.
    intensity : float, default 1.0
    texture_sd : float >= 0, default 0
    mask : array-like of bool, same shape, optional
        If given, the whole lesion must lie inside it (e.g. inside the brain).
    random_state : int, default 0
    affine : array-like (4, 4), optional
        A volume only: voxel-to-world matrix (nibabel's ``img.affine``). Default: the identity
        (1 mm isotropic voxels).

    Returns
    -------
    lesioned : ndarray, shape of ``image``
        A new image with the lesion painted in.
    truth : ndarray of bool, shape of ``image``
        The lesion's pixels (voxels): those whose centre lies in the ellipse (ellipsoid). In
        3-D its volume tends to ``4/3 pi a b c`` mm^3 and its centroid to ``center`` as the
        voxels shrink.
    """
    img, inside = check_image(image, mask, ndims=(2, 3))
    ndim = img.ndim
    centre = _triple(center, "center", ndim)
    semi = _triple(semi_axes, "semi_axes", ndim)
    if not ((centre >= 0).all() and (centre < np.array(img.shape)).all()):
        raise ValueError(f"center must lie inside the image {img.shape}, got {center!r}")
    if not (semi > 0).all():
        raise ValueError(f"semi_axes must be positive, got {semi_axes!r}")
    intensity = _check_number(intensity, "intensity")
    texture_sd = _check_number(texture_sd, "texture_sd")
    if texture_sd < 0:
        raise ValueError(f"texture_sd must be >= 0, got {texture_sd}")
    if ndim == 2:
        if affine is not None:
            raise ValueError("affine is for a 3-D image; a slice's semi_axes are in pixels")
        truth = _ellipse_2d(img.shape, centre, semi, _check_number(angle, "angle"))
    else:
        A = np.eye(4) if affine is None else check_affine(affine)
        truth = _ellipsoid_3d(img.shape, centre, semi, rotation_matrix(angle), A)
    if not truth.any():
        raise ValueError("the lesion covers no pixel centre; enlarge semi_axes")
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
    img, inside = check_image(image, mask, ndims=(2, 3))
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(random_state)
    img[inside] += rng.normal(0.0, sigma, size=int(inside.sum()))
    if magnitude:
        img[inside] = np.abs(img[inside])
    return img
