"""dipy's ``TissueClassifierHMRF`` behind the same interface as ``segment_image``.

``segment_dipy_hmrf`` runs dipy's hidden-Markov-random-field classifier on an image and its mask,
seeded, and returns labels numbered like ours, for the side-by-side comparisons of the MRI
notebooks.
"""

from __future__ import annotations

import numpy as np

from emlab.validation import check_beta, check_image, check_int


def segment_dipy_hmrf(image, mask=None, n_components=3, beta=0.1, max_iter=100,
                      tolerance=1e-5, random_state=0):
    """dipy's ``TissueClassifierHMRF`` on a 2-D image, returned in ``segment_image``'s format.

    dipy classifies a 3-D volume into ``n_components`` tissue classes plus a background class
    made of the zero voxels; it alternates an EM update of the class means and variances with
    one synchronous ICM pass under a Potts prior (6-neighbourhood in 3-D, so the 4-neighbourhood
    within a single slice; energy ``+beta`` per disagreeing and ``-beta`` per agreeing
    neighbour, equal class proportions). Here the slice becomes a volume of depth 1, the
    pixels outside ``mask`` are set to 0 (dipy's background), and the background class is
    dropped. dipy perturbs the zero voxels with unseeded noise; that noise is seeded here with
    ``random_state`` (by passing a seeded generator to the ``add_noise`` it calls), so the
    result is reproducible.

    Parameters
    ----------
    image : array-like (H, W)
        Must be > 0 inside the mask (dipy would take a pixel <= 0 for background).
    mask : array-like of bool (H, W), optional
        Default: the non-zero pixels.
    n_components : int, default 3
    beta : float >= 0, default 0.1
        dipy's smoothness parameter (its tutorial's value; ``segment_image``'s ``beta`` is
        ``2 *`` this for the same prior strength).
    max_iter : int, default 100
        dipy's default.
    tolerance : float, default 1e-5
        dipy's default early-stopping tolerance on the energy.
    random_state : int, default 0

    Returns
    -------
    label_image : ndarray (H, W), int
        ``-1`` outside the mask, tissue classes ``0..n_components - 1`` by increasing mean
        intensity (dipy orders them so).
    info : dict
        ``n_iter``: the iterations dipy ran (it stops early when its energy settles);
        ``n_background``: mask pixels that dipy put in its background class (intensities near
        0, e.g. after noise); they are counted in the darkest tissue class, class 0.
    """
    from functools import partial
    from unittest import mock

    from dipy.segment import tissue

    img = np.array(image, dtype=float)
    img, inside = check_image(img, img != 0 if mask is None else mask)
    K = check_int(n_components, "n_components", minimum=1)
    beta = check_beta(beta)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    if (img[inside] <= 0).any():
        raise ValueError("image must be > 0 inside the mask: dipy reads pixels <= 0 as "
                         "background (shift the intensities, or add noise with magnitude=True)")
    volume = np.where(inside, img, 0.0)[:, :, None]
    seeded_noise = partial(tissue.add_noise, rng=np.random.default_rng(random_state))
    with mock.patch.object(tissue, "add_noise", seeded_noise):
        hmrf = tissue.TissueClassifierHMRF(save_history=True, verbose=False)
        _, segmentation, _ = hmrf.classify(volume, K, beta, tolerance=tolerance,
                                           max_iter=max_iter)
    labels = segmentation[:, :, 0].astype(np.int64) - 1  # background 0 -> -1
    stray = inside & (labels < 0)  # mask pixels dipy found closest to its background class
    labels[stray] = 0
    labels[~inside] = -1
    return labels, {"n_iter": len(hmrf.energies_sum), "n_background": int(stray.sum())}
