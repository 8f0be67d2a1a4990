"""Known changes made to a scan, so that a segmentation can be checked against them.

- ``implant_lesion``: an elliptical (slice) or ellipsoidal (volume, semi-axes in mm through
  the affine) lesion of given centre, size, orientation, intensity and texture, returned with
  its truth mask;
- ``add_gaussian_noise``: seeded Gaussian (or Rician, ``magnitude=True``) noise;
- ``brainweb_phantom``: a BrainWeb-style scan from tissue fractions (partial-volume mixing, a
  smooth multiplicative field at a given INU, ``smooth_field``, and Rician noise in % of white
  matter), returned with its truth (``Phantom``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emlab.imaging.mni152 import check_probabilities
from emlab.imaging.nifti import check_affine
from emlab.engine.validation import check_image, check_int


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
    random_state = check_int(random_state, "random_state", minimum=0)
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
    if not isinstance(magnitude, (bool, np.bool_)):
        raise ValueError(f"magnitude must be True or False, got {magnitude!r}")
    random_state = check_int(random_state, "random_state", minimum=0)
    rng = np.random.default_rng(random_state)
    img[inside] += rng.normal(0.0, sigma, size=int(inside.sum()))
    if magnitude:
        img[inside] = np.abs(img[inside])
    return img


# ------------------------------------------------------------------------------------------
# A BrainWeb-style phantom from tissue fractions (the MNI152 maps)
# ------------------------------------------------------------------------------------------

BRAINWEB_INTENSITIES = (0.30, 0.62, 0.88)  # CSF, GM, WM of a T1 scan, WM at 0.88


@dataclass(frozen=True)
class Phantom:
    """A simulated scan and its truth (every array is this object's own).

    Attributes
    ----------
    image : ndarray, the fractions' grid shape
        The scan: ``field * (fractions . intensities)`` plus Rician noise inside the mask, 0
        outside.
    mask : ndarray of bool
    fractions : ndarray (K, N)
        The true tissue fractions of the masked voxels (in the order of ``image[mask]``),
        each column summing to 1.
    labels : ndarray of int, the grid shape
        The true class of each voxel, the argmax of its fractions, ``-1`` outside the mask.
    field : ndarray, the grid shape
        The multiplicative non-uniformity (1 outside the mask); inside it spans exactly
        ``[1 - inu / 2, 1 + inu / 2]``.
    noise_sd : float
        The standard deviation of each of the two Gaussian channels of the Rician noise.
    """

    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray
    labels: np.ndarray
    field: np.ndarray
    noise_sd: float


def smooth_field(mask, inu, random_state=0, spacing=None):
    """A seeded smooth multiplicative field that spans BrainWeb's ``inu`` inside ``mask``.

    Shape: the sum of three plane waves ``cos(2 pi <u_j, p> / lambda + phi_j)`` with random
    unit directions ``u_j``, random phases ``phi_j`` and the wavelength ``lambda`` 1.5 times
    the mask's largest extent (in mm with ``spacing``, else in voxels), so that the field
    varies smoothly across the whole brain but is not a low-order polynomial (the estimator's
    basis). It is then mapped linearly onto ``[1 - inu / 2, 1 + inu / 2]`` over the mask:
    BrainWeb's 20 % INU is a field between 0.9 and 1.1, 40 % between 0.8 and 1.2. ``inu = 0``
    gives a field of ones. Outside the mask the field is 1.
    """
    _, inside = check_image(np.zeros(np.shape(mask)), mask, name="mask", ndims=(2, 3))
    inu = _check_number(inu, "inu")
    if not 0 <= inu < 2:
        raise ValueError(f"inu must be in [0, 2) (0.4 = BrainWeb's 40 %), got {inu}")
    random_state = check_int(random_state, "random_state", minimum=0)
    scale = np.ones(inside.ndim) if spacing is None else _triple(spacing, "spacing", inside.ndim)
    if not (scale > 0).all():
        raise ValueError(f"spacing must be {inside.ndim} positive finite numbers, got "
                         f"{spacing!r}")
    field = np.ones(inside.shape)
    if inu == 0:
        return field
    coords = np.stack(np.nonzero(inside), axis=1) * scale
    extent = float((coords.max(axis=0) - coords.min(axis=0)).max()) or 1.0
    rng = np.random.default_rng(random_state)
    directions = rng.normal(size=(3, inside.ndim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    waves = np.cos(2 * np.pi * coords @ directions.T / (1.5 * extent) + phases).sum(axis=1)
    span = waves.max() - waves.min()
    unit = (waves - waves.min()) / span if span > 0 else np.full(waves.shape, 0.5)
    field[inside] = 1.0 - inu / 2 + inu * unit
    return field


def brainweb_phantom(probabilities, mask, inu=0.4, noise=0.03, intensities=BRAINWEB_INTENSITIES,
                     random_state=0, spacing=None):
    """A BrainWeb-style T1 scan built from tissue fractions, with its truth.

    Each masked voxel mixes the tissue intensities by its fractions (partial volume:
    ``s_n = sum_k f_nk c_k``), is multiplied by a smooth field spanning BrainWeb's ``inu``
    (``smooth_field``), and gets Rician noise: ``|s_n b_n + e_1 + i e_2|`` with ``e_1, e_2``
    Gaussian of standard deviation ``noise`` times the white-matter intensity (BrainWeb's
    "% of the brightest tissue"; the last of ``intensities``).

    Parameters
    ----------
    probabilities : array-like (K, X, Y, Z) or (K, H, W)
        Tissue fractions, e.g. ``mni152.load_mni152().probabilities``; inside the mask each
        voxel's are renormalised to sum to 1 (a voxel with none is given to the first class).
    mask : array-like of bool, the grid shape
    inu : float in [0, 2), default 0.4
    noise : float >= 0, default 0.03
    intensities : K floats, default (0.30, 0.62, 0.88)
    random_state : int, default 0
        Seeds the field's shape and the noise.
    spacing : voxel size per axis, optional
        Used for the field's wavelength only.

    Returns
    -------
    Phantom
    """
    P, inside = check_probabilities(probabilities, mask, ndims=(2, 3))
    K = P.shape[0]
    levels = _triple(intensities, "intensities", K)
    if (levels < 0).any():
        raise ValueError(f"intensities must be >= 0 (tissue signal levels), got {intensities!r}")
    random_state = check_int(random_state, "random_state", minimum=0)
    noise = _check_number(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a fraction of the white-matter intensity), got "
                         f"{noise}")
    fractions = np.clip(P[:, inside], 0.0, None)
    total = fractions.sum(axis=0)
    fractions[0, total == 0] = 1.0
    fractions /= fractions.sum(axis=0)
    field = smooth_field(inside, inu, random_state, spacing)
    signal = levels @ fractions * field[inside]
    sd = noise * float(levels[-1])
    rng = np.random.default_rng([random_state, 1])
    image = np.zeros(inside.shape)
    image[inside] = np.hypot(signal + rng.normal(0.0, sd, signal.size),
                             rng.normal(0.0, sd, signal.size))
    labels = np.full(inside.shape, -1, dtype=np.int64)
    labels[inside] = np.argmax(fractions, axis=0)
    return Phantom(image=image, mask=inside.copy(), fractions=fractions, labels=labels,
                   field=field, noise_sd=sd)
