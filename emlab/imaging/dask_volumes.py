"""``segment_image`` without a prior on a dask volume: fitted and labelled chunk by chunk.

A volume too large for memory (a brain at 0.5 mm, many scans side by side) is a dask array.
``segment_dask_volume`` fits the intensity mixture of its masked voxels exactly as
``emlab.imaging.segmentation.segment_image`` does with ``beta = 0`` (hard EM from k-means++ starts, best
of ``n_init``; soft EM started from the hard solution), through ``run_em`` on a dask array
(``emlab.engine.chunked``: one pass over the chunks per iteration), and returns a lazy label volume
that each chunk computes from the final parameters. The conventions are ``segment_image``'s:
``-1`` outside the mask, classes numbered by increasing mean intensity.

The Potts prior (``beta > 0``) stays in memory: its sweeps couple every voxel with its
neighbours, colour by colour, so they are not a sum over chunks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from em_helpers import permute_components, run_em
from emlab.engine import chunked
from emlab.engine.validation import check_int


def _check_volume(volume, mask):
    """The volume (a float dask array) and its mask (a bool dask array of the same chunks)."""
    import dask.array as da

    if not chunked.is_dask_array(volume):
        raise ValueError(f"volume must be a dask array, got {type(volume).__name__} (use "
                         "emlab.imaging.segmentation.segment_image for an image in memory)")
    if volume.ndim not in (2, 3) or 0 in volume.shape:
        raise ValueError(f"volume must be a non-empty 2-D or 3-D array, got shape "
                         f"{volume.shape}")
    if volume.dtype.kind not in "biuf":
        raise ValueError(f"volume must hold real numbers, got dtype {volume.dtype}")
    volume = volume.astype(np.float64)
    if mask is None:
        return volume, da.ones(volume.shape, dtype=bool, chunks=volume.chunks)
    if not chunked.is_dask_array(mask):
        mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise ValueError(f"mask has shape {mask.shape} but volume has shape {volume.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    if chunked.is_dask_array(mask):
        return volume, mask.rechunk(volume.chunks)
    return volume, da.from_array(mask, chunks=volume.chunks)


def masked_voxels(volume, mask):
    """The masked intensities as a dask column (N, 1), in row-major order (``image[mask]``).

    One pass computes the chunk sizes; an empty mask is refused.
    """
    X = volume.reshape(-1)[mask.reshape(-1)]
    X.compute_chunk_sizes()
    if X.shape[0] == 0:
        raise ValueError("mask is empty: there is no voxel to segment")
    return X[:, None]


def block_label_volume(block, block_mask, shift, method, means, covs, weights, rank):
    """One chunk of the label volume: the class of each masked voxel, ``-1`` elsewhere."""
    labels = np.full(block.shape, -1, dtype=np.int64)
    if block_mask.any():
        column = block[block_mask][:, None]
        labels[block_mask] = rank[chunked.block_labels(column, shift, method, means, covs,
                                                           weights)]
    return labels


def _relabel(labels, rank):
    return rank[labels]


def segment_dask_volume(volume, mask=None, n_components=3, method="soft", random_state=0, *,
                        n_init=4, max_iter=500, reg_covar=1e-6):
    """Segment a dask volume by EM on its intensities (no spatial prior), chunk by chunk.

    Parameters
    ----------
    volume : dask.array.Array of shape (H, W) or (D, H, W)
        Intensities; must be finite inside the mask. Any chunking.
    mask : array-like or dask array of bool, same shape, optional
        The voxels to segment. Default: every voxel.
    n_components : int, default 3
    method : {"soft", "hard"}, default "soft"
    random_state : int, default 0
        Seed of the k-means++ starts (drawn from a seeded sample of the masked voxels,
        ``chunked.SAMPLE_ROWS`` of them).
    n_init : int, default 4
        Number of k-means++ starts of the hard fit.
    max_iter : int, default 500
    reg_covar : float, default 1e-6

    Returns
    -------
    label_volume : dask.array.Array of shape volume.shape, int64
        Lazy: the class of each voxel, ``-1`` outside the mask, classes by increasing mean
        intensity (``0`` the darkest); each chunk is labelled from the final parameters.
    result : EMResult
        The fit, components in the same order; ``resp`` (K, N) and ``labels`` (N,) are lazy
        dask arrays over the masked voxels in row-major order (``volume[mask]``).

    Raises
    ------
    ValueError
        If the volume is not a 2-D or 3-D dask array of numbers, the mask does not match, the
        mask is empty, a masked voxel is not finite, or another argument is invalid;
        ``chunked.EmptyComponentError`` if a class loses every voxel.
    """
    import dask.array as da

    volume, mask = _check_volume(volume, mask)
    K = check_int(n_components, "n_components", minimum=1)
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    n_init = check_int(n_init, "n_init", minimum=1)
    random_state = check_int(random_state, "random_state", minimum=0)
    X = masked_voxels(volume, mask)
    shift = chunked.ChunkedData.of(X, "volume (inside the mask)").shift
    result = run_em(X, K, method="hard", init="kmeans++", n_init=n_init, max_iter=max_iter,
                    random_state=random_state, reg_covar=reg_covar)
    if method == "soft":
        start = {"means": result.means, "covariances": result.covariances,
                 "weights": result.weights}
        result = run_em(X, K, method="soft", init=start, max_iter=max_iter, reg_covar=reg_covar)
    order = np.argsort(result.means[:, 0], kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(K)
    # permute_components renames labels in memory: hand it none, and rename the lazy ones here
    ordered = permute_components(replace(result, labels=np.zeros(0, dtype=np.int64)), order)
    ordered = replace(ordered, labels=result.labels.map_blocks(_relabel, rank, dtype=np.int64))
    label_volume = da.map_blocks(block_label_volume, volume, mask, shift, method, result.means,
                                 result.covariances, result.weights, rank, dtype=np.int64,
                                 meta=np.empty((0,) * volume.ndim, np.int64))
    return label_volume, ordered
