"""Lesions found, measured and located: voxels that no tissue explains, grouped and refined by EM.

``find_lesions`` follows the design of Van Leemput et al. (IEEE TMI 20(8), 2001: MS lesions as
outliers of a tissue model), in four steps, each a piece this package already has:

1. **Tissue mixture.** ``segment_image`` fits ``n_tissues`` Gaussians to the intensities
   (plain soft EM), means ``mu_k`` and standard deviations ``sigma_k``. A voxel's
   atypicality ``z_n`` is how many standard deviations it lies above the brightest tissue's
   mean, or below the darkest's (0 in between: an intensity between two tissues' means is a
   blend of them, partial volume). A large lesion inflates the tissue it is fitted with, so
   the tissues are fitted again (``run_em``, from the first fit) without the candidates that
   steps 2-3 find at the liberal level ``2 kappa / 3``, and the test below uses that fit.
2. **Typicality, made coherent by the Potts prior.** Each voxel is either explained by the
   tissues, with log-likelihood ``-z_n^2 / 2`` (up to the shared constant), or an
   outlier, with the constant ``-kappa^2 / 2``: on its own a voxel is an outlier exactly when
   ``z_n > kappa`` (a typicality test as in Van Leemput et al., ``kappa = typicality``). The two-class field
   is then smoothed by mean field under the Potts prior (``emlab.imaging.potts``, strength
   ``beta`` per neighbour, as in ``segment_image``): ``q_n(out) ∝ exp(-kappa^2 / 2 + beta
   sum_{m ~ n} q_m(out))`` against ``exp(-z_n^2 / 2 + beta sum_{m ~ n} q_m(in))``, so that a
   cluster of moderately atypical voxels is kept and isolated noise is dropped.
3. **Connected components** (``scipy.ndimage.label``, face neighbours) of the voxels with
   ``q_n(out) > 1/2``, kept if at least ``min_volume_ml``.
4. **EM decides each lesion's boundary.** Around each component (its bounding box plus
   ``margin_mm``), ``segment_image`` runs soft EM under the Potts prior with one class per
   tissue that holds at least 10 % of the box and one lesion class, started from the tissue fit and from the
   component's own mean and variance. The lesion is the connected part of the final lesion
   class that meets the component (components that grow into one lesion are merged). The
   prior only couples neighbours, so the box loses nothing that the whole brain would add
   except tissue parameters re-estimated from the box's own voxels; it keeps the cost of this
   step small against the tissue fit.

What intensity cannot separate is not found: a lesion between the darkest and the brightest
tissue's mean is explained as a blend of tissues. A dark lesion in white matter at grey-matter
intensity, or a bright one in grey matter at white-matter intensity, is therefore missed (it
would take the position of the voxel, e.g. a tissue atlas, which this model does not use).
Bright lesions above the brightest tissue and dark lesions below the darkest are found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from em_helpers import EMResult, run_em, soft_responsibilities
from emlab.engine.validation import check_image, check_int
from emlab.imaging import label_maps
from emlab.imaging.phantoms import implant_lesion
from emlab.imaging.nifti import check_affine, voxel_sizes_mm, voxel_volume_ml
from emlab.imaging.potts import ColouredNeighbours, coloured_mean_field_sweep
from emlab.imaging.segmentation import DIPY_MODEL, atypicality, segment_image

COLUMNS = ["voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
           "mean_intensity", "contrast"]


def _check_positive(value, name, allow_zero=False):
    """A finite number > 0 (>= 0 with ``allow_zero``), or a ValueError naming ``name``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_tissues(tissues, K):
    """``tissues`` must be a soft ``EMResult`` with ``K`` components of one intensity."""
    if not isinstance(tissues, EMResult) or tissues.method != "soft" \
            or np.shape(tissues.means) != (K, 1):
        shape = np.shape(getattr(tissues, "means", None))
        raise ValueError(f"tissues must be the soft EMResult of a {K}-component fit of the "
                         f"intensities (segment_image(..., n_components={K})[1]), got "
                         f"{type(tissues).__name__} with means of shape {shape}")
    return tissues


def _outlier_field(z, inside, kappa, beta, max_sweeps=100, tol=1e-3):
    """``q_n(out)`` over ``image[inside]``: the typicality test, smoothed by the Potts prior
    (mean field with fixed data terms, coloured sweeps until no probability moves by ``tol``).

    Only the voxels within two voxels of one with ``z > kappa / 2`` are swept; every other
    voxel is taken as explained (its data term favours the tissues by ``3 kappa^2 / 8`` nats
    or more, and so do its neighbours'), which keeps the cost far below a tissue fit's."""
    start = (z > kappa).astype(float)
    if beta == 0 or not start.any():
        return start
    near = np.zeros(inside.shape, dtype=bool)
    near[inside] = z > kappa / 2
    near = ndimage.binary_dilation(near, iterations=2) & inside
    z_near = z[near[inside]]
    layout = ColouredNeighbours.of(near, 6)
    N = z_near.size
    log_data = layout.to_inner(np.stack([-0.5 * z_near ** 2, np.full(N, -0.5 * kappa ** 2)]))
    Q = np.zeros((2, N + 1))
    layout.to_inner(np.stack([1.0 - start[near[inside]], start[near[inside]]]), out=Q[:, :-1])
    work = {}
    for _ in range(max_sweeps):
        if coloured_mean_field_sweep(Q, log_data, beta, layout, work).change < tol:
            break
    out = np.zeros(z.size)
    out[near[inside]] = layout.to_mask_order(Q)[1]
    return out


def _candidates(x, fit, inside, kappa, beta, min_voxels):
    """Connected components (labels 1..C, 0 elsewhere) of at least ``min_voxels`` voxels of the
    coherent outlier field of ``fit`` at typicality ``kappa``."""
    outliers = np.zeros(inside.shape, dtype=bool)
    outliers[inside] = _outlier_field(atypicality(x, fit), inside, kappa, beta) > 0.5
    components, n = ndimage.label(outliers)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    sizes[0] = 0
    big = np.flatnonzero(sizes >= min_voxels)
    renumber = np.zeros(n + 1, dtype=np.int64)
    renumber[big] = np.arange(1, big.size + 1)
    return renumber[components]


def _tissue_start(x, labels, tissue_fit, lesion, present):
    """The start of the lesion's EM in a crop: the tissues ``present`` (global parameters) and
    the lesion (its component's mean and variance); one-hot responsibilities."""
    means = np.r_[tissue_fit.means[present, 0], x[lesion].mean()]
    lesion_var = max(float(x[lesion].var()), float(tissue_fit.covariances[:, 0, 0].min()))
    variances = np.r_[tissue_fit.covariances[present, 0, 0], lesion_var]
    K = means.size
    resp = np.zeros((K, x.size))
    for j, k in enumerate(present):
        resp[j, labels == k] = 1.0
    resp[:, lesion] = 0.0
    resp[K - 1, lesion] = 1.0
    missing = resp.sum(axis=0) == 0  # a voxel of an absent tissue: its nearest present class
    if missing.any():
        nearest = np.argmin(np.abs(x[missing, None] - means[None, :]) / np.sqrt(variances), 1)
        resp[nearest, np.flatnonzero(missing)] = 1.0
    weights = resp.mean(axis=1)
    return EMResult(means=means[:, None], covariances=variances[:, None, None],
                    weights=weights, resp=resp, labels=np.argmax(resp, axis=0), n_iter=0,
                    converged=True, objective=np.nan, history=[], init_means=means[:, None],
                    method="soft")


def _refine(img, inside, tissue_labels, tissue_fit, component, margin, beta, spacing):
    """EM under the Potts prior in a box around one component: the lesion's voxels (bool,
    full image), or an empty mask if the lesion class vanished."""
    where = np.nonzero(component)
    box = tuple(slice(max(int(w.min()) - m, 0), int(w.max()) + m + 1)
                for w, m in zip(where, margin))
    crop_mask = inside[box]
    x = img[box][crop_mask]
    labels = tissue_labels[box][crop_mask]
    lesion = component[box][crop_mask]
    counts = np.bincount(labels[~lesion], minlength=tissue_fit.means.shape[0])
    # the tissues that hold at least 10 % of the box (a rarer one, with no mixing weight under
    # the prior, wanders off to split another tissue); at least the most common one
    present = [k for k in range(counts.size) if counts[k] >= max(0.1 * x.size, 2)] \
        or [int(np.argmax(counts))]
    start = _tissue_start(x, labels, tissue_fit, lesion, present)
    K = start.means.shape[0]
    if beta > 0:
        # dipy's model (no class proportions, one variance per class): the default mean field
        # (estimated proportions, one shared variance) did worse here in bench_lesions.py
        # --quick (2 mm template, 54 implants, both run side by side): at +3 sd 8/9 volumes
        # within 10 % against 9/9 with this model (+12.2 % for 10 mL next to the ventricles);
        # dark lesions below CSF 5/9 found against 9/9 (volume errors +7.7 % to +26.6 %);
        # bright ones >= 5 sd 18/18 with both
        crop_labels, fit = segment_image(img[box], crop_mask, K, "soft", beta=beta,
                                         start=start, spacing=spacing, tol=1e-3, **DIPY_MODEL)
        crop_labels = crop_labels == int(  # classes numbered by mean: find the lesion's start
            np.argmin(np.abs(fit.init_means[:, 0] - start.means[-1, 0])))
    else:  # no prior: soft EM on the box's intensities from the same start
        fit = run_em(x[:, None], K, method="soft", max_iter=500,
                     init={"means": start.means, "covariances": start.covariances,
                           "weights": start.weights})
        crop_labels = np.zeros(crop_mask.shape, dtype=bool)
        crop_labels[crop_mask] = fit.labels == K - 1
    found = crop_labels
    parts, _ = ndimage.label(found)
    keep = np.unique(parts[component[box] & found])
    out = np.zeros(img.shape, dtype=bool)
    out[box] = np.isin(parts, keep[keep > 0])
    return out


def find_lesions(image, mask=None, *, affine=None, n_tissues=3, min_volume_ml=0.5,
                 typicality=2.5, beta=1.0, margin_mm=6.0, random_state=0, tissues=None):
    """Find the lesions of a 3-D scan: the voxels that no tissue explains, as measured regions.

    See the module docstring for the method (Van Leemput et al. 2001): a tissue mixture by
    EM, a typicality test made spatially coherent by the Potts prior, connected components of
    at least ``min_volume_ml``, and soft EM under the prior around each component, with a
    lesion class started from it, to decide its boundary.

    Both bright lesions (above the brightest tissue) and dark ones (below the darkest) are
    found. **A lesion whose intensity lies between the darkest and the brightest tissue's
    mean, or not far enough beyond them, cannot be told from the tissues by intensity**: e.g.
    a dark lesion in white matter at grey-matter intensity is missed, and so is a faint bright
    one inside the bright tail of healthy white matter (notebook 10).

    Parameters
    ----------
    image : array-like (X, Y, Z)
        Intensities; finite inside the mask. Not modified.
    mask : array-like of bool, same shape, optional
        The brain. Default: every voxel.
    affine : array-like (4, 4), optional
        Voxel-to-world matrix (nibabel's ``img.affine``): volumes in mL and centroids in world
        mm, and the Potts prior weighted by the voxel sizes. Default: the identity (1 mm
        voxels; centroids in voxel units).
    n_tissues : int >= 1, default 3
        Gaussian components of the tissue mixture (CSF, grey and white matter).
    min_volume_ml : float > 0, default 0.5
        Smaller components are not reported.
    typicality : float > 0, default 2.5
        ``kappa``: a voxel alone is an outlier when it lies more than ``kappa`` standard
        deviations above the brightest tissue's mean or below the darkest's.
    beta : float >= 0, default 1.0
        Strength of the Potts prior (nats per neighbour) in the outlier field and in the
        lesions' EM; 0 turns it off.
    margin_mm : float > 0, default 6.0
        The box around each component in which EM decides its boundary.
    random_state : int, default 0
        Seed of the tissue fit's starts.
    tissues : EMResult, optional
        A tissue mixture to use instead of fitting one (step 1 skipped): a soft fit with
        ``n_tissues`` components of one intensity, e.g. ``segment_image(healthy, mask,
        n_tissues)[1]`` of a lesion-free scan of the same kind, when many lesions are tried
        on one scan (the notebook's sensitivity map).

    Returns
    -------
    table : pandas.DataFrame
        One row per lesion, largest first, index ``lesion`` = 1..L; columns ``voxels``,
        ``volume_ml``, ``centroid_x_mm``, ``centroid_y_mm``, ``centroid_z_mm`` (world
        coordinates through ``affine``; voxel indices when it is None), ``mean_intensity``
        and ``contrast`` (the lesion's mean minus the mean nearest to it, in that tissue's
        standard deviations: positive brighter, negative darker). Empty when there is none.
        ``table.attrs["tissue_mean"]`` and ``table.attrs["tissue_sd"]`` hold the means and
        standard deviations of the tissue mixture used (tuples of floats, in its components'
        order), against which ``contrast`` is measured.
    lesion_labels : ndarray of int64, the image's shape
        0 for no lesion, ``i`` for lesion ``i``, -1 outside the mask.

    Raises
    ------
    ValueError
        If the image is not 3-D or not finite inside the mask, the mask's shape differs,
        ``affine`` is not a 4 x 4 non-singular matrix, ``min_volume_ml``, ``typicality`` or
        ``margin_mm`` is not a positive finite number, ``beta`` is negative or not finite,
        ``n_tissues`` is not an int >= 1, or ``tissues`` is not a soft fit of ``n_tissues``
        components of one intensity.
    """
    img, inside = check_image(image, mask, ndims=(3,))
    A = np.eye(4) if affine is None else check_affine(affine)
    K = check_int(n_tissues, "n_tissues", minimum=1)
    min_volume_ml = _check_positive(min_volume_ml, "min_volume_ml")
    kappa = _check_positive(typicality, "typicality")
    beta = _check_positive(beta, "beta", allow_zero=True)
    margin_mm = _check_positive(margin_mm, "margin_mm")
    random_state = check_int(random_state, "random_state", minimum=0)
    spacing = tuple(float(s) for s in voxel_sizes_mm(A))
    min_voxels = min_volume_ml / voxel_volume_ml(A)
    x = img[inside]
    if tissues is not None:
        tissue_fit = _check_tissues(tissues, K)
    else:
        _, first = segment_image(img, inside, K, "soft", random_state=random_state,
                                 spacing=spacing)
        # a large lesion inflates the tissue it is fitted with: re-fit the tissues without
        # the candidates of a liberal first test (2/3 kappa), then test again at kappa
        suspect = _candidates(x, first, inside, 2.0 * kappa / 3.0, beta, min_voxels)[inside] > 0
        tissue_fit = run_em(x[~suspect][:, None], K, method="soft",
                            init={"means": first.means, "covariances": first.covariances,
                                  "weights": first.weights}, max_iter=500)
    resp, _ = soft_responsibilities(x[:, None], tissue_fit.means, tissue_fit.covariances,
                                    tissue_fit.weights)
    tissue_labels = np.full(img.shape, -1, dtype=np.int64)
    tissue_labels[inside] = np.argmax(resp, axis=0)
    components = _candidates(x, tissue_fit, inside, kappa, beta, min_voxels)
    margin = np.ceil(margin_mm / np.array(spacing)).astype(int)
    lesions = []
    for c in range(1, int(components.max()) + 1):
        found = _refine(img, inside, tissue_labels, tissue_fit, components == c, margin, beta,
                        spacing)
        overlapping = [i for i, other in enumerate(lesions) if (other & found).any()]
        for i in overlapping[::-1]:  # two components that EM grew into one lesion: merge
            found |= lesions.pop(i)
        if found.sum() >= min_voxels:
            lesions.append(found)
    mu, sd = tissue_fit.means[:, 0], np.sqrt(tissue_fit.covariances[:, 0, 0])
    return _lesion_table(img, inside, lesions, A, affine is not None, mu, sd)


def _lesion_table(img, inside, lesions, A, world, mu, sd):
    """The table and the label image of ``lesions`` (bool masks), largest first; a voxel that
    two refined lesions share goes to the larger."""
    lesions = sorted(lesions, key=lambda m: -int(m.sum()))
    labels = np.where(inside, 0, -1).astype(np.int64)
    for i, found in reversed(list(enumerate(lesions, start=1))):
        labels[found & inside] = i
    records = []
    for i in range(1, len(lesions) + 1):
        voxels = labels == i
        stats = label_maps.region_stats(np.where(inside, voxels.astype(np.int64), -1),
                                        affine=A if world else None).loc[1]
        mean = float(img[voxels].mean())
        signed = (mean - mu) / sd
        nearest = int(np.argmin(np.abs(mean - mu)))  # the tissue of the nearest mean
        centre = ([stats[f"centroid_{a}_mm"] for a in "xyz"] if world
                  else [stats[f"centroid_{a}"] for a in "ijk"])
        records.append([int(voxels.sum()), int(voxels.sum()) * voxel_volume_ml(A), *centre,
                        mean, float(signed[nearest])])
    table = pd.DataFrame(records, columns=COLUMNS,
                         index=pd.RangeIndex(1, len(records) + 1, name="lesion"))
    table["voxels"] = table["voxels"].astype(np.int64)
    # plain floats: pandas compares attrs when it concatenates tables
    table.attrs = {"tissue_mean": tuple(float(m) for m in mu),
                   "tissue_sd": tuple(float(s) for s in sd)}
    return table, labels


def score_against_truth(table, lesion_labels, truth, affine=None):
    """How well ``find_lesions`` measured one implanted lesion of known extent ``truth``.

    The found lesion is the row whose voxels overlap ``truth`` most (none: not found).

    Returns
    -------
    dict
        ``true_ml`` (the truth's volume), ``found_ml`` (NaN if not found), ``volume_error``
        (relative, NaN if not found), ``centroid_error_mm`` (NaN if not found; in voxel units
        when ``affine`` is None) and ``other_ml``: the volume of every other reported lesion.
    """
    labels = np.asarray(lesion_labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"lesion_labels must hold integer labels (find_lesions' second "
                         f"output), got dtype {labels.dtype}")
    truth = np.asarray(truth)
    if truth.dtype != bool:
        if not (np.issubdtype(truth.dtype, np.number) and np.isin(truth, (0, 1)).all()):
            raise ValueError("truth must hold booleans (or only 0 and 1): the lesion's voxels")
        truth = truth.astype(bool)
    if not isinstance(table, pd.DataFrame) or not set(COLUMNS) <= set(table.columns) \
            or not set(range(1, int(labels.max(initial=0)) + 1)) <= set(table.index):
        raise ValueError(f"table must be find_lesions' table of the lesions in lesion_labels "
                         f"(columns {COLUMNS}, a row for each lesion 1.."
                         f"{int(labels.max(initial=0))})")
    if labels.shape != truth.shape or labels.ndim != 3:
        raise ValueError(f"lesion_labels and truth must be 3-D of one shape, got {labels.shape} "
                         f"and {truth.shape}")
    if not truth.any():
        raise ValueError("truth holds no voxel")
    A = np.eye(4) if affine is None else check_affine(affine)
    voxel_ml = voxel_volume_ml(A)
    true_centre = np.argwhere(truth).mean(axis=0) @ A[:3, :3].T + A[:3, 3]
    row = {"true_ml": int(truth.sum()) * voxel_ml, "found_ml": np.nan, "volume_error": np.nan,
           "centroid_error_mm": np.nan, "other_ml": float(table["volume_ml"].sum())}
    overlap = np.bincount(labels[truth & (labels > 0)], minlength=len(table) + 1)
    if overlap.max(initial=0) == 0:
        return row
    best = int(np.argmax(overlap))
    found = table.loc[best]
    centre = np.array([found[c] for c in COLUMNS[2:5]], dtype=float)
    if affine is None:  # the table holds voxel indices: the same map (the identity)
        centre = centre @ A[:3, :3].T + A[:3, 3]
    row.update(found_ml=float(found["volume_ml"]),
               volume_error=float(found["volume_ml"]) / row["true_ml"] - 1.0,
               centroid_error_mm=float(np.linalg.norm(centre - true_centre)),
               other_ml=row["other_ml"] - float(found["volume_ml"]))
    return row


def implant_and_find(image, mask, affine, position_mm, volume_ml, intensity, texture_sd=0.0,
                     box_mm=None, random_state=0, **options):
    """One case of a sensitivity map: implant a ball, find it, score it.

    A ball of ``volume_ml`` centred at world ``position_mm`` (``phantoms.implant_lesion``,
    ``intensity`` plus seeded Gaussian texture ``texture_sd``) goes into a copy of ``image``;
    ``find_lesions(..., **options)`` looks for it, on the whole image or, with ``box_mm``, on
    the box of the ball plus ``box_mm`` on every side (with the affine moved to the box, so
    that centroids stay world coordinates). With a ``tissues`` fit in ``options`` every other
    step of ``find_lesions`` only looks at the outlying voxels and their neighbours, so the box
    gives the whole image's answer unless a lesion found comes within ``margin_mm`` of a face
    where the box cuts the image (its EM box was then clipped): in that case the whole image
    is searched instead. Returns ``score_against_truth``'s dict (with a box, its ``other_ml``
    counts the lesions found in the box only).
    """
    A = check_affine(affine)
    img, inside = check_image(image, mask, ndims=(3,))
    try:
        position = np.asarray(position_mm, dtype=float)
    except (TypeError, ValueError):
        position = None
    if position is None or position.shape != (3,) or not np.isfinite(position).all():
        raise ValueError(f"position_mm must be 3 finite numbers (world millimetres), got "
                         f"{position_mm!r}")
    centre = np.linalg.solve(A, np.r_[position, 1.0])[:3]
    radius = (3.0 * _check_positive(volume_ml, "volume_ml") * 1000.0 / (4.0 * np.pi)) ** (1 / 3)
    lesioned, truth = implant_lesion(img, centre, (radius,) * 3, intensity=intensity,
                                     texture_sd=texture_sd, mask=inside, affine=A,
                                     random_state=random_state)
    if box_mm is not None:
        margin = np.ceil(_check_positive(box_mm, "box_mm") / voxel_sizes_mm(A)).astype(int)
        where = np.nonzero(truth)
        box = tuple(slice(max(int(w.min()) - m, 0), int(w.max()) + m + 1)
                    for w, m in zip(where, margin))
        offset = np.array([b.start for b in box], dtype=float)
        A_box = A.copy()
        A_box[:3, 3] += A[:3, :3] @ offset
        table, labels = find_lesions(lesioned[box], inside[box], affine=A_box,
                                     random_state=random_state, **options)
        if not _near_cut_faces(labels > 0, box, img.shape,
                               options.get("margin_mm", 6.0) / voxel_sizes_mm(A)):
            return score_against_truth(table, labels, truth[box], A_box)
        # a lesion reaches the box's cut: its EM box was clipped; the whole image instead
    table, labels = find_lesions(lesioned, inside, affine=A, random_state=random_state,
                                 **options)
    return score_against_truth(table, labels, truth, A)


def _near_cut_faces(found, box, shape, reach):
    """Whether ``found`` (in the box) comes within ``reach`` voxels (per axis) of a face of the
    box that cuts the image (a face on the image's own border cuts nothing)."""
    for axis, (part, size, r) in enumerate(zip(box, shape, np.ceil(reach).astype(int))):
        along = np.moveaxis(found, axis, 0)
        if part.start > 0 and along[:r + 1].any():
            return True
        if min(part.stop, size) < size and along[-(r + 1):].any():
            return True
    return False
