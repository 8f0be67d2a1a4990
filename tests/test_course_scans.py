"""Tests of emlab.models.course_scans: the scans, their truth and the fits."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import em_helpers as em
from emlab.models import course_scans

DATA = Path(__file__).resolve().parents[1] / "data"


def brute_force_accuracy(y, labels):
    return max(np.mean(np.asarray(perm)[labels] == y)
               for perm in itertools.permutations(range(3)))


def test_load_images_matches_load_image(images):
    assert list(images) == ["Image1", "Image2"]
    for name, (X, y) in images.items():
        X_ref, y_ref = em.load_image(DATA / f"{name}.csv")
        np.testing.assert_array_equal(X, X_ref)
        np.testing.assert_array_equal(y, y_ref)


def test_load_images_rejects_a_bare_string():
    with pytest.raises(ValueError, match="names"):
        course_scans.load_images("Image1")


def test_load_truth_reads_the_json_file(truth):
    assert truth == json.loads((DATA / "truth.json").read_text())


def test_load_truth_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        course_scans.load_truth(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        course_scans.load_truth(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"means": [[0, 0]]}))
    with pytest.raises(ValueError, match="missing keys"):
        course_scans.load_truth(tmp_path / "partial.json")


def test_true_parameters(truth):
    params = course_scans.true_parameters(truth, "Image2")
    np.testing.assert_array_equal(params.means, np.array(truth["means"]))
    np.testing.assert_array_equal(params.covariances, np.array(truth["covariances"]["Image2"]))
    np.testing.assert_allclose(params.weights, [1 / 3] * 3)
    with pytest.raises(ValueError, match="image must be one of"):
        course_scans.true_parameters(truth, "Image3")


def test_fit_hard_and_soft(images):
    X, y = images["Image1"]
    start = em.initial_means(X, 3, "kmeans++", 0, y=y)
    pair = course_scans.fit_hard_and_soft(X, start, y)
    hard = em.run_em(X, 3, method="hard", init=start, max_iter=500)
    np.testing.assert_allclose(np.sort(pair["hard"].means, axis=0), np.sort(hard.means, axis=0))
    np.testing.assert_allclose(pair["soft"].history[0]["means"], pair["hard"].means)
    np.testing.assert_allclose(pair["soft"].history[0]["covariances"],
                               pair["hard"].covariances)
    assert pair["hard"].converged and pair["soft"].converged
    for fit in pair.values():
        assert brute_force_accuracy(y, fit.labels) == np.mean(fit.labels == y)


def test_bayes_accuracy_matches_scipy_densities(images, truth):
    from scipy.stats import multivariate_normal

    X, y = images["Image1"]
    params = course_scans.true_parameters(truth, "Image1")
    dens = np.array([multivariate_normal(m, c).pdf(X) for m, c in
                     zip(params.means, params.covariances)])
    assert course_scans.bayes_accuracy(X, y, params) == pytest.approx(
        np.mean(dens.argmax(axis=0) == y))
    with pytest.raises(ValueError, match="y must have shape"):
        course_scans.bayes_accuracy(X, y[:5], params)


# --------------------------------------------------------------------------- added noise
def test_class_covariances_are_the_per_class_sample_covariances(images):
    X, y = images["Image1"]
    covs = course_scans.class_covariances(X, y)
    for k in range(3):
        np.testing.assert_allclose(covs[k], np.cov(X[y == k].T, bias=True), atol=1e-12)


def test_class_covariances_refuse_a_class_without_points():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="at least 2 points"):
        course_scans.class_covariances(X, np.r_[np.zeros(9, int), 2])


def test_added_noise_matches_a_direct_computation_and_the_analytic_standard_error():
    # diagonal class covariances, so the six variance differences are independent and
    # Var(s^2) ~ 2 sigma^4 / n gives the standard error of their mean without resampling
    rng = np.random.default_rng(11)
    n, c = 400, 1.5
    variances = np.array([[0.5, 1.0], [2.0, 0.7], [1.2, 1.2]])
    y = np.repeat(np.arange(3), n)
    first = np.vstack([rng.normal(scale=np.sqrt(v), size=(n, 2)) for v in variances])
    second = np.vstack([rng.normal(scale=np.sqrt(v + c), size=(n, 2)) for v in variances])
    second[5, 1] = np.nan  # one missing cell is accepted
    found = course_scans.added_noise((first, y), (second, y), n_boot=400, random_state=0)

    direct = np.mean([np.var(second[y == k][:, j][~np.isnan(second[y == k][:, j])])
                      - np.var(first[y == k][:, j]) for k in range(3) for j in range(2)])
    assert found.c == pytest.approx(direct, abs=0.01)
    analytic_se = np.sqrt(np.sum(2 * variances ** 2 / n + 2 * (variances + c) ** 2 / n)) / 6
    assert found.se == pytest.approx(analytic_se, rel=0.2)
    assert found.interval[0] < found.c < found.interval[1]
    assert found.differences.shape == (3, 2, 2) and found.boot.shape == (400,)


def test_added_noise_recovers_the_generators_noise_on_the_course_scans(images, truth):
    found = course_scans.added_noise(images["Image1"], images["Image2"], n_boot=200)
    assert abs(found.c - truth["noise_variance_image2"]) < 3 * found.se


def test_added_noise_refuses_a_bare_array():
    with pytest.raises(ValueError, match="pair"):
        course_scans.added_noise(np.zeros((4, 2)), (np.zeros((4, 2)), np.zeros(4, int)))


def test_matched_to_classes_agrees_with_align_to_truth(images):
    X, y = images["Image2"]
    fit = em.run_em(X, 3, method="hard", init="kmeans++", random_state=0, max_iter=500)
    aligned = em.align_to_truth(fit, y)
    matched = course_scans.matched_to_classes(fit, fit.labels, y)
    np.testing.assert_array_equal(matched.means, aligned.means)
    np.testing.assert_array_equal(matched.covariances, aligned.covariances)
    np.testing.assert_array_equal(matched.weights, aligned.weights)
    # a permuted numbering comes back to the same order
    order = [2, 0, 1]
    shuffled = course_scans.Parameters(fit.means[order], fit.covariances[order], fit.weights[order])
    relabelled = np.argsort(order)[fit.labels]
    again = course_scans.matched_to_classes(shuffled, relabelled, y)
    np.testing.assert_array_equal(again.means, aligned.means)


def test_the_scans_and_truth_are_found_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert list(course_scans.load_images()) == ["Image1", "Image2"]
    assert course_scans.load_truth()["class_names"][0] == "background"


def test_without_data_next_to_the_package_the_error_says_how_to_pass_the_folder(tmp_path,
                                                                                 monkeypatch):
    # As after a non-editable `pip install .`: the package is there, data/ is not.
    # A folder named data that is not the repository's (site-packages/data) is refused too.
    (tmp_path / "data").mkdir()
    for folder in ("absent", "data"):
        monkeypatch.setattr(course_scans, "DATA_DIR", tmp_path / folder)
        with pytest.raises(FileNotFoundError,
                           match=rf"{folder}: not the repository's data folder.*"
                                 r"load_images\(data_dir="):
            course_scans.load_images()
        with pytest.raises(FileNotFoundError, match=rf"{folder}: .*load_truth\(path="):
            course_scans.load_truth()
    images = course_scans.load_images(data_dir=DATA)  # an explicit folder still works
    assert images["Image1"][0].shape == (600, 2)
    assert course_scans.load_truth(DATA / "truth.json")["means"][0] == [2.0, 2.0]


@pytest.mark.parametrize("call, match", [
    (lambda: course_scans.load_images(3), "names must be a non-empty sequence"),
    (lambda: course_scans.load_images(["Image1"], data_dir=3), "data_dir must be a str or path"),
    (lambda: course_scans.true_parameters([1], "Image1"), "truth must be the dict of load_truth"),
    (lambda: course_scans.true_parameters({"means": [[0.0, 0.0]]}, "Image1"),
     "truth must be the dict of load_truth"),
    (lambda: course_scans.true_parameters(course_scans.load_truth(), ["Image1"]),
     "image must be one of"),
    (lambda: course_scans.class_name(-1, ("a", "b")), "k must be >= 0"),
    (lambda: course_scans.class_name("a", ("a", "b")), "k must be an integer"),
    (lambda: course_scans.as_parameters(course_scans.Parameters("a", "b", "c"), "params"),
     "params must hold numeric arrays"),
    (lambda: course_scans.as_parameters(
        course_scans.Parameters(np.full((1, 2), np.nan), np.eye(2)[None], [1.0]), "params"),
     "params must be finite"),
    (lambda: course_scans.fit_hard_and_soft(np.zeros((6, 2)), "kmeans++"),
     r"init must be an array of means \(K, d\) or a dict"),
    (lambda: course_scans.fit_hard_and_soft(np.zeros((6, 2)), None),
     r"init must be an array of means \(K, d\) or a dict"),
    (lambda: course_scans.fit_hard_and_soft(np.zeros((6, 2)), {"mean": np.zeros((2, 2))}),
     "init dict needs 'means'"),
    (lambda: course_scans.added_noise((np.eye(2), [0, 0]), (np.eye(2), [0, 0]), n_boot=2,
                                      random_state="a"), "random_state must be an integer"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_matched_to_classes_refuses_labels_beyond_the_components(images):
    X, y = images["Image1"]
    fit = em.run_em(X, 3, random_state=0)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        course_scans.matched_to_classes(fit, fit.labels + 1, y)


def test_bayes_accuracy_refuses_labels_that_are_not_class_numbers(images, truth):
    X, y = images["Image1"]
    params = course_scans.true_parameters(truth, "Image1")
    with pytest.raises(ValueError, match="y must hold non-negative integer labels"):
        course_scans.bayes_accuracy(X, np.array(["tissue"] * len(y)), params)


def test_label_errors_name_the_argument_the_caller_passed(images):
    X, y = images["Image1"]
    fit = em.run_em(X, 3, random_state=0)
    calls = {  # each was reported as y_true or y_pred, names the caller never used
        "y": lambda: course_scans.class_covariances(X, y.astype(float)),
        "first y": lambda: course_scans.added_noise((X, y - 1), (X, y), n_boot=2),
        "labels": lambda: course_scans.matched_to_classes(fit, fit.labels.astype(float), y),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name} must hold non-negative integer labels"):
            call()
    with pytest.raises(ValueError, match=r"^y must hold non-negative integer labels"):
        course_scans.fit_hard_and_soft(X, fit.means, y=y.astype(float))


def test_load_truth_names_a_path_that_is_not_a_path():
    with pytest.raises(ValueError, match="path must be a str or path-like"):
        course_scans.load_truth(3)  # was a TypeError from pathlib
