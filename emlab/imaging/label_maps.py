"""Measures on label images: overlap, matching, per-class statistics, cropping.

- ``dice`` (per class), ``match_label_images`` (renumber one labelling to another),
  ``label_agreement`` (agreement and Dice after matching);
- ``region_stats``: size and centroid of every class (in mL and world millimetres, given a
  voxel-to-world affine); ``soft_volumes_ml``: volumes from responsibilities;
- ``crop_to_mask``: the bounding box of a mask, with a margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from em_helpers import match_labels
from emlab.imaging.nifti import check_affine, voxel_to_world, voxel_volume_ml
from emlab.engine.validation import check_image, check_int


def _integer_labels(labels, name):
    """``labels`` as an integer array, or a ValueError naming ``name``."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {labels.dtype}")
    return labels


def dice(a, b, labels=None):
    """Dice coefficient of each class between two label images.

    ``Dice_k = 2 |A_k ∩ B_k| / (|A_k| + |B_k|)``, where ``A_k`` is the set of pixels that
    ``a`` puts in class ``k`` (the same as the per-class F1 score). Negative labels (``-1``:
    outside the mask) belong to no class.

    Parameters
    ----------
    a, b : array-like of int, same shape
        Label images (or label vectors).
    labels : sequence of int, optional
        The classes to score. Default: every non-negative label found in ``a`` or ``b``.

    Returns
    -------
    pandas.Series
        Dice per class, indexed by class label, name ``"dice"``.

    Raises
    ------
    ValueError
        If the shapes differ, the labels are not integers, no class is present, or a requested
        class is in neither ``a`` nor ``b`` (its Dice would be 0/0).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    a, b = _integer_labels(a, "a"), _integer_labels(b, "b")
    if labels is not None:
        requested = np.asarray(labels)
        if requested.ndim != 1 or not np.issubdtype(requested.dtype, np.integer):
            raise ValueError(f"labels must be a sequence of integer class labels, got "
                             f"{labels!r}")
        labels = requested
    if labels is None:
        labels = np.union1d(a[a >= 0], b[b >= 0])
        if labels.size == 0:
            raise ValueError("a and b hold no class (every label is negative)")
    scores = {}
    for k in labels:
        in_a, in_b = a == k, b == k
        total = int(in_a.sum() + in_b.sum())
        if total == 0:
            raise ValueError(f"class {k} is in neither a nor b: its Dice is undefined")
        scores[int(k)] = 2.0 * int((in_a & in_b).sum()) / total
    return pd.Series(scores, name="dice", dtype=float)


def match_label_images(reference, other):
    """``other`` with its classes renamed to the ``reference`` classes they overlap most.

    Hungarian matching (``label_mapping``) on the pixels that both images label (``>= 0``);
    every other pixel is ``-1`` in the output. A new array: the inputs are not modified.
    """
    reference = _integer_labels(reference, "reference")
    other = _integer_labels(other, "other")
    if reference.shape != other.shape:
        raise ValueError(f"reference and other must have the same shape, got "
                         f"{reference.shape} and {other.shape}")
    both = (reference >= 0) & (other >= 0)
    if not both.any():
        raise ValueError("reference and other label no pixel in common")
    out = np.full(other.shape, -1, dtype=np.int64)
    out[both] = match_labels(reference[both], other[both])
    return out


def label_agreement(reference, labels, mask, names):
    """How far a label image agrees with a reference segmentation, after matching classes.

    ``labels`` has its classes renamed to the reference classes they overlap most
    (``match_label_images``); then the share of the ``mask`` pixels with the same label in both,
    whether the matching kept the numbering, and the Dice of each class.

    Parameters
    ----------
    reference, labels : array-like of int, same shape
        Label images, ``-1`` outside the region they label.
    mask : array-like of bool, same shape
        The pixels over which the agreement is counted.
    names : sequence of str
        ``names[k]`` names class ``k`` in the Dice entries.

    Returns
    -------
    dict
        ``agreement`` (float), ``same numbering`` (bool) and ``Dice <name>`` per class.
    """
    mask = np.asarray(mask)
    reference = np.asarray(reference)
    if mask.shape != reference.shape or mask.dtype != bool or not mask.any():
        raise ValueError(f"mask must be a boolean array of shape {reference.shape} with at "
                         "least one True pixel")
    matched = match_label_images(reference, labels)
    scores = dice(reference, matched)
    last = int(scores.index.max())
    if names is None or len(names) <= last:
        got = "None" if names is None else f"{len(names)} names"
        raise ValueError(f"names must name every class 0..{last}, got {got}")
    row = {"agreement": float(np.mean(matched[mask] == reference[mask])),
           "same numbering": bool(np.array_equal(matched, np.asarray(labels)))}
    row.update({f"Dice {names[k]}": d for k, d in scores.items()})
    return row


def region_stats(label_image, names=None, offset=None, affine=None):
    """Size and centroid of every class of a label image (2-D slice or 3-D volume).

    Parameters
    ----------
    label_image : array-like of int, shape (H, W) or (X, Y, Z)
        ``-1`` (any negative label) outside the region of interest.
    names : sequence of str, optional
        ``names[k]`` names class ``k``; the table then has exactly ``len(names)`` rows, classes
        with no pixel included (their centroid is NaN, their size 0). Default: one row per
        class present, named by its number.
    offset : sequence of int, one per axis, optional
        Added to the centroids: the index of the label image's first pixel (voxel) in a larger
        image, so that the centroids of a crop (``crop_to_mask``) are in the full image.
        Default: zeros ((0, 0) for a slice).
    affine : array-like (4, 4), optional
        3-D only: the voxel-to-world matrix of the full image (nibabel's ``img.affine``; with
        ``offset``, of the image the crop was taken from). Adds ``volume_ml`` (voxels x
        ``|det A[:3, :3]|`` / 1000) and ``centroid_x_mm``, ``centroid_y_mm``, ``centroid_z_mm``
        (the class's mean voxel mapped through the affine: world coordinates, e.g. MNI).

    Returns
    -------
    pandas.DataFrame
        Indexed by class name. A slice: ``pixels`` (area in pixels), ``fraction`` (of the
        labelled pixels), ``centroid_row`` and ``centroid_col`` (mean pixel coordinates).
        A volume: ``voxels``, ``fraction``, ``centroid_i``, ``centroid_j``, ``centroid_k``
        (mean voxel indices), then the affine's columns if one is given.

    Raises
    ------
    ValueError
        If the labels are not a 2-D or 3-D integer array, label nothing, outnumber ``names``,
        ``offset`` is not one finite number per axis, or ``affine`` is given for a slice or is
        not a 4 x 4, finite, non-singular matrix.
    """
    labels = np.asarray(label_image)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_image must be a 2-D or 3-D integer array, got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    ndim = labels.ndim
    given = offset
    try:
        offset = np.zeros(ndim) if offset is None else np.asarray(offset, dtype=float)
    except (TypeError, ValueError):
        offset = None
    if offset is None or offset.shape != (ndim,) or not np.isfinite(offset).all():
        what = "a (row, column) pair" if ndim == 2 else "three numbers (i, j, k)"
        raise ValueError(f"offset must be {what} of numbers, got {given!r}")
    if affine is not None:
        if ndim != 3:
            raise ValueError("affine is for a 3-D label_image (voxels to mm); got a 2-D one")
        affine = check_affine(affine)
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("label_image labels no pixel (every label is negative)")
    classes = np.arange(len(names)) if names is not None else np.unique(labels[labelled])
    if names is not None and labels.max() >= len(names):
        raise ValueError(f"label_image has class {labels.max()} but only {len(names)} names")
    where = np.nonzero(labelled)
    inside = labels[where]
    counts = np.bincount(inside, minlength=int(classes.max()) + 1 if classes.size else 1)
    sums = np.stack([np.bincount(inside, weights=c, minlength=counts.size) for c in where],
                    axis=1)  # (classes, ndim): summed coordinates of each class
    size, axes = ("pixels", ("row", "col")) if ndim == 2 else ("voxels", ("i", "j", "k"))
    records = []
    for k in classes:
        n = int(counts[k])
        centre = sums[k] / n + offset if n else np.full(ndim, np.nan)
        row = {"class": names[k] if names is not None else int(k), size: n,
               "fraction": n / int(labelled.sum())}
        row.update({f"centroid_{a}": float(c) for a, c in zip(axes, centre)})
        if affine is not None:
            row["volume_ml"] = n * voxel_volume_ml(affine)
            world = voxel_to_world(affine, centre) if n else np.full(3, np.nan)
            row.update({f"centroid_{a}_mm": float(c) for a, c in zip("xyz", world)})
        records.append(row)
    return pd.DataFrame.from_records(records, index="class")


def soft_volumes_ml(resp, affine):
    """Soft class volumes: each class's responsibilities summed over the voxels, in mL.

    Parameters
    ----------
    resp : array-like (K, N)
        Responsibilities of the N segmented voxels (``EMResult.resp``), columns summing to 1.
    affine : array-like (4, 4)
        Voxel-to-world matrix of the volume.

    Returns
    -------
    ndarray (K,)
        ``sum_n r_nk * |det A[:3, :3]| / 1000``; sums to the mask's volume.
    """
    try:
        R = np.asarray(resp, dtype=float)
    except (TypeError, ValueError):
        R = np.empty(0)
    if R.ndim != 2 or 0 in R.shape or not np.isfinite(R).all() or (R < 0).any() \
            or not np.allclose(R.sum(axis=0), 1.0, atol=1e-6):
        raise ValueError(f"resp must be a finite (K, N) array of responsibilities with columns "
                         f"summing to 1, got shape {R.shape}")
    return R.sum(axis=1) * voxel_volume_ml(affine)


def crop_to_mask(image, mask, margin=1):
    """Crop an image and its mask to the mask's bounding box plus ``margin`` pixels (voxels).

    Parameters
    ----------
    image : array-like (H, W) or (X, Y, Z)
    mask : array-like of bool, same shape
    margin : int >= 0, default 1

    Returns
    -------
    image_crop, mask_crop : ndarray, same number of dimensions
        New arrays (copies).
    offset : tuple of int, one per axis
        Index of the crop's first pixel in the original image (add it to coordinates
        measured in the crop to get coordinates in the original; ``region_stats(offset=...)``).
    """
    img, inside = check_image(image, mask, ndims=(2, 3))
    margin = check_int(margin, "margin", minimum=0)
    where = np.nonzero(inside)
    box = tuple(slice(max(int(w.min()) - margin, 0), int(w.max()) + margin + 1) for w in where)
    return img[box].copy(), inside[box].copy(), tuple(b.start for b in box)


def class_fractions(label_image, mask, n_classes):
    """Share of the ``mask``'s pixels (or voxels) in each class ``0 .. n_classes - 1``.

    Parameters
    ----------
    label_image : array-like of int
        Labels ``0 .. n_classes - 1`` inside the mask (anything outside it).
    mask : array-like of bool, same shape
    n_classes : int

    Returns
    -------
    ndarray of shape (n_classes,)
        Sums to 1.
    """
    labels = np.asarray(label_image)
    mask = np.asarray(mask)
    K = check_int(n_classes, "n_classes", minimum=1)
    if mask.shape != labels.shape or mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array of shape {labels.shape}, got "
                         f"{mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: there is no pixel to count")
    inside = labels[mask]
    if not np.issubdtype(inside.dtype, np.integer) or inside.min() < 0 or inside.max() >= K:
        raise ValueError(f"label_image must hold integers 0..{K - 1} inside the mask")
    return np.bincount(inside, minlength=K) / inside.size
