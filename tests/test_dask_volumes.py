"""``segment_dask_volume``: on a dask volume, the same segmentation as ``segment_image`` with
``beta = 0`` (same labels, same parameters), a lazy label volume computed chunk by chunk, and
clear errors. Dask's default scheduler throughout (the cluster is tested in test_distributed)."""

import dask
import dask.array as da
import numpy as np
import pytest

import em_helpers as em
from emlab.imaging import dask_volumes, segmentation
from emlab.engine import chunked

TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(autouse=True)
def threads():
    with dask.config.set(scheduler="threads"):
        yield


def phantom(shape=(5, 18, 24), seed=0):
    """Three tissue intensities in blobs, plus noise; the mask leaves out a border."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, shape)
    volume = np.choose(classes, [20.0, 60.0, 100.0]) + rng.normal(0, 9, shape)
    mask = np.ones(shape, dtype=bool)
    mask[..., :2] = False
    return volume, mask


def check_same_as_segment_image(image, mask, method, chunks):
    labels, result = segmentation.segment_image(image, mask, method=method, beta=0)
    dask_image = da.from_array(image, chunks=chunks)
    dask_labels, dask_result = dask_volumes.segment_dask_volume(dask_image, mask, method=method)
    assert isinstance(dask_labels, da.Array) and dask_labels.chunks == dask_image.chunks
    np.testing.assert_array_equal(dask_labels.compute(), labels)
    np.testing.assert_array_equal(dask_result.labels.compute(), result.labels)
    for key in ("means", "covariances", "weights"):
        np.testing.assert_allclose(getattr(dask_result, key), getattr(result, key), **TOL)
    np.testing.assert_allclose(dask_result.resp.compute(), result.resp, **TOL)
    np.testing.assert_allclose(dask_result.init_means, result.init_means, **TOL)


def test_the_t1_slice_is_segmented_as_segment_image_does(t1_slice):
    image, mask, _ = t1_slice
    check_same_as_segment_image(image, mask, "hard", (41, 72))  # soft: 107 iterations


@pytest.mark.parametrize("method", ["hard", "soft"])
def test_a_phantom_slice_is_segmented_as_segment_image_does(method):
    volume, mask = phantom()
    check_same_as_segment_image(volume[2], mask[2], method, (9, 24))


def test_a_volume_matches_run_em_on_its_masked_voxels():
    volume, mask = phantom()
    labels, result = dask_volumes.segment_dask_volume(da.from_array(volume, chunks=(2, 9, 24)),
                                                      mask, method="soft")
    X = volume[mask][:, None]
    hard = em.run_em(X, 3, "hard", init="kmeans++", n_init=4, max_iter=500)
    soft = em.run_em(X, 3, "soft", init={"means": hard.means, "covariances": hard.covariances,
                                         "weights": hard.weights}, max_iter=500)
    order = np.argsort(soft.means[:, 0])
    np.testing.assert_allclose(result.means, soft.means[order], **TOL)
    assert np.all(np.diff(result.means[:, 0]) > 0)  # numbered by increasing intensity
    expected = np.full(volume.shape, -1)
    expected[mask] = np.argsort(order)[soft.labels]
    np.testing.assert_array_equal(labels.compute(), expected)
    assert labels.shape == volume.shape and labels.dtype == np.int64


def test_a_dask_mask_and_nan_outside_the_mask_are_fine():
    volume, mask = phantom(seed=1)
    volume[~mask] = np.nan
    labels, _ = dask_volumes.segment_dask_volume(da.from_array(volume, chunks=(3, 9, 8)),
                                                 da.from_array(mask, chunks=(5, 5, 5)),
                                                 method="hard")
    computed = labels.compute()
    assert (computed[~mask] == -1).all() and set(np.unique(computed[mask])) == {0, 1, 2}


def test_bad_volumes_and_masks_are_refused():
    volume, mask = phantom(seed=2)
    dv = da.from_array(volume, chunks=(2, 9, 12))
    with pytest.raises(ValueError, match="volume must be a dask array.*segment_image"):
        dask_volumes.segment_dask_volume(volume, mask)
    with pytest.raises(ValueError, match="mask has shape"):
        dask_volumes.segment_dask_volume(dv, mask[0])
    with pytest.raises(ValueError, match="mask must be boolean"):
        dask_volumes.segment_dask_volume(dv, mask.astype(int))
    with pytest.raises(ValueError, match="mask is empty"):
        dask_volumes.segment_dask_volume(dv, np.zeros_like(mask))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        dask_volumes.segment_dask_volume(dv[0, 0])
    with pytest.raises(ValueError, match="method must be"):
        dask_volumes.segment_dask_volume(dv, mask, method="fuzzy")
    with pytest.raises(ValueError, match="random_state must be an integer"):
        dask_volumes.segment_dask_volume(dv, mask, random_state="abc")
    volume[1, 5, 5] = np.nan  # inside the mask
    with pytest.raises(ValueError, match=r"volume \(inside the mask\) has 1 missing"):
        dask_volumes.segment_dask_volume(da.from_array(volume, chunks=(2, 9, 12)), mask)


def test_a_flat_volume_is_an_empty_component_error():
    flat = da.full((4, 10, 10), 7.0, chunks=(2, 5, 5))
    with pytest.raises(chunked.EmptyComponentError):
        dask_volumes.segment_dask_volume(flat, method="hard", n_init=1)
