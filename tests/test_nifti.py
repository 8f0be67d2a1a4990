"""Tests of ``emlab.imaging.nifti``: the affine checks against nibabel, and NIfTI files in and out,
with one clear error per bad file."""

import gzip

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine, voxel_sizes

from emlab.imaging import nifti

AFFINE = np.array([[2.0, 0, 0, -30], [0, 1.0, 0, 12], [0, 0, 1.5, 7], [0, 0, 0, 1]])


def test_voxel_volume_and_world_coordinates_agree_with_nibabel():
    rng = np.random.default_rng(0)
    A = np.eye(4)
    A[:3, :3] = rng.normal(size=(3, 3))  # oblique, sheared
    A[:3, 3] = rng.normal(size=3) * 50
    assert nifti.voxel_volume_ml(AFFINE) == pytest.approx(2 * 1 * 1.5 / 1000)
    assert nifti.voxel_volume_ml(np.diag([1.0, 1, 1, 1])) == pytest.approx(np.prod(
        voxel_sizes(np.eye(4))) / 1000)
    ijk = rng.uniform(0, 50, size=(7, 3))
    np.testing.assert_allclose(nifti.voxel_to_world(A, ijk), apply_affine(A, ijk))
    np.testing.assert_allclose(nifti.voxel_volume_ml(A), abs(np.linalg.det(A[:3, :3])) / 1000)
    np.testing.assert_allclose(nifti.voxel_sizes_mm(A), voxel_sizes(A))
    np.testing.assert_allclose(nifti.voxel_sizes_mm(AFFINE), [2.0, 1.0, 1.5])


@pytest.mark.parametrize("affine, message", [
    (np.eye(3), "4 x 4 matrix"),
    (np.eye(4)[:3], "4 x 4 matrix"),
    (np.full((4, 4), np.nan), "non-finite"),
    (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
    (np.array([[1, 2, 3, 0], [2, 4, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "singular"),
    (np.eye(4) + np.eye(4, k=-1), r"last row \[0, 0, 0, 1\]"),
    ("eye", "4 x 4 array of numbers"),
    (None, "4 x 4 array of numbers"),
])
def test_check_affine_refuses_what_cannot_map_voxels_to_mm(affine, message):
    with pytest.raises(ValueError, match="affine.*" + message):
        nifti.check_affine(affine)


def test_check_affine_copies():
    A = AFFINE.copy()
    out = nifti.check_affine(A)
    out[0, 0] = 99
    np.testing.assert_array_equal(A, AFFINE)


def write(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return path


def test_load_scan_and_mask_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    mask = np.zeros((5, 6, 7), dtype=np.uint8)
    mask[1:4, 2:5, 3:6] = 1
    scan, img = nifti.load_scan(write(tmp_path / "scan.nii.gz", data))
    np.testing.assert_array_equal(scan, data.astype(float))
    np.testing.assert_allclose(img.affine, AFFINE)
    got = nifti.load_mask(write(tmp_path / "mask.nii", mask), img)
    assert got.dtype == bool and got.sum() == mask.sum()


def test_save_label_image_keeps_the_affine_and_header(tmp_path):
    data = np.arange(60.0).reshape(3, 4, 5)
    src = nib.Nifti1Image(data.astype(np.float32), AFFINE)
    src.header.set_xyzt_units("mm", "sec")
    src.header["descrip"] = b"my scan"
    nib.save(src, tmp_path / "scan.nii.gz")
    _, img = nifti.load_scan(tmp_path / "scan.nii.gz")
    labels = (np.arange(60).reshape(3, 4, 5) % 4) - 1
    nifti.save_label_image(tmp_path / "labels.nii.gz", labels, img)
    back = nib.load(tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, AFFINE)
    np.testing.assert_allclose(back.header.get_zooms(), img.header.get_zooms())
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert back.header["descrip"] == img.header["descrip"]
    assert back.get_data_dtype() == np.int16
    with pytest.raises(ValueError, match="must end in .nii"):
        nifti.save_label_image(tmp_path / "labels.png", labels, img)
    with pytest.raises(ValueError, match="label_image has shape"):
        nifti.save_label_image(tmp_path / "l.nii", labels[:2], img)


def test_bad_files_are_refused_with_the_file_named(tmp_path):
    scan = write(tmp_path / "scan.nii.gz", np.ones((4, 4, 4)))
    _, img = nifti.load_scan(scan)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all"))
    (tmp_path / "text.nii").write_text("hello")
    four_d = write(tmp_path / "series.nii.gz", np.ones((4, 4, 4, 2)))
    flat = write(tmp_path / "flat.nii.gz", np.ones((4, 4)))
    other = write(tmp_path / "other.nii.gz", np.ones((4, 4, 5)))
    moved = write(tmp_path / "moved.nii.gz", np.ones((4, 4, 4)), np.diag([3.0, 3, 3, 1]))
    fuzzy = write(tmp_path / "fuzzy.nii.gz", np.full((4, 4, 4), 0.5))
    empty = write(tmp_path / "empty.nii.gz", np.zeros((4, 4, 4)))
    flat_voxels = nib.Nifti1Image(np.ones((4, 4, 4)), None)
    flat_voxels.set_sform(np.diag([1.0, 0, 1, 1]), code="scanner")  # a zero voxel size
    nib.save(flat_voxels, tmp_path / "singular.nii.gz")
    cases = [
        (lambda: nifti.load_scan(tmp_path / "missing.nii.gz"), "missing.nii.gz: no such file"),
        (lambda: nifti.load_scan(tmp_path / "notes.txt"), "notes.txt: not a NIfTI file"),
        (lambda: nifti.load_scan(tmp_path / "fake.nii.gz"), "fake.nii.gz: not a readable NIfTI"),
        (lambda: nifti.load_scan(tmp_path / "text.nii"), "text.nii: not a readable NIfTI"),
        (lambda: nifti.load_scan(four_d), r"series.nii.gz: a 4-D image of shape \(4, 4, 4, 2\)"),
        (lambda: nifti.load_scan(flat), "flat.nii.gz: a 2-D image"),
        (lambda: nifti.load_mask(other, img), r"other.nii.gz: the mask has shape \(4, 4, 5\)"),
        (lambda: nifti.load_mask(moved, img), "moved.nii.gz: the mask's affine differs"),
        (lambda: nifti.load_mask(fuzzy, img), "fuzzy.nii.gz: a mask must hold only 0 and 1"),
        (lambda: nifti.load_mask(empty, img), "empty.nii.gz: the mask is empty"),
        (lambda: nifti.load_scan(tmp_path / "singular.nii.gz"), "singular.nii.gz: affine is "
                                                                 "singular"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_voxel_to_world_refuses_unreadable_or_non_finite_coordinates():
    with pytest.raises(ValueError, match="ijk must be finite numbers"):
        nifti.voxel_to_world(AFFINE, "abc")
    with pytest.raises(ValueError, match="ijk must be finite numbers"):
        nifti.voxel_to_world(AFFINE, [np.nan, 1.0, 2.0])  # once a NaN world point


def test_the_scan_image_and_the_path_are_checked(tmp_path):
    labels = np.zeros((2, 3, 4), dtype=np.int64)
    scan = nib.Nifti1Image(np.ones((2, 3, 4)), AFFINE)
    nib.save(scan, tmp_path / "mask.nii.gz")
    with pytest.raises(ValueError, match="scan_img must be a nibabel NIfTI image"):
        nifti.save_label_image(tmp_path / "labels.nii.gz", labels, "scan.nii.gz")
    with pytest.raises(ValueError, match="scan_img must be a nibabel NIfTI image"):
        nifti.load_mask(tmp_path / "mask.nii.gz", labels)
    with pytest.raises(ValueError, match="path must be a file name"):
        nifti.load_scan(None)
    empty = nib.Nifti1Image(np.ones((0, 3, 4)), AFFINE)
    with pytest.raises(ValueError, match="label_image must hold integer labels"):
        nifti.save_label_image(tmp_path / "labels.nii.gz", np.zeros((0, 3, 4), int), empty)
