"""The Potts-prior primitives (hidden Markov random field) used by ``emlab.segmentation``.

Images are 2-D (H, W) or 3-D (X, Y, Z). Pixels (voxels) are grouped into colour sets such that
no two of one colour are neighbours; a colour's simultaneous update is then the same as
updating its pixels one by one (Gauss-Seidel).

- ``NEIGHBOURHOODS`` (the connectivities of each dimension), ``check_connectivity``,
  ``neighbour_offsets``, ``neighbour_table`` (each pixel's neighbours inside the mask),
  ``neighbour_weights`` (optional weights for anisotropic voxels), ``colour_sets``;
- ``neighbour_sums`` and the two sweeps, ``mean_field_sweep`` (soft) and ``icm_sweep`` (hard);
- ``mean_field_objective`` (free energy) and ``icm_objective`` (energy), which every sweep
  improves.
"""

from __future__ import annotations

import itertools

import numpy as np

# {number of dimensions: (face connectivity, full connectivity)}: 2-D 4 and 8, 3-D 6 and 26
NEIGHBOURHOODS = {2: (4, 8), 3: (6, 26)}


def check_connectivity(connectivity, ndim=2):
    """``connectivity`` as an int: 4 or 8 for a 2-D image, 6 or 26 for a 3-D volume."""
    allowed = NEIGHBOURHOODS[ndim]
    if isinstance(connectivity, bool) or connectivity not in allowed:
        other = NEIGHBOURHOODS[5 - ndim]
        raise ValueError(
            f"connectivity must be {allowed[0]} or {allowed[1]} for a {ndim}-D image "
            f"({other[0]} or {other[1]} are for a {5 - ndim}-D one), got {connectivity!r}")
    return int(connectivity)


def neighbour_offsets(ndim, connectivity):
    """The neighbours' offsets, shape (n_neighbours, ndim), ints.

    Face neighbours first (``-e_0, +e_0, -e_1, +e_1, ...``), then, for the full neighbourhood,
    the other offsets of ``{-1, 0, 1}^ndim`` in lexicographic order. In 2-D this is
    ``(-1, 0), (1, 0), (0, -1), (0, 1)`` then the diagonals ``(-1, -1), (-1, 1), (1, -1),
    (1, 1)``; in a volume with one axis of size 1 the in-plane offsets keep that order.
    """
    check_connectivity(connectivity, ndim)
    faces = []
    for axis in range(ndim):
        for step in (-1, 1):
            offset = [0] * ndim
            offset[axis] = step
            faces.append(tuple(offset))
    offsets = list(faces)
    if connectivity == NEIGHBOURHOODS[ndim][1]:
        offsets += [o for o in itertools.product((-1, 0, 1), repeat=ndim)
                    if any(o) and o not in faces]
    return np.array(offsets, dtype=np.intp)


def neighbour_table(mask, connectivity):
    """Neighbours of every masked pixel as indices into ``image[mask]``.

    Parameters
    ----------
    mask : ndarray of bool, 2-D or 3-D
    connectivity : int
        4 or 8 (2-D), 6 or 26 (3-D).

    Returns
    -------
    ndarray of int, shape (n_neighbours, N)
        Row ``j`` holds the index of the neighbour at ``neighbour_offsets(...)[j]``; a
        neighbour that is off the grid or outside the mask gets index ``N``, which points at a
        column of zeros appended to the responsibilities, so that it adds nothing to the
        neighbour sums.
    """
    mask = np.asarray(mask, dtype=bool)
    offsets = neighbour_offsets(mask.ndim, connectivity)
    N = int(mask.sum())
    padded_shape = tuple(s + 2 for s in mask.shape)
    index = np.full(padded_shape, N, dtype=np.intp)
    index[tuple(slice(1, -1) for _ in mask.shape)][mask] = np.arange(N)
    index = index.ravel()
    strides = np.array([int(np.prod(padded_shape[a + 1:])) for a in range(mask.ndim)])
    # flat position (in the padded grid) of every masked pixel, in row-major order
    positions = np.ravel_multi_index(tuple(c + 1 for c in np.nonzero(mask)), padded_shape)
    return np.stack([index[positions + int(offset @ strides)] for offset in offsets])


def neighbour_weights(connectivity, spacing):
    """Weights of the neighbours for voxels of size ``spacing``, or ``None`` (all equal to 1).

    ``w_j = min(spacing) * |o_j| / |o_j * spacing|`` for the offset ``o_j``: inversely
    proportional to the physical distance, scaled so that isotropic voxels (of any size) get
    every weight exactly 1, the unweighted prior. E.g. ``spacing=(1, 1, 3)`` with 6 neighbours:
    weight 1 in-plane and 1/3 across slices.
    """
    spacing = np.asarray(spacing, dtype=float)
    offsets = neighbour_offsets(spacing.size, connectivity)
    weights = (spacing.min() * np.linalg.norm(offsets, axis=1)
               / np.linalg.norm(offsets * spacing, axis=1))
    weights[np.isclose(weights, 1.0, rtol=1e-12, atol=0.0)] = 1.0
    return None if np.all(weights == 1.0) else weights


def colour_sets(mask, connectivity):
    """Indices into ``image[mask]`` of each colour; no two pixels of a colour are neighbours.

    Face neighbourhood (4 in 2-D, 6 in 3-D): two colours, the parity of the sum of the
    coordinates (a checkerboard). Full neighbourhood (8, 26): ``2^ndim`` colours, the parity of
    each coordinate (the cells of a 2 x 2 or 2 x 2 x 2 pattern), colour
    ``sum_a (x_a mod 2) 2^(ndim - 1 - a)``. Colours with no pixel are left out.
    """
    mask = np.asarray(mask, dtype=bool)
    coords = np.nonzero(mask)
    ndim = mask.ndim
    if connectivity == NEIGHBOURHOODS[ndim][0]:
        codes, n_colours = sum(coords) % 2, 2
    else:
        codes = sum((c % 2) << (ndim - 1 - a) for a, c in enumerate(coords))
        n_colours = 2 ** ndim
    colours = [np.flatnonzero(codes == c) for c in range(n_colours)]
    return [pixels for pixels in colours if pixels.size]


def neighbour_sums(Q, table, pixels=slice(None), weights=None):
    """``S[k, n] = sum over the neighbours m of n of w_m Q[k, m]``, for the ``pixels`` asked.

    ``Q`` has shape (K, N + 1), its last column zero (the index of absent neighbours);
    ``weights`` (n_neighbours,) or ``None`` (every weight 1).
    """
    neighbours = table[:, pixels]
    total = np.take(Q, neighbours[0], axis=1)
    if weights is not None:
        total *= weights[0]
    for j, column in enumerate(neighbours[1:], start=1):
        # np.take and a loop of adds: ~5x faster than Q[:, table]
        term = np.take(Q, column, axis=1)
        if weights is not None:
            term *= weights[j]
        total += term
    return total


def mean_field_sweep(Q, log_data, beta, colours, table, weights=None):
    """One mean-field pass over the colours; updates ``Q`` (K, N + 1) in place."""
    for pixels in colours:
        logits = (np.take(log_data, pixels, axis=1)
                  + beta * neighbour_sums(Q, table, pixels, weights))
        w = np.exp(logits - logits.max(axis=0))
        Q[:, pixels] = w / w.sum(axis=0)


def icm_sweep(Q, cost, beta, colours, table, weights=None):
    """One ICM pass over the colours; updates the one-hot ``Q`` (K, N + 1) in place."""
    K = Q.shape[0]
    for pixels in colours:
        energy = np.take(cost, pixels, axis=1) - beta * neighbour_sums(Q, table, pixels, weights)
        Q[:, pixels] = np.eye(K)[:, np.argmin(energy, axis=0)]


def mean_field_objective(Q, log_data, beta, table, weights=None):
    """Mean-field objective (higher is better), up to the Potts normalising constant:
    sum_n sum_k q_nk (ln N(x_n; theta_k) - ln q_nk) + beta/2 sum_n sum_{m~n} w_nm q_n.q_m."""
    from scipy.special import xlogy

    q = Q[:, :-1]
    pairs = 0.5 * beta * (q * neighbour_sums(Q, table, weights=weights)).sum()
    return float((q * log_data).sum() - xlogy(q, q).sum() + pairs)


def icm_objective(Q, cost, sigma2, beta, table, weights=None):
    """ICM energy (lower is better): sum_n (x_n - mu_{z_n})^2 / (2 sigma^2)
    + N/2 ln(2 pi sigma^2) - beta * (weighted) #{neighbour pairs in the same class}."""
    q = Q[:, :-1]
    pairs = 0.5 * beta * (q * neighbour_sums(Q, table, weights=weights)).sum()
    return float((q * cost).sum() + 0.5 * q.shape[1] * np.log(2 * np.pi * sigma2) - pairs)
