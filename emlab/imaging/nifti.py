"""Scans on disk: NIfTI files in and out (through nibabel), and the voxel-to-world affine.

- ``check_affine``: a 4 x 4, finite, non-singular voxel-to-world matrix (as nibabel gives it);
- ``voxel_volume_ml``: the volume of one voxel, ``|det A[:3, :3]| / 1000`` millilitres;
- ``voxel_sizes_mm``: the voxel's edge lengths; ``voxel_to_world``: voxel coordinates mapped through the affine (millimetres);
- ``load_scan`` and ``load_mask``: a 3-D NIfTI volume, or a binary mask on the same grid, read
  and checked, with a ``ValueError`` that names the file and the problem;
- ``save_label_image``: a label volume written with the scan's affine and header.

nibabel is imported only by the functions that read or write files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_affine(affine, name="affine"):
    """Return ``affine`` as a new float (4, 4) array, after checking it can map voxels to mm.

    Parameters
    ----------
    affine : array-like, shape (4, 4)
        Voxel-to-world matrix: ``[x, y, z, 1] = A @ [i, j, k, 1]`` (nibabel's ``img.affine``).
    name : str
        The argument's name in the error messages.

    Returns
    -------
    ndarray of shape (4, 4), float

    Raises
    ------
    ValueError
        If it is not 4 x 4 numbers, holds a non-finite entry, its last row is not
        ``[0, 0, 0, 1]``, or its 3 x 3 part is singular (a voxel would have no volume).
    """
    if affine is None or isinstance(affine, (str, bytes)):
        raise ValueError(f"{name} must be a 4 x 4 array of numbers, got {type(affine).__name__}")
    try:
        A = np.array(affine, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 4 x 4 array of numbers: {exc}") from None
    if A.shape != (4, 4):
        raise ValueError(f"{name} must be a 4 x 4 matrix, got shape {A.shape}")
    if not np.isfinite(A).all():
        raise ValueError(f"{name} holds a non-finite entry (NaN or inf)")
    if not np.allclose(A[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError(f"{name} must have last row [0, 0, 0, 1], got {A[3].tolist()}")
    scale = np.abs(A[:3, :3]).max()
    if scale == 0 or abs(np.linalg.det(A[:3, :3])) <= 1e-12 * scale ** 3:
        raise ValueError(f"{name} is singular: its 3 x 3 part has determinant 0, so a voxel "
                         "would have no volume")
    return A


def voxel_volume_ml(affine):
    """Volume of one voxel in millilitres: ``|det A[:3, :3]|`` mm^3 divided by 1000."""
    A = check_affine(affine)
    return float(abs(np.linalg.det(A[:3, :3])) / 1000.0)


def voxel_sizes_mm(affine):
    """The length in mm of one step along each voxel axis: the norms of ``A[:3, :3]``'s
    columns (nibabel's ``voxel_sizes``)."""
    A = check_affine(affine)
    return np.linalg.norm(A[:3, :3], axis=0)


def voxel_to_world(affine, ijk):
    """Map voxel coordinates ``ijk`` (shape (..., 3)) through ``affine``: world mm (..., 3)."""
    A = check_affine(affine)
    try:
        ijk = np.asarray(ijk, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"ijk must be finite numbers, got {ijk!r}") from None
    if ijk.shape[-1:] != (3,):
        raise ValueError(f"ijk must have 3 coordinates in its last axis, got shape {ijk.shape}")
    if not np.isfinite(ijk).all():
        raise ValueError("ijk must be finite numbers (it holds NaN or inf)")
    return ijk @ A[:3, :3].T + A[:3, 3]


def _check_scan_img(scan_img):
    """``scan_img`` must be the nibabel image of the scan (``load_scan``'s second output)."""
    import nibabel as nib

    if not isinstance(scan_img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"scan_img must be a nibabel NIfTI image (load_scan's second output), "
                         f"got {type(scan_img).__name__}")


def _read(path, what):
    """Open ``path`` as a NIfTI image; a ValueError naming the file for anything else."""
    import nibabel as nib

    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file name (str or Path) of the {what}, got "
                         f"{type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file ({what})")
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: not a NIfTI file (expected a .nii or .nii.gz name)")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI file (nibabel reads it as "
                         f"{type(img).__name__})")
    try:
        data = np.asarray(img.dataobj, dtype=float)
    except Exception as exc:
        raise ValueError(f"{path}: its voxel data cannot be read ({type(exc).__name__}: "
                         f"{exc})") from None
    if data.ndim != 3:
        raise ValueError(f"{path}: a {data.ndim}-D image of shape {data.shape}; expected one "
                         "3-D volume (take a single volume out of a 4-D series first)")
    if 0 in data.shape:
        raise ValueError(f"{path}: the image has an empty axis, shape {data.shape}")
    try:
        check_affine(img.affine)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return img, data


def load_scan(path):
    """Read a 3-D scan from a NIfTI file.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file holding one 3-D volume.

    Returns
    -------
    data : ndarray of shape (X, Y, Z), float
        The voxel intensities (nibabel's scaled values), a new array.
    img : nibabel.Nifti1Image
        The image itself (its ``affine`` and ``header`` are reused when writing the labels).

    Raises
    ------
    ValueError
        ``"<path>: <problem>"`` if the file is missing, is not NIfTI, is not 3-D, or its
        affine is not a usable 4 x 4 voxel-to-world matrix. (Non-finite voxels are checked
        against the mask by ``segment_image``'s ``check_image``.)
    """
    img, data = _read(path, "scan")
    return data, img


def load_mask(path, scan_img):
    """Read a binary mask on the grid of ``scan_img``.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` / ``.nii.gz`` file of 0 and 1 (any numeric type).
    scan_img : nibabel image
        The scan the mask belongs to (``load_scan``'s second output).

    Returns
    -------
    ndarray of bool, shape of the scan

    Raises
    ------
    ValueError
        ``"<path>: <problem>"`` if the file cannot be read as a 3-D NIfTI image, its shape or
        affine differ from the scan's, it holds values other than 0 and 1, or it is empty.
    """
    _check_scan_img(scan_img)
    img, data = _read(path, "mask")
    path = Path(path)
    if data.shape != tuple(scan_img.shape):
        raise ValueError(f"{path}: the mask has shape {data.shape} but the scan has shape "
                         f"{tuple(scan_img.shape)}")
    if not np.allclose(img.affine, scan_img.affine, atol=1e-3):
        raise ValueError(f"{path}: the mask's affine differs from the scan's (the two are not "
                         "on the same voxel grid)")
    if not np.isin(data, (0.0, 1.0)).all():
        odd = data[~np.isin(data, (0.0, 1.0))][0]
        raise ValueError(f"{path}: a mask must hold only 0 and 1, found {odd:g}")
    mask = data == 1.0
    if not mask.any():
        raise ValueError(f"{path}: the mask is empty (no voxel is 1)")
    return mask


def save_label_image(path, label_image, scan_img):
    """Write a label volume with the scan's affine and header (data type int16).

    Parameters
    ----------
    path : str or Path
        Ends in ``.nii`` or ``.nii.gz``.
    label_image : array-like of int, shape of the scan
        ``-1`` outside the mask, classes ``0 .. K - 1`` inside.
    scan_img : nibabel image
        The scan that was segmented: its affine, sform/qform codes and header are copied.

    Returns
    -------
    nibabel.Nifti1Image
        The image written (a Nifti2Image if the scan was one).
    """
    import nibabel as nib

    _check_scan_img(scan_img)
    path = Path(path)
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: the output name must end in .nii or .nii.gz")
    labels = np.asarray(label_image)
    if labels.shape != tuple(scan_img.shape):
        raise ValueError(f"label_image has shape {labels.shape} but the scan has shape "
                         f"{tuple(scan_img.shape)}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0 or labels.min() < -1 \
            or labels.max() > np.iinfo(np.int16).max:
        raise ValueError("label_image must hold integer labels from -1 up")
    header = scan_img.header.copy()
    image_class = type(scan_img) if isinstance(scan_img, nib.Nifti2Image) else nib.Nifti1Image
    out = image_class(labels.astype(np.int16), scan_img.affine, header=header)
    out.set_data_dtype(np.int16)
    out.header.set_slope_inter(1.0, 0.0)  # labels are stored as they are, never rescaled
    out.header["cal_min"], out.header["cal_max"] = -1, max(int(labels.max()), 0)
    nib.save(out, path)
    return out
