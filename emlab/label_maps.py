"""Measures on label images: overlap, matching, per-class statistics, cropping.

- ``dice`` (per class), ``match_label_images`` (renumber one labelling to another),
  ``label_agreement`` (agreement and Dice after matching);
- ``region_stats``: size and centroid of every class;
- ``crop_to_mask``: the bounding box of a mask, with a margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from em_helpers import match_labels
from emlab.validation import check_image, check_int


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
    for name, arr in (("a", a), ("b", b)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
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
    reference = np.asarray(reference)
    other = np.asarray(other)
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
    row = {"agreement": float(np.mean(matched[mask] == reference[mask])),
           "same numbering": bool(np.array_equal(matched, np.asarray(labels)))}
    row.update({f"Dice {name}": d for name, d in zip(names, dice(reference, matched))})
    return row


def region_stats(label_image, names=None, offset=(0, 0)):
    """Area and centroid of every class of a label image.

    Parameters
    ----------
    label_image : array-like of int, shape (H, W)
        ``-1`` (any negative label) outside the region of interest.
    names : sequence of str, optional
        ``names[k]`` names class ``k``; the table then has exactly ``len(names)`` rows, classes
        with no pixel included (their centroid is NaN, their area 0). Default: one row per
        class present, named by its number.
    offset : (int, int), default (0, 0)
        Added to the centroids: the (row, column) of the label image's top-left pixel in a
        larger image, so that the centroids of a crop (``crop_to_mask``) are in the full image.

    Returns
    -------
    pandas.DataFrame
        Indexed by class name, columns ``pixels`` (area in pixels), ``fraction`` (of the
        labelled pixels), ``centroid_row`` and ``centroid_col`` (mean pixel coordinates).
    """
    labels = np.asarray(label_image)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_image must be a 2-D integer array, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    offset = np.asarray(offset, dtype=float)
    if offset.shape != (2,) or not np.isfinite(offset).all():
        raise ValueError(f"offset must be a (row, column) pair of numbers, got {offset!r}")
    labelled = labels >= 0
    if not labelled.any():
        raise ValueError("label_image labels no pixel (every label is negative)")
    classes = np.arange(len(names)) if names is not None else np.unique(labels[labelled])
    if names is not None and labels.max() >= len(names):
        raise ValueError(f"label_image has class {labels.max()} but only {len(names)} names")
    rows, cols = np.indices(labels.shape)
    records = []
    for k in classes:
        sel = labels == k
        n = int(sel.sum())
        records.append({"class": names[k] if names is not None else int(k), "pixels": n,
                        "fraction": n / int(labelled.sum()),
                        "centroid_row": rows[sel].mean() + offset[0] if n else np.nan,
                        "centroid_col": cols[sel].mean() + offset[1] if n else np.nan})
    return pd.DataFrame.from_records(records, index="class")


def crop_to_mask(image, mask, margin=1):
    """Crop an image and its mask to the mask's bounding box plus ``margin`` pixels.

    Returns
    -------
    image_crop, mask_crop : ndarray (h, w)
        New arrays (copies).
    offset : tuple (row, col)
        Position of the crop's top-left pixel in the original image (add it to coordinates
        measured in the crop to get coordinates in the original).
    """
    img, inside = check_image(image, mask)
    margin = check_int(margin, "margin", minimum=0)
    rows, cols = np.nonzero(inside)
    r0, c0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    r1, c1 = rows.max() + margin + 1, cols.max() + margin + 1
    return img[r0:r1, c0:c1].copy(), inside[r0:r1, c0:c1].copy(), (int(r0), int(c0))


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
