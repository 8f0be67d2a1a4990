"""scikit-learn estimators around our EM: ``MixtureEM`` and ``EMImputer``.

Both follow scikit-learn's conventions (``BaseEstimator``, the right mixins, parameters checked
by the ``_parameter_constraints`` machinery when ``fit`` starts, ``validate_data`` for inputs,
fitted attributes with a trailing underscore, tags declared honestly), so that they work in a
``Pipeline``, in ``GridSearchCV``, with ``clone`` and with pickle. ``tests/test_estimators.py``
runs scikit-learn's ``parametrize_with_checks`` on both.

- ``MixtureEM``: a Gaussian mixture fitted by ``em_helpers.run_em``, with the methods and
  attributes of scikit-learn's ``GaussianMixture`` (``covariances_`` in its layout for each
  ``covariance_type``). Unlike ``GaussianMixture`` it accepts missing cells (``NaN``) in ``fit``,
  ``predict`` and the scores: a missing cell is integrated out. ``method="hard"`` is the course's
  hard EM (nearest-mean E-step); the methods that need a likelihood do not exist for it.
- ``EMImputer``: a transformer that fits a ``MixtureEM`` (soft EM) and fills every missing cell
  with its conditional expectation under the mixture (``emlab.models.imputation.impute``), and
  gives each filled cell's standard deviation with ``transform(X, return_std=True)``.

Only the public functions of ``em_helpers`` and ``emlab.models`` do the work: with the same
seed the estimators give exactly what ``run_em`` and ``impute`` give.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import logsumexp
from sklearn.base import (
    BaseEstimator,
    DensityMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

import em_helpers as em
from emlab.engine.covariance import COVARIANCE_TYPES, to_sklearn_format
from emlab.engine.validation import check_density
from emlab.models.imputation import impute
from emlab.models.model_selection import n_parameters

_SHARED_CONSTRAINTS = {
    "n_components": [Interval(Integral, 1, None, closed="left")],
    "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    "reg_covar": [Interval(Real, 0.0, None, closed="left")],
    "random_state": ["random_state"],
}


def _seed(random_state):
    """``run_em``'s integer seed for a scikit-learn ``random_state``.

    An int is passed through, so that ``MixtureEM(random_state=s)`` fits exactly as
    ``run_em(random_state=s)``; ``None`` or a ``RandomState`` draws a seed from
    ``check_random_state`` (``None``: a different fit on every call, as in scikit-learn).
    """
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _check_X(estimator, X, reset):
    """X as float64, NaN allowed (a missing cell), inf and sparse refused."""
    return validate_data(estimator, X, reset=reset, dtype=np.float64,
                         ensure_all_finite="allow-nan", ensure_min_samples=2 if reset else 1)


def _full_covariances(covariances, covariance_type, n_components, n_features):
    """(K, d, d) matrices from ``GaussianMixture``'s layout (the inverse of
    ``emlab.engine.covariance.to_sklearn_format``)."""
    covariances = np.asarray(covariances, dtype=float)
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_features, n_features)).copy()
    diagonal = np.arange(n_features)
    full = np.zeros((n_components, n_features, n_features))
    full[:, diagonal, diagonal] = (covariances if covariance_type == "diag"
                                   else covariances[:, None])
    return full


def _likelihood_available(estimator):
    """True for soft EM; for hard EM an AttributeError that says why (see ``available_if``)."""
    if estimator.method == "hard":
        raise AttributeError(
            "this method needs a likelihood and hard EM (method='hard') maximises none: its "
            "nearest-mean E-step scores a point by its distance to the closest mean, not by a "
            "density. Fit with method='soft' for score, score_samples, bic and aic.")
    return True


class MixtureEM(DensityMixin, BaseEstimator):
    """A Gaussian mixture fitted by our EM (``em_helpers.run_em``), missing cells allowed.

    The methods and attributes have the meaning of scikit-learn's ``GaussianMixture``:
    ``fit``, ``predict``, ``fit_predict``, ``predict_proba``, ``score``, ``score_samples``,
    ``bic``, ``aic``, ``sample``; ``weights_``, ``means_``, ``covariances_`` (in
    ``GaussianMixture``'s layout for ``covariance_type``), ``converged_``, ``n_iter_``,
    ``lower_bound_``. Soft EM from the same start gives ``GaussianMixture``'s fit.

    A missing cell (``NaN``) is integrated out everywhere: ``fit`` runs EM for incomplete data
    (expected sufficient statistics), and a row observed on the coordinates ``o`` is scored and
    assigned by its marginal ``N(x_o; mu_ko, Sigma_koo)``. A row with nothing observed gets
    the mixing weights as its probabilities (and the heaviest component as its label).

    Parameters
    ----------
    n_components : int, default 3
        Number of Gaussian components ``K``.
    method : {"soft", "hard"}, default "soft"
        ``"soft"``: Gaussian-mixture EM (posterior responsibilities; stops when the mean
        log-likelihood per point gains less than ``tol``). ``"hard"``: the course's hard EM,
        whose E-step assigns each point to the nearest mean (k-means with covariances and
        weights reported); it stops when no assignment changes. Hard EM maximises no
        likelihood: ``score``, ``score_samples``, ``bic``, ``aic`` and ``lower_bound_`` do not
        exist for it (an ``AttributeError`` says so) and ``inertia_`` holds its objective.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
        The covariance model, as in ``GaussianMixture``.
    init : {"kmeans++", "random"}, array-like of shape (K, d), or dict, default "kmeans++"
        The start, as ``run_em``'s ``init``: k-means++ seeding or ``K`` distinct rows drawn
        from the complete rows; or the initial means; or a dict with ``means`` and optionally
        ``covariances`` (K, d, d) and ``weights``.
    n_init : int, default 1
        Number of starts (a string ``init`` only); the best objective wins.
    max_iter : int, default 100
    tol : float, default 1e-6
        Soft EM: threshold on the gain in mean log-likelihood per point.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance, in the units of X squared.
    random_state : int, RandomState instance or None, default None
        Seed of the starts (and of ``sample``). An int ``s`` gives exactly
        ``run_em(..., random_state=s)``.

    Attributes
    ----------
    weights_ : ndarray of shape (K,)
    means_ : ndarray of shape (K, d)
    covariances_ : ndarray
        full (K, d, d), tied (d, d), diag (K, d), spherical (K,), as in ``GaussianMixture``.
    converged_ : bool
    n_iter_ : int
        EM iterations of the best start.
    lower_bound_ : float
        Soft EM only: the mean log-likelihood per row of the training data at the fitted
        parameters (missing cells integrated out).
    inertia_ : float
        Hard EM only: its objective, the within-cluster sum of squared distances (over the
        observed cells, scaled by ``d / d_observed``).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X has feature names that are all strings.

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        When the best start did not converge within ``max_iter``.
    """

    _parameter_constraints: dict = {
        **_SHARED_CONSTRAINTS,
        "method": [StrOptions({"soft", "hard"})],
        "init": [StrOptions({"kmeans++", "random"}), "array-like", dict],
    }

    def __init__(self, n_components=3, *, method="soft", covariance_type="full",
                 init="kmeans++", n_init=1, max_iter=100, tol=1e-6, reg_covar=1e-6,
                 random_state=None):
        self.n_components = n_components
        self.method = method
        self.covariance_type = covariance_type
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are integrated out
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the mixture by EM (``n_init`` starts, the best kept).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            ``NaN`` marks a missing cell. Every column needs an observed value, and at least
            ``n_components`` rows must be complete (the starts are drawn from them).
        y : Ignored

        Returns
        -------
        self : MixtureEM
        """
        X = _check_X(self, X, reset=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.EMConvergenceWarning)  # re-raised below
            result = em.run_em(X, self.n_components, method=self.method, init=self.init,
                               n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                               random_state=_seed(self.random_state), reg_covar=self.reg_covar,
                               covariance_type=self.covariance_type)
        if not result.converged:
            warnings.warn(f"{self.method} EM did not converge within max_iter={self.max_iter} "
                          "iterations; raise max_iter or tol", ConvergenceWarning, stacklevel=3)
        self.weights_ = result.weights
        self.means_ = result.means
        self.covariances_ = to_sklearn_format(result.covariances, self.covariance_type)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.__dict__.pop("inertia_", None)  # a previous hard fit's
        if self.method == "soft":
            self._lower_bound = float(result.objective) / X.shape[0]
        else:
            self._lower_bound = None
            self.inertia_ = float(result.objective)
        return self

    @property
    def lower_bound_(self):
        """Soft EM: the mean log-likelihood per row of the training data at the fit."""
        check_is_fitted(self)
        if self._lower_bound is None:
            raise AttributeError(
                "lower_bound_ is a log-likelihood and hard EM (method='hard') maximises none: "
                "its objective is inertia_, the within-cluster sum of squares. Fit with "
                "method='soft' for a likelihood.")
        return self._lower_bound

    def _covariance_matrices(self):
        """The fitted covariances as (K, d, d) matrices, whatever ``covariance_type``."""
        return _full_covariances(self.covariances_, self.covariance_type, *self.means_.shape)

    def _checked(self, X):
        check_is_fitted(self)
        return _check_X(self, X, reset=False)

    def _log_weighted(self, X):
        """ln pi_k + ln N(x_n,o; mu_k,o, Sigma_k,oo): (K, N), missing cells integrated out.

        Columns with no observed cell in X are dropped first (the Gaussian marginal), so a
        batch of a single incomplete row is scored like the same row among others.
        """
        observed = ~np.isnan(X).all(axis=0)
        K = self.means_.shape[0]
        if observed.any():
            covs = self._covariance_matrices()[:, observed][:, :, observed]
            log_prob = em.log_gaussian_density(X[:, observed], self.means_[:, observed], covs)
        else:
            log_prob = np.zeros((K, X.shape[0]))
        with np.errstate(divide="ignore"):  # an empty component has weight 0
            weighted = log_prob + np.log(self.weights_)[:, None]
        check_density(weighted.max(axis=0))  # -inf under every component: no probability
        return weighted

    def _hard_labels(self, X):
        """Nearest-mean labels (N,); a row with nothing observed goes to the heaviest component."""
        observed = ~np.isnan(X).all(axis=0)
        empty = np.isnan(X).all(axis=1)
        labels = np.full(X.shape[0], int(np.argmax(self.weights_)), dtype=np.int64)
        if not empty.all():
            one_hot = em.e_step(X[np.ix_(~empty, observed)], self.means_[:, observed])
            labels[~empty] = np.argmax(one_hot, axis=0)
        return labels

    def predict(self, X):
        """The component of each row: most probable (soft) or nearest mean (hard).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            ``NaN`` marks a missing cell.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int
        """
        X = self._checked(X)
        if self.method == "hard":
            return self._hard_labels(X)
        return np.argmax(self._log_weighted(X), axis=0).astype(np.int64)

    def fit_predict(self, X, y=None):
        """``fit(X)`` then ``predict(X)``.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int
        """
        return self.fit(X).predict(X)

    def predict_proba(self, X):
        """Posterior probability of each component for each row, (n_samples, K).

        Soft EM: ``p(z = k | x_o)`` given the row's observed cells. Hard EM: the one-hot
        assignment of its E-step (nearest mean), as in ``run_em``'s ``resp``.
        """
        X = self._checked(X)
        K = self.means_.shape[0]
        if self.method == "hard":
            return (self._hard_labels(X)[:, None] == np.arange(K)).astype(float)
        weighted = self._log_weighted(X)
        return np.exp(weighted - logsumexp(weighted, axis=0)).T

    @available_if(_likelihood_available)
    def score_samples(self, X):
        """Log-likelihood of each row, ``ln sum_k pi_k N(x_o; mu_ko, Sigma_koo)`` (soft EM).

        A missing cell is integrated out; a row with nothing observed scores 0.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        X = self._checked(X)
        return logsumexp(self._log_weighted(X), axis=0)

    @available_if(_likelihood_available)
    def score(self, X, y=None):
        """Mean log-likelihood per row of X (soft EM); higher is better.

        Returns
        -------
        float
        """
        return float(np.mean(self.score_samples(X)))

    def _n_parameters(self):
        return n_parameters(self.means_.shape[0], self.means_.shape[1], self.covariance_type)

    @available_if(_likelihood_available)
    def bic(self, X):
        """Bayesian information criterion on X, ``-2 l + p ln N`` (lower is better; soft EM).

        ``l`` is the log-likelihood of X's observed cells, ``p`` the free parameters
        (``emlab.models.model_selection.n_parameters``), ``N`` the rows of X.
        """
        l_total = self.score(X) * _num_rows(X)
        return -2.0 * l_total + self._n_parameters() * np.log(_num_rows(X))

    @available_if(_likelihood_available)
    def aic(self, X):
        """Akaike information criterion on X, ``-2 l + 2 p`` (lower is better; soft EM)."""
        return -2.0 * self.score(X) * _num_rows(X) + 2.0 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw points from the fitted mixture, as ``GaussianMixture.sample`` draws them.

        The generator is ``check_random_state(random_state)``, and the draws are made in
        ``GaussianMixture``'s order, so the same parameters and ``random_state`` give the same
        points. For hard EM the mixture is the one its fitted means, covariances and weights
        describe.

        Parameters
        ----------
        n_samples : int, default 1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,), int
            The component of each point (sorted: component 0's points first).
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        d = self.means_.shape[1]
        if self.covariance_type in ("full", "tied"):
            covs = self._covariance_matrices()
            X = np.vstack([rng.multivariate_normal(mean, cov, int(n))
                           for mean, cov, n in zip(self.means_, covs, counts)])
        else:
            X = np.vstack([mean + rng.standard_normal(size=(n, d)) * np.sqrt(cov)
                           for mean, cov, n in zip(self.means_, self.covariances_, counts)])
        y = np.repeat(np.arange(len(counts)), counts)
        return X, y

    def _as_em_result(self):
        """The fitted parameters as an ``em_helpers.EMResult`` (no training rows kept), for
        ``emlab.models.imputation.impute``."""
        means = self.means_
        return em.EMResult(means=means, covariances=self._covariance_matrices(),
                           weights=self.weights_, resp=np.zeros((means.shape[0], 0)),
                           labels=np.zeros(0, dtype=np.int64), n_iter=self.n_iter_,
                           converged=self.converged_, objective=np.nan, history=[],
                           init_means=means.copy(), method=self.method,
                           covariance_type=self.covariance_type)


def _num_rows(X):
    return np.shape(X)[0]


class EMImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Fill missing cells with their conditional expectation under a Gaussian mixture.

    ``fit`` fits a ``MixtureEM`` (soft EM, k-means++ starts) on the incomplete data, the
    missing cells integrated out; ``transform`` replaces each missing cell by
    ``E[x_m | x_o] = sum_k p(k | x_o) E[x_m | x_o, k]``, the conditional mean under each
    component weighted by the responsibilities given the row's observed cells
    (``emlab.models.imputation.impute``). Observed cells are copied unchanged. A row with
    nothing observed gets the mixture's mean.

    Defaults are chosen to be good out of the box. EM for incomplete data can stop in a poor
    local optimum that depends on its start (two clusters merged into one component, one
    cluster split in two), and the imputation inherits it. So ``n_init=3`` k-means++ starts
    keep the best of three likelihoods: on the mixture-shaped data of
    ``benchmarks/bench_imputers.py`` a single start sometimes merged two clusters and filled
    the cells markedly worse, while three and five starts gave the same fits; each start costs
    one more fit. Missing cells slow EM's convergence (the larger the missing share, the
    smaller each step), so ``max_iter=500`` lets it converge where 100 iterations can stop
    short; a fit that converges sooner stops sooner. ``covariance_type="full"`` keeps the
    correlations that carry information from a row's observed cells to its missing ones (with
    ``"diag"`` each component would fill in its own mean, whatever the observed cells say).

    Parameters
    ----------
    n_components : int, default 3
        Number of Gaussian components; tune it with ``GridSearchCV`` or
        ``MixtureEM(...).bic``.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    n_init : int, default 3
        Number of k-means++ starts; the best log-likelihood wins.
    max_iter : int, default 500
    tol : float, default 1e-6
        Threshold on the gain in mean log-likelihood per row.
    reg_covar : float, default 1e-6
        Added to the diagonal of every covariance, in the units of X squared.
    random_state : int, RandomState instance or None, default None
        Seed of the starts. An int ``s`` gives exactly ``impute(X, run_em(X, n_components,
        method="soft", init="kmeans++", n_init, max_iter, tol, random_state=s, ...))``.

    Attributes
    ----------
    mixture_ : MixtureEM
        The fitted mixture (``means_``, ``covariances_``, ``score``, ``bic``, ...).
    n_iter_ : int
        EM iterations of the best start.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X has feature names that are all strings.
    """

    _parameter_constraints: dict = dict(_SHARED_CONSTRAINTS)

    def __init__(self, n_components=3, *, covariance_type="full", n_init=3, max_iter=500,
                 tol=1e-6, reg_covar=1e-6, random_state=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # what it is for
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the mixture on X (``NaN`` marks a missing cell).

        Every column needs an observed value and at least ``n_components`` rows must be
        complete (the starts are drawn from them).

        Returns
        -------
        self : EMImputer
        """
        X = _check_X(self, X, reset=True)
        self.mixture_ = MixtureEM(self.n_components, method="soft",
                                  covariance_type=self.covariance_type, init="kmeans++",
                                  n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                                  reg_covar=self.reg_covar,
                                  random_state=_seed(self.random_state)).fit(X)
        self.n_iter_ = self.mixture_.n_iter_
        return self

    def transform(self, X, return_std=False):
        """X with every missing cell filled by its conditional expectation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            ``NaN`` marks a missing cell; any pattern is accepted.
        return_std : bool, default False
            Also return the conditional standard deviation of every cell (0 where observed),
            as ``GaussianProcessRegressor.predict(X, return_std=True)`` does: by the law of
            total variance, ``sqrt(sum_k r_k (Var[x_j | x_o, k] + (E[x_j | x_o, k] -
            E[x_j | x_o])^2))``.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
        std : ndarray of shape (n_samples, n_features)
            Only with ``return_std=True``.
        """
        check_is_fitted(self)
        if not isinstance(return_std, (bool, np.bool_)):
            raise ValueError(f"return_std must be True or False, got {return_std!r}")
        X = _check_X(self, X, reset=False)
        return impute(X, self.mixture_._as_em_result(), return_std=bool(return_std))
