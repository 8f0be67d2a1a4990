"""Tests of ``emlab.engine.loop``: the one EM loop (convergence rules, history, progress, best of
the starts, the warning), on a scripted pass and through the four passes that use it: run_em in
memory (against scikit-learn's KMeans and GaussianMixture from the same start), on a dask array,
and the Potts-coupled sweeps of segment_image."""

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from synthetic import mixture, piecewise_image

import em_helpers as em
from emlab.engine import loop
from emlab.imaging import segmentation

MEANS = np.zeros((2, 1))
COVS = np.ones((2, 1, 1))
WEIGHTS = np.full(2, 0.5)


class ScriptedPass:
    """A pass that replays a script: one (objective, assignment, change) per iteration; the
    new means are the iteration number, so the history shows which step made which entry."""

    def __init__(self, script, final=None, start=np.nan, n_points=10):
        self.script, self.final, self.start, self.n_points = script, final, start, n_points
        self.calls = []

    def start_objective(self, means, covs, weights):
        return self.start

    def step(self, means, covs, weights, iteration):
        self.calls.append(iteration)
        objective, assignment, change = self.script[iteration - 1]
        params = (np.full((2, 1), float(iteration)), covs, weights)
        return loop.Step(params, objective, assignment=assignment, change=change,
                         new_objective=None if objective is not None else -iteration,
                         reseeded=(1,) if iteration == 2 else ())

    def finish(self, means, covs, weights):
        return self.final


class RecordingBar:
    def __init__(self):
        self.postfixes, self.updates, self.closed = [], 0, False

    def set_postfix_str(self, text, refresh=True):
        self.postfixes.append(text)

    def update(self):
        self.updates += 1

    def close(self):
        self.closed = True


def test_hard_em_stops_when_the_assignment_repeats_and_history_gets_every_objective():
    a, b = np.array([0, 1, 1]), np.array([0, 0, 1])
    em_pass = ScriptedPass([(9.0, a, None), (5.0, b, None), (4.0, b, None), (4.0, b, None)],
                           final=3.5)
    fit = loop.iterate(em_pass, MEANS, COVS, WEIGHTS, "hard", max_iter=10, tol=0.0)
    assert em_pass.calls == [1, 2, 3] and fit.n_iter == 3 and fit.converged
    # entry t: the parameters after t M-steps and the objective the next E-step measured
    np.testing.assert_array_equal([h["objective"] for h in fit.history], [9, 5, 4, 3.5])
    assert [h["means"][0, 0] for h in fit.history] == [0, 1, 2, 3]
    assert fit.objective == 3.5 and fit.reseeded == [(2, 1)] and fit.method == "hard"
    np.testing.assert_array_equal(fit.init_means, MEANS)


def test_soft_em_stops_when_the_mean_objective_gains_less_than_tol():
    script = [(-100.0, None, None), (-50.0, None, None), (-49.5, None, None),
              (-49.0, None, None)]
    fit = loop.iterate(ScriptedPass(script, n_points=10), MEANS, COVS, WEIGHTS, "soft",
                       max_iter=10, tol=0.1)
    assert fit.n_iter == 3 and fit.converged  # gains per point: 5, then 0.05 < 0.1
    fit = loop.iterate(ScriptedPass(script, n_points=10), MEANS, COVS, WEIGHTS, "soft",
                       max_iter=3, tol=0.01)
    assert fit.n_iter == 3 and not fit.converged


def test_a_pass_that_measures_its_change_converges_on_it_and_keeps_its_objectives():
    script = [(None, None, 0.5), (None, None, 0.01), (None, None, 1e-5)]
    em_pass = ScriptedPass(script, start=-7.0)
    fit = loop.iterate(em_pass, MEANS, COVS, WEIGHTS, "soft", max_iter=10, tol=1e-4)
    assert fit.n_iter == 3 and fit.converged
    assert [h["objective"] for h in fit.history] == [-7.0, -1, -2, -3]
    hard = loop.iterate(ScriptedPass([(None, None, 3), (None, None, 0)]), MEANS, COVS, WEIGHTS,
                        "hard", max_iter=10, tol=1.0)
    assert hard.n_iter == 2 and hard.converged  # hard: only no change at all stops


def test_the_bar_shows_each_iteration_and_the_final_objective_then_closes():
    bar = RecordingBar()
    b = np.array([1, 0])
    loop.iterate(ScriptedPass([(8.0, b, None), (6.0, b, None)], final=6.0), MEANS, COVS,
                 WEIGHTS, "hard", max_iter=5, tol=0.0, bar=bar, shown=lambda o: 2 * o)
    assert bar.updates == 2 and bar.closed
    assert bar.postfixes == ["objective=16", "objective=12", "objective=12"]
    bar = RecordingBar()
    loop.iterate(ScriptedPass([(None, None, 0.25)]), MEANS, COVS, WEIGHTS, "soft", max_iter=1,
                 tol=0.0, bar=bar)
    assert bar.postfixes == ["change=0.25"] and bar.closed


def test_best_of_keeps_the_first_of_equal_objectives_and_runs_the_fits_lazily():
    class Fit:
        def __init__(self, objective, name):
            self.objective, self.name = objective, name

    assert loop.best_of([Fit(5.0, "a"), Fit(4.0, "b"), Fit(4.0, "c")], "hard").name == "b"
    assert loop.best_of([Fit(5.0, "a"), Fit(5.0 * (1 + 1e-14), "b")], "soft").name == "a"
    assert loop.best_of([Fit(-5.0, "a"), Fit(-4.0, "b")], "soft").name == "b"
    made = []
    loop.best_of((made.append(i) or Fit(float(i), str(i)) for i in range(3)), "hard")
    assert made == [0, 1, 2]


def test_best_of_with_margin_0_keeps_a_later_fit_better_by_rounding():
    class Fit:
        def __init__(self, objective, name):
            self.objective, self.name = objective, name

    soft = [Fit(5.0, "a"), Fit(5.0 * (1 + 1e-14), "b"), Fit(5.0 * (1 + 1e-14), "c")]
    assert loop.best_of(soft, "soft", margin=0.0).name == "b"  # equal: the first kept
    hard = [Fit(5.0, "a"), Fit(5.0 * (1 - 1e-14), "b")]
    assert loop.best_of(hard, "hard", margin=0.0).name == "b"
    assert loop.best_of(hard, "hard").name == "a"
    assert not loop.improves(5.0, 5.0, "soft", margin=0.0)


def test_the_warning_points_at_the_callers_line():
    with pytest.warns(loop.EMConvergenceWarning, match="hard EM did not converge within "
                      "max_iter=7 iterations") as caught:
        loop.warn_unless_converged(False, "hard EM", 7)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.warn_unless_converged(True, "hard EM", 7)
    assert em.EMConvergenceWarning is loop.EMConvergenceWarning
    with pytest.warns(em.EMConvergenceWarning) as caught:
        em.run_em(mixture(1), 3, "soft", init="kmeans++", max_iter=1, tol=0.0)
    assert caught[0].filename == __file__  # run_em's caller, whatever the path inside


# ------------------------------------------------------------------- the passes that use it

def test_hard_em_in_memory_is_lloyds_kmeans_from_the_same_start():
    for seed in range(3):
        X = mixture(seed, n=2000)
        start = X[:3].copy()
        ours = em.run_em(X, 3, "hard", init=start, max_iter=100)
        km = KMeans(3, init=start, n_init=1, algorithm="lloyd", tol=0, max_iter=100).fit(X)
        assert ours.converged and ours.n_iter == km.n_iter_  # the same stopping rule
        np.testing.assert_array_equal(ours.labels, km.labels_)
        np.testing.assert_allclose(ours.means, km.cluster_centers_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.objective, km.inertia_, rtol=1e-10)


def test_soft_em_in_memory_is_gaussian_mixture_from_the_same_start():
    X = mixture(4, n=1500)
    start = {"means": X[:3].copy(), "covariances": np.stack([np.eye(2)] * 3),
             "weights": np.full(3, 1 / 3)}
    ours = em.run_em(X, 3, "soft", init=start, max_iter=200, tol=1e-6)
    gm = GaussianMixture(3, tol=1e-6, max_iter=200, means_init=start["means"],
                         weights_init=start["weights"], precisions_init=start["covariances"],
                         init_params="random_from_data", random_state=0).fit(X)
    assert ours.converged and gm.converged_
    np.testing.assert_allclose(ours.means, gm.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.covariances, gm.covariances_, rtol=1e-6, atol=1e-8)


def test_a_hard_fit_runs_one_e_step_per_iteration_in_all(monkeypatch):
    """The start's E-step is the first iteration's, and the converged last E-step is the
    final one: n_iter passes over the data, not n_iter + 2."""
    calls = []
    original = em.hard_pass
    monkeypatch.setattr(em, "hard_pass", lambda data, means: calls.append(1)
                        or original(data, means))
    X = mixture(2, n=1000)
    result = em.run_em(X, 3, "hard", init=X[:3].copy(), max_iter=100)
    assert result.converged and len(calls) == result.n_iter
    np.testing.assert_array_equal(result.resp, em.e_step(X, result.means))


def test_a_hard_fit_builds_its_one_hot_only_when_asked():
    X = mixture(3, n=600)
    result = em.run_em(X, 3, "hard", init="kmeans++", n_init=2)
    assert result.__dict__["resp"] is None  # labels only
    ordered = em.permute_components(result, [2, 0, 1])
    assert ordered.__dict__["resp"] is None
    resp = ordered.resp
    assert resp.dtype == np.int64 and resp.shape == (3, 600)
    np.testing.assert_array_equal(resp, em.one_hot(ordered.labels, 3))
    np.testing.assert_array_equal(resp, em.e_step(X, ordered.means))
    assert ordered.resp is resp  # built once
    again = em.EMResult(**{**result.__dict__})
    np.testing.assert_array_equal(again.resp, result.resp)


def test_the_dask_pass_gives_the_in_memory_iterates():
    X = mixture(5, n=900)
    for method in ("hard", "soft"):
        ours = em.run_em(da.from_array(X, chunks=250), 3, method, init=X[:3].copy())
        ref = em.run_em(X, 3, method, init=X[:3].copy())
        assert ours.n_iter == ref.n_iter and ours.converged == ref.converged
        for got, want in zip(ours.history, ref.history):
            np.testing.assert_allclose(got["means"], want["means"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got["objective"], want["objective"], rtol=1e-9)


def test_the_potts_pass_keeps_a_monotone_history_and_stops_on_no_change():
    image, _ = piecewise_image(0.6, seed=2, shape=(32, 32))
    for method, sign in (("soft", 1.0), ("hard", -1.0)):  # soft: up; hard (energy): down
        # dipy's model: its mean-field objective rises at every step (that of the default,
        # with estimated proportions, need not)
        _, fit = segmentation.segment_image(image, None, 3, method, beta=0.8,
                                            proportions=False, covariance_type="full")
        trace = fit.objective_trace
        assert fit.converged and len(trace) == fit.n_iter + 1
        assert np.all(sign * np.diff(trace) >= -1e-6 * np.abs(trace[:-1]))
        assert fit.objective == trace[-1]
