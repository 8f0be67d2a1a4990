"""The units in which ``em_helpers.run_em`` fits: ``Z = (X - centre) / scale``.

``scale`` is a power of two near the spread of X, so dividing by it is exact and no square of Z
over- or underflows float64, whatever the units of X (from about 1e-150 to 1e150);
``centre`` is X's mean rounded to a multiple of ``scale``. EM on Z with ``reg_covar / scale**2``
is EM on X with ``reg_covar`` up to rounding, so the fit is scale- and shift-equivariant: fitting
``a X + b`` gives ``a mu + b``, ``a^2 Sigma``, the same labels, and a log-likelihood lower by
``n_observed ln|a|``. Spreads that float64 cannot hold, and a ``reg_covar`` that would swamp the
data's variance, are refused with their cause.

``DataUnits.of`` handles any X (missing cells too); ``emlab.engine.fastpath.standardise_complete``
sets up complete data in one pass with the same rules. This module imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# The largest and smallest spread of X for which every variance, covariance and objective of a
# fit stays a normal float64 (spread^2 times a few thousand below 1.8e308, above 2.2e-308).
MAX_SPREAD = 2.0 ** 500
MIN_SPREAD = 2.0 ** -500


def pooled_spread(n, mean, m2):
    """The standard deviation of all n * d cells together, from the column means (d,) and
    sums of squared deviations (d,) of n rows."""
    with np.errstate(over="ignore", invalid="ignore"):
        grand = mean.mean()
        return float(np.sqrt((m2.sum() + n * ((mean - grand) ** 2).sum()) / (n * mean.size)))


def power_of_two_scale(spread):
    """The power of two nearest the spread (in log scale): the ``scale`` of the fit."""
    return float(np.exp2(np.round(np.log2(spread))))


def check_spread(spread, scale):
    """Refuse a spread of X (and its power-of-two ``scale``) whose squares float64 cannot hold."""
    if not MIN_SPREAD <= scale <= MAX_SPREAD:
        flow = "overflow" if scale > 1 else "underflow"
        raise ValueError(
            f"X has a spread of about {spread:.3g}: its variances would {flow} float64 "
            f"(usable spreads: {MIN_SPREAD:.1e} to {MAX_SPREAD:.1e}); rescale X")


def check_reg_covar(reg_covar, variance):
    """Refuse a ``reg_covar`` that is not small against X's largest column ``variance``."""
    if reg_covar > 0 and variance > 0 and reg_covar >= variance:
        raise ValueError(
            f"reg_covar={reg_covar:.3g} is not small against the variance of X (largest "
            f"column variance {variance:.3g}): every covariance would be mostly reg_covar. "
            f"reg_covar is in the units of X squared: pass a smaller one (e.g. "
            f"{1e-6 * variance:.3g}) or rescale X")


@dataclass(frozen=True)
class DataUnits:
    """The standardisation ``Z = (X - centre) / scale`` under which ``run_em`` fits.

    ``scale`` is a power of two near the spread of X, so dividing by it is exact and no square
    of Z over- or underflows; ``centre`` is X's mean rounded to a multiple of ``scale``. EM on Z
    with ``reg_covar / scale**2`` is EM on X with ``reg_covar`` (up to rounding), so the fit is
    equivariant: fitting ``a X + b`` gives ``a mu + b``, ``a^2 Sigma`` and the same labels.
    """

    centre: np.ndarray
    scale: float
    reg_covar: float
    n_observed: int

    @classmethod
    def of(cls, X, reg_covar):
        """The units of X; a ValueError if its spread or ``reg_covar`` make a fit meaningless."""
        observed = X[~np.isnan(X)]
        top = float(np.max(np.abs(observed)))
        pre = np.exp2(np.floor(np.log2(top))) if top > 0 else 1.0  # exact division, no overflow
        spread = float(np.std(observed / pre)) * pre
        scale = power_of_two_scale(spread) if spread > 0 else pre
        check_spread(spread, scale)
        centre = np.round(np.nanmean(X / pre, axis=0) * (pre / scale)) * scale
        variance = float(np.nanvar((X - centre) / scale, axis=0).max()) * scale ** 2
        check_reg_covar(reg_covar, variance)
        return cls(centre, scale, reg_covar / scale ** 2, int(observed.size))

    def standardise(self, points):
        return (points - self.centre) / self.scale

    def standardise_covariances(self, covariances):
        return None if covariances is None else covariances / self.scale ** 2

    def objective(self, objective, method):
        """An objective of the fit on Z in the units of X (sum of squares, log-likelihood)."""
        if method == "hard":
            return objective * self.scale ** 2
        return objective - self.n_observed * np.log(self.scale)  # ln N(x) = ln N(z) - d ln s

    def _entry(self, entry, method):
        return {"means": entry["means"] * self.scale + self.centre,
                "covariances": entry["covariances"] * self.scale ** 2,
                "weights": entry["weights"], "objective": self.objective(entry["objective"],
                                                                         method)}

    def restore(self, result):
        """``result`` of a fit on Z, in the units of X."""
        return replace(result, means=result.means * self.scale + self.centre,
                       covariances=result.covariances * self.scale ** 2,
                       objective=self.objective(result.objective, result.method),
                       init_means=result.init_means * self.scale + self.centre,
                       history=[self._entry(h, result.method) for h in result.history])
