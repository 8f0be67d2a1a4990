"""Tests of ``emlab.report.tables``: loading both scans and their truth, and the notebooks' tables
(parameters, scores, confusion, the comparison of the two scans), each against a direct count."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import em_helpers as em
from emlab.models import course_scans
from emlab.report import tables

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def fits(images):
    out = {}
    for name, (X, y) in images.items():
        pair = course_scans.fit_hard_and_soft(X, em.initial_means(X, 3, "kmeans++", 0, y=y), y)
        out.update({(name, method): fit for method, fit in pair.items()})
    return out


def random_parameters(seed, K=3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, 2, 2))
    return course_scans.Parameters(rng.normal(size=(K, 2)), A @ A.transpose(0, 2, 1) + np.eye(2),
                             rng.dirichlet(np.ones(K)))


def test_missing_table_agrees_with_the_recorded_missing_cells(images, truth):
    table = tables.missing_table(images)
    cells = np.array(truth["missing_cells_image2"])
    per_class = np.bincount(cells[:, 0] // truth["n_per_class"], minlength=3)
    for k, name in enumerate(truth["class_names"]):
        row = table.loc[("Image2", name)]
        in_class = cells[cells[:, 0] // truth["n_per_class"] == k]
        assert row["x1 missing"] == (in_class[:, 1] == 0).sum()
        assert row["x2 missing"] == (in_class[:, 1] == 1).sum()
        assert row["complete rows"] == truth["n_per_class"] - per_class[k]
    assert table.loc[("Image2", "all"), ["x1 missing", "x2 missing"]].sum() == len(cells)
    assert table.loc[("Image1", "all"), "complete rows"] == 600


def test_parameter_table_puts_every_number_in_its_place(truth):
    est, se = random_parameters(1), random_parameters(2)
    table = tables.parameter_table(est, truth, "Image1", se=se)
    true_covs = np.array(truth["covariances"]["Image1"])
    assert table.shape == (18, 4)
    for k, name in enumerate(truth["class_names"]):
        expect = {"mean x1": (est.means[k, 0], truth["means"][k][0], se.means[k, 0]),
                  "mean x2": (est.means[k, 1], truth["means"][k][1], se.means[k, 1]),
                  "var x1": (est.covariances[k, 0, 0], true_covs[k, 0, 0],
                             se.covariances[k, 0, 0]),
                  "var x2": (est.covariances[k, 1, 1], true_covs[k, 1, 1],
                             se.covariances[k, 1, 1]),
                  "cov x1,x2": (est.covariances[k, 1, 0], true_covs[k, 1, 0],
                                se.covariances[k, 1, 0]),
                  "weight": (est.weights[k], 1 / 3, se.weights[k])}
        for parameter, (e, t, s) in expect.items():
            row = table.loc[(name, parameter)]
            assert row["estimate"] == pytest.approx(e)
            assert row["truth"] == pytest.approx(t)
            assert row["error"] == pytest.approx(e - t)
            assert row["se"] == pytest.approx(s)


def test_parameter_table_errors(truth):
    with pytest.raises(ValueError, match="must have means, covariances and weights"):
        tables.parameter_table(np.zeros((3, 2)), truth, "Image1")
    with pytest.raises(ValueError, match="result has means of shape"):
        tables.parameter_table(random_parameters(0, K=2), truth, "Image1")
    with pytest.raises(ValueError, match="image must be one of"):
        tables.parameter_table(random_parameters(0), truth, "Image9")
    with pytest.raises(ValueError, match="se has means"):
        tables.parameter_table(random_parameters(0), truth, "Image1", se=random_parameters(0, K=4))


def test_image_comparison_table(truth):
    est = {"Image1": random_parameters(3), "Image2": random_parameters(4)}
    ses = {"Image1": random_parameters(5), "Image2": random_parameters(6)}
    table = tables.image_comparison_table(est, truth, ses)
    for image in est:
        single = tables.parameter_table(est[image], truth, image, se=ses[image])
        np.testing.assert_allclose(table[(image, "estimate - truth")], single["error"])
        np.testing.assert_allclose(table[(image, "bootstrap SE")], single["se"])
    diff = table[("Image2 - Image1", "estimated")]
    assert diff.loc[("tumour", "var x2")] == pytest.approx(
        est["Image2"].covariances[2, 1, 1] - est["Image1"].covariances[2, 1, 1])
    expected = table[("Image2 - Image1", "expected")]
    assert expected.loc[("background", "var x1")] == pytest.approx(1.2)
    assert expected.loc[("background", "mean x1")] == 0
    no_se = tables.image_comparison_table(est, truth)
    assert ("Image1", "bootstrap SE") not in no_se.columns
    with pytest.raises(ValueError, match="ses has no entry"):
        tables.image_comparison_table(est, truth, {"Image1": ses["Image1"]})


def brute_force_accuracy(y, labels):
    return max(np.mean(np.asarray(perm)[labels] == y)
               for perm in itertools.permutations(range(3)))


def test_scores_and_confusion_tables(images, fits):
    table = tables.scores_table(fits, images)
    assert list(table.index) == list(fits)
    for (image, method), fit in fits.items():
        y = images[image][1]
        row = table.loc[(image, method)]
        assert row["accuracy"] == pytest.approx(brute_force_accuracy(y, fit.labels))
        assert row["misassigned"] == round((1 - row["accuracy"]) * len(y))
        assert row["ARI"] == pytest.approx(adjusted_rand_score(y, fit.labels))
        assert row["iterations"] == fit.n_iter and row["converged"] == fit.converged
        confusion = tables.confusion_table(y, fit.labels)
        # fits are aligned to the truth, so the confusion table is a plain cross-tabulation
        np.testing.assert_array_equal(confusion.to_numpy(), pd.crosstab(y, fit.labels).to_numpy())
    with pytest.raises(ValueError, match="fits keys"):
        tables.scores_table({"Image1": fits[("Image1", "hard")]}, images)


def test_total_variance_table(images, truth, fits):
    table = tables.total_variance_table(fits, images, truth)
    X, y = images["Image1"]
    for k, name in enumerate(truth["class_names"]):
        row = table.loc[("Image1", name)]
        assert row["truth"] == pytest.approx(np.trace(truth["covariances"]["Image1"][k]))
        assert row["true labels"] == pytest.approx(
            np.trace(np.cov(X[y == k].T, bias=True)), rel=1e-5)
        for method in ("hard", "soft"):
            assert row[method] == pytest.approx(np.trace(fits[("Image1", method)].covariances[k]))
    assert list(table.columns) == ["truth", "true labels", "hard", "soft"]


def test_covariance_shift_table(fits):
    table = tables.covariance_shift_table(fits)
    for method in ("hard", "soft"):
        shift = fits[("Image2", method)].covariances - fits[("Image1", method)].covariances
        np.testing.assert_allclose(table[(method, "var x1")].iloc[:3], shift[:, 0, 0])
        np.testing.assert_allclose(table[(method, "cov x1,x2")].iloc[:3], shift[:, 0, 1])
        np.testing.assert_allclose(table[(method, "mean var")].loc["mean"],
                                   np.diagonal(shift, axis1=1, axis2=2).mean())
    with pytest.raises(ValueError, match="fits needs"):
        tables.covariance_shift_table({("Image1", "hard"): fits[("Image1", "hard")]})


def test_position_along_matches_the_nearest_mean_boundary():
    rng = np.random.default_rng(0)
    a, b = np.array([1.0, 2.0]), np.array([4.0, -1.0])
    X = rng.normal(2.0, 3.0, size=(500, 2))
    t = tables.position_along(X, a, b)
    np.testing.assert_allclose(tables.position_along(np.array([a, b, (a + b) / 2]), a, b),
                               [0.0, 1.0, 0.5])
    closer_to_a = ((X - a) ** 2).sum(1) < ((X - b) ** 2).sum(1)
    np.testing.assert_array_equal(t < 0.5, closer_to_a)
    X[3, 1] = np.nan
    assert np.isnan(tables.position_along(X, a, b)[3])
    with pytest.raises(ValueError, match="distinct"):
        tables.position_along(X, a, a)
    with pytest.raises(ValueError, match="start and end must have shape"):
        tables.position_along(X, a, np.zeros(3))


def test_accuracy_on_rows():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([2, 2, 1, 0, 0, 0, 1, 1, 1])  # 2 -> 0, 0 -> 1, 1 -> 2 after matching
    rows = np.array([True, True, True, False, False, False, False, False, False])
    assert tables.accuracy_on_rows(y, pred, rows) == pytest.approx(2 / 3)
    assert tables.accuracy_on_rows(y, pred, ~rows) == pytest.approx(1.0)
    assert tables.accuracy_on_rows(y, pred, np.ones(9, bool)) == pytest.approx(
        brute_force_accuracy(y, pred))
    with pytest.raises(ValueError, match="rows must be a boolean mask"):
        tables.accuracy_on_rows(y, pred, np.zeros(9, bool))
    with pytest.raises(ValueError, match="rows must be a boolean mask"):
        tables.accuracy_on_rows(y, pred, np.arange(9))


# --------------------------------------------------------------------------- interval_misses
def test_interval_misses_counts_against_a_direct_count_and_binomial_sum():
    import math

    rng = np.random.default_rng(3)
    errors, ses = rng.normal(size=36), rng.uniform(0.5, 1.5, size=36)
    found = tables.interval_misses(errors, ses)
    direct = sum(abs(e) > 1.959964 * s for e, s in zip(errors, ses))
    tail = sum(math.comb(36, j) * 0.05 ** j * 0.95 ** (36 - j) for j in range(direct, 37))
    assert found["intervals"] == 36 and found["missing zero"] == direct
    assert found["expected by chance"] == pytest.approx(1.8)
    assert found["P(at least as many)"] == pytest.approx(tail, rel=1e-9)
    assert tables.interval_misses([3.0, 0.1], [1.0, 1.0], level=0.99)["missing zero"] == 1


@pytest.mark.parametrize(("errors", "ses", "message"), [
    ([0.1], [0.0], "positive"), ([0.1, 0.2], [1.0], "same"), ([np.nan], [1.0], "finite")])
def test_interval_misses_refuses_bad_input(errors, ses, message):
    with pytest.raises(ValueError, match=message):
        tables.interval_misses(errors, ses)


def test_estimate_table_lists_each_component_in_its_own_order(images):
    X, y = images["Image1"]
    fit = em.m_step(X, em.one_hot(y, 3))
    table = tables.estimate_table({"Image1": fit})
    assert list(table.index) == [("Image1", k) for k in range(3)]
    for k in range(3):
        members = X[y == k]
        cov = np.cov(members.T, bias=True)
        np.testing.assert_allclose(table.loc[("Image1", k)].to_numpy(),
                                   [*members.mean(axis=0), cov[0, 0] + 1e-6, cov[1, 1] + 1e-6,
                                    cov[0, 1], 1 / 3], atol=1e-12)


@pytest.mark.parametrize("level", ["a", None, 1.0, float("nan")])
def test_interval_misses_names_a_bad_level(level):
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        tables.interval_misses([0.1, -0.2], [0.1, 0.1], level=level)
