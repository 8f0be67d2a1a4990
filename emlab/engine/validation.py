"""Input checks and small array helpers shared by ``em_helpers`` and the ``emlab`` modules.

Every public fitting function validates its arguments here, at the boundary, so that a bad input
gives a ``ValueError`` that names the argument and says what was expected. Each check returns a
new array (``check_points(copy=False)`` excepted, for callers that only read): the caller's
arrays are never modified.

- ``check_int``, ``check_nonnegative`` (a finite number >= 0), ``check_positive`` (> 0), ``check_points`` (X of shape
  (N, d), NaN allowed, inf refused), ``check_means``, ``check_covariances``, ``check_weights``,
  ``check_resp`` (a (K, N) assignment), ``check_labels``, ``check_class_labels`` (one
  argument's labels), ``check_image`` (an image and its mask), ``check_beta`` (the Potts
  prior's strength), ``check_density`` (every point has a density under the mixture);
- ``missing_patterns`` (rows grouped by which coordinates are observed) and ``cholesky``
  (Cholesky factors with a clear error for a covariance that is not positive definite).

This module imports nothing from the project: it sits at the bottom of the dependency graph.
"""

from __future__ import annotations

import numpy as np


def check_int(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_nonnegative(value, name):
    """Return ``value`` as a float if it is a finite number >= 0 (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def check_positive(value, name):
    """Return ``value`` as a float if it is a finite number > 0: a Python or numpy scalar, or a
    0-d numeric array (a bool is not a number)."""
    kind = np.asarray(value).dtype.kind if np.ndim(value) == 0 else ""
    if isinstance(value, (bool, np.bool_)) or kind not in ("i", "u", "f") \
            or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_points(X, name="X", allow_empty_columns=False, copy=True):
    """Return X as a float (N, d) array (a new array), NaN allowed, inf not.

    A column with every value missing is refused unless ``allow_empty_columns`` (imputation can
    fill one from the fitted mixture; fitting cannot learn from it). ``copy=False`` returns X
    itself when it is already a float64 array, for a caller that only reads it (``run_em``).
    """
    if isinstance(X, (str, bytes)) or X is None:
        raise ValueError(f"{name} must be a numeric array of shape (N, d), got "
                         f"{type(X).__name__}")
    if np.iscomplexobj(X):
        raise ValueError(f"{name} must hold real numbers, got complex values")
    try:
        X = np.array(X, dtype=float) if copy else np.asarray(X, dtype=float)  # copy: never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, d): {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got shape {X.shape}")
    if np.isinf(X).any():
        r, c = np.argwhere(np.isinf(X))[0]
        raise ValueError(f"{name} contains an infinite value (row {r}, column {c}); use NaN for "
                         "missing cells")
    if not allow_empty_columns and np.isnan(X).all(axis=0).any():
        raise ValueError(f"{name} has a column with every value missing")
    return X


def _as_float(value, name):
    """A float copy of ``value``, or a ValueError that names the argument."""
    try:
        return np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None


def check_means(means, d, name="means"):
    means = _as_float(means, name)
    if means.ndim != 2 or means.shape[1] != d or means.shape[0] == 0:
        raise ValueError(f"{name} must have shape (K, {d}), got shape {means.shape}")
    if not np.isfinite(means).all():
        raise ValueError(f"{name} must be finite")
    return means


def check_covariances(covariances, K, d, name="covariances"):
    covariances = _as_float(covariances, name)
    if covariances.shape != (K, d, d):
        raise ValueError(f"{name} must have shape ({K}, {d}, {d}), got {covariances.shape}")
    if not np.isfinite(covariances).all():
        raise ValueError(f"{name} must be finite")
    if not np.allclose(covariances, covariances.transpose(0, 2, 1)):
        raise ValueError(f"{name} must be symmetric")
    return covariances


def check_weights(weights, K, name="weights"):
    weights = _as_float(weights, name)
    if weights.shape != (K,):
        raise ValueError(f"{name} must have shape ({K},), got {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    if not np.isclose(weights.sum(), 1.0, atol=1e-8):
        raise ValueError(f"{name} must sum to 1, they sum to {weights.sum():.6g}")
    return weights


def check_resp(R, N, name="R"):
    R = _as_float(R, name)
    if R.ndim != 2 or R.shape[1] != N:
        raise ValueError(f"{name} must have shape (K, N) with N={N} points, got {R.shape}")
    if not np.isfinite(R).all() or (R < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    col_sums = R.sum(axis=0)
    if not np.allclose(col_sums, 1.0, atol=1e-6):
        n = int(np.argmax(np.abs(col_sums - 1.0)))
        raise ValueError(
            f"{name} must have columns summing to 1 (one distribution per point); column {n} "
            f"sums to {col_sums[n]:.6g}")
    return R


def missing_patterns(X):
    """Group rows by which coordinates are observed.

    Returns a list of ``(observed, rows)``: a boolean (d,) mask and the row indices that share it.
    """
    observed = ~np.isnan(X)
    if observed.all():
        return [(np.ones(X.shape[1], dtype=bool), np.arange(X.shape[0]))]
    d = X.shape[1]
    if d <= 62:
        # each row's mask as an integer, coordinate 0 the most significant bit: sorting the
        # codes sorts the masks as np.unique(observed, axis=0) does (False < True, row-wise
        # lexicographic), so the patterns come in the same order, several times faster
        codes = observed.astype(np.int64) @ (np.int64(1) << np.arange(d - 1, -1, -1,
                                                                        dtype=np.int64))
        unique_codes, inverse = np.unique(codes, return_inverse=True)
        patterns = (unique_codes[:, None] >> np.arange(d - 1, -1, -1)) & 1 == 1
    else:
        patterns, inverse = np.unique(observed, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    return [(pattern, np.flatnonzero(inverse == i)) for i, pattern in enumerate(patterns)]


def cholesky(covariances):
    """Lower Cholesky factors (K, d, d), with a clear error for a non-PD covariance."""
    try:
        return np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        for k, cov in enumerate(covariances):
            if not np.all(np.linalg.eigvalsh(cov) > 0):
                raise ValueError(
                    f"covariances[{k}] is not positive definite; increase reg_covar") from None
        raise


def check_density(log_density, name="X"):
    """Refuse points whose log-density (N,) under the mixture is not finite.

    A point too many standard deviations from every mean has a density that underflows
    float64 under every component: its log-density is -inf and its responsibilities 0 / 0.
    """
    bad = ~np.isfinite(log_density)
    if bad.any():
        n = int(np.argmax(bad))
        raise ValueError(
            f"{name} row {n} has zero density under every component (its log-density "
            "underflows float64: it lies too many standard deviations from every mean); "
            f"rescale {name} or check the parameters")


def check_class_labels(y, n_points=None, name="y"):
    """Return ``y`` as an array of non-negative integer labels of shape ``(n_points,)`` (of any
    length >= 1 if ``n_points`` is None)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0 or (n_points is not None and y.shape[0] != n_points):
        expected = "(N,) with N >= 1" if n_points is None else f"({n_points},)"
        raise ValueError(f"{name} must have shape {expected}, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"{name} must hold non-negative integer labels (class numbers), got "
                         f"dtype {y.dtype}" + (f", minimum {y.min()}" if y.dtype.kind in "iu"
                                               else ""))
    return y


def check_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got shapes "
                         f"{y_true.shape} and {y_pred.shape}")
    return check_class_labels(y_true, name="y_true"), check_class_labels(y_pred, name="y_pred")


_IMAGE_SHAPES = {2: "a 2-D array (H, W)", 3: "a 3-D array (X, Y, Z)"}


def check_image(image, mask, name="image", ndims=(2,)):
    """Return ``(image, mask)`` as new arrays: float and bool, of one shape.

    The image must be finite inside the mask (outside it, anything goes, NaN included).
    ``ndims`` lists the accepted numbers of dimensions: ``(2,)`` for a slice (H, W), ``(2, 3)``
    for a function that also takes a volume (X, Y, Z).
    """
    try:
        img = np.array(image, dtype=float)  # a copy: the caller's array is never touched
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    expected = " or ".join(_IMAGE_SHAPES[n] for n in ndims)
    if img.ndim not in ndims or 0 in img.shape:
        raise ValueError(f"{name} must be {expected} with every size >= 1, got shape "
                         f"{img.shape}")
    if mask is None:
        inside = np.ones(img.shape, dtype=bool)
    else:
        inside = np.array(mask)
        if inside.shape != img.shape:
            raise ValueError(f"mask must have the {name}'s shape {img.shape}, got "
                             f"{inside.shape}")
        if inside.dtype != bool:
            if not (np.issubdtype(inside.dtype, np.number) and np.isin(inside, (0, 1)).all()):
                raise ValueError("mask must hold booleans (or only 0 and 1)")
            inside = inside.astype(bool)
    if not inside.any():
        raise ValueError("mask is empty: it selects no pixel")
    bad = inside & ~np.isfinite(img)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = (f"(row {first[0]}, column {first[1]})" if img.ndim == 2
                 else f"voxel {first}")
        raise ValueError(f"{name} has {int(bad.sum())} non-finite pixel(s) inside the mask, the "
                         f"first at {where}; expected finite intensities")
    return img, inside


def check_beta(beta):
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)) \
            or not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0 (0: no spatial prior), got {beta!r}")
    return float(beta)
