"""The MNI152 2009a brain template and its tissue maps, from the files inside nilearn's wheel.

``load_mni152`` returns the T1 template, its brain mask and the reference tissue-probability
maps that the template's authors made (grey and white matter; CSF = brain - GM - WM, clipped at
0), as new numpy arrays with the voxel-to-MNI affine. Nothing is downloaded: nilearn reads files
that ship in its package. ``reference_labels`` and ``reference_volumes_ml`` turn the maps into
the reference segmentation (argmax) and the reference tissue volumes (summed probabilities);
``check_probabilities`` checks such maps (also for ``phantoms.brainweb_phantom``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emlab.imaging.nifti import voxel_volume_ml
from emlab.engine.validation import check_image

TISSUES = ("CSF", "GM", "WM")


@dataclass(frozen=True)
class Template:
    """The MNI152 template at one resolution (every array is this object's own copy).

    Attributes
    ----------
    image : ndarray (X, Y, Z), float
        T1 intensities in [0, 1].
    mask : ndarray (X, Y, Z), bool
        nilearn's brain mask (``template > 0.2``).
    probabilities : ndarray (3, X, Y, Z), float
        Reference probabilities of CSF, GM and WM, zero outside the mask.
    affine : ndarray (4, 4)
        Voxel to MNI millimetres.
    resolution : int
        1 or 2 (mm).
    """

    image: np.ndarray
    mask: np.ndarray
    probabilities: np.ndarray
    affine: np.ndarray
    resolution: int


def csf_probability(mask, gm, wm):
    """CSF = brain - GM - WM, clipped at 0 (and 0 outside the mask)."""
    return np.where(mask, np.clip(1.0 - gm - wm, 0.0, None), 0.0)


def load_mni152(resolution=2):
    """Load the MNI152 2009a template, mask and reference tissue maps (no download).

    Parameters
    ----------
    resolution : {1, 2}, default 2
        Voxel size in mm: 1 is the template's own grid (197 x 233 x 189), 2 nilearn's
        resampling of it (99 x 117 x 95).

    Returns
    -------
    Template
    """
    if isinstance(resolution, bool) or resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
    from nilearn import datasets

    # nilearn caches these images (lru_cache): copy the data, never modify theirs
    t1 = datasets.load_mni152_template(resolution=resolution)
    image = np.array(t1.get_fdata(), dtype=float)
    image[image == 0] = 0.0  # the 2 mm resampling leaves -0.0 values
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj) > 0
    gm = np.array(datasets.load_mni152_gm_template(resolution=resolution).get_fdata(),
                  dtype=float)
    wm = np.array(datasets.load_mni152_wm_template(resolution=resolution).get_fdata(),
                  dtype=float)
    gm, wm = np.where(mask, np.clip(gm, 0, 1), 0.0), np.where(mask, np.clip(wm, 0, 1), 0.0)
    probabilities = np.stack([csf_probability(mask, gm, wm), gm, wm])
    return Template(image=image, mask=mask, probabilities=probabilities,
                    affine=np.array(t1.affine, dtype=float), resolution=resolution)


_MAP_SHAPES = {2: "(K, H, W)", 3: "(K, X, Y, Z)"}


def check_probabilities(probabilities, mask, ndims=(3,)):
    """Return ``(P, mask)``: tissue maps (K, *grid) as floats (not copied if already float)
    and the mask (bool, the grid), or a ValueError naming the problem.

    ``ndims`` lists the accepted grids' numbers of dimensions (``(3,)``: volumes); ``K >= 1``
    maps, every one finite inside the mask (``check_image``'s rules for the mask).
    """
    expected = " or ".join(_MAP_SHAPES[n] for n in ndims)
    try:
        P = np.asarray(probabilities, dtype=float)
    except (TypeError, ValueError):
        P = None
    if P is None or P.ndim - 1 not in ndims or P.shape[0] == 0:
        raise ValueError(f"probabilities must have shape {expected} with K >= 1, got "
                         f"{np.shape(probabilities)}")
    _, inside = check_image(P[0], mask, name="probabilities[0]", ndims=ndims)
    finite = np.isfinite(P[:, inside])
    if not finite.all():
        k = int(np.argmin(finite.all(axis=1)))
        raise ValueError(f"probabilities[{k}] has {int((~finite[k]).sum())} non-finite "
                         "value(s) inside the mask; expected finite fractions")
    return P, inside


def reference_labels(probabilities, mask):
    """Hard reference: the class of largest probability in each voxel of the mask, -1 outside.

    Parameters
    ----------
    probabilities : array-like (K, X, Y, Z)
    mask : array-like of bool (X, Y, Z)

    Returns
    -------
    ndarray of int (X, Y, Z)
    """
    P, inside = check_probabilities(probabilities, mask)
    labels = np.full(inside.shape, -1, dtype=np.int64)
    labels[inside] = np.argmax(P[:, inside], axis=0)
    return labels


def reference_volumes_ml(probabilities, mask, affine):
    """Soft reference volumes: each class's probabilities summed over the mask, in mL.

    Returns
    -------
    ndarray (K,)
    """
    P, inside = check_probabilities(probabilities, mask)
    return P[:, inside].sum(axis=1) * voxel_volume_ml(affine)
