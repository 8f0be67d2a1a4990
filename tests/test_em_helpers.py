"""Tests of the course module ``em_helpers``: the loader (every plausible layout, or a clear
refusal), the E- and M-steps against scipy and the formulas, the EM loop against scikit-learn
(hard EM = KMeans, soft EM = GaussianMixture from the same start), starts, warnings, metrics."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from synthetic import mixture, structured_start

import em_helpers as em

POINTS = np.array([[1.5, 2.0], [3.25, np.nan], [-1.0, 4.0], [np.nan, 0.5], [2.0, 2.0],
                   [0.0, 1.0]])


def _fmt(v):
    return "" if np.isnan(v) else repr(float(v))


def _write(tmp_path, text, name="scan.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


LAYOUTS = {
    "n_by_2_header": lambda P: "x1,x2\n" + "".join(f"{_fmt(a)},{_fmt(b)}\n" for a, b in P),
    "n_by_2_plain": lambda P: "".join(f"{_fmt(a)},{_fmt(b)}\n" for a, b in P),
    "n_by_2_index_header": lambda P: ",x1,x2\n" + "".join(
        f"{i},{_fmt(a)},{_fmt(b)}\n" for i, (a, b) in enumerate(P)),
    "n_by_2_index_from_1": lambda P: "".join(
        f"{i + 1},{_fmt(a)},{_fmt(b)}\n" for i, (a, b) in enumerate(P)),
    "two_by_n": lambda P: "\n".join(",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "two_by_n_row_names": lambda P: "\n".join(
        f"x{j + 1}," + ",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "two_by_n_index_row": lambda P: ",".join(str(i) for i in range(len(P))) + "\n" + "\n".join(
        ",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "semicolons_nan_tokens": lambda P: "x1;x2\n" + "".join(
        f"{a};{b}\n".replace("nan", "NaN") for a, b in P),
    "tabs": lambda P: "".join(f"{_fmt(a)}\t{_fmt(b)}\n" for a, b in P),
    "spaces_complete_only": lambda P: "".join(
        f"{a} {b}\n" for a, b in np.nan_to_num(P, nan=7.0)),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loader_reads_every_plausible_layout(tmp_path, layout):
    expected = np.nan_to_num(POINTS, nan=7.0) if layout == "spaces_complete_only" else POINTS
    X, y = em.load_image(_write(tmp_path, LAYOUTS[layout](POINTS)), n_components=3)
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])


def test_loader_keeps_a_row_with_nothing_observed(tmp_path):
    X, y = em.load_image(_write(tmp_path, "x1,x2\n1,2\n,\n3,4\n5,6\n7,8\n9,1\n"))
    assert X.shape == (6, 2) and np.isnan(X[1]).all()


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("x1,x2\n", "no data rows"),
    ("x1,x2\n1,2\n3,abc\n5,6\n", "text 'abc' in a numeric cell"),
    ("1,2,3\n4,5,6\n7,8,9\n3,2,1\n", "expected 2 coordinates"),
    ("1,2\n3,4\n5,6\n7,8\n", "multiple of n_components=3"),
    ("1,\n2,\n3,\n", "coordinate 2 is missing in every row"),
    ("1,2\n3,inf\n5,6\n", "infinite value"),
    ("1,2\n3,4,5\n6,7\n", "different numbers of fields"),
])
def test_loader_refuses_bad_files_with_a_clear_message(tmp_path, text, message):
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=message) as info:
        em.load_image(path)
    assert "bad.csv" in str(info.value)


def test_loader_refuses_binary_and_missing_files(tmp_path):
    path = tmp_path / "scan.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ValueError, match="scan.csv"):
        em.load_image(path)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        em.load_image(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match="n_components"):
        em.load_image(DATA / "Image1.csv", n_components=0)


def test_loader_reads_two_by_n_with_index_row_and_row_names(tmp_path):
    text = "," + ",".join(str(i) for i in range(6)) + "\n" + "\n".join(
        f"x{j + 1}," + ",".join(_fmt(v) for v in POINTS[:, j]) for j in range(2))
    X, _ = em.load_image(_write(tmp_path, text))
    np.testing.assert_array_equal(X, POINTS)


DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def images():
    """Both committed scans, read by ``load_image``: {name: (X, y)}."""
    return {name: em.load_image(DATA / f"{name}.csv") for name in ("Image1", "Image2")}


TRUE_MEANS = np.array([[2.0, 2.0], [7.0, 3.0], [4.5, 7.5]])


def blobs(seed, n_per=60, spread=1.0, d=2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(3, d))
    return np.vstack([c + spread * rng.normal(size=(n_per, d)) for c in centres])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_em_equals_sklearn_kmeans_from_the_same_start(seed):
    X = blobs(seed, spread=2.5)  # overlapping: several iterations are needed
    start = X[[0, 1, 2]]  # three points of the first blob: a poor start
    ours = em.run_em(X, method="hard", init=start)
    km = KMeans(3, init=start, n_init=1, algorithm="lloyd", tol=0, max_iter=300).fit(X)
    assert ours.n_iter > 2
    np.testing.assert_array_equal(ours.labels, km.labels_)
    np.testing.assert_allclose(ours.means, km.cluster_centers_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.objective, km.inertia_, rtol=1e-10)


@pytest.mark.parametrize("seed, n_iter", [(0, 1), (1, 5), (2, 20)])
def test_soft_em_equals_sklearn_gaussian_mixture_from_the_same_start(seed, n_iter):
    X = blobs(seed, spread=2.0)
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(3, 2, 2))
    start = {"means": X[rng.choice(len(X), 3, replace=False)],
             "covariances": A @ A.transpose(0, 2, 1) + np.eye(2),
             "weights": np.array([0.5, 0.3, 0.2])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn that tol=0 never converges
        ours = em.run_em(X, method="soft", init=start, tol=0, max_iter=n_iter, reg_covar=1e-6)
        gm = GaussianMixture(3, covariance_type="full", means_init=start["means"],
                             weights_init=start["weights"],
                             precisions_init=np.linalg.inv(start["covariances"]),
                             reg_covar=1e-6, tol=0, max_iter=n_iter).fit(X)
    assert ours.n_iter == n_iter and not ours.converged
    np.testing.assert_allclose(ours.means, gm.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.covariances, gm.covariances_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.weights, gm.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.objective, gm.score(X) * len(X), rtol=1e-8)
    np.testing.assert_allclose(ours.resp.T, gm.predict_proba(X), atol=1e-8)


def test_log_gaussian_density_matches_scipy_with_and_without_missing_cells():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 3))
    X[1, 2] = X[4, [0, 1]] = np.nan
    X[6] = np.nan
    means = rng.normal(size=(2, 3))
    A = rng.normal(size=(2, 3, 3))
    covs = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(3)
    got = em.log_gaussian_density(X, means, covs)
    for k in range(2):
        for n in range(7):
            o = ~np.isnan(X[n])
            want = 0.0 if not o.any() else multivariate_normal(
                means[k][o], covs[k][np.ix_(o, o)]).logpdf(X[n][o])
            assert got[k, n] == pytest.approx(want, rel=1e-12, abs=1e-12)


finite = st.floats(-50, 50, allow_nan=False, width=64)


point_sets = arrays(np.float64, st.tuples(st.integers(6, 40), st.just(2)), elements=finite)


def _three_distinct_rows(X):
    uniq = np.unique(X, axis=0)
    return uniq[:3] if len(uniq) >= 3 else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(X=point_sets, means=arrays(np.float64, (3, 2), elements=finite))
def test_e_step_returns_one_hot_of_shape_k_by_n_with_nearest_mean(X, means):
    R = em.e_step(X, means)
    assert R.shape == (3, len(X)) and np.issubdtype(R.dtype, np.integer)
    assert set(np.unique(R)) <= {0, 1} and (R.sum(axis=0) == 1).all()
    dist = ((X[:, None, :] - means[None]) ** 2).sum(axis=2)
    chosen = dist[np.arange(len(X)), R.argmax(axis=0)]
    np.testing.assert_allclose(chosen, dist.min(axis=1), rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(X=point_sets, seed=st.integers(0, 10_000))
def test_hard_objective_never_increases_and_inputs_are_untouched(X, seed):
    start = _three_distinct_rows(X)
    if start is None:
        return
    X_before, start_before = X.copy(), start.copy()
    result = em.run_em(X, method="hard", init=start, max_iter=50)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(start, start_before)
    trace = result.objective_trace
    assert np.isfinite(trace).all()
    assert (np.diff(trace) <= 1e-9 * (1 + trace[:-1])).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), missing_rate=st.sampled_from([0.0, 0.1, 0.3]))
def test_soft_log_likelihood_never_decreases_even_with_missing_cells(seed, missing_rate):
    rng = np.random.default_rng(seed)
    X = blobs(seed, n_per=30, spread=rng.uniform(0.5, 3.0))
    drop = rng.random(X.shape) < missing_rate
    drop[drop.all(axis=1), 0] = False
    X[drop] = np.nan
    X_before = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        result = em.run_em(X, method="soft", init="kmeans++", random_state=seed, max_iter=30)
    np.testing.assert_array_equal(X, X_before)
    trace = result.objective_trace
    assert np.isfinite(trace).all()
    # EM's M-step maximises the likelihood exactly; adding reg_covar (1e-6) to a covariance
    # moves it off that maximum by a negligible amount, unless a component has collapsed onto
    # a line or a point (eigenvalue ~ reg_covar), where scikit-learn's GaussianMixture dips
    # just the same (seed 1231). So the guarantee is checked up to such a collapse.
    smallest = [np.linalg.eigvalsh(h["covariances"]).min() for h in result.history]
    collapsed = np.flatnonzero(np.array(smallest) < 1e-3)
    stop = collapsed[0] if collapsed.size else len(trace)
    assert (np.diff(trace[:stop]) >= -1e-7 * np.abs(trace[:stop - 1])).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), method=st.sampled_from(["hard", "soft"]))
def test_result_does_not_depend_on_row_order(seed, method):
    X = blobs(seed, n_per=25, spread=1.5)
    start = X[[0, 25, 50]]
    perm = np.random.default_rng(seed).permutation(len(X))
    with warnings.catch_warnings():  # slow convergence is not what this test is about
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        a = em.run_em(X, method=method, init=start, max_iter=200)
        b = em.run_em(X[perm], method=method, init=start, max_iter=200)
    np.testing.assert_allclose(a.means, b.means, atol=1e-9)
    np.testing.assert_allclose(a.covariances, b.covariances, atol=1e-9)
    np.testing.assert_array_equal(a.labels[perm], b.labels)


def test_m_step_with_hard_assignment_is_the_per_class_sample_statistics():
    X = blobs(4)
    labels = np.repeat([0, 1, 2], 60)
    means, covs, weights = em.m_step(X, em.one_hot(labels, 3), reg_covar=0.0)
    for k in range(3):
        block = X[labels == k]
        np.testing.assert_allclose(means[k], block.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(covs[k], np.cov(block.T, bias=True), rtol=1e-12)
    np.testing.assert_allclose(weights, [1 / 3] * 3)


def test_m_step_fills_a_missing_cell_with_its_conditional_expectation():
    # one component, current Gaussian known: the missing x2 of a row is replaced by
    # mu_2 + s_21 / s_11 (x_1 - mu_1), and its conditional variance joins the scatter
    mean = np.array([1.0, 2.0])
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    X = np.array([[0.0, 1.0], [2.0, 4.0], [3.0, np.nan]])
    R = np.ones((1, 3))
    got_mean, got_cov, _ = em.m_step(X, R, mean[None], cov[None], reg_covar=0.0)
    x2 = mean[1] + cov[1, 0] / cov[0, 0] * (3.0 - mean[0])
    filled = np.array([[0.0, 1.0], [2.0, 4.0], [3.0, x2]])
    want_mean = filled.mean(axis=0)
    want_cov = np.cov(filled.T, bias=True)
    want_cov[1, 1] += (cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]) / 3
    np.testing.assert_allclose(got_mean[0], want_mean, rtol=1e-12)
    np.testing.assert_allclose(got_cov[0], want_cov, rtol=1e-12)


def test_empty_component_is_reseeded_at_the_farthest_point_and_recorded():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0]])
    R = np.zeros((2, 4))
    R[0] = 1.0  # component 1 owns nothing
    fit = em.m_step(X, R)
    assert fit.reseeded == (1,)
    np.testing.assert_allclose(fit.means[1], [5.0, 5.0])
    assert np.isfinite(fit.covariances).all() and np.isfinite(fit.weights).all()
    np.testing.assert_allclose(fit.weights, [0.75, 0.25])


def test_degenerate_cluster_of_identical_points_gives_finite_results():
    X = np.vstack([np.full((20, 2), 3.0), blobs(5, n_per=20)])
    for method in ("hard", "soft"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.EMConvergenceWarning)
            result = em.run_em(X, n_components=3, method=method, init="kmeans++", max_iter=50)
        assert np.isfinite(result.means).all() and np.isfinite(result.covariances).all()
        assert np.isfinite(result.objective_trace).all()
        assert (np.linalg.eigvalsh(result.covariances) > 0).all()


def test_run_em_records_a_reseeding_during_the_loop():
    X = np.vstack([np.zeros((10, 2)), np.ones((10, 2)) * 10])
    start = np.array([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])  # the third gets no point
    result = em.run_em(X, method="hard", init=start)
    assert result.reseeded and result.reseeded[0] == (1, 2)
    assert np.isfinite(result.means).all()


def test_not_converging_warns_and_says_so():
    X = blobs(6, spread=3.0)
    with pytest.warns(em.EMConvergenceWarning, match="max_iter=1"):
        result = em.run_em(X, method="soft", max_iter=1)
    assert not result.converged and result.n_iter == 1


def test_history_holds_every_iterate_and_init_means():
    X = blobs(7)
    result = em.run_em(X, method="soft", init="kmeans++", random_state=3)
    assert len(result.history) == result.n_iter + 1
    np.testing.assert_array_equal(result.history[0]["means"], result.init_means)
    np.testing.assert_array_equal(result.history[-1]["means"], result.means)
    assert result.objective == result.history[-1]["objective"]
    np.testing.assert_array_equal(result.labels, result.resp.argmax(axis=0))


def test_n_init_keeps_the_best_start_and_random_state_makes_it_reproducible():
    X = blobs(8, spread=2.5)
    gains = []
    for seed in range(4):  # the first of n_init starts is the start of n_init=1
        single = em.run_em(X, method="soft", init="random", random_state=seed, tol=1e-4,
                             max_iter=500)
        multi = em.run_em(X, method="soft", init="random", n_init=5, random_state=seed, tol=1e-4)
        again = em.run_em(X, method="soft", init="random", n_init=5, random_state=seed, tol=1e-4)
        assert multi.objective == again.objective
        gains.append(multi.objective - single.objective)
    assert min(gains) >= 0 and max(gains) > 1e-3


def test_recovers_image1_means_and_labels():
    X, y = em.load_image(DATA / "Image1.csv")
    for method in ("hard", "soft"):
        result = em.align_to_truth(em.run_em(X, method=method, init="kmeans++", n_init=3), y)
        np.testing.assert_allclose(result.means, TRUE_MEANS, atol=0.2)
        assert em.clustering_scores(y, result.labels)["accuracy"] >= 0.97


def test_image2_fit_uses_every_row_and_is_close_to_the_complete_fit():
    X, y = em.load_image(DATA / "Image2.csv")
    full, _ = em.load_image(DATA / "Image2_complete.csv")
    with_gaps = em.align_to_truth(em.run_em(X, method="soft", init="kmeans++", n_init=3), y)
    complete = em.align_to_truth(em.run_em(full, method="soft", init="kmeans++", n_init=3), y)
    assert with_gaps.resp.shape == (3, 600) and with_gaps.labels.shape == (600,)
    np.testing.assert_allclose(with_gaps.resp.sum(axis=0), 1.0)
    # the 48 missing cells move the estimates a little, not a lot
    np.testing.assert_allclose(with_gaps.means, complete.means, atol=0.15)
    np.testing.assert_allclose(with_gaps.covariances, complete.covariances, atol=0.3)
    # dropping the incomplete rows instead would discard information: the fit must differ
    dropped = em.run_em(X[~np.isnan(X).any(axis=1)], method="soft", init=with_gaps.means)
    assert not np.allclose(dropped.means, with_gaps.means, atol=1e-6)


def test_metrics_match_labels_up_to_permutation():
    y = np.repeat([0, 1, 2], 4)
    pred = np.array([2, 2, 2, 2, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(em.match_labels(y, pred),
                                  [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    scores = em.clustering_scores(y, pred)
    assert scores["accuracy"] == pytest.approx(11 / 12)
    np.testing.assert_array_equal(scores["confusion"], [[4, 0, 0], [0, 3, 1], [0, 0, 4]])
    from sklearn.metrics import adjusted_rand_score
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y, pred))


def test_align_to_truth_permutes_every_component_array_consistently():
    X, y = em.load_image(DATA / "Image1.csv")
    result = em.run_em(X, method="soft", init=TRUE_MEANS[[2, 0, 1]])
    aligned = em.align_to_truth(result, y)
    np.testing.assert_array_equal(aligned.means, result.means[[1, 2, 0]])
    np.testing.assert_array_equal(aligned.resp, result.resp[[1, 2, 0]])
    np.testing.assert_array_equal(aligned.history[0]["means"], TRUE_MEANS)
    np.testing.assert_array_equal(aligned.labels, aligned.resp.argmax(axis=0))


GOOD = blobs(9)


@pytest.mark.parametrize("call, message", [
    (lambda: em.e_step(GOOD, np.zeros((3, 3))), r"means must have shape \(K, 2\)"),
    (lambda: em.e_step(GOOD[:, 0], np.zeros((3, 2))), r"X must have shape \(N, d\)"),
    (lambda: em.e_step(np.where(GOOD > 5, np.inf, GOOD), np.zeros((3, 2))), "infinite"),
    (lambda: em.e_step(GOOD, np.full((3, 2), np.nan)), "means must be finite"),
    (lambda: em.e_step([["a", "b"]], np.zeros((1, 2))), "numeric array"),
    (lambda: em.m_step(GOOD, np.full((3, len(GOOD)), 0.5)), "columns summing to 1"),
    (lambda: em.m_step(GOOD, np.ones((3, 5)) / 3), r"N=180"),
    (lambda: em.m_step(GOOD, -np.ones((1, len(GOOD)))), "non-negative"),
    (lambda: em.m_step(GOOD, np.ones((1, len(GOOD))), reg_covar=-1), "reg_covar"),
    (lambda: em.m_step(GOOD, np.ones((1, len(GOOD))), reg_covar=True),
     "reg_covar must be a non-negative number"),
    (lambda: em.m_step(GOOD, np.ones((1, len(GOOD))), reg_covar=None),
     "reg_covar must be a non-negative number"),
    (lambda: em.m_step(GOOD, np.ones((1, len(GOOD))), reg_covar="a"),
     "reg_covar must be a non-negative number"),
    (lambda: em.run_em(GOOD, n_components=0), "n_components must be >= 1"),
    (lambda: em.run_em(GOOD[:2], n_components=3), "more than the 2 complete rows"),
    (lambda: em.run_em(GOOD, method="fuzzy"), "method must be 'hard' or 'soft'"),
    (lambda: em.run_em(GOOD, init="best"), "init must be"),
    (lambda: em.run_em(GOOD, init=np.zeros((2, 2))), "init has 2 means"),
    (lambda: em.run_em(GOOD, init=np.zeros((3, 2)), n_init=3), "n_init > 1"),
    (lambda: em.run_em(GOOD, max_iter=0), "max_iter must be >= 1"),
    (lambda: em.run_em(GOOD, tol=-1.0), "tol must be"),
    (lambda: em.run_em(GOOD, init={"mu": 0}), "init dict"),
    (lambda: em.run_em(np.column_stack([GOOD[:, 0], np.full(len(GOOD), np.nan)])),
     "every value missing"),
    (lambda: em.e_step_soft(GOOD, np.zeros((2, 2)), np.stack([np.eye(2)] * 2), [0.7, 0.7]),
     "weights must sum to 1"),
    (lambda: em.log_gaussian_density(GOOD, np.zeros((1, 2)), -np.eye(2)[None]),
     "not positive definite"),
])
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_later_start_must_beat_the_kept_one_by_more_than_rounding():
    # the same optimum reached from two starts differs in the last bits (component order
    # changes the order of the sums): the first start is kept, whatever the rounding
    kept = 1234.5
    for method, better in (("hard", -1.0), ("soft", 1.0)):  # lower / higher is better
        assert not em._improves(kept + better * 1e-10, kept, method)  # 8e-14 relative
        assert not em._improves(kept - better * 1e-6, kept, method)
        assert em._improves(kept + better * 1e-6, kept, method)
    X = mixture(3, n=300) * 3.0  # well separated: every start finds the same partition
    single = em.run_em(X, method="hard", init="kmeans++", random_state=5)
    multi = em.run_em(X, method="hard", init="kmeans++", n_init=4, random_state=5)
    np.testing.assert_array_equal(multi.init_means, single.init_means)


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_progress_bar_shows_iterations_and_objective_and_changes_nothing(method, capsys):
    X = mixture(7)
    quiet = em.run_em(X, method=method, init="kmeans++", n_init=2, random_state=1)
    capsys.readouterr()
    shown = em.run_em(X, method=method, init="kmeans++", n_init=2, random_state=1,
                      progress=True)
    err = capsys.readouterr().err
    assert f"{method} EM (start 1/2)" in err and f"{method} EM (start 2/2)" in err
    assert f"objective={quiet.objective:.6g}" in err
    assert f"{quiet.n_iter}/100" in err
    for name in ("means", "covariances", "weights", "resp", "labels"):
        np.testing.assert_array_equal(getattr(shown, name), getattr(quiet, name))
    assert (shown.n_iter, shown.objective) == (quiet.n_iter, quiet.objective)


@pytest.mark.parametrize("progress", ["yes", 1, None])
def test_progress_must_be_a_bool(progress):
    with pytest.raises(ValueError, match="progress must be True or False"):
        em.run_em(mixture(0), progress=progress)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_initial_means_are_the_first_start_of_run_em(images, init):
    X, _ = images["Image2"]
    for seed in (0, 3):
        fit = em.run_em(X, 3, method="hard", init=init, random_state=seed, max_iter=300)
        np.testing.assert_array_equal(em.initial_means(X, 3, init, seed), fit.init_means)


def test_initial_means_renumbered_to_the_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.vstack([rng.normal(c, 0.5, size=(50, 2)) for c in centres])
    y = np.repeat(np.arange(3), 50)
    for seed in range(5):
        plain = em.initial_means(X, 3, "kmeans++", seed)
        ordered = em.initial_means(X, 3, "kmeans++", seed, y=y)
        assert sorted(map(tuple, plain)) == sorted(map(tuple, ordered))
        nearest = np.argmin(((ordered[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        np.testing.assert_array_equal(nearest, [0, 1, 2])


def test_initial_means_errors(images):
    X, y = images["Image1"]
    with pytest.raises(ValueError, match="init"):
        em.initial_means(X, 3, init=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="y must have shape"):
        em.initial_means(X, 3, y=y[:10])


# --- covariance models ------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("seed, n_iter", [(0, 1), (1, 5), (2, 20)])
def test_each_covariance_type_equals_gaussian_mixture_from_the_same_start(covariance_type, seed,
                                                                          n_iter):
    from emlab.engine.covariance import to_sklearn_format

    X = blobs(seed, spread=2.0)
    start, precisions = structured_start(X, covariance_type, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn that tol=0 never converges
        ours = em.run_em(X, method="soft", init=start, tol=0, max_iter=n_iter, reg_covar=1e-6,
                         covariance_type=covariance_type)
        gm = GaussianMixture(3, covariance_type=covariance_type, means_init=start["means"],
                             weights_init=start["weights"], precisions_init=precisions,
                             reg_covar=1e-6, tol=0, max_iter=n_iter).fit(X)
    # ours stops early only at a fixed point (no gain at all), where GaussianMixture stays
    assert ours.covariance_type == covariance_type and ours.n_iter <= n_iter
    np.testing.assert_allclose(ours.means, gm.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(to_sklearn_format(ours.covariances, covariance_type),
                               gm.covariances_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.weights, gm.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.objective, gm.score(X) * len(X), rtol=1e-8)
    np.testing.assert_allclose(ours.resp.T, gm.predict_proba(X), atol=1e-8)


def _model_parameters(covariance_type, means, covs, weights):
    """The free parameters of a fit as one vector: means, Cholesky factors (or log-variances)
    and log-weights, so that a perturbation stays inside the model."""
    if covariance_type == "full":
        cov_part = np.linalg.cholesky(covs)[:, [0, 1, 1], [0, 0, 1]].ravel()
    elif covariance_type == "tied":
        cov_part = np.linalg.cholesky(covs[0])[[0, 1, 1], [0, 0, 1]]
    elif covariance_type == "diag":
        cov_part = np.log(np.diagonal(covs, axis1=1, axis2=2)).ravel()
    else:
        cov_part = np.log(covs[:, 0, 0])
    return np.concatenate([means.ravel(), cov_part, np.log(weights)])


def _model_from_parameters(covariance_type, theta, K=3):
    means, rest = theta[: 2 * K].reshape(K, 2), theta[2 * K:]
    if covariance_type in ("full", "tied"):
        n = 3 if covariance_type == "tied" else 3 * K
        L = np.zeros((n // 3, 2, 2))
        L[:, [0, 1, 1], [0, 0, 1]] = rest[:n].reshape(-1, 3)
        covs = np.broadcast_to(L @ L.transpose(0, 2, 1), (K, 2, 2))
    elif covariance_type == "diag":
        n = 2 * K
        covs = np.stack([np.diag(v) for v in np.exp(rest[:n].reshape(K, 2))])
    else:
        n = K
        covs = np.exp(rest[:n])[:, None, None] * np.eye(2)
    weights = np.exp(rest[n:])
    return means, covs, weights / weights.sum()


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_with_missing_cells_each_model_converges_to_a_stationary_point_of_the_observed_likelihood(
        covariance_type):
    # The constrained M-step with expected scatter matrices is EM for incomplete data: at its
    # fixed point the observed-data log-likelihood (missing cells integrated out) has zero
    # gradient along every free parameter of the model. Central differences check it.
    X = blobs(5, n_per=40, spread=2.0)
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[3] = np.nan  # a row with nothing observed
    fit = em.run_em(X, method="soft", init="kmeans++", tol=1e-13, max_iter=5000,
                    reg_covar=0.0, covariance_type=covariance_type)
    assert fit.converged
    from emlab.engine.covariance import has_structure

    assert has_structure(fit.covariances, covariance_type)
    theta = _model_parameters(covariance_type, fit.means, fit.covariances, fit.weights)
    np.testing.assert_allclose(_model_from_parameters(covariance_type, theta)[1],
                               fit.covariances, rtol=1e-10)

    def loglik(t):
        return em.log_likelihood(X, *_model_from_parameters(covariance_type, t))

    h = 1e-5
    grad = np.array([(loglik(theta + h * e) - loglik(theta - h * e)) / (2 * h)
                     for e in np.eye(theta.size)])
    assert np.abs(grad).max() < 1e-3, grad
    # the check has teeth: after one EM iteration the gradient is far from zero
    early = fit.history[1]
    theta = _model_parameters(covariance_type, early["means"], early["covariances"],
                              early["weights"])
    assert max(abs(loglik(theta + h * e) - loglik(theta - h * e)) / (2 * h)
               for e in np.eye(theta.size)) > 0.1


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_hard_em_with_a_covariance_type_only_reshapes_the_reported_covariances(covariance_type):
    X = blobs(3, spread=2.5)
    full = em.run_em(X, method="hard", init=X[[0, 70, 140]])
    constrained = em.run_em(X, method="hard", init=X[[0, 70, 140]],
                            covariance_type=covariance_type)
    np.testing.assert_array_equal(constrained.labels, full.labels)  # nearest-mean E-step
    np.testing.assert_allclose(constrained.means, full.means, rtol=1e-12)
    variances = np.diagonal(full.covariances, axis1=1, axis2=2)
    want = {"tied": np.broadcast_to(np.einsum("k,kij->ij", full.weights, full.covariances),
                                    (3, 2, 2)),
            "diag": np.stack([np.diag(v) for v in variances]),
            "spherical": variances.mean(axis=1)[:, None, None] * np.eye(2)}[covariance_type]
    np.testing.assert_allclose(constrained.covariances, want, rtol=1e-10)
    assert constrained.covariance_type == covariance_type


def test_covariance_type_bad_arguments():
    X = blobs(0)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        em.run_em(X, method="soft", covariance_type="VVV")
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        em.m_step(X, em.e_step(X, X[:3]), covariance_type="tide")
    full_start = {"means": X[:3], "covariances": np.stack([[[2.0, 0.5], [0.5, 1.0]]] * 3)}
    with pytest.raises(ValueError, match="init\\['covariances'\\] do not follow "
                                         "covariance_type='diag'"):
        em.run_em(X, method="soft", init=full_start, covariance_type="diag")


def test_load_image_names_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not a file"):
        em.load_image(tmp_path)


SCALE_DATA = mixture(11, n=120)


@settings(max_examples=25, deadline=None)
@given(exponent=st.floats(-150, 150), sign=st.sampled_from([-1.0, 1.0]),
       offset=st.floats(-1e3, 1e3), method=st.sampled_from(["hard", "soft"]))
def test_the_fit_is_scale_and_shift_equivariant(exponent, sign, offset, method):
    """Fitting a X + b gives a mu + b, a^2 Sigma, the same labels and the log-likelihood
    shifted by -N d ln|a|, for |a| from 1e-150 to 1e150 (reg_covar is a variance: it scales
    with a^2)."""
    a = sign * 10.0 ** exponent
    b = offset * abs(a)  # a shift at the data's own scale, which float64 can represent
    X = SCALE_DATA
    base = em.run_em(X, 3, method=method, init="random", random_state=2, max_iter=300)
    moved = em.run_em(a * X + b, 3, method=method, init="random", random_state=2,
                      max_iter=300, reg_covar=1e-6 * a * a)
    np.testing.assert_array_equal(moved.labels, base.labels)
    assert moved.n_iter == base.n_iter
    np.testing.assert_allclose(moved.means, a * base.means + b, rtol=1e-7, atol=1e-9 * abs(a))
    np.testing.assert_allclose(moved.covariances, a * a * base.covariances, rtol=1e-6,
                               atol=1e-9 * a * a)
    np.testing.assert_allclose(moved.weights, base.weights, atol=1e-12)
    if method == "soft":
        shift = -X.size * np.log(abs(a))
        np.testing.assert_allclose(moved.objective, base.objective + shift,
                                   atol=1e-7 * max(1.0, abs(base.objective) + abs(shift)))
    else:
        np.testing.assert_allclose(moved.objective, a * a * base.objective, rtol=1e-7)


@pytest.mark.parametrize("scale, match", [
    (1e200, "spread of about .*overflow float64"),
    (1e-200, "spread of about .*underflow float64"),
])
def test_unrepresentable_spreads_are_refused_with_their_cause(scale, match):
    with pytest.raises(ValueError, match=match):
        em.run_em(scale * mixture(3), 3, reg_covar=0.0)


def test_a_reg_covar_that_would_swamp_the_data_is_refused():
    with pytest.raises(ValueError, match=r"reg_covar=1e-06 is not small against the variance"):
        em.run_em(1e-6 * mixture(3), 3)
    fit = em.run_em(1e-6 * mixture(3), 3, reg_covar=1e-18)  # in X's units squared: fine
    assert np.isfinite(fit.objective)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_each_covariance_model_is_scale_and_shift_equivariant(covariance_type):
    # the constraints are invariant under x -> a x + b (a scalar), so the fit must be too
    X = blobs(6, spread=2.0)
    a, b = 1e3, np.array([5.0, -2.0])
    fit = em.run_em(X, method="soft", init="kmeans++", covariance_type=covariance_type,
                    max_iter=1000)
    moved = em.run_em(a * X + b, method="soft", init="kmeans++", max_iter=1000,
                      covariance_type=covariance_type, reg_covar=1e-6 * a ** 2)
    np.testing.assert_array_equal(moved.labels, fit.labels)
    np.testing.assert_allclose(moved.means, a * fit.means + b, rtol=1e-9)
    np.testing.assert_allclose(moved.covariances, a ** 2 * fit.covariances, rtol=1e-9,
                               atol=1e-12 * a ** 2)


# --- bad inputs found by the input audit -----------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: em.run_em(GOOD, random_state="a"), "random_state must be an integer"),
    (lambda: em.run_em(GOOD, random_state=1.5), "random_state must be an integer"),
    (lambda: em.run_em(GOOD, random_state=-1), "random_state must be >= 0"),
    (lambda: em.initial_means(GOOD, random_state="a"), "random_state must be an integer"),
    (lambda: em.run_em(GOOD, tol=True), "tol must be a non-negative number"),
    (lambda: em.run_em(GOOD, reg_covar=True), "reg_covar must be a non-negative number"),
    (lambda: em.e_step(GOOD + 1j, np.zeros((3, 2))), "X must hold real numbers"),
    (lambda: em.load_image(3), "path must be a str or path-like"),
    (lambda: em.load_image(None), "path must be a str or path-like"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_m_step_refuses_a_component_it_cannot_reseed_instead_of_returning_nan():
    # one point, two components: the empty one has no point to take, its mean would be 0 / 0
    with pytest.raises(ValueError, match="component 1 of R holds no point and cannot be re-"):
        em.m_step(GOOD[:1], np.array([[1.0], [0.0]]))


def test_m_step_refuses_current_covariances_that_are_not_positive_definite():
    X = GOOD.copy()
    X[0, 0] = np.nan
    R = em.e_step(X, GOOD[:3])
    with pytest.raises(ValueError, match=r"covariances\[0\] is not positive definite"):
        em.m_step(X, R, means=GOOD[:3], covariances=np.zeros((3, 2, 2)))


def test_soft_e_step_refuses_a_point_of_zero_density_instead_of_nan():
    X = np.array([[1e200, 1e200], [1.0, 1.0]])  # its squared distance overflows: density 0
    means, covs = np.array([[0.0, 0.0], [5.0, 5.0]]), np.stack([np.eye(2)] * 2)
    for call in (em.e_step_soft, em.log_likelihood):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="X row 0 has zero density under every"):
                call(X, means, covs, [0.5, 0.5])


def test_permute_components_and_align_to_truth_check_their_arguments():
    result = em.run_em(GOOD, 3)
    for order in ([0, 1], [0, 0, 1], [0, 1, 5], [0.0, 1.0, 2.0]):
        with pytest.raises(ValueError, match=r"order must be a permutation of 0\.\.2"):
            em.permute_components(result, order)
    for call in (lambda: em.permute_components("fit", [0, 1, 2]),
                 lambda: em.align_to_truth("fit", np.zeros(len(GOOD), int))):
        with pytest.raises(ValueError, match="result must be an EMResult"):
            call()


@pytest.mark.parametrize("labels", [[0, 3], [0, -1], [0.0, 1.0], [[0, 1]]])
def test_one_hot_refuses_labels_outside_the_components(labels):
    # a label of no component gave a column of zeros: a point assigned to nothing
    with pytest.raises(ValueError, match=r"labels must be integers in 0\.\.2"):
        em.one_hot(np.array(labels), 3)


def test_clustering_scores_of_a_single_class_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warned that a single label was found
        scores = em.clustering_scores([0, 0, 0], [1, 1, 1])
    assert scores["accuracy"] == 1.0 and scores["confusion"].tolist() == [[3]]


@pytest.mark.parametrize("variances", [[1.0, 0.0], [1.0, -1.0], [1.0, np.nan]])
def test_log_gaussian_1d_refuses_variances_that_are_not_positive(variances):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was a NaN or -inf table with a RuntimeWarning
        with pytest.raises(ValueError, match="variances must be positive and finite"):
            em.log_gaussian_1d(np.array([0.5, 2.0]), np.array([0.0, 1.0]), np.array(variances))


def test_conditional_fill_names_a_covariance_singular_on_the_observed_coordinates():
    cov = np.array([[0.0, 0.0], [0.0, 1.0]])  # no variance on the observed coordinate 0
    with pytest.raises(ValueError, match="cov is singular on the observed coordinates"):
        em.conditional_fill(np.array([[1.0, np.nan]]), np.array([True, False]), np.zeros(2), cov)


def test_initial_means_names_y_for_labels_that_are_not_class_numbers():
    with pytest.raises(ValueError, match=r"^y must hold non-negative integer labels"):
        em.initial_means(GOOD, 3, y=np.zeros(len(GOOD)))  # was named y_true
