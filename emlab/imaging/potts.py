"""The Potts-prior primitives (hidden Markov random field) used by ``emlab.imaging.segmentation``.

Images are 2-D (H, W) or 3-D (X, Y, Z). Pixels (voxels) are grouped into colour sets such that
no two of one colour are neighbours; a colour's simultaneous update is then the same as
updating its pixels one by one (Gauss-Seidel).

- ``NEIGHBOURHOODS`` (the connectivities of each dimension), ``check_connectivity``,
  ``neighbour_offsets``, ``neighbour_table`` (each pixel's neighbours inside the mask),
  ``neighbour_weights`` (optional weights for anisotropic voxels), ``colour_sets``;
- ``homogeneous_field``: the external field that gives a Potts prior given class
  proportions (at the homogeneous mean-field fixed point), and ``homogeneous_marginals``, the
  proportions that a field gives; ``pseudo_likelihood_field``, the field of given proportions
  for the neighbours' current votes (``coloured_neighbour_sums``);
- ``ColouredNeighbours`` and the ``coloured_*`` functions: the mean-field (soft) and ICM (hard)
  sweeps, and the objectives every sweep improves (free energy, energy), on the pixels
  renumbered colour by colour (a colour is then a slice, and the neighbour sums are 1-D
  gathers). The plain sweeps over ``neighbour_table`` that they are tested against are in
  ``tests/potts_reference.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

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


def _padded_index(mask, coords=None):
    """The index of every pixel of ``image[mask]`` on the grid padded by one pixel (``N``
    elsewhere), flattened; each masked pixel's flat position on that grid; the grid's strides.
    ``coords``: ``np.nonzero(mask)`` if already known."""
    coords = np.nonzero(mask) if coords is None else coords
    N = coords[0].size
    padded_shape = tuple(s + 2 for s in mask.shape)
    strides = np.array([int(np.prod(padded_shape[a + 1:])) for a in range(mask.ndim)])
    # flat position (in the padded grid) of every masked pixel, in row-major order
    positions = sum((c + 1) * int(stride) for c, stride in zip(coords, strides))
    index = np.full(int(np.prod(padded_shape)), N, dtype=np.intp)
    index[positions] = np.arange(N)
    return index, positions, strides


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
    index, positions, strides = _padded_index(mask)
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
    return _colours_of(np.nonzero(mask), mask.ndim, connectivity)


def _colours_of(coords, ndim, connectivity):
    """``colour_sets`` from the coordinates of the masked pixels (``np.nonzero(mask)``)."""
    if connectivity == NEIGHBOURHOODS[ndim][0]:
        codes, n_colours = sum(coords) % 2, 2
    else:
        codes = sum((c % 2) << (ndim - 1 - a) for a, c in enumerate(coords))
        n_colours = 2 ** ndim
    colours = [np.flatnonzero(codes == c) for c in range(n_colours)]
    return [pixels for pixels in colours if pixels.size]


# ------------------------------------------------------------------------------------------
# The same sweeps on pixels renumbered colour by colour (what ``segment_image`` runs)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColouredNeighbours:
    """The pixels of ``image[mask]`` renumbered colour by colour, with their neighbours.

    Internal position ``i`` holds pixel ``order[i]`` of ``image[mask]`` (``inverse`` undoes
    it); colour ``c`` occupies the positions ``bounds[c][0] <= i < bounds[c][1]``, so that a
    colour's responsibilities are a slice (a view), not a gather. ``tables[c]`` (n_neighbours,
    size of colour c) holds the internal positions of its pixels' neighbours (``N``: absent).
    ``bipartite``: two colours with every neighbour pair across them (the 4- and
    6-neighbourhoods), so the last colour's neighbour sums give the pair term of the objective.
    """

    order: np.ndarray
    inverse: np.ndarray
    bounds: tuple
    tables: tuple
    weights: np.ndarray | None
    bipartite: bool

    @classmethod
    def of(cls, mask, connectivity, spacing=None):
        """Build it for a 2-D or 3-D ``mask``; ``spacing`` as in ``neighbour_weights``."""
        mask = np.asarray(mask, dtype=bool)
        offsets = neighbour_offsets(mask.ndim, connectivity)
        coords = np.nonzero(mask)
        colours = _colours_of(coords, mask.ndim, connectivity)
        index, positions, strides = _padded_index(mask, coords)
        del coords
        N = positions.size
        order = np.concatenate(colours)
        inverse = np.empty(N + 1, dtype=np.intp)
        inverse[order] = np.arange(N)
        inverse[N] = N  # absent stays absent
        bounds, tables, start = [], [], 0
        for pixels in colours:
            here = positions[pixels]
            table = np.empty((len(offsets), pixels.size), dtype=np.intp)
            for j, offset in enumerate(offsets):
                inverse.take(index.take(here + int(offset @ strides)), out=table[j], mode="clip")
            tables.append(table)
            bounds.append((start, start + pixels.size))
            start += pixels.size
        weights = None if spacing is None else neighbour_weights(connectivity, spacing)
        bipartite = connectivity == NEIGHBOURHOODS[mask.ndim][0] and len(colours) == 2
        return cls(order, inverse[:N], tuple(bounds), tuple(tables), weights, bipartite)

    def mean_neighbours(self):
        """``z``: the mean over the pixels of their neighbours' summed weights inside the mask
        (the mean number of neighbours in the mask when unweighted): twice the pair weights
        per pixel."""
        n_pixels = self.order.size
        weights = np.ones(self.tables[0].shape[0]) if self.weights is None else self.weights
        return float(sum(float(weights @ (table < n_pixels).sum(axis=1)) for table in self.tables)
                     / n_pixels)

    def to_inner(self, R, out=None):
        """``R`` (K, N) in the order of ``image[mask]`` -> the internal order (one 1-D gather
        per row)."""
        out = np.empty(R.shape) if out is None else out
        for k in range(R.shape[0]):
            R[k].take(self.order, out=out[k], mode="clip")
        return out

    def to_mask_order(self, Q, out=None):
        """``Q`` (K, N or N + 1) in the internal order -> (K, N) in the order of
        ``image[mask]``."""
        out = np.empty((Q.shape[0], self.order.size)) if out is None else out
        for k in range(Q.shape[0]):
            Q[k].take(self.inverse, out=out[k], mode="clip")
        return out


_ROW_GATHER_FROM = 1 << 15  # colours of at least this many pixels gather one class at a time
# Every gather below uses mode="clip": the indices are valid by construction, and with
# mode="raise" (the default) numpy checks each one and buffers ``out``, twice the time.


def _coloured_sums(Q, table, weights, out, term):
    """Neighbour sums (K, n) of one colour into ``out``: the same additions in the same order
    as the tests' reference ``neighbour_sums`` (the same numbers, bit for bit). ``term``: an (n,)
    buffer.

    A large colour gathers one class row at a time (a 1-D ``take`` per class and neighbour is
    several times faster than a 2-D gather on a volume); a small one gathers everything in one
    ``take`` and adds along the neighbour axis (numpy adds the slices in order), which saves
    the Python overhead of ~20 small calls on a slice.
    """
    if table.shape[1] < _ROW_GATHER_FROM:
        gathered = np.take(Q, table, axis=1, mode="clip")  # (K, n_neighbours, n)
        if weights is not None:
            gathered *= weights[:, None]
        return gathered.sum(axis=1, out=out)
    for k, row in enumerate(Q):
        total = out[k]
        row.take(table[0], out=total, mode="clip")
        if weights is not None:
            total *= weights[0]
        for j in range(1, table.shape[0]):
            row.take(table[j], out=term, mode="clip")
            if weights is not None:
                term *= weights[j]
            total += term
    return out


def _workspace(work, K, layout):
    """Buffers of the sweeps, reused from one sweep to the next (a volume's temporaries are
    tens of MB each: allocating them afresh costs page faults every time)."""
    n = max(stop - start for start, stop in layout.bounds)
    if work is None:
        work = {}
    if work.get("shape") != (K, n):
        work.update(shape=(K, n), sums=np.empty((K, n)), logits=np.empty((K, n)),
                    new=np.empty((K, n)), top=np.empty(n), total=np.empty(n), term=np.empty(n))
    return work


def _row_dots(a, b):
    """``sum(a * b)`` for (K, n) arrays whose rows are contiguous: one BLAS dot per row."""
    return float(sum(np.dot(a[k], b[k]) for k in range(a.shape[0])))


class SweepResult(tuple):
    """``(change, pairs, entropy)`` of a sweep: the largest change of a responsibility (ICM:
    1.0 if a label changed, else 0.0); the pair term ``sum over neighbour pairs of
    w_nm q_n.q_m`` of the updated ``Q`` (bipartite layouts, else ``None``); ``sum q ln q`` of
    the updated ``Q`` (mean field; ``None`` if not finite or for ICM)."""

    def __new__(cls, change, pairs=None, entropy=None):
        return super().__new__(cls, (change, pairs, entropy))

    change = property(lambda self: self[0])
    pairs = property(lambda self: self[1])
    entropy = property(lambda self: self[2])


def coloured_mean_field_sweep(Q, log_data, beta, layout, work=None):
    """One mean-field pass over the colours of ``layout`` (a ``ColouredNeighbours``).

    ``Q`` (K, N + 1), in the internal order and its last column zero, is updated in place;
    ``log_data`` (K, N) is in the internal order too; ``work``: a dict of buffers kept between
    sweeps (optional). Returns a ``SweepResult``. The entropy comes free from the update:
    ``ln q_nk = l_nk - ln sum_j exp(l_nj)`` for the shifted logits ``l``.
    """
    K = Q.shape[0]
    work = _workspace(work, K, layout)
    change, entropy = 0.0, 0.0
    for (start, stop), table in zip(layout.bounds, layout.tables):
        n = stop - start
        sums = _coloured_sums(Q, table, layout.weights, work["sums"][:, :n], work["term"][:n])
        logits = np.multiply(sums, beta, out=work["logits"][:, :n])
        np.add(log_data[:, start:stop], logits, out=logits)
        np.subtract(logits, logits.max(axis=0, out=work["top"][:n]), out=logits)
        new = np.exp(logits, out=work["new"][:, :n])
        total = new.sum(axis=0, out=work["total"][:n])
        new /= total
        entropy += _row_dots(new, logits) - float(np.log(total, out=total).sum())
        block = Q[:, start:stop]
        change = max(change, float(np.abs(np.subtract(new, block, out=logits), out=logits).max()))
        block[...] = new
    pairs = _row_dots(block, sums) if layout.bipartite else None  # the last colour's
    # neighbours (the first colour) are final, so are its sums
    return SweepResult(change, pairs, entropy if np.isfinite(entropy) else None)


def homogeneous_field(proportions, coupling):
    """The external field ``alpha_k = ln pi_k - coupling * pi_k`` (K,) whose homogeneous
    mean-field Potts prior has the class proportions ``pi``.

    A Potts prior with external field ``alpha`` and ``z`` neighbours of weight ``beta`` has,
    on a homogeneous lattice, the mean-field marginals ``r`` that solve
    ``r_k = exp(alpha_k + beta z r_k) / sum_j exp(alpha_j + beta z r_j)``; this ``alpha``
    (``coupling = beta z``) makes ``r = pi`` that solution, the only one when
    ``coupling < 2`` (the mean-field free energy ``sum r ln r - coupling / 2 sum r^2 -
    alpha . r`` is then strictly convex on the simplex). ``alpha = 0`` (no external field)
    gives ``r = 1 / K``; ``alpha = ln pi`` gives the large classes more than ``pi``.
    Proportions are floored at ``1e-300`` so that the logarithm stays finite.
    """
    pi = np.maximum(np.asarray(proportions, dtype=float), 1e-300)
    return np.log(pi) - coupling * pi


def homogeneous_marginals(field, coupling, tol=1e-12, max_iter=10000):
    """The class proportions ``r`` (K,) of a Potts prior with external field ``field`` (K,)
    at its homogeneous mean-field fixed point, ``r_k ∝ exp(field_k + coupling * r_k)``
    (``coupling = beta z``), by damped fixed-point iteration from ``1 / K``; unique for
    ``coupling < 2`` (see ``homogeneous_field``, its inverse)."""
    field = np.asarray(field, dtype=float)
    if not np.all(np.isfinite(field)) or not (np.isfinite(coupling) and 0 <= coupling < 2):
        raise ValueError(f"field must be finite and coupling in [0, 2), got {field!r}, "
                         f"{coupling!r}")
    r = np.full(field.size, 1.0 / field.size)
    for _ in range(max_iter):
        logits = field + coupling * r
        new = np.exp(logits - logits.max())
        new = 0.5 * (r + new / new.sum())
        if np.abs(new - r).max() < tol:
            return new
        r = new
    raise ValueError(f"the homogeneous mean-field iteration did not settle in {max_iter} "
                     "steps")


def coloured_icm_sweep(Q, cost, beta, layout, work=None):
    """One ICM pass over the colours of ``layout``; ``Q`` one-hot (K, N + 1), in place, in the
    internal order. Returns a ``SweepResult`` (its change 1.0 if a label changed, else 0.0)."""
    K = Q.shape[0]
    work = _workspace(work, K, layout)
    eye = np.eye(K)
    changed = 0.0
    for (start, stop), table in zip(layout.bounds, layout.tables):
        n = stop - start
        sums = _coloured_sums(Q, table, layout.weights, work["sums"][:, :n], work["term"][:n])
        energy = cost[:, start:stop] - beta * sums
        new = eye[:, np.argmin(energy, axis=0)]
        block = Q[:, start:stop]
        if changed == 0.0 and not np.array_equal(new, block):
            changed = 1.0
        block[...] = new
    return SweepResult(changed, _row_dots(block, sums) if layout.bipartite else None)


def coloured_neighbour_sums(Q, layout, out=None):
    """Every pixel's neighbour sums ``s_nk = sum_{m ~ n} w_nm q_mk`` (K, N), in the internal
    order, of ``Q`` (K, N + 1) as it stands."""
    K, N = Q.shape[0], Q.shape[1] - 1
    out = np.empty((K, N)) if out is None else out
    term = np.empty(max(stop - start for start, stop in layout.bounds))
    for (start, stop), table in zip(layout.bounds, layout.tables):
        _coloured_sums(Q, table, layout.weights, out[:, start:stop], term[:stop - start])
    return out


def pseudo_likelihood_field(sums, beta, shares, field=None, tol=1e-10, max_iter=100):
    """The external field ``alpha`` (K,) of the Potts prior's conditionals
    ``p_nk = exp(alpha_k + beta s_nk) / sum_j exp(alpha_j + beta s_nj)`` whose mean over the
    pixels is ``shares`` (K,): the maximiser of the concave
    ``N sum_k shares_k alpha_k - sum_n ln sum_j exp(alpha_j + beta s_nj)``, i.e. of
    ``sum_nk q_nk ln p_nk`` for responsibilities ``q`` of those means (the M-step of the
    mixture weights with the neighbours' votes held, Celeux, Forbes & Peyrard 2003).

    Newton's method from ``field`` (default: ``ln shares``), with ``alpha_0 = 0`` fixed (only
    differences matter) and step halving (a gradient step where nearly one-hot conditionals
    leave the Hessian singular), until the largest gap between a mean conditional and
    its share is below ``tol``. ``sums`` (K, N); ``shares`` positive, summing to 1. Returns
    ``alpha`` and ``sum_n ln sum_j exp(alpha_j + beta s_nj)`` (the conditionals' log
    normalisers, summed).
    """
    K, N = sums.shape
    shares = np.asarray(shares, dtype=float)
    alpha = np.log(shares) if field is None else np.array(field, dtype=float)
    alpha = alpha - alpha[0]
    base = beta * sums
    buffers = [np.empty((K, N)), np.empty((K, N))]  # the current and the tried conditionals
    top, total = np.empty(N), np.empty(N)

    def conditionals(a):
        p = buffers.pop()
        np.add(base, a[:, None], out=p)
        p.max(axis=0, out=top)
        np.subtract(p, top, out=p)
        np.exp(p, out=p)
        p.sum(axis=0, out=total)
        p /= total
        value = float(N * shares @ a - np.log(total, out=total).sum() - top.sum())
        return p, value

    p, value = conditionals(alpha)
    for _ in range(max_iter):
        means = p.mean(axis=1)
        gap = shares - means
        if np.abs(gap).max() < tol:
            break
        hessian = (p @ p.T) / N - np.diag(means)  # of the objective / N, negative definite
        step = np.zeros(K)
        try:
            step[1:] = np.linalg.solve(hessian[1:, 1:], -gap[1:])
            halvings = 30
        except np.linalg.LinAlgError:
            halvings = 0
        for _ in range(halvings):  # step halving: the objective must rise (up to its rounding)
            p_new, value_new = conditionals(alpha + step)
            if value_new >= value - 1e-12 * abs(value):
                break
            buffers.append(p_new)
            step *= 0.5
        else:
            # nearly one-hot conditionals (a strong prior: the beta s_n far apart) leave the
            # Hessian (nearly) singular and Newton's step useless: a gradient step of length
            # 2 instead, the inverse of log-sum-exp's largest curvature 1/2 (it cannot lower
            # the objective)
            step = np.r_[0.0, 2.0 * gap[1:]]
            p_new, value_new = conditionals(alpha + step)
        buffers.append(p)
        alpha, p, value = alpha + step, p_new, value_new
    return alpha, float(N * shares @ alpha) - value


def coloured_pairs(Q, layout):
    """``sum over neighbour pairs of w_nm q_n.q_m`` (each pair once) for ``Q`` in the internal
    order: half the sum over pixels of ``q_n`` times its neighbour sums."""
    work = _workspace(None, Q.shape[0], layout)
    total = 0.0
    for (start, stop), table in zip(layout.bounds, layout.tables):
        n = stop - start
        sums = _coloured_sums(Q, table, layout.weights, work["sums"][:, :n], work["term"][:n])
        total += _row_dots(Q[:, start:stop], sums)
    return 0.5 * total


def _sum_q_log_q(q):
    """``sum q ln q`` with ``0 ln 0 = 0``: ``xlogy(q, q).sum()``, about 3 times faster."""
    log_q = np.log(q, out=np.zeros_like(q), where=q > 0)
    log_q *= q
    return float(log_q.sum())


def coloured_mean_field_objective(Q, log_data, beta, layout, pairs=None, entropy=None):
    """``mean_field_objective`` for the internal order; ``pairs`` and ``entropy``
    (``sum q ln q``) from the sweep if known, else computed."""
    q = Q[:, :-1]
    if pairs is None:
        pairs = coloured_pairs(Q, layout)
    if entropy is None:
        entropy = _sum_q_log_q(q)
    return float(_row_dots(q, log_data) - entropy + beta * pairs)


def coloured_icm_objective(Q, cost, sigma2, beta, layout, pairs=None):
    """``icm_objective`` for the internal order; ``pairs`` from the sweep if known."""
    q = Q[:, :-1]
    if pairs is None:
        pairs = coloured_pairs(Q, layout)
    return float(_row_dots(q, cost) + 0.5 * q.shape[1] * np.log(2 * np.pi * sigma2)
                 - beta * pairs)
