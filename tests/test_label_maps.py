"""Tests of ``emlab.imaging.label_maps``: Dice against scikit-learn's F1, matching, region statistics
against scipy.ndimage, label agreement and cropping."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score
from synthetic import mean_dice, piecewise_image

from emlab.imaging import label_maps, segmentation


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_prior_raises_dice_well_above_plain_em(method, connectivity):
    image, truth = piecewise_image(noise_sd=0.7, seed=1)
    plain, _ = segmentation.segment_image(image, method=method, beta=0.0)
    smooth, _ = segmentation.segment_image(image, method=method, beta=1.0, connectivity=connectivity)
    d_plain, d_smooth = mean_dice(truth, plain), mean_dice(truth, smooth)
    assert d_plain < 0.8  # the noise really does speckle intensity-only EM
    assert d_smooth > 0.9
    assert d_smooth > d_plain + 0.2


def test_dice_equals_per_class_f1_of_scikit_learn():
    rng = np.random.default_rng(12)
    a = rng.integers(-1, 4, size=(20, 25))
    b = np.where(rng.random(a.shape) < 0.7, a, rng.integers(-1, 4, size=a.shape))
    scores = label_maps.dice(a, b)
    assert list(scores.index) == [0, 1, 2, 3]
    # F1 over the pixels labelled in at least one image (a -1 pixel is in no class)
    keep = (a >= 0) | (b >= 0)
    expected = f1_score(a[keep], b[keep], labels=[0, 1, 2, 3], average=None)
    np.testing.assert_allclose(scores.to_numpy(), expected)
    assert (label_maps.dice(a, a) == 1.0).all()
    assert label_maps.dice(np.zeros(5, int), np.ones(5, int)).tolist() == [0.0, 0.0]


def test_dice_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        label_maps.dice(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer labels"):
        label_maps.dice(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="class 5 is in neither"):
        label_maps.dice(np.zeros(3, int), np.zeros(3, int), labels=[0, 5])
    with pytest.raises(ValueError, match="hold no class"):
        label_maps.dice(-np.ones(3, int), -np.ones(3, int))


def test_match_label_images_undoes_a_permutation():
    _, truth = piecewise_image(noise_sd=0.0)
    permuted = np.array([2, 0, 1])[truth]
    permuted[:3] = -1
    matched = label_maps.match_label_images(truth, permuted)
    np.testing.assert_array_equal(matched[3:], truth[3:])
    assert (matched[:3] == -1).all()


def test_region_stats_against_scipy():
    _, truth = piecewise_image(noise_sd=0.0)
    labels = truth.copy()
    labels[:2] = -1
    table = label_maps.region_stats(labels, names=["a", "b", "c", "empty"])
    counts = np.bincount(labels[labels >= 0], minlength=4)
    np.testing.assert_array_equal(table["pixels"], counts)
    np.testing.assert_allclose(table["fraction"], counts / (labels >= 0).sum())
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, index=[0, 1, 2])
    np.testing.assert_allclose(table[["centroid_row", "centroid_col"]].to_numpy()[:3], centres)
    assert table.loc["empty", "pixels"] == 0 and np.isnan(table.loc["empty", "centroid_row"])
    assert list(label_maps.region_stats(labels).index) == [0, 1, 2]
    with pytest.raises(ValueError, match="only 2 names"):
        label_maps.region_stats(labels, names=["a", "b"])


def test_region_stats_offset_puts_a_crop_back_in_the_full_image():
    _, truth = piecewise_image(noise_sd=0.0)
    full = np.full((truth.shape[0] + 7, truth.shape[1] + 3), -1)
    full[7:, 3:] = truth
    cropped = label_maps.region_stats(truth, offset=(7, 3))
    whole = label_maps.region_stats(full)
    np.testing.assert_allclose(cropped.to_numpy(), whole.to_numpy())
    with pytest.raises(ValueError, match="offset must be a"):
        label_maps.region_stats(truth, offset=(1, 2, 3))


def test_label_agreement_matches_classes_then_counts_and_scores_them():
    _, truth = piecewise_image(noise_sd=0.0)
    mask = np.ones(truth.shape, dtype=bool)
    permuted = np.array([2, 0, 1])[truth]
    permuted[:4, :4] = 0  # a corner disagrees after matching
    row = label_maps.label_agreement(truth, permuted, mask, ["a", "b", "c"])
    matched = label_maps.match_label_images(truth, permuted)
    assert row["agreement"] == pytest.approx(np.mean(matched == truth))
    assert 0.9 < row["agreement"] < 1.0 and row["same numbering"] is False
    f1 = f1_score(truth.ravel(), matched.ravel(), average=None)
    np.testing.assert_allclose([row["Dice a"], row["Dice b"], row["Dice c"]], f1)
    assert label_maps.label_agreement(truth, truth, mask, ["a", "b", "c"])["same numbering"] is True
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        label_maps.label_agreement(truth, truth, mask.astype(int), ["a", "b", "c"])


def test_crop_to_mask():
    image = np.arange(100.0).reshape(10, 10)
    mask = np.zeros((10, 10), dtype=bool)
    mask[3:6, 4:8] = True
    crop, crop_mask, (r0, c0) = label_maps.crop_to_mask(image, mask, margin=1)
    assert (r0, c0) == (2, 3) and crop.shape == (5, 6)
    np.testing.assert_array_equal(crop, image[2:7, 3:9])
    assert crop_mask.sum() == mask.sum()
    full, _, offset = label_maps.crop_to_mask(image, mask, margin=20)
    assert offset == (0, 0) and full.shape == (10, 10)


def test_class_fractions_count_the_masked_pixels_of_each_class():
    labels = np.array([[0, 1, 1], [2, 2, 9]])
    mask = np.array([[True, True, True], [True, True, False]])
    np.testing.assert_allclose(label_maps.class_fractions(labels, mask, 3), [0.2, 0.4, 0.4])
    with pytest.raises(ValueError, match="integers 0..2"):
        label_maps.class_fractions(labels, np.ones((2, 3), bool), 3)
    with pytest.raises(ValueError, match="mask is empty"):
        label_maps.class_fractions(labels, np.zeros((2, 3), bool), 3)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        label_maps.class_fractions(labels, np.ones((3, 2), bool), 3)


AFFINE = np.array([[2.0, 0, 0, -40.0], [0, 1.0, 0, 25.0], [0, 0, 1.5, -12.0], [0, 0, 0, 1]])


def test_region_stats_of_an_ellipsoid_under_an_anisotropic_affine_match_the_analytic_values():
    # 2 x 1 x 1.5 mm voxels with a translation; an ellipsoid of semi-axes 14, 10, 12 mm
    # centred on a voxel centre: its voxels are symmetric about it, so the centroid is exact
    shape, centre, semi = (40, 50, 40), np.array([17.0, 24.0, 20.0]), np.array([14, 10, 12.0])
    i, j, k = np.indices(shape)
    mm = np.stack([(i - centre[0]) * 2.0, (j - centre[1]) * 1.0, (k - centre[2]) * 1.5])
    inside = (((mm / semi[:, None, None, None]) ** 2).sum(axis=0) <= 1)
    labels = np.where(inside, 1, 0)
    labels[:, :, :2] = -1  # outside the region of interest
    table = label_maps.region_stats(labels, names=["rest", "ball"], affine=AFFINE)
    ball = table.loc["ball"]
    analytic_ml = 4 / 3 * np.pi * semi.prod() / 1000
    assert ball["voxels"] == inside.sum()
    assert ball["volume_ml"] == pytest.approx(inside.sum() * 3.0 / 1000)
    assert abs(ball["volume_ml"] - analytic_ml) < 0.01 * analytic_ml
    world = AFFINE[:3, :3] @ centre + AFFINE[:3, 3]
    np.testing.assert_allclose(ball[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]],
                               world, atol=1e-9)
    np.testing.assert_allclose(ball[["centroid_i", "centroid_j", "centroid_k"]], centre)
    # the rest: against scipy's centre of mass mapped by nibabel
    from nibabel.affines import apply_affine
    rest = ndimage.center_of_mass(labels == 0)
    np.testing.assert_allclose(table.loc["rest", ["centroid_x_mm", "centroid_y_mm",
                                                  "centroid_z_mm"]],
                               apply_affine(AFFINE, rest))
    assert table["volume_ml"].sum() == pytest.approx((labels >= 0).sum() * 3.0 / 1000)


def test_region_stats_of_a_crop_with_offset_and_affine_equal_the_full_volume():
    rng = np.random.default_rng(4)
    full = np.full((12, 14, 10), -1)
    full[3:9, 2:12, 4:8] = rng.integers(0, 3, size=(6, 10, 4))
    crop = full[3:9, 2:12, 4:8]
    whole = label_maps.region_stats(full, affine=AFFINE)
    part = label_maps.region_stats(crop, offset=(3, 2, 4), affine=AFFINE)
    np.testing.assert_allclose(part.to_numpy(), whole.to_numpy())
    assert list(whole.columns) == ["voxels", "fraction", "centroid_i", "centroid_j",
                                   "centroid_k", "volume_ml", "centroid_x_mm",
                                   "centroid_y_mm", "centroid_z_mm"]
    assert "volume_ml" not in label_maps.region_stats(full).columns


def test_region_stats_bad_inputs():
    volume = np.zeros((3, 4, 5), dtype=int)
    with pytest.raises(ValueError, match="2-D or 3-D integer array"):
        label_maps.region_stats(np.zeros((2, 3, 4, 5), dtype=int))
    with pytest.raises(ValueError, match="affine is for a 3-D label_image"):
        label_maps.region_stats(np.zeros((3, 4), dtype=int), affine=np.eye(4))
    with pytest.raises(ValueError, match="affine must be a 4 x 4 matrix"):
        label_maps.region_stats(volume, affine=np.eye(3))
    with pytest.raises(ValueError, match="affine is singular"):
        label_maps.region_stats(volume, affine=np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="offset must be three numbers"):
        label_maps.region_stats(volume, offset=(1, 2))
    with pytest.raises(ValueError, match="labels no pixel"):
        label_maps.region_stats(volume - 1, affine=np.eye(4))
    before = volume.copy()
    label_maps.region_stats(volume, affine=AFFINE)
    np.testing.assert_array_equal(volume, before)


def test_soft_volumes_sum_responsibilities():
    R = np.array([[0.2, 1.0, 0.5], [0.8, 0.0, 0.5]])
    np.testing.assert_allclose(label_maps.soft_volumes_ml(R, AFFINE), [1.7 * 3e-3, 1.3 * 3e-3])
    with pytest.raises(ValueError, match="resp must be a finite"):
        label_maps.soft_volumes_ml(R * 2, AFFINE)


def test_crop_to_mask_in_3d():
    image = np.arange(6 * 7 * 8.0).reshape(6, 7, 8)
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:4, 1:5, 3:4] = True
    crop, crop_mask, offset = label_maps.crop_to_mask(image, mask, margin=1)
    assert offset == (1, 0, 2) and crop.shape == (4, 6, 3)
    np.testing.assert_array_equal(crop, image[1:5, 0:6, 2:5])
    assert crop_mask.sum() == mask.sum()


@pytest.mark.parametrize("labels, match", [
    (0, "labels must be a sequence of integer class labels"),
    ("ab", "labels must be a sequence of integer class labels"),
    ([0.5], "labels must be a sequence of integer class labels"),
])
def test_dice_names_a_bad_labels_argument(labels, match):
    a = np.array([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=match):
        label_maps.dice(a, a, labels=labels)


@pytest.mark.parametrize("reference, other, name", [
    (np.array([[0.0, 1.0]]), np.array([[0, 1]]), "reference"),
    (np.array([[0, 1]]), np.array([[0.5, 1.0]]), "other"),
    (np.array([["a", "b"]]), np.array([[0, 1]]), "reference"),
])
def test_match_label_images_names_the_argument_that_is_not_integer(reference, other, name):
    with pytest.raises(ValueError, match=f"{name} must hold integer labels"):
        label_maps.match_label_images(reference, other)


def test_label_agreement_needs_a_name_for_every_class_and_keeps_them_aligned():
    reference = np.array([[0, 0, 2, 2]])  # class 1 is absent: Dice of classes 0 and 2
    mask = np.ones(reference.shape, dtype=bool)
    with pytest.raises(ValueError, match="names must name every class 0..2, got 2 names"):
        label_maps.label_agreement(reference, reference, mask, ["a", "b"])
    with pytest.raises(ValueError, match="names must name every class 0..2, got None"):
        label_maps.label_agreement(reference, reference, mask, None)
    row = label_maps.label_agreement(reference, np.array([[2, 2, 0, 0]]), mask, "abc")
    assert row["Dice a"] == 1.0 and row["Dice c"] == 1.0 and "Dice b" not in row


def test_region_stats_and_soft_volumes_name_unreadable_arguments():
    with pytest.raises(ValueError, match="offset must be a"):
        label_maps.region_stats(np.array([[0, 1]]), offset="ab")
    with pytest.raises(ValueError, match="resp must be a finite"):
        label_maps.soft_volumes_ml("abc", np.eye(4))
    with pytest.raises(ValueError, match="resp must be a finite"):
        label_maps.soft_volumes_ml(np.zeros((2, 0)), np.eye(4))


def test_region_stats_of_an_empty_named_class_under_an_affine():
    """An empty class has no centroid: NaN in voxel and world coordinates alike (the world
    mapping itself refuses NaN coordinates)."""
    labels = np.zeros((2, 2, 2), dtype=np.int64)
    table = label_maps.region_stats(labels, names=["full", "empty"], affine=np.eye(4))
    assert table.loc["empty", "voxels"] == 0 and table.loc["empty", "volume_ml"] == 0
    assert table.loc[["empty"], ["centroid_i", "centroid_x_mm", "centroid_z_mm"]].isna().all(
        axis=None)
    assert table.loc["full", "centroid_x_mm"] == pytest.approx(0.5)
