"""dipy's ``TissueClassifierHMRF`` behind the same interface as ``segment_image``.

``segment_dipy_hmrf`` runs dipy's hidden-Markov-random-field classifier on a slice or a volume
and its mask, seeded, and returns labels numbered like ours, for the side-by-side comparisons
of the MRI notebooks.

Why dipy alone returns NaN on a masked volume (dipy 1.12.1; dipy/dipy#3943 reports the same
family of failure). dipy adds a background class made of the zero voxels. It estimates the
classes' first means and variances (``seg_stats``) on the image as given, where that background
holds only exact zeros whenever no tissue voxel is dark enough to join it (the MNI152 template:
brain intensities >= 0.2, while dipy's first, uniform means are 0, 0.25, 0.5, 0.75): its
variance is exactly 0. dipy then replaces the zeros by ``0.001 + N(0, 1e-4)`` noise
(unseeded), and its density for a class of variance < 1e-16 is 1 within 1e-8 of the mean and 0
elsewhere: no voxel is within 1e-8 of 0 any more, the class gets probability 0 everywhere, its
updated mean is 0/0 = NaN, the NaN spreads to every probability in the next iteration, and the
ICM step, which keeps a voxel's label -1 unless an energy compares below the minimum (never
with NaN), labels every voxel -1. On the dipy T1 slice the darkest brain pixels fall in the
background class at the start, its variance is not 0 and nothing fails.

The wrapper's fix: ``seg_stats``' variances are floored at ``VARIANCE_FLOOR`` = 1e-6 (the
clamp proposed upstream). The background class then keeps the (noisy) zeros, its mean and
variance become those of that noise after one iteration, and the tissue classes are as dipy
would find them. When no variance is below the floor (the 2-D slice) nothing changes: the
result is dipy's own, bit for bit. (The other way out, making the background non-zero before the
call, ``np.where(img == 0, 0.001 + rng.normal(0, 1e-4, img.shape), img)``, gave identical labels
on the 2 mm MNI152 template: 35 iterations, Dice 0.853 / 0.967 for grey / white matter against
nilearn's tissue templates > 0.5.)
"""

from __future__ import annotations

import numpy as np

from emlab.engine.validation import check_beta, check_image, check_int

VARIANCE_FLOOR = 1e-6  # the lowest class variance that seg_stats may hand to dipy's loop


def _floored_observation_model(model_class, floored):
    """A subclass of dipy's ``ConstantObservationModel`` whose ``seg_stats`` floors the
    variances at ``VARIANCE_FLOOR``; the classes it floored are appended to ``floored``."""

    class FlooredObservationModel(model_class):
        def seg_stats(self, input_image, seg_image, nclass):
            mu, sigmasq = super().seg_stats(input_image, seg_image, nclass)
            sigmasq = np.asarray(sigmasq, dtype=float)
            low = np.flatnonzero(sigmasq < VARIANCE_FLOOR)
            floored.extend(int(k) for k in low)
            return mu, np.maximum(sigmasq, VARIANCE_FLOOR)

    return FlooredObservationModel


def bounding_box(inside, margin=1):
    """The slices of ``inside``'s bounding box grown by ``margin`` (clipped to the array): what
    ``segment_dipy_hmrf(..., crop=True)`` hands dipy."""
    margin = check_int(margin, "margin", minimum=0)
    coords = np.nonzero(inside)
    if coords[0].size == 0:
        raise ValueError("inside selects no voxel: it has no bounding box")
    return tuple(slice(max(int(c.min()) - margin, 0), int(c.max()) + margin + 1)
                 for c in coords)


def segment_dipy_hmrf(image, mask=None, n_components=3, beta=0.1, max_iter=100,
                      tolerance=1e-5, random_state=0, *, crop=False):
    """dipy's ``TissueClassifierHMRF`` on a slice or a volume, in ``segment_image``'s format.

    dipy classifies a 3-D volume into ``n_components`` tissue classes plus a background class
    made of the zero voxels; it alternates an EM update of the class means and variances with
    one synchronous ICM pass under a Potts prior (6-neighbourhood in 3-D, so the 4-neighbourhood
    within a single slice; energy ``+beta`` per disagreeing and ``-beta`` per agreeing
    neighbour, equal class proportions, one variance per class: the model of
    ``segment_image(..., proportions=False, covariance_type="full")``, not of its default mean
    field, which adds class proportions and ties the variances). Here a slice becomes a volume
    of depth 1, the voxels outside ``mask`` are set to 0 (dipy's background), and the
    background class is dropped. dipy perturbs the zero voxels with unseeded noise; that noise is seeded here with
    ``random_state`` (by passing a seeded generator to the ``add_noise`` it calls), so the
    result is reproducible. dipy's first class variances are floored at ``VARIANCE_FLOOR``
    (see the module docstring: without it dipy returns NaN and labels every voxel -1 on a
    masked volume whose tissue is far from 0, such as the MNI152 template); this changes
    nothing when no variance is that small.

    Parameters
    ----------
    image : array-like (H, W) or (X, Y, Z)
        Must be > 0 inside the mask (dipy would take a voxel <= 0 for background). Any float
        dtype (dipy itself needs float64; the wrapper converts). Not modified.
    mask : array-like of bool, same shape, optional
        Default: the non-zero voxels.
    n_components : int, default 3
    beta : float >= 0, default 0.1
        dipy's smoothness parameter (its tutorial's value; ``segment_image``'s ``beta`` is
        ``2 *`` this for the same prior strength).
    max_iter : int, default 100
        dipy's default.
    tolerance : float, default 1e-5
        dipy's default early-stopping tolerance on the energy.
    random_state : int, default 0
    crop : bool, default False
        Hand dipy only the mask's bounding box plus one voxel (the labels are put back in the
        full array). Much faster and lighter on a volume (the MNI152 brain fills ~22 % of the
        1 mm grid); dipy's background class then holds fewer zeros, which can move its
        statistics slightly.

    Returns
    -------
    label_image : ndarray of the image's shape, int64
        ``-1`` outside the mask, tissue classes ``0..n_components - 1`` by increasing mean
        intensity (dipy orders them so).
    info : dict
        ``n_iter``: the iterations dipy ran (it stops early when its energy settles);
        ``n_background``: mask voxels that dipy put in its background class (intensities near
        0, e.g. after noise); they are counted in the darkest tissue class, class 0;
        ``floored_classes``: dipy's classes (0 = background) whose first variance was below
        ``VARIANCE_FLOOR`` and was floored (empty when dipy ran unchanged).

    Raises
    ------
    ValueError
        If the image is not 2-D or 3-D, the mask does not fit it or is empty, a voxel inside
        the mask is not finite or is <= 0, or another argument is invalid.
    RuntimeError
        If dipy still leaves a voxel of the mask unlabelled (its label -1 after NaN
        parameters), rather than returning that silently.
    """
    from functools import partial
    from unittest import mock

    from dipy.segment import tissue

    img = np.array(image, dtype=float)
    if img.ndim in (2, 3) and mask is None:
        mask = img != 0
    img, inside = check_image(img, mask, ndims=(2, 3))
    K = check_int(n_components, "n_components", minimum=1)
    beta = check_beta(beta)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    if not isinstance(crop, (bool, np.bool_)):
        raise ValueError(f"crop must be True or False, got {crop!r}")
    if isinstance(tolerance, bool) \
            or not isinstance(tolerance, (int, float, np.integer, np.floating)) \
            or not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    random_state = check_int(random_state, "random_state", minimum=0)
    if (img[inside] <= 0).any():
        raise ValueError("image must be > 0 inside the mask: dipy reads voxels <= 0 as "
                         "background (shift the intensities, or add noise with magnitude=True)")
    n_levels = np.unique(img[inside]).size
    if n_levels < K:  # dipy would return NaN parameters and no class (its RuntimeError below)
        raise ValueError(f"n_components={K} is more than the {n_levels} distinct intensities "
                         "inside the mask")
    box = bounding_box(inside) if crop else tuple(slice(None) for _ in img.shape)
    volume = np.where(inside, img, 0.0)[box]
    if volume.ndim == 2:
        volume = volume[:, :, None]
    floored = []
    seeded_noise = partial(tissue.add_noise, rng=np.random.default_rng(random_state))
    model = _floored_observation_model(tissue.ConstantObservationModel, floored)
    with mock.patch.object(tissue, "add_noise", seeded_noise), \
            mock.patch.object(tissue, "ConstantObservationModel", model):
        hmrf = tissue.TissueClassifierHMRF(save_history=True, verbose=False)
        _, segmentation, _ = hmrf.classify(volume, K, beta, tolerance=tolerance,
                                           max_iter=max_iter)
    labels = np.full(img.shape, -1, dtype=np.int64)
    labels[box] = segmentation.reshape(labels[box].shape).astype(np.int64) - 1  # background -1
    failed = inside & (labels < -1)  # dipy's own -1: its ICM found no finite energy
    if failed.any():
        raise RuntimeError(f"dipy's TissueClassifierHMRF failed: {int(failed.sum())} voxel(s) "
                           "inside the mask got no class (label -1, NaN parameters)")
    stray = inside & (labels < 0)  # mask voxels dipy found closest to its background class
    labels[stray] = 0
    labels[~inside] = -1
    return labels, {"n_iter": len(hmrf.energies_sum), "n_background": int(stray.sum()),
                    "floored_classes": sorted(set(floored))}
