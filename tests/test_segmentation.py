"""Tests of ``emlab.imaging.segmentation``: ``segment_image`` with and without the Potts prior (Dice,
monotone objectives, fixed points, agreement with scikit-learn at beta = 0), starts and checks,
on slices and on volumes (depth 1 = the slice, anisotropic voxels, bad inputs)."""

import warnings

import numpy as np
import pytest
from scipy import ndimage, optimize
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
import potts_reference
from synthetic import mean_dice, piecewise_image

import em_helpers as em
from emlab.imaging import label_maps, phantoms, segmentation

# the mean field of dipy and Zhang et al. (no class proportions, one variance per class):
# what the plain-loop and brute-force checks below write out
BARE = {"proportions": False, "covariance_type": "full"}
KERNELS = {4: np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]),
           8: np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])}


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_objective_is_monotone_under_the_prior(method):
    # reg_covar=0: with it the M-step is not the exact maximiser, off by O(reg_covar^2)
    image, _ = piecewise_image(noise_sd=0.8, seed=2)
    _, result = segmentation.segment_image(image, method=method, beta=0.7, reg_covar=0.0, **BARE)
    trace = result.objective_trace
    assert result.n_iter >= 2 and trace.size == result.n_iter + 1
    steps = np.diff(trace) if method == "soft" else -np.diff(trace)
    assert (steps >= -1e-9 * np.abs(trace).max()).all()


def test_mean_field_result_is_a_fixed_point():
    """Recompute the mean-field equations by brute force (scipy convolution on the grid)."""
    image, _ = piecewise_image(noise_sd=0.8, seed=3, shape=(30, 34))
    mask = np.ones(image.shape, dtype=bool)
    mask[:4, :6] = False  # neighbours outside the mask must not count
    beta = 0.8
    _, res = segmentation.segment_image(image, mask, beta=beta, connectivity=8, tol=1e-10,
                                        max_iter=5000, **BARE)
    assert res.converged
    K = res.means.shape[0]
    q_grid = np.zeros((K,) + image.shape)
    q_grid[:, mask] = res.resp
    x = image[mask]
    logits = np.empty((K, x.size))
    for k in range(K):
        var = res.covariances[k, 0, 0]
        neighbours = ndimage.convolve(q_grid[k], KERNELS[8], mode="constant", cval=0.0)[mask]
        logits[k] = (-0.5 * np.log(2 * np.pi * var) - (x - res.means[k, 0]) ** 2 / (2 * var)
                     + beta * neighbours)
    expected = np.exp(logits - logits.max(axis=0))
    expected /= expected.sum(axis=0)
    np.testing.assert_allclose(res.resp, expected, atol=1e-6)


def test_icm_result_is_a_local_optimum():
    """No single pixel can lower the ICM energy by changing class (brute force over pixels)."""
    image, _ = piecewise_image(noise_sd=0.8, seed=4, shape=(30, 30))
    beta = 0.6
    labels, res = segmentation.segment_image(image, method="hard", beta=beta, connectivity=4)
    assert res.converged
    K = res.means.shape[0]
    sq = (image[None] - res.means[:, 0][:, None, None]) ** 2
    one_hot = np.stack([labels == k for k in range(K)]).astype(float)
    sigma2 = (one_hot * sq).sum() / image.size + 1e-6
    for r in range(image.shape[0]):
        for c in range(image.shape[1]):
            counts = np.zeros(K)
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= r + dr < image.shape[0] and 0 <= c + dc < image.shape[1]:
                    counts[labels[r + dr, c + dc]] += 1
            energy = sq[:, r, c] / (2 * sigma2) - beta * counts
            assert energy[labels[r, c]] <= energy.min() + 1e-12


def test_beta_zero_soft_matches_scikit_learn_gmm():
    image, _ = piecewise_image(noise_sd=0.25, seed=5)
    labels, result = segmentation.segment_image(image, method="soft")
    gmm = GaussianMixture(3, n_init=3, tol=1e-8, max_iter=1000, random_state=0)
    gmm.fit(image.reshape(-1, 1))
    order = np.argsort(gmm.means_[:, 0])
    np.testing.assert_allclose(result.means[:, 0], gmm.means_[order, 0], atol=1e-3)
    # run_em stops at a gain < 1e-6 nats per point; scikit-learn ran to 1e-8: the same optimum
    assert abs(result.objective / image.size - gmm.score(image.reshape(-1, 1))) < 1e-5
    np.testing.assert_allclose(result.covariances[:, 0, 0], gmm.covariances_[order, 0, 0],
                               rtol=3e-2)
    np.testing.assert_allclose(result.weights, gmm.weights_[order], atol=1e-3)
    sk_labels = np.argsort(order)[gmm.predict(image.reshape(-1, 1))]
    assert np.mean(labels.ravel() == sk_labels) > 0.999


def test_beta_zero_hard_matches_scikit_learn_kmeans():
    image, _ = piecewise_image(noise_sd=0.25, seed=6)
    labels, result = segmentation.segment_image(image, method="hard")
    km = KMeans(3, n_init=4, random_state=0).fit(image.reshape(-1, 1))
    np.testing.assert_allclose(result.means[:, 0], np.sort(km.cluster_centers_[:, 0]),
                               atol=1e-9)
    sk_labels = np.argsort(np.argsort(km.cluster_centers_[:, 0]))[km.labels_]
    np.testing.assert_array_equal(labels.ravel(), sk_labels)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_label_image_format_and_intensity_order(beta):
    # class 0 of the truth is the brightest here: the output must still go dark -> bright
    image, truth = piecewise_image(noise_sd=0.2, seed=7, levels=(5.0, 1.0, 3.0))
    mask = np.ones(image.shape, dtype=bool)
    mask[:, :5] = False
    labels, result = segmentation.segment_image(image, mask, beta=beta)
    assert labels.shape == image.shape and labels.dtype.kind == "i"
    assert (labels[~mask] == -1).all() and (labels[mask] >= 0).all()
    assert np.all(np.diff(result.means[:, 0]) > 0)
    assert np.all(np.diff([image[labels == k].mean() for k in range(3)]) > 0)
    np.testing.assert_array_equal(labels[mask], result.labels)
    assert result.resp.shape == (3, mask.sum())
    np.testing.assert_array_equal(labels[mask][truth[mask] == 1], 0)  # level 1.0: darkest


def test_nan_outside_the_mask_is_ignored():
    image, truth = piecewise_image(noise_sd=0.2, seed=8)
    mask = np.ones(image.shape, dtype=bool)
    mask[0] = False
    with_nan = image.copy()
    with_nan[0] = np.nan
    a, _ = segmentation.segment_image(image, mask)
    b, _ = segmentation.segment_image(with_nan, mask)
    np.testing.assert_array_equal(a, b)


def test_non_convergence_warns():
    image, _ = piecewise_image(noise_sd=0.8, seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmentation.segment_image(image, beta=1.0, max_iter=1)
    messages = [str(w.message) for w in caught if w.category is em.EMConvergenceWarning]
    assert any("with the spatial prior did not converge" in m for m in messages)


def test_segment_image_does_not_modify_its_inputs():
    image, _ = piecewise_image(noise_sd=0.5, seed=10)
    mask = image > -0.5
    image_before, mask_before = image.copy(), mask.copy()
    segmentation.segment_image(image, mask, beta=0.5)
    segmentation.segment_image(image, mask, method="hard", beta=0.5)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(mask, mask_before)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_start_from_a_plain_fit_gives_the_same_result(method):
    image, _ = piecewise_image(noise_sd=0.7, seed=13)
    mask = image > -1.0
    _, plain = segmentation.segment_image(image, mask, method=method)
    direct, direct_fit = segmentation.segment_image(image, mask, method=method, beta=0.8)
    resumed, resumed_fit = segmentation.segment_image(image, mask, method=method, beta=0.8, start=plain)
    np.testing.assert_array_equal(resumed, direct)
    np.testing.assert_allclose(resumed_fit.means, direct_fit.means)
    np.testing.assert_allclose(resumed_fit.resp, direct_fit.resp)


def test_bad_start_raises():
    image, _ = piecewise_image(noise_sd=0.3, seed=14, shape=(16, 16))
    _, soft = segmentation.segment_image(image)
    with pytest.raises(ValueError, match="only used with beta > 0"):
        segmentation.segment_image(image, start=soft)
    with pytest.raises(ValueError, match="expected a hard fit"):
        segmentation.segment_image(image, method="hard", beta=0.5, start=soft)
    with pytest.raises(ValueError, match=r"means \(4, 1\)"):
        segmentation.segment_image(image, n_components=4, beta=0.5, start=soft)
    with pytest.raises(ValueError, match=r"resp \(3, 255\)"):
        segmentation.segment_image(image, image > image.min(), beta=0.5, start=soft)
    with pytest.raises(ValueError, match="must be the EMResult"):
        segmentation.segment_image(image, beta=0.5, start={"means": soft.means})


def _bad(kwargs_update, match):
    image, _ = piecewise_image(noise_sd=0.3, seed=11, shape=(12, 12))
    kwargs = {"image": image, "mask": None}
    kwargs.update(kwargs_update)
    with pytest.raises(ValueError, match=match):
        segmentation.segment_image(**kwargs)


@pytest.mark.parametrize("update, match", [
    ({"mask": np.ones((12, 11), dtype=bool)}, r"mask must have the image's shape \(12, 12\)"),
    ({"mask": np.zeros((12, 12), dtype=bool)}, "mask is empty"),
    ({"mask": np.full((12, 12), 2)}, "mask must hold booleans"),
    ({"image": np.where(np.eye(12, dtype=bool), np.nan, 1.0)},
     r"12 non-finite pixel\(s\) inside the mask, the first at \(row 0, column 0\)"),
    ({"image": np.where(np.eye(12, dtype=bool), np.inf, 1.0)}, "non-finite"),
    ({"image": np.ones((4, 4, 4, 2))}, r"must be a 2-D array \(H, W\) or a 3-D array"),
    ({"image": [["a", "b"]]}, "must be a numeric array"),
    ({"beta": -0.1}, "beta must be a finite number >= 0"),
    ({"beta": np.nan}, "beta must be a finite number >= 0"),
    ({"beta": np.inf}, "beta must be a finite number >= 0"),
    ({"beta": "0.5"}, "beta must be a finite number >= 0"),
    ({"beta": True}, "beta must be a finite number >= 0"),
    ({"connectivity": 6}, "connectivity must be 4 or 8 for a 2-D image"),
    ({"connectivity": 26}, "connectivity must be 4 or 8 for a 2-D image"),
    ({"spacing": (1.0, 1.0, 1.0)}, "spacing must be 2 positive finite numbers"),
    ({"spacing": (1.0, 0.0)}, "spacing must be 2 positive finite numbers"),
    ({"method": "fuzzy"}, "method must be 'hard' or 'soft'"),
    ({"n_components": 0}, "n_components must be >= 1"),
    ({"tol": 0.0}, "tol must be a positive number"),
    ({"tol": True}, "tol must be a positive number"),
    ({"random_state": "abc"}, "random_state must be an integer"),
    ({"random_state": 1.5}, "random_state must be an integer"),
    ({"random_state": -1}, "random_state must be >= 0"),
])
def test_bad_inputs_raise_clear_errors(update, match):
    _bad(update, match)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_a_very_strong_prior_gives_a_valid_fit(method):
    """beta = 50 makes every neighbourhood's vote decisive: the estimated proportions' field
    then faces one-hot conditionals (a singular Newton system, once a LinAlgError); the fit
    must still end with finite parameters and every pixel labelled."""
    rng = np.random.default_rng(0)  # three bands of 4 rows, noise 0.2
    image = np.repeat([1.0, 2.0, 3.0], 48).reshape(12, 12) + rng.normal(0.0, 0.2, (12, 12))
    labels, result = segmentation.segment_image(image, beta=50.0, method=method)
    assert np.all(np.isfinite(result.means)) and np.all(np.isfinite(result.covariances))
    assert np.all(np.isfinite(result.resp)) and (labels >= 0).all()


def test_too_few_distinct_intensities():
    with pytest.raises(ValueError, match="n_components=3 is more than the 2 distinct"):
        segmentation.segment_image(np.array([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_lesion_pipeline_recovers_area_and_centroid_on_the_clean_slice(t1_slice, beta):
    image, mask, _ = t1_slice
    lesioned, truth = phantoms.implant_lesion(image, (42, 40), (11, 7), angle=30.0, intensity=1.15,
                                              texture_sd=0.05, mask=mask, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges cleanly on the real slice
        labels, _ = segmentation.segment_image(lesioned, mask, n_components=4, beta=beta)
    found = labels == 3  # the brightest class
    assert abs(found.sum() - truth.sum()) <= 0.10 * truth.sum()
    centre_error = np.argwhere(found).mean(axis=0) - np.argwhere(truth).mean(axis=0)
    assert np.hypot(*centre_error) <= 2.0
    assert label_maps.dice(truth.astype(int), found.astype(int))[1] > 0.9


# --------------------------------------------------------------------------------- volumes

def piecewise_volume(noise_sd, seed=0, shape=(20, 22, 18), levels=(0.0, 1.0, 2.0)):
    """Class 0 for x < X/2, class 2 beyond, a central ball class 1; plus Gaussian noise."""
    grid = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int64)
    truth[shape[0] // 2:] = 2
    centre = np.array(shape)[:, None, None, None] / 2
    truth[((grid - centre) ** 2).sum(axis=0) < (min(shape) / 3.5) ** 2] = 1
    rng = np.random.default_rng(seed)
    return np.asarray(levels)[truth] + rng.normal(0.0, noise_sd, shape), truth


@pytest.mark.parametrize("connectivity, beta", [(6, 0.6), (26, 0.2)])  # ~4-5 nats in all
def test_3d_prior_raises_dice_on_a_noisy_volume(connectivity, beta):
    volume, truth = piecewise_volume(noise_sd=0.6, seed=20)
    plain, _ = segmentation.segment_image(volume)
    smooth, _ = segmentation.segment_image(volume, beta=beta, connectivity=connectivity)
    before, after = mean_dice(truth, plain), mean_dice(truth, smooth)
    assert before < 0.75 and after > 0.9, (before, after)


def test_3d_default_connectivity_is_6():
    volume, _ = piecewise_volume(noise_sd=0.6, seed=21, shape=(10, 11, 9))
    default, _ = segmentation.segment_image(volume, beta=0.5)
    six, _ = segmentation.segment_image(volume, beta=0.5, connectivity=6)
    twenty_six, _ = segmentation.segment_image(volume, beta=0.5, connectivity=26)
    np.testing.assert_array_equal(default, six)
    assert not np.array_equal(six, twenty_six)


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("connectivity_2d, connectivity_3d", [(4, 6), (8, 26)])
@pytest.mark.parametrize("axis", [0, 2])
def test_volume_of_depth_one_gives_the_slice_answer(method, connectivity_2d, connectivity_3d,
                                                    axis):
    image, _ = piecewise_image(noise_sd=0.8, seed=22, shape=(30, 26))
    mask = image > -1.5
    labels, fit = segmentation.segment_image(image, mask, method=method, beta=0.7,
                                             connectivity=connectivity_2d)
    volume, volume_mask = np.expand_dims(image, axis), np.expand_dims(mask, axis)
    labels3, fit3 = segmentation.segment_image(volume, volume_mask, method=method, beta=0.7,
                                               connectivity=connectivity_3d)
    assert labels3.shape == volume.shape
    np.testing.assert_array_equal(labels3.squeeze(axis), labels)
    np.testing.assert_array_equal(fit3.resp, fit.resp)  # exactly: the same sums in the same order
    np.testing.assert_array_equal(fit3.means, fit.means)
    assert fit3.n_iter == fit.n_iter and fit3.objective == fit.objective


@pytest.mark.parametrize("method", ["soft", "hard"])
@pytest.mark.parametrize("connectivity, spacing", [(6, None), (26, None), (6, (1.0, 1.0, 2.5)),
                                                   (26, (0.8, 1.0, 2.0))])
def test_3d_objective_is_monotone_under_the_prior(method, connectivity, spacing):
    volume, _ = piecewise_volume(noise_sd=0.8, seed=23, shape=(12, 13, 10))
    _, result = segmentation.segment_image(volume, method=method, beta=0.5,
                                           connectivity=connectivity, spacing=spacing,
                                           reg_covar=0.0, **BARE)
    trace = result.objective_trace
    assert result.n_iter >= 2 and trace.size == result.n_iter + 1
    steps = np.diff(trace) if method == "soft" else -np.diff(trace)
    assert (steps >= -1e-9 * np.abs(trace).max()).all()


def test_3d_anisotropic_mean_field_result_is_a_fixed_point():
    """Brute force with scipy: neighbour votes weighted by min(spacing) |o| / |o * spacing|."""
    volume, _ = piecewise_volume(noise_sd=0.8, seed=24, shape=(10, 12, 9))
    mask = np.ones(volume.shape, dtype=bool)
    mask[:3, :4, :] = False
    spacing, beta = np.array([1.0, 1.0, 3.0]), 0.9
    _, res = segmentation.segment_image(volume, mask, beta=beta, spacing=spacing, tol=1e-10,
                                        max_iter=5000, **BARE)
    assert res.converged
    kernel = np.zeros((3, 3, 3))
    kernel[0, 1, 1] = kernel[2, 1, 1] = kernel[1, 0, 1] = kernel[1, 2, 1] = 1.0
    kernel[1, 1, 0] = kernel[1, 1, 2] = 1 / 3  # across the thick slices
    K = res.means.shape[0]
    x = volume[mask]
    logits = np.empty((K, x.size))
    for k in range(K):
        q = np.zeros(volume.shape)
        q[mask] = res.resp[k]
        var = res.covariances[k, 0, 0]
        logits[k] = (-0.5 * np.log(2 * np.pi * var) - (x - res.means[k, 0]) ** 2 / (2 * var)
                     + beta * ndimage.correlate(q, kernel, mode="constant")[mask])
    expected = np.exp(logits - logits.max(axis=0))
    expected /= expected.sum(axis=0)
    np.testing.assert_allclose(res.resp, expected, atol=1e-6)


def test_isotropic_spacing_changes_nothing():
    volume, _ = piecewise_volume(noise_sd=0.7, seed=25, shape=(10, 11, 9))
    plain, fit = segmentation.segment_image(volume, beta=0.5)
    for spacing in [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]:
        same, same_fit = segmentation.segment_image(volume, beta=0.5, spacing=spacing)
        np.testing.assert_array_equal(same, plain)
        np.testing.assert_array_equal(same_fit.resp, fit.resp)
    thick, _ = segmentation.segment_image(volume, beta=0.5, spacing=(1.0, 1.0, 4.0))
    assert thick.shape == volume.shape and not np.array_equal(thick, plain)


def test_3d_format_and_inputs_untouched():
    volume, _ = piecewise_volume(noise_sd=0.3, seed=26, shape=(8, 9, 7))
    mask = np.ones(volume.shape, dtype=bool)
    mask[0] = False
    volume[0] = np.nan  # outside the mask: ignored
    before, mask_before = volume.copy(), mask.copy()
    labels, fit = segmentation.segment_image(volume, mask, beta=0.5)
    assert labels.shape == volume.shape and labels.dtype == np.int64
    assert (labels[~mask] == -1).all() and set(np.unique(labels[mask])) == {0, 1, 2}
    np.testing.assert_array_equal(labels[mask], fit.labels)
    assert fit.resp.shape == (3, mask.sum())
    np.testing.assert_array_equal(volume, before)
    np.testing.assert_array_equal(mask, mask_before)


def _bad_volume(kwargs_update, match):
    volume, _ = piecewise_volume(noise_sd=0.3, seed=27, shape=(6, 7, 5))
    kwargs = {"image": volume, "mask": None, "beta": 0.5}
    kwargs.update(kwargs_update)
    with pytest.raises(ValueError, match=match):
        segmentation.segment_image(**kwargs)


@pytest.mark.parametrize("update, match", [
    ({"image": np.ones((6, 7, 5, 2))}, r"got shape \(6, 7, 5, 2\)"),
    ({"mask": np.ones((6, 7, 4), dtype=bool)}, r"mask must have the image's shape \(6, 7, 5\)"),
    ({"mask": np.ones((6, 7), dtype=bool)}, r"mask must have the image's shape \(6, 7, 5\)"),
    ({"mask": np.zeros((6, 7, 5), dtype=bool)}, "mask is empty"),
    ({"image": np.where(np.arange(5) == 3, np.nan, np.ones((6, 7, 5)))},
     r"42 non-finite pixel\(s\) inside the mask, the first at voxel \(0, 0, 3\)"),
    ({"connectivity": 8}, "connectivity must be 6 or 26 for a 3-D image"),
    ({"connectivity": 4}, "connectivity must be 6 or 26 for a 3-D image"),
    ({"spacing": (1.0, 1.0)}, "spacing must be 3 positive finite numbers"),
    ({"spacing": (1.0, np.inf, 1.0)}, "spacing must be 3 positive finite numbers"),
    ({"spacing": (1.0, -1.0, 1.0)}, "spacing must be 3 positive finite numbers"),
    ({"spacing": "thick"}, "spacing must be 3 positive finite numbers"),
])
def test_bad_volume_inputs_raise_clear_errors(update, match):
    _bad_volume(update, match)


def reference_potts_em(image, mask, start, beta, connectivity, max_iter, tol=1e-4,
                       reg_covar=1e-6):
    """The prior's loop written plainly (pixels in the order of image[mask], gathers, the
    checked em.m_step): what segment_image's fast path must reproduce."""
    from emlab.imaging import potts

    X = image[mask][:, None]
    x = X[:, 0]
    table = potts.neighbour_table(mask, connectivity)
    colours = potts.colour_sets(mask, connectivity)
    Q = np.hstack([start.resp, np.zeros((start.resp.shape[0], 1))])
    means, covs = start.means, start.covariances
    for n_iter in range(1, max_iter + 1):
        before = Q.copy()
        log_data = em.log_gaussian_1d(x, means[:, 0], covs[:, 0, 0])
        potts_reference.mean_field_sweep(Q, log_data, beta, colours, table)
        means, covs, _ = em.m_step(X, Q[:, :-1], reg_covar=reg_covar)
        if np.abs(Q - before).max() < tol:
            break
    return Q[:, :-1], means, n_iter


@pytest.mark.parametrize("levels", [None, 40])  # 40 levels: densities computed per level
@pytest.mark.parametrize("shape, connectivity", [((30, 34), 4), ((30, 34), 8),
                                                 ((9, 10, 8), 6), ((9, 10, 8), 26)])
def test_fast_prior_loop_reproduces_the_plain_loop_bit_for_bit(shape, connectivity, levels):
    if len(shape) == 2:
        image, _ = piecewise_image(noise_sd=0.8, seed=30, shape=shape)
    else:
        image, _ = piecewise_volume(noise_sd=0.8, seed=30, shape=shape)
    if levels is not None:  # an 8-bit-like scan: few distinct intensities
        image = np.round((image - image.min()) / np.ptp(image) * (levels - 1)) / (levels - 1)
    mask = image > -1.0
    beta = 0.6 if connectivity in (4, 6) else 0.2
    _, plain = segmentation.segment_image(image, mask)
    _, fit = segmentation.segment_image(image, mask, beta=beta, connectivity=connectivity,
                                        start=plain, **BARE)
    resp, means, n_iter = reference_potts_em(image, mask, plain, beta, connectivity, 500)
    assert fit.n_iter == n_iter
    np.testing.assert_array_equal(fit.resp, resp)  # plain's components are already in order
    np.testing.assert_array_equal(fit.means, means)


def test_a_dask_image_is_labelled_chunk_by_chunk_and_the_prior_stays_in_memory(t1_slice):
    import dask.array as da

    image, mask, _ = t1_slice
    labels, fit = segmentation.segment_image(image, mask, 3, "soft", random_state=0)
    lazy, lazy_fit = segmentation.segment_image(da.from_array(image, chunks=(64, 64)), mask, 3,
                                                "soft", random_state=0)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), labels)
    np.testing.assert_allclose(lazy_fit.means, fit.means, rtol=1e-10)
    with pytest.raises(ValueError, match="beta > 0 needs the image in memory"):
        segmentation.segment_image(da.from_array(image), mask, 3, beta=0.5)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_progress_bars_follow_both_fits_and_change_nothing(method, capsys):
    image, truth = piecewise_image(0.4, seed=2, shape=(20, 20))
    quiet = segmentation.segment_image(image, None, 3, method, beta=0.5)
    capsys.readouterr()
    shown = segmentation.segment_image(image, None, 3, method, beta=0.5, progress=True)
    err = capsys.readouterr().err
    assert "hard EM" in err
    assert f"{method} EM + {'mean field' if method == 'soft' else 'ICM'}" in err
    assert f"{shown[1].n_iter}/500" in err and "change=" in err
    np.testing.assert_array_equal(shown[0], quiet[0])
    np.testing.assert_array_equal(shown[1].means, quiet[1].means)


def test_fixed_proportions_give_a_mean_field_fixed_point_with_ln_pi():
    """``proportions=True``: the mean-field equations gain ``ln pi_k`` of the plain fit
    (``history[0]``), held fixed; the objective still rises at every step."""
    image, _ = piecewise_image(noise_sd=0.8, seed=3, shape=(30, 34))
    beta = 0.8
    _, plain = segmentation.segment_image(image, reg_covar=0.0)
    _, res = segmentation.segment_image(image, beta=beta, tol=1e-10, max_iter=5000,
                                        proportions=True, covariance_type="full", reg_covar=0.0)
    assert res.converged
    np.testing.assert_allclose(res.history[0]["weights"], plain.weights)
    trace = res.objective_trace
    assert (np.diff(trace) >= -1e-9 * np.abs(trace).max()).all()
    K = res.means.shape[0]
    logits = np.empty((K, image.size))
    for k in range(K):
        var = res.covariances[k, 0, 0]
        neighbours = ndimage.convolve(res.resp[k].reshape(image.shape), KERNELS[4],
                                      mode="constant", cval=0.0).ravel()
        logits[k] = (-0.5 * np.log(2 * np.pi * var) - (image.ravel() - res.means[k, 0]) ** 2
                     / (2 * var) + beta * neighbours + np.log(plain.weights[k]))
    expected = np.exp(logits - logits.max(axis=0))
    expected /= expected.sum(axis=0)
    np.testing.assert_allclose(res.resp, expected, atol=1e-6)
    _, without = segmentation.segment_image(image, beta=beta, tol=1e-10, max_iter=5000,
                                            reg_covar=0.0, **BARE)
    assert np.abs(without.resp - res.resp).max() > 1e-3  # the option changes the fit
    with pytest.raises(ValueError, match="proportions must be None, False, True, 'fixed' or"):
        segmentation.segment_image(image, beta=beta, proportions=1)
def small_distinct_class_volume():
    """Three slabs (0.3, 0.6, 0.85, noise 0.05) and a bright ball (1.05) of 0.2 % of the voxels."""
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40, 40), dtype=int)
    truth[12:24] = 1
    truth[24:] = 2
    image = np.array([0.3, 0.6, 0.85])[truth] + rng.normal(0.0, 0.05, truth.shape)
    return phantoms.implant_lesion(image, (32, 20, 20), (3.0, 3.0, 3.0), intensity=1.05,
                                   texture_sd=0.03)


def test_soft_segmentation_gives_a_small_distinct_class_its_own_component():
    image, ball = small_distinct_class_volume()
    X = image.reshape(-1, 1)
    # k-means (best of n_init by inertia) splits a tissue rather than isolating the ball
    hard = em.run_em(X, 4, method="hard", init="kmeans++", n_init=4, max_iter=500)
    assert np.abs(hard.means[:, 0] - 1.05).min() > 0.1
    from_hard = em.run_em(X, 4, method="soft", max_iter=500, init={
        "means": hard.means, "covariances": hard.covariances, "weights": hard.weights})
    labels, fit = segmentation.segment_image(image, n_components=4, method="soft")
    assert abs(fit.means[3, 0] - 1.05) < 0.01
    assert abs((labels == 3).sum() - ball.sum()) <= 0.05 * ball.sum()
    # the start kept is the one of higher likelihood
    assert fit.objective > from_hard.objective
    ours = em.log_likelihood(X, fit.means, fit.covariances, fit.weights)
    assert ours == pytest.approx(fit.objective)
    # scikit-learn from our optimum stays there (the same likelihood): it is a fixed point
    gm = GaussianMixture(4, means_init=fit.means, precisions_init=1 / fit.covariances,
                         weights_init=fit.weights, tol=1e-3).fit(X)
    assert gm.converged_
    assert gm.score(X) * X.shape[0] == pytest.approx(fit.objective, rel=1e-6)


def unequal_volume(seed=0, shape=(32, 32, 32), shares=(0.1, 0.6, 0.3), noise_sd=0.35):
    """Three classes of known unequal shares (smooth random regions: a Gaussian-filtered
    random field cut at its quantiles), means 0, 1, 2, Gaussian noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0, mode="wrap")
    truth = np.digitize(field, np.quantile(field, np.cumsum(shares)[:-1]))
    return np.array([0.0, 1.0, 2.0])[truth] + rng.normal(0.0, noise_sd, shape), truth


def test_estimated_proportions_remove_the_mean_fields_bias_toward_a_rare_class():
    """A class of 10 % of a volume: the mean field without proportions (the prior's implicit
    share 1 / 3 each) about doubles it, the plain fit's weights held fixed (counted twice, by
    ln pi and by the neighbours) shrink it; estimated proportions give it its share and label
    more voxels right than either."""
    image, truth = unequal_volume()
    share = np.bincount(truth.ravel()) / truth.size
    _, plain = segmentation.segment_image(image)
    fits = {name: segmentation.segment_image(image, beta=1 / 3, start=plain, **options)
            for name, options in [("none", BARE),
                                  ("fixed", {"proportions": "fixed", "covariance_type": "full"}),
                                  ("estimated", {"proportions": "estimated",
                                                 "covariance_type": "full"}),
                                  ("tied", {})]}  # the default: estimated, tied
    shares = {name: fit.resp.mean(axis=1) for name, (_, fit) in fits.items()}
    accuracy = {name: (labels == truth).mean() for name, (labels, _) in fits.items()}
    assert shares["none"][0] > 1.8 * share[0]
    assert shares["fixed"][0] < 0.9 * share[0]
    for name in ("estimated", "tied"):
        assert abs(shares[name][0] - share[0]) < 0.025, (name, shares[name])
        np.testing.assert_allclose(fits[name][1].weights, shares[name])  # the M-step's pi
        assert accuracy[name] > max(accuracy["none"], accuracy["fixed"]), accuracy
    assert accuracy["none"] < (plain.labels == truth.ravel()).mean()


def test_estimated_proportions_give_a_mean_field_fixed_point():
    """``proportions="estimated"``: the mean-field equations gain an external field ``alpha``
    that makes the mean of the prior's conditionals ``softmax(alpha + beta s_n)`` (``s_n`` the
    neighbours' summed responsibilities) equal to the mean responsibilities (``weights``).
    ``alpha`` is recomputed here with scipy's optimiser from the result alone; with
    ``covariance_type="tied"`` every variance is the pooled one."""
    image, truth = piecewise_image(noise_sd=0.4, seed=3, shape=(30, 34))
    beta, x = 0.45, image.ravel()
    for covariance_type in ("full", "tied"):
        _, res = segmentation.segment_image(image, beta=beta, tol=1e-10, max_iter=5000,
                                            proportions="estimated", reg_covar=0.0,
                                            covariance_type=covariance_type)
        assert res.converged
        pi = res.resp.mean(axis=1)
        np.testing.assert_allclose(res.weights, pi, atol=1e-9)
        np.testing.assert_allclose(pi, np.bincount(truth.ravel()) / truth.size, atol=0.03)
        if covariance_type == "tied":
            pooled = sum((res.resp[k] * (x - res.means[k, 0]) ** 2).sum()
                         for k in range(3)) / x.size
            np.testing.assert_allclose(res.covariances[:, 0, 0], pooled, rtol=1e-6)
        sums = np.stack([ndimage.convolve(res.resp[k].reshape(image.shape), KERNELS[4],
                                          mode="constant", cval=0.0).ravel() for k in range(3)])

        def minus_pseudo_likelihood(free):
            alpha = np.r_[0.0, free]
            return -(x.size * pi @ alpha - logsumexp(alpha[:, None] + beta * sums, axis=0).sum())

        alpha = np.r_[0.0, optimize.minimize(minus_pseudo_likelihood, np.zeros(2),
                                             method="BFGS", options={"gtol": 1e-9}).x]
        logits = np.empty((3, x.size))
        for k in range(3):
            var = res.covariances[k, 0, 0]
            logits[k] = (-0.5 * np.log(2 * np.pi * var) - (x - res.means[k, 0]) ** 2 / (2 * var)
                         + beta * sums[k] + alpha[k])
        expected = np.exp(logits - logits.max(axis=0))
        expected /= expected.sum(axis=0)
        np.testing.assert_allclose(res.resp, expected, atol=1e-5)


def test_a_tied_variance_keeps_the_objective_monotone():
    image, _ = piecewise_image(noise_sd=0.8, seed=2)
    _, res = segmentation.segment_image(image, beta=0.7, reg_covar=0.0, proportions=False,
                                        covariance_type="tied")
    trace = res.objective_trace
    assert res.n_iter >= 2 and (np.diff(trace) >= -1e-9 * np.abs(trace).max()).all()
    np.testing.assert_allclose(res.history[0]["covariances"][:, 0, 0],
                               res.history[0]["covariances"][0, 0, 0])  # tied from the start


def test_proportions_and_covariance_type_are_checked():
    image, _ = piecewise_image(noise_sd=0.4, seed=1, shape=(12, 14))
    for bad in (1, "estimate", "none", 0.5):
        with pytest.raises(ValueError, match="proportions must be None, False, True, 'fixed' or"):
            segmentation.segment_image(image, beta=0.3, proportions=bad)
    for bad in ("diag", "spherical", True, False):
        with pytest.raises(ValueError, match="covariance_type must be None, 'full' or 'tied'"):
            segmentation.segment_image(image, beta=0.3, covariance_type=bad)
    for method, beta in (("hard", 0.3), ("soft", 0.0)):
        with pytest.raises(ValueError, match="covariance_type='tied' applies to the mean-field"):
            segmentation.segment_image(image, method=method, beta=beta, covariance_type="tied")
    _, fixed = segmentation.segment_image(image, beta=0.3, proportions=True)
    _, named = segmentation.segment_image(image, beta=0.3, proportions="fixed")
    np.testing.assert_array_equal(fixed.resp, named.resp)  # True is "fixed"


def test_the_mean_field_default_is_estimated_proportions_and_a_tied_variance():
    """Soft EM with beta > 0: the defaults (None) are proportions="estimated" and
    covariance_type="tied", through the plain fit, a start and a bias field alike; they differ
    from dipy's model (no proportions, per-class variances)."""
    image, _ = piecewise_image(noise_sd=0.6, seed=15, shape=(24, 26))
    _, plain = segmentation.segment_image(image)
    pair = {"proportions": "estimated", "covariance_type": "tied"}
    # the field needs positive intensities
    for img, options in ((image, {}), (image, {"start": plain}), (image + 3.0, {"bias_field": 1})):
        default = segmentation.segment_image(img, beta=0.5, **options)
        explicit = segmentation.segment_image(img, beta=0.5, **options, **pair)
        np.testing.assert_array_equal(default[0], explicit[0])
        np.testing.assert_array_equal(default[1].resp, explicit[1].resp)
        np.testing.assert_array_equal(default[1].means, explicit[1].means)
        assert default[1].n_iter == explicit[1].n_iter
    _, fit = segmentation.segment_image(image, beta=0.5)
    np.testing.assert_allclose(fit.covariances[:, 0, 0], fit.covariances[0, 0, 0])  # tied
    np.testing.assert_allclose(fit.weights, fit.resp.mean(axis=1))  # the M-step's shares
    _, bare = segmentation.segment_image(image, beta=0.5, **BARE)
    assert np.abs(bare.resp - fit.resp).max() > 1e-3
    assert np.ptp(bare.covariances[:, 0, 0]) > 0


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_the_new_defaults_leave_beta_zero_and_icm_unchanged(method):
    """beta = 0 (both methods) and ICM: the defaults are the explicit "full" / no proportions,
    bit for bit (the options do not apply there)."""
    image, _ = piecewise_image(noise_sd=0.6, seed=16, shape=(24, 26))
    for beta in (0.0, 0.5) if method == "hard" else (0.0,):
        default = segmentation.segment_image(image, method=method, beta=beta)
        for options in (BARE, {"covariance_type": "full"}, {"proportions": "estimated"},
                        {"proportions": "fixed", "covariance_type": "full"}):
            explicit = segmentation.segment_image(image, method=method, beta=beta, **options)
            np.testing.assert_array_equal(default[0], explicit[0])
            np.testing.assert_array_equal(default[1].resp, explicit[1].resp)
            np.testing.assert_array_equal(default[1].means, explicit[1].means)
            np.testing.assert_array_equal(default[1].covariances, explicit[1].covariances)
            assert default[1].n_iter == explicit[1].n_iter
            assert [h["objective"] for h in default[1].history] == \
                [h["objective"] for h in explicit[1].history]


def test_atypicality_counts_standard_deviations_beyond_the_extreme_components():
    """Above the brightest mean: (x - mu_top) / sd_top; below the darkest: (mu_bottom - x) /
    sd_bottom; 0 in between (where tissues blend), whatever the components' order."""
    from types import SimpleNamespace

    fit = SimpleNamespace(means=np.array([[0.9], [0.3], [0.6]]),
                          covariances=np.array([[[0.05 ** 2]], [[0.1 ** 2]], [[0.02 ** 2]]]))
    x = np.array([1.0, 0.9, 0.45, 0.3, 0.1])
    np.testing.assert_allclose(segmentation.atypicality(x, fit), [2.0, 0.0, 0.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"fit must be the EMResult of a 1-D mixture"):
        segmentation.atypicality(x, None)  # once an AttributeError
    with pytest.raises(ValueError, match="x must be an array of intensities"):
        segmentation.atypicality("abc", fit)


def test_a_small_distinct_class_is_found_from_the_tail_start():
    """49 bright pixels (0.3 % of the image) beyond three tissues, K = 4: k-means splits a
    tissue instead, so only the start that gives the outlying tail its own component (kept
    after its short probe and at the end) finds them as the fourth class."""
    rng = np.random.default_rng(0)
    truth = np.indices((120, 120))[1] * 3 // 120
    image = np.array([0.3, 0.6, 0.85])[truth] + rng.normal(0, 0.06, truth.shape)
    yy, xx = np.indices(truth.shape)
    lesion = (yy - 60) ** 2 + (xx - 100) ** 2 <= 16
    image[lesion] = 1.1 + rng.normal(0, 0.03, lesion.sum())
    labels, fit = segmentation.segment_image(image, n_components=4)
    assert abs(fit.means[3, 0] - 1.1) < 0.03
    found = labels == 3
    assert 2 * (found & lesion).sum() / (found.sum() + lesion.sum()) > 0.95
