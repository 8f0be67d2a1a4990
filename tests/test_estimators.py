"""Tests of ``emlab.models.estimators``: scikit-learn's estimator checks, the same fits as
``run_em`` and ``impute`` from the same seed, ``GaussianMixture`` from the same start, missing
cells, hard EM's refusals, and the code of ``docs/estimators.md`` run as written."""

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks
from synthetic import structured_start

import em_helpers as em
from emlab.engine.covariance import COVARIANCE_TYPES, to_sklearn_format
from emlab.models import imputation
from emlab.models.estimators import EMImputer, MixtureEM

ROOT = Path(__file__).resolve().parents[1]
ESTIMATORS = [MixtureEM(), MixtureEM(method="hard"), EMImputer()]


def blobs(seed, n=120, d=3):
    """Three seeded Gaussian blobs in d dimensions, far enough apart to be found."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, d))
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))


def with_missing(X, rate=0.15, seed=0):
    """A copy of X with a share of its cells removed (every row keeps one observed cell)."""
    return np.where(imputation.mcar_mask(X.shape, rate, random_state=seed), np.nan, X)


# some checks fit three components to one Gaussian blob, where EM creeps past max_iter=100
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check):
    # scikit-learn skips its three check_array_api_input runs unless SCIPY_ARRAY_API=1 was set
    # before scipy was imported: `SCIPY_ARRAY_API=1 pytest tests/test_estimators.py` runs them
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=repr)
def test_every_parameter_is_validated_with_an_informative_error(estimator):
    check_param_validation(type(estimator).__name__, estimator)


# --- the same fit as run_em and impute ---------------------------------------------------------

@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_mixture_em_is_run_em_from_the_same_seed(method, missing, covariance_type):
    X = blobs(1)
    if missing:
        X = with_missing(X)
    options = dict(method=method, init="kmeans++", n_init=2, max_iter=25, tol=1e-6,
                   reg_covar=1e-6, covariance_type=covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converged or not, the two must agree
        ours = MixtureEM(3, random_state=7, **options)
        labels = ours.fit_predict(X)
        ref = em.run_em(X, 3, random_state=7, **options)
    np.testing.assert_array_equal(ours.means_, ref.means)
    np.testing.assert_array_equal(ours.weights_, ref.weights)
    np.testing.assert_array_equal(ours.covariances_,
                                  to_sklearn_format(ref.covariances, covariance_type))
    assert (ours.n_iter_, ours.converged_) == (ref.n_iter, ref.converged)
    np.testing.assert_array_equal(labels, ref.labels)
    np.testing.assert_allclose(ours.predict_proba(X), ref.resp.T, rtol=0, atol=1e-9)
    if method == "soft":
        assert ours.lower_bound_ == ref.objective / len(X)
        np.testing.assert_allclose(ours.score(X), ref.objective / len(X), rtol=1e-10)
    else:
        assert ours.inertia_ == ref.objective


def test_random_state_an_int_is_run_ems_seed_and_a_generator_is_drawn_from():
    X = blobs(2)
    for seed in (0, 1):
        np.testing.assert_array_equal(
            MixtureEM(3, init="random", random_state=seed).fit(X).means_,
            em.run_em(X, 3, method="soft", init="random", random_state=seed).means)
    twins = [MixtureEM(3, init="random", random_state=np.random.RandomState(4)).fit(X)
             for _ in range(2)]
    np.testing.assert_array_equal(twins[0].means_, twins[1].means_)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_em_imputer_is_impute_after_run_em_from_the_same_seed(covariance_type):
    X = with_missing(blobs(3), rate=0.25, seed=3)
    imputer = EMImputer(3, covariance_type=covariance_type, n_init=2, max_iter=60,
                        random_state=5)
    filled, std = imputer.fit(X).transform(X, return_std=True)
    fit = em.run_em(X, 3, method="soft", init="kmeans++", n_init=2, max_iter=60,
                    random_state=5, covariance_type=covariance_type)
    ref_filled, ref_std = imputation.impute(X, fit, return_std=True)
    np.testing.assert_array_equal(filled, ref_filled)
    np.testing.assert_array_equal(std, ref_std)
    np.testing.assert_array_equal(imputer.fit_transform(X), ref_filled)
    assert imputer.n_iter_ == fit.n_iter
    assert not np.isnan(filled).any() and (std[np.isnan(X)] > 0).all()
    assert (std[~np.isnan(X)] == 0).all()


def test_em_imputer_leaves_the_callers_array_and_observed_cells_alone():
    X = with_missing(blobs(4))
    before = X.copy()
    filled = EMImputer(random_state=0, n_init=1).fit_transform(X)
    np.testing.assert_array_equal(X, before)
    observed = ~np.isnan(X)
    np.testing.assert_array_equal(filled[observed], X[observed])


def test_em_imputer_defaults_keep_several_starts():
    imputer = EMImputer()
    assert imputer.n_init > 1 and imputer.max_iter >= 300


# --- GaussianMixture from the same start --------------------------------------------------------


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_soft_mixture_em_equals_gaussian_mixture_from_the_same_start(covariance_type):
    X = blobs(5, n=150)
    X_new = blobs(6, n=40)
    start, precisions = structured_start(X, covariance_type, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0 never converges
        ours = MixtureEM(3, covariance_type=covariance_type, init=start, tol=0, max_iter=8,
                         random_state=0).fit(X)
        gm = GaussianMixture(3, covariance_type=covariance_type, means_init=start["means"],
                             weights_init=start["weights"], precisions_init=precisions,
                             reg_covar=1e-6, tol=0, max_iter=8, random_state=0).fit(X)
    for name in ("means_", "weights_", "covariances_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(gm, name), rtol=1e-8,
                                   atol=1e-12, err_msg=name)
    for method in ("predict_proba", "score_samples", "bic", "aic", "score"):
        np.testing.assert_allclose(getattr(ours, method)(X_new), getattr(gm, method)(X_new),
                                   rtol=1e-8, atol=1e-10, err_msg=method)
    np.testing.assert_array_equal(ours.predict(X_new), gm.predict(X_new))
    sample, labels = ours.sample(50)
    gm_sample, gm_labels = gm.sample(50)
    np.testing.assert_array_equal(labels, gm_labels)
    np.testing.assert_allclose(sample, gm_sample, rtol=1e-6, atol=1e-8)


# --- missing cells ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def incomplete_fit():
    X = with_missing(blobs(8), rate=0.2, seed=8)
    return MixtureEM(3, random_state=0, max_iter=300).fit(X), X


def test_scores_integrate_missing_cells_out_as_scipy_does(incomplete_fit):
    model, _ = incomplete_fit
    covs = model.covariances_
    rows = np.array([[0.5, np.nan, -1.0], [np.nan, np.nan, 2.0], [1.0, 2.0, 3.0]])
    expected = []
    for row in rows:
        o = ~np.isnan(row)
        dens = sum(w * multivariate_normal(m[o], c[np.ix_(o, o)]).pdf(row[o])
                   for w, m, c in zip(model.weights_, model.means_, covs))
        expected.append(np.log(dens))
    np.testing.assert_allclose(model.score_samples(rows), expected, rtol=1e-10)


def test_a_row_is_scored_alone_as_among_others(incomplete_fit):
    model, X = incomplete_fit
    full = {m: getattr(model, m)(X) for m in ("predict", "predict_proba", "score_samples")}
    for i in np.flatnonzero(np.isnan(X).any(axis=1))[:10]:
        for method, values in full.items():
            np.testing.assert_allclose(getattr(model, method)(X[[i]])[0], values[i],
                                       rtol=1e-10, atol=1e-12)


def test_a_row_with_nothing_observed_gets_the_mixing_weights(incomplete_fit):
    model, _ = incomplete_fit
    empty = np.full((2, 3), np.nan)
    np.testing.assert_allclose(model.predict_proba(empty), [model.weights_] * 2)
    np.testing.assert_array_equal(model.predict(empty), [np.argmax(model.weights_)] * 2)
    np.testing.assert_allclose(model.score_samples(empty), [0.0, 0.0], atol=1e-12)
    hard = clone(model).set_params(method="hard").fit(with_missing(blobs(8)))
    np.testing.assert_array_equal(hard.predict(empty), [np.argmax(hard.weights_)] * 2)


def test_bad_data_get_clear_errors():
    X = blobs(9)
    X[:, 1] = np.nan
    with pytest.raises(ValueError, match="column with every value missing"):
        MixtureEM().fit(X)
    with pytest.raises(ValueError, match="infinity"):
        EMImputer().fit(np.array([[1.0, np.inf], [2.0, 3.0], [0.0, 1.0]]))
    mostly_missing = with_missing(blobs(9, n=12), rate=0.6)
    with pytest.raises(ValueError, match="complete rows"):
        MixtureEM(5).fit(mostly_missing)
    model = MixtureEM(random_state=0).fit(blobs(9))
    with pytest.raises(ValueError, match="3 features"):
        model.predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(0)
    imputer = EMImputer(n_init=1, random_state=0).fit(blobs(9))
    with pytest.raises(ValueError, match="return_std"):
        imputer.transform(blobs(9), return_std="yes")


def test_the_start_of_em_for_incomplete_data_is_positive_definite_in_3d():
    """Pairwise (available-case) covariances can be indefinite from 3-D on: rows seen on
    (x0, x1) say +0.99, on (x1, x2) +0.99, on (x0, x2) -0.99. The start of EM must still be a
    valid Gaussian (regression: EMImputer's pickle check failed on a start like this)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 1))
    noise = 0.05 * rng.normal(size=(300, 2))
    X = np.full((300, 3), np.nan)
    X[:100, [0, 1]] = z[:100] + noise[:100]
    X[100:200, [1, 2]] = z[100:200] + noise[100:200]
    X[200:, [0, 2]] = np.hstack([z[200:], -z[200:]]) + noise[200:]
    means, covs, _ = em.m_step(X, np.ones((1, 300)))
    assert np.linalg.eigvalsh(covs)[0, 0] > 0


def test_not_converging_warns_with_scikit_learns_warning():
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        MixtureEM(random_state=0, max_iter=1).fit(blobs(10))


# --- hard EM ----------------------------------------------------------------------------------

def test_hard_em_has_no_likelihood_methods_and_says_why():
    model = MixtureEM(method="hard", random_state=0).fit(blobs(11))
    for name in ("score", "score_samples", "bic", "aic", "lower_bound_"):
        assert not hasattr(model, name), name
        with pytest.raises(AttributeError) as caught:
            getattr(model, name)
        chain = f"{caught.value} {caught.value.__cause__ or ''}"
        assert re.search("hard EM.*maximises none.*method='soft'", chain), chain
    one_hot = model.predict_proba(blobs(11))
    assert set(np.unique(one_hot)) == {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    assert model.inertia_ > 0
    refit = model.set_params(method="soft").fit(blobs(11))
    assert not hasattr(refit, "inertia_") and np.isfinite(refit.lower_bound_)


def test_pickle_and_clone_keep_the_fit():
    X = with_missing(blobs(12))
    model = MixtureEM(random_state=0).fit(X)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    assert clone(model).get_params() == model.get_params()


def test_pandas_output_keeps_the_column_names():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(with_missing(blobs(13)), columns=["a", "b", "c"])
    out = EMImputer(n_init=1, random_state=0).set_output(transform="pandas").fit_transform(frame)
    assert list(out.columns) == ["a", "b", "c"] and not out.isna().any().any()


# --- the documentation runs as written -----------------------------------------------------------

def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_docs_page_runs_as_written():
    blocks = python_blocks(ROOT / "docs" / "estimators.md")
    assert len(blocks) >= 3
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a page whose example warns is a page to fix
        for block in blocks:
            exec(compile(block, "docs/estimators.md", "exec"), namespace)
    # make_classification(n_clusters_per_class=1) draws one Gaussian cluster per class: two
    assert namespace["chosen"] == 2
    assert 0.5 < namespace["accuracy"] <= 1.0  # better than chance on two balanced classes
    missing, std = namespace["missing"], namespace["std"]
    assert (std[missing] > 0).all() and (std[~missing] == 0).all()


def test_a_row_of_zero_density_is_refused_instead_of_nan_probabilities():
    mixture = MixtureEM(3, random_state=0).fit(blobs(0))
    far = np.array([[1e200, 1e200, 1e200], [0.0, 0.0, 0.0]])  # density 0 under every component
    for method in (mixture.predict, mixture.predict_proba, mixture.score_samples):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="X row 0 has zero density under every"):
                method(far)
