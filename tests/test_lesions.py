"""Tests of ``emlab.imaging.lesions.find_lesions`` on small synthetic volumes: bright and dark
lesions found with their implanted volume and centroid, none in a lesion-free volume, two
lesions as two rows, ``min_volume_ml``, world centroids under an anisotropic affine, and every
bad input refused with a ValueError naming it."""

import numpy as np
import pandas as pd
import pytest

from emlab.imaging import label_maps, lesions, nifti, phantoms, segmentation

SHAPE = (36, 30, 30)
LEVELS = (0.3, 0.6, 0.85)  # CSF, grey and white matter
COLUMNS = ["voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
           "mean_intensity", "contrast"]


def tissue_volume(seed=0):
    """Three slabs along the first axis (CSF, GM, WM; WM the thickest) with Gaussian noise of
    0.03, and a brain mask one voxel inside the border."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(SHAPE, dtype=int)
    truth[8:16] = 1
    truth[16:] = 2
    image = np.asarray(LEVELS)[truth] + rng.normal(0.0, 0.03, SHAPE)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    return image, mask


def implant(image, mask, centre, radius, intensity, affine=None, seed=0):
    return phantoms.implant_lesion(image, centre, (radius,) * 3, intensity=intensity,
                                   texture_sd=0.03, mask=mask, affine=affine, random_state=seed)


def truth_stats(truth, mask, affine):
    return label_maps.region_stats(np.where(mask, truth.astype(int), -1), ["rest", "lesion"],
                                   affine=affine).loc["lesion"]


@pytest.mark.parametrize("intensity", [1.1, 0.05], ids=["bright", "dark"])
def test_a_bright_and_a_dark_lesion_are_found_and_measured(intensity):
    image, mask = tissue_volume()
    lesioned, truth = implant(image, mask, (25, 14, 15), 4.0, intensity)
    before = lesioned.copy()
    table, labels = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05)
    np.testing.assert_array_equal(lesioned, before)  # the caller's array is not modified
    assert list(table.columns) == COLUMNS and table.index.name == "lesion"
    assert len(table) == 1
    row = table.loc[1]
    expected = truth_stats(truth, mask, np.eye(4))
    assert abs(row["voxels"] - truth.sum()) <= 0.05 * truth.sum()
    # affine None: 1 mm voxels, centroids in voxel indices
    assert row["volume_ml"] == pytest.approx(row["voxels"] / 1000)
    np.testing.assert_allclose([row["centroid_x_mm"], row["centroid_y_mm"],
                                row["centroid_z_mm"]],
                               expected[["centroid_i", "centroid_j", "centroid_k"]].to_numpy(
                                   float), atol=0.3)
    assert row["mean_intensity"] == pytest.approx(lesioned[labels == 1].mean())
    assert np.sign(row["contrast"]) == np.sign(intensity - 0.5) and abs(row["contrast"]) > 5
    assert (labels[~mask] == -1).all() and set(np.unique(labels[mask])) == {0, 1}
    assert label_maps.dice(truth.astype(int), (labels == 1).astype(int))[1] > 0.95


def test_a_lesion_free_volume_gives_an_empty_table():
    image, mask = tissue_volume(seed=1)
    table, labels = lesions.find_lesions(image, mask, min_volume_ml=0.05)
    assert table.empty and list(table.columns) == COLUMNS and table.index.name == "lesion"
    assert (labels[mask] == 0).all() and (labels[~mask] == -1).all()
    assert labels.dtype == np.int64


def two_lesions():
    image, mask = tissue_volume(seed=2)
    image, big = implant(image, mask, (26, 8, 10), 4.5, 1.1, seed=1)
    image, small = implant(image, mask, (24, 21, 20), 3.0, 1.2, seed=2)
    return image, mask, big, small


def test_two_separate_lesions_are_two_rows_largest_first():
    image, mask, big, small = two_lesions()
    table, labels = lesions.find_lesions(image, mask, min_volume_ml=0.05)
    assert list(table.index) == [1, 2]
    assert table["voxels"].is_monotonic_decreasing
    assert label_maps.dice(big.astype(int), (labels == 1).astype(int))[1] > 0.95
    assert label_maps.dice(small.astype(int), (labels == 2).astype(int))[1] > 0.95
    np.testing.assert_array_equal(table["voxels"].to_numpy(),
                                  [(labels == 1).sum(), (labels == 2).sum()])


def test_min_volume_ml_is_honoured():
    image, mask, big, small = two_lesions()
    between = (big.sum() + small.sum()) / 2 / 1000  # mL, between the two lesions' volumes
    table, labels = lesions.find_lesions(image, mask, min_volume_ml=between)
    assert len(table) == 1 and table.loc[1, "volume_ml"] >= between
    assert label_maps.dice(big.astype(int), (labels == 1).astype(int))[1] > 0.95
    assert not (labels[small] > 0).any()
    too_big = lesions.find_lesions(image, mask, min_volume_ml=2 * big.sum() / 1000)[0]
    assert too_big.empty


def test_world_centroid_and_volume_under_an_anisotropic_affine():
    affine = np.array([[0.0, 1.5, 0.0, -20.0], [2.0, 0.0, 0.0, 35.0],
                       [0.0, 0.0, 1.2, -8.0], [0.0, 0.0, 0.0, 1.0]])
    image, mask = tissue_volume(seed=3)
    lesioned, truth = implant(image, mask, (25, 15, 14), 6.0, 1.1, affine=affine)
    table, labels = lesions.find_lesions(lesioned, mask, affine=affine, min_volume_ml=0.05)
    assert len(table) == 1
    row = table.loc[1]
    ijk = np.argwhere(labels == 1).mean(axis=0)
    np.testing.assert_allclose(row[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]]
                               .to_numpy(float), ijk @ affine[:3, :3].T + affine[:3, 3])
    assert row["volume_ml"] == pytest.approx(row["voxels"] * 1.5 * 2.0 * 1.2 / 1000)
    expected = truth_stats(truth, mask, affine)
    assert abs(row["volume_ml"] - expected["volume_ml"]) <= 0.05 * expected["volume_ml"]
    np.testing.assert_allclose(row[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]]
                               .to_numpy(float),
                               expected[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]]
                               .to_numpy(float), atol=0.5)
    assert nifti.voxel_volume_ml(affine) == pytest.approx(3.6 / 1000)


@pytest.mark.parametrize("kwargs, match", [
    ({"mask": np.ones((5, 5, 5), dtype=bool)}, "mask"),
    ({"min_volume_ml": -1.0}, "min_volume_ml"),
    ({"min_volume_ml": 0.0}, "min_volume_ml"),
    ({"min_volume_ml": float("nan")}, "min_volume_ml"),
    ({"min_volume_ml": float("inf")}, "min_volume_ml"),
    ({"min_volume_ml": "1"}, "min_volume_ml"),
    ({"affine": np.eye(3)}, "affine"),
    ({"affine": np.full((4, 4), np.nan)}, "affine"),
    ({"n_tissues": 0}, "n_tissues"),
    ({"typicality": 0.0}, "typicality"),
    ({"beta": -0.5}, "beta"),
    ({"margin_mm": float("nan")}, "margin_mm"),
    ({"random_state": "abc"}, "random_state must be an integer"),
    ({"random_state": -1}, "random_state must be >= 0"),
])
def test_bad_inputs_raise_a_clear_value_error(kwargs, match):
    image, mask = tissue_volume()
    kwargs = {"mask": mask, **kwargs}
    with pytest.raises(ValueError, match=match):
        lesions.find_lesions(image, **kwargs)


def test_a_slice_is_refused():
    with pytest.raises(ValueError, match="3-D|dimension"):
        lesions.find_lesions(np.zeros((10, 10)))


def test_a_non_finite_voxel_in_the_mask_is_refused():
    image, mask = tissue_volume()
    image[10, 10, 10] = np.nan
    with pytest.raises(ValueError, match="finite"):
        lesions.find_lesions(image, mask)


def test_the_table_is_a_dataframe_even_when_empty():
    image, mask = tissue_volume(seed=4)
    table, _ = lesions.find_lesions(image, mask, min_volume_ml=0.05, beta=0.0)
    assert isinstance(table, pd.DataFrame) and table.empty


def test_without_the_prior_a_clear_lesion_is_still_found():
    image, mask = tissue_volume(seed=5)
    lesioned, truth = implant(image, mask, (24, 15, 15), 4.0, 1.2)
    table, labels = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05, beta=0.0)
    assert len(table) == 1
    assert label_maps.dice(truth.astype(int), (labels == 1).astype(int))[1] > 0.9


def test_a_given_tissue_fit_replaces_the_fit_and_is_checked():
    image, mask = tissue_volume(seed=6)
    healthy = segmentation.segment_image(image, mask, 3, "soft")[1]
    lesioned, truth = implant(image, mask, (25, 14, 15), 4.0, 1.1)
    fitted, fitted_labels = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05)
    given, given_labels = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05,
                                               tissues=healthy)
    np.testing.assert_array_equal(given_labels, fitted_labels)
    pd.testing.assert_frame_equal(given[["voxels", "volume_ml"]], fitted[["voxels", "volume_ml"]])
    for bad in (healthy.means, segmentation.segment_image(image, mask, 2, "soft")[1],
                segmentation.segment_image(image, mask, 3, "hard")[1]):
        with pytest.raises(ValueError, match="tissues"):
            lesions.find_lesions(lesioned, mask, tissues=bad)


def test_the_table_holds_the_tissue_fit_its_contrast_is_measured_against():
    image, mask = tissue_volume(seed=6)
    healthy = segmentation.segment_image(image, mask, 3, "soft")[1]
    lesioned, _ = implant(image, mask, (25, 14, 15), 4.0, 1.1)
    given, _ = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05, tissues=healthy)
    mu, sd = healthy.means[:, 0], np.sqrt(healthy.covariances[:, 0, 0])
    np.testing.assert_allclose(given.attrs["tissue_mean"], mu)
    np.testing.assert_allclose(given.attrs["tissue_sd"], sd)
    row = given.loc[1]
    assert row["contrast"] == pytest.approx((row["mean_intensity"] - mu[2]) / sd[2])
    # fitted on the lesioned volume: the contrast follows the fit's own white matter
    fitted, _ = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05)
    mu_f, sd_f = (np.asarray(fitted.attrs[key]) for key in ("tissue_mean", "tissue_sd"))
    nearest = np.argmin(np.abs(fitted.loc[1, "mean_intensity"] - mu_f))
    assert mu_f[nearest] == pytest.approx(LEVELS[2], abs=0.02)
    assert fitted.loc[1, "contrast"] == pytest.approx(
        (fitted.loc[1, "mean_intensity"] - mu_f[nearest]) / sd_f[nearest])
    both = pd.concat([given, fitted])  # plain-float attrs: tables still concatenate
    assert len(both) == 2


def test_implant_and_find_scores_against_the_truth_and_its_box_is_exact():
    image, mask = tissue_volume(seed=7)
    affine = np.diag([1.5, 1.0, 1.2, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 2.0]
    tissues = segmentation.segment_image(image, mask, 3, "soft")[1]
    position = nifti.voxel_to_world(affine, [25.0, 14.0, 15.0])
    kwargs = dict(image=image, mask=mask, affine=affine, position_mm=position,
                  volume_ml=0.25, intensity=1.1, texture_sd=0.03, min_volume_ml=0.05,
                  tissues=tissues)
    whole = lesions.implant_and_find(**kwargs)
    boxed = lesions.implant_and_find(box_mm=6.0, **kwargs)
    assert boxed == pytest.approx(whole)
    # the same numbers by hand
    centre = np.linalg.solve(affine, np.r_[position, 1.0])[:3]
    radius = (3 * 250 / (4 * np.pi)) ** (1 / 3)
    lesioned, truth = phantoms.implant_lesion(image, centre, (radius,) * 3, intensity=1.1,
                                              texture_sd=0.03, mask=mask, affine=affine)
    table, labels = lesions.find_lesions(lesioned, mask, affine=affine, min_volume_ml=0.05,
                                         tissues=tissues)
    true_ml = truth.sum() * 1.8 / 1000
    assert whole["true_ml"] == pytest.approx(true_ml)
    assert whole["found_ml"] == pytest.approx(table.loc[1, "volume_ml"])
    assert whole["volume_error"] == pytest.approx(table.loc[1, "volume_ml"] / true_ml - 1)
    truth_centre = nifti.voxel_to_world(affine, np.argwhere(truth).mean(axis=0))
    assert whole["centroid_error_mm"] == pytest.approx(np.linalg.norm(
        table.loc[1, ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
        - truth_centre))
    assert whole["other_ml"] == 0.0 and abs(whole["volume_error"]) < 0.05


def test_a_missed_lesion_scores_nan():
    image, mask = tissue_volume(seed=8)
    # at grey-matter intensity inside white matter: explained by the tissues, not found
    row = lesions.implant_and_find(image, mask, np.eye(4), (25.0, 14.0, 15.0), 0.25, 0.6,
                                   texture_sd=0.03, min_volume_ml=0.05)
    assert np.isnan(row["found_ml"]) and np.isnan(row["volume_error"])
    assert np.isnan(row["centroid_error_mm"]) and row["other_ml"] == 0.0
    with pytest.raises(ValueError, match="truth"):
        lesions.score_against_truth(pd.DataFrame(columns=COLUMNS), np.zeros(SHAPE, int),
                                    np.zeros(SHAPE, bool))


def test_implant_and_find_searches_the_whole_image_when_a_lesion_reaches_the_cut():
    image, mask = tissue_volume(seed=9)
    tissues = segmentation.segment_image(image, mask, 3, "soft")[1]
    # a second, brighter lesion mostly inside the box of the implanted one, cut by its face
    image, other = implant(image, mask, (25, 14, 22), 3.0, 1.3, seed=3)
    kwargs = dict(image=image, mask=mask, affine=np.eye(4), position_mm=(25.0, 14.0, 13.0),
                  volume_ml=0.1, intensity=1.1, texture_sd=0.03, min_volume_ml=0.05,
                  tissues=tissues)
    whole = lesions.implant_and_find(**kwargs)
    boxed = lesions.implant_and_find(box_mm=8.0, **kwargs)  # cuts the other lesion
    assert whole["other_ml"] == pytest.approx(other.sum() / 1000, rel=0.05)
    assert boxed == pytest.approx(whole)  # the whole other lesion: the box was not kept
    assert lesions._near_cut_faces(other[:, :, 5:22], (slice(0, 36), slice(0, 30), slice(5, 22)),
                                   SHAPE, np.full(3, 6.0))
    assert not lesions._near_cut_faces(other[:, :, 5:], (slice(0, 36), slice(0, 30),
                                                          slice(5, 30)), SHAPE, np.full(3, 2.0))


def test_the_contrast_is_counted_from_the_nearest_mean_in_its_standard_deviation():
    image, mask = tissue_volume(seed=10)
    lesioned, _ = implant(image, mask, (25, 14, 15), 4.0, 1.1)
    table, labels = lesions.find_lesions(lesioned, mask, min_volume_ml=0.05)
    tissues = segmentation.segment_image(image, mask, 3, "soft")[1]  # as the lesion-free re-fit
    mean = lesioned[labels == 1].mean()
    # white matter (0.85, sd 0.03) is the nearest mean; about (1.1 - 0.85) / 0.03 sds above it
    assert table.loc[1, "contrast"] == pytest.approx(
        (mean - tissues.means[2, 0]) / np.sqrt(tissues.covariances[2, 0, 0]), rel=0.05)
    assert 6 < table.loc[1, "contrast"] < 10


def test_score_against_truth_checks_its_table_labels_and_truth():
    """A fractional or NaN truth was once read as True, float labels failed in bincount and a
    table without the labels' rows raised a KeyError."""
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[1:3, 1:3, 1:3] = 1
    truth = labels > 0
    table = pd.DataFrame([[8, 0.008, 1.5, 1.5, 1.5, 1.0, 5.0]], columns=COLUMNS,
                         index=pd.RangeIndex(1, 2, name="lesion"))
    assert lesions.score_against_truth(table, labels, truth)["found_ml"] == pytest.approx(0.008)
    with pytest.raises(ValueError, match="truth must hold booleans"):
        lesions.score_against_truth(table, labels, truth * 0.5)
    with pytest.raises(ValueError, match="truth must hold booleans"):
        lesions.score_against_truth(table, labels, np.where(truth, np.nan, 0.0))
    with pytest.raises(ValueError, match="lesion_labels must hold integer labels"):
        lesions.score_against_truth(table, labels.astype(float), truth)
    with pytest.raises(ValueError, match="table must be find_lesions' table .* lesion 1"):
        lesions.score_against_truth(table.iloc[:0], labels, truth)
    with pytest.raises(ValueError, match="table must be find_lesions' table"):
        lesions.score_against_truth("table", labels, truth)


@pytest.mark.parametrize("position", [(5.0, 5.0), "abc", (np.nan, 5.0, 5.0)])
def test_implant_and_find_names_a_bad_position(position):
    image, mask = tissue_volume()
    with pytest.raises(ValueError, match="position_mm must be 3 finite numbers"):
        lesions.implant_and_find(image, mask, np.eye(4), position, 0.25, 1.2)
