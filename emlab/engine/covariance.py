"""The four covariance models of a Gaussian mixture, as one projection of the M-step.

scikit-learn's ``GaussianMixture`` and R's mclust constrain the component covariances; we offer
the same four models as scikit-learn (mclust's names in brackets):

- ``"full"`` (VVV): every component has its own covariance;
- ``"tied"`` (EEE): one covariance shared by all components;
- ``"diag"`` (VVI): each component's covariance is diagonal (axis-aligned ellipses);
- ``"spherical"`` (VII): each component's covariance is ``sigma_k^2 I`` (circles).

Covariances stay stored as full ``(K, d, d)`` matrices for every model, so E-steps, imputation
and plots need no change. The constrained M-step maximises the expected complete-data
log-likelihood under the constraint; it is a function of the weighted (expected) scatter
matrices ``S_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k`` alone, which is why missing cells
(whose expected scatter ``em_helpers.m_step`` computes) work for every model:

- full: ``S_k``; diag: ``diag(S_k)``; spherical: ``mean(diag(S_k)) I``;
- tied: ``sum_k N_k S_k / N`` for every component.

``reg_covar`` is then added as scikit-learn adds it (``_estimate_gaussian_covariances_*``): to
the diagonal for full, tied and diag, and to the variance for spherical (scikit-learn averages
the regularised diagonal, which is the same thing).

This module imports only ``emlab.engine.validation`` from the project: ``em_helpers`` and
``emlab.engine.fastpath`` use it.
"""

from __future__ import annotations

import numpy as np

from emlab.engine.validation import check_int

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def check_covariance_type(covariance_type, name="covariance_type"):
    """Return ``covariance_type`` if it is one of ``COVARIANCE_TYPES``, else a ValueError."""
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, COVARIANCE_TYPES))}, "
                         f"got {covariance_type!r}")
    return covariance_type


def constrain_covariances(scatter, counts, covariance_type, reg_covar):
    """The constrained M-step's covariances from the weighted scatter matrices.

    Parameters
    ----------
    scatter : ndarray of shape (K, d, d)
        ``S_k``, the (expected) weighted scatter of component ``k`` about its new mean, divided
        by ``N_k`` (no regularisation yet).
    counts : ndarray of shape (K,)
        ``N_k = sum_n r_nk``, the weights of the tied average.
    covariance_type : {"full", "tied", "diag", "spherical"}
    reg_covar : float
        Added to the diagonal (to the variance, for spherical).

    Returns
    -------
    covariances : ndarray of shape (K, d, d)
        A new array; ``scatter`` is not modified.
    """
    covariance_type = check_covariance_type(covariance_type)
    K, d, _ = scatter.shape
    diagonal = np.arange(d)
    if covariance_type == "full":
        covs = scatter.copy()
    elif covariance_type == "tied":
        pooled = np.einsum("k,kij->ij", counts, scatter) / counts.sum()
        covs = np.broadcast_to(pooled, (K, d, d)).copy()
    else:
        variances = np.diagonal(scatter, axis1=1, axis2=2)  # (K, d)
        if covariance_type == "spherical":
            variances = np.repeat(variances.mean(axis=1, keepdims=True), d, axis=1)
        covs = np.zeros((K, d, d))
        covs[:, diagonal, diagonal] = variances
    covs[:, diagonal, diagonal] += reg_covar
    return covs


def has_structure(covariances, covariance_type, rtol=1e-12):
    """True if ``covariances`` (K, d, d) follow ``covariance_type``'s constraint.

    Off-diagonal cells of diag and spherical must be zero, spherical's diagonal constant, and
    tied's matrices equal, each up to ``rtol`` times the largest variance.
    """
    covariance_type = check_covariance_type(covariance_type)
    covariances = np.asarray(covariances, dtype=float)
    d = covariances.shape[1]
    tol = rtol * max(float(np.abs(covariances).max()), np.finfo(float).tiny)
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    off_diagonal = covariances * (1 - np.eye(d))
    if covariance_type == "full":
        return True
    if covariance_type == "tied":
        return bool(np.abs(covariances - covariances[0]).max() <= tol)
    if np.abs(off_diagonal).max() > tol:
        return False
    if covariance_type == "spherical":
        return bool(np.abs(variances - variances[:, :1]).max() <= tol)
    return True


def n_covariance_parameters(n_components, n_features, covariance_type):
    """Free parameters of the covariances: scikit-learn's ``_n_parameters`` formulas.

    full ``K d (d + 1) / 2``, tied ``d (d + 1) / 2``, diag ``K d``, spherical ``K``.
    """
    covariance_type = check_covariance_type(covariance_type)
    K = check_int(n_components, "n_components", minimum=1)
    d = check_int(n_features, "n_features", minimum=1)
    return {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d,
            "spherical": K}[covariance_type]


def to_sklearn_format(covariances, covariance_type):
    """Full (K, d, d) covariances in ``GaussianMixture``'s layout for ``covariance_type``.

    full (K, d, d), tied (d, d), diag (K, d), spherical (K,); for example to build
    ``precisions_init`` (the inverse of each, elementwise for diag and spherical).
    """
    covariance_type = check_covariance_type(covariance_type)
    covariances = np.array(covariances, dtype=float)
    if covariances.ndim != 3 or covariances.shape[1] != covariances.shape[2]:
        raise ValueError(f"covariances must have shape (K, d, d), got {covariances.shape}")
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return covariances[0]
    variances = np.diagonal(covariances, axis1=1, axis2=2).copy()
    return variances if covariance_type == "diag" else variances[:, 0]
