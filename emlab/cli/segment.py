"""Segment a user's own scan from the command line.

    python -m emlab.cli.segment scan.nii.gz --mask mask.nii.gz --classes 3 --beta 1 \\
        --out labels.nii.gz [--csv stats.csv] [--method soft|hard] [--seed 0] \\
        [--no-proportions] [--bias] [--pve PREFIX] \\
        [--lesions lesions.csv] [--lesion-labels lesions.nii.gz] [--min-lesion-ml 0.5]

Reads a 3-D NIfTI scan (and optionally a binary brain mask on the same grid; default: the
non-zero voxels), fits ``segment_image`` (a ``--classes``-Gaussian mixture of the intensities,
with a Potts prior of strength ``--beta``), and writes

* the label volume (``-1`` outside the mask, classes ``0 .. K - 1`` by increasing mean
  intensity) with the scan's affine and header;
* a CSV with one row per class: voxels, volume in mL, centroid in world millimetres (the
  scan's affine: scanner or MNI coordinates), the class's mean intensity and, for soft EM, the
  soft volume (summed responsibilities);
* with ``--lesions`` and/or ``--lesion-labels``: ``find_lesions`` on the same scan and mask
  (``--classes`` tissues, the same seed), its table (one row per lesion of at least
  ``--min-lesion-ml`` mL) and its label volume (0 none, ``i`` lesion ``i``, -1 outside).

Soft EM with ``--beta > 0`` takes ``segment_image``'s default mean field: class proportions
re-estimated at each M-step and one variance shared by the classes; ``--no-proportions`` gives
dipy's model instead (no proportions, one variance per class: ``proportions=False,
covariance_type="full"``), which about doubled CSF on the MNI152 template (notebook 09).

With ``--bias`` a smooth multiplicative bias field is estimated inside EM and written as
``PREFIX_bias.nii.gz`` with the corrected scan ``PREFIX_restore.nii.gz``; with ``--pve PREFIX``
each class's partial-volume fractions go to ``PREFIX_pve_k.nii.gz`` and the tissue holding most
of each voxel to ``PREFIX_pveseg.nii.gz`` (coded like OUT) (FSL FAST's names; float32 maps, the
scan's affine and header; without ``--pve`` the prefix is OUT without its suffix).

Each stage (reading, the plain fit, the fit under the prior, writing) is reported on stderr
with the time elapsed since the start, and on a terminal (or with ``--progress``) tqdm bars
follow the iterations of each fit. A bad file stops the
command with exit code 2 and one line ``error: <file>: <problem>`` on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from emlab.imaging import label_maps, lesions, nifti, segmentation
from emlab.engine.validation import check_image


class CommandError(Exception):
    """A problem to report in one line and exit with code 2."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m emlab.cli.segment",
        description="Tissue segmentation of a 3-D NIfTI scan by EM with an optional Potts "
                    "prior; writes a label volume and a CSV of class volumes (mL) and "
                    "centroids (mm).")
    parser.add_argument("scan", help="the scan, a 3-D .nii or .nii.gz file")
    parser.add_argument("--mask", help="binary mask (0/1) on the scan's grid; default: the "
                                       "scan's non-zero voxels")
    parser.add_argument("--classes", type=int, default=3, help="number of classes (default 3)")
    parser.add_argument("--beta", type=float, default=0.0,
                        help="strength of the spatial prior, 0 for none (default 0)")
    parser.add_argument("--method", choices=("soft", "hard"), default="soft",
                        help="soft EM + mean field, or hard EM + ICM (default soft)")
    parser.add_argument("--no-proportions", action="store_true",
                        help="soft EM with --beta > 0: the mean field without class "
                             "proportions and with one variance per class (dipy's model); "
                             "default: proportions re-estimated at each M-step and one "
                             "shared variance")
    parser.add_argument("--connectivity", type=int, default=None,
                        help="neighbourhood of the prior (default: segment_image's for 3-D)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starts (default 0)")
    parser.add_argument("--out", required=True, help="label volume to write (.nii or .nii.gz)")
    parser.add_argument("--csv", help="table to write (default: OUT with .csv for .nii[.gz])")
    # real scans (issue 21): a bias field inside EM and partial-volume maps, FSL FAST's names
    parser.add_argument("--bias", action="store_true",
                        help="estimate a smooth multiplicative bias field inside EM and write "
                             "PREFIX_bias and PREFIX_restore (the corrected scan)")
    parser.add_argument("--pve", metavar="PREFIX",
                        help="soft EM only: write one partial-volume fraction map per class, "
                             "PREFIX_pve_0 .. PREFIX_pve_K-1 (.nii.gz), and with --bias the "
                             "field's maps under the same PREFIX (default PREFIX: OUT without "
                             "its .nii[.gz])")
    parser.add_argument("--three-tissue", type=float, metavar="W",
                        help="with --pve: the prior weight of voxels holding three tissues, in "
                             "[0, 1) (default 0.08, for smooth atlas-like fractions; 0: adjacent "
                             "tissues only; a single subject's sharp scan wants less)")
    lesions = parser.add_argument_group(
        "lesions", "voxels that no tissue explains, as measured regions (find_lesions)")
    lesions.add_argument("--lesions", metavar="CSV",
                         help="write one row per lesion: voxels, volume (mL), centroid (mm), "
                              "mean intensity, contrast (in the nearest tissue's SDs)")
    lesions.add_argument("--lesion-labels", metavar="NIFTI",
                         help="write the lesion volume (.nii or .nii.gz): 0 none, i lesion i, "
                              "-1 outside the mask")
    lesions.add_argument("--min-lesion-ml", type=float, default=0.5,
                         help="smallest lesion reported, in mL (default 0.5)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars of the iterations on stderr (default: when stderr "
                             "is a terminal)")
    return parser


def _for_csv(table):
    """``table`` with its float columns rounded to 10 significant digits, so that a volume of
    239.2 mL is written as such and not as 239.19999999999996 (the binary rounding of a sum of
    voxel volumes); floats stay floats (12.0 is written "12.0")."""
    return table.apply(lambda column: column.map(lambda v: float(f"{v:.10g}"))
                       if column.dtype.kind == "f" else column)


MODELS = {("soft", False): "mean field with estimated proportions and one variance",
          ("soft", True): "mean field without proportions, one variance per class",
          ("hard", False): "ICM"}


def default_csv_path(out):
    name = str(out)
    for suffix in nifti.NIFTI_SUFFIXES[::-1]:  # .nii.gz before .nii
        if name.endswith(suffix):
            return Path(name[: -len(suffix)] + ".csv")
    return Path(name + ".csv")


class Progress:
    """One line on stderr per stage: ``[i/n] what (t s)``, t the time since the start."""

    def __init__(self, n_stages, stream=None):
        self.n, self.i, self.t0 = n_stages, 0, time.perf_counter()
        self.stream = sys.stderr if stream is None else stream

    def __call__(self, message):
        self.i += 1
        print(f"[{self.i}/{self.n}] {message} ({time.perf_counter() - self.t0:.1f} s)",
              file=self.stream, flush=True)


def load_inputs(scan_path, mask_path):
    """The scan's intensities, its mask (bool) and its nibabel image; file errors name it."""
    try:
        data, img = nifti.load_scan(scan_path)
        mask = data != 0 if mask_path is None else nifti.load_mask(mask_path, img)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        check_image(data, mask, name="scan", ndims=(3,))
    except ValueError as exc:
        raise CommandError(f"{scan_path}: {exc}") from None
    return data, mask, img


def map_prefix(args):
    """The prefix of the FAST-style maps: ``--pve PREFIX``, else ``--out`` without its suffix."""
    if args.pve:
        return str(args.pve)
    name = str(args.out)
    for suffix in nifti.NIFTI_SUFFIXES[::-1]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def save_map(path, values, scan_img):
    """A float map (float32) with the scan's affine and header, stored as it is."""
    import nibabel as nib

    image_class = type(scan_img) if isinstance(scan_img, nib.Nifti2Image) else nib.Nifti1Image
    out = image_class(np.asarray(values, dtype=np.float32), scan_img.affine,
                      header=scan_img.header.copy())
    out.set_data_dtype(np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["cal_min"], out.header["cal_max"] = float(np.min(values)), float(np.max(values))
    nib.save(out, path)


def write_real_scan_maps(args, result, mask, img):
    """``PREFIX_bias``, ``PREFIX_restore`` (with ``--bias``) and ``PREFIX_pve_k`` (with
    ``--pve``), FSL FAST's names; returns the paths written."""
    prefix, written = map_prefix(args), []
    maps = {}
    if args.bias:
        maps["bias"], maps["restore"] = result.bias_field, result.restored
    if args.pve:
        for k, fraction in enumerate(result.fractions):
            maps[f"pve_{k}"] = np.zeros(mask.shape)
            maps[f"pve_{k}"][mask] = fraction
    for name, values in maps.items():
        path = Path(f"{prefix}_{name}.nii.gz")
        try:
            save_map(path, values, img)
        except (ValueError, OSError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        written.append(path)
    if args.pve:  # the tissue holding most of each voxel, coded like --out
        path = Path(f"{prefix}_pveseg.nii.gz")
        pveseg = np.full(mask.shape, -1, dtype=np.int64)
        pveseg[mask] = result.fraction_labels
        try:
            nifti.save_label_image(path, pveseg, img)
        except (ValueError, OSError) as exc:
            raise CommandError(f"{path}: {exc}") from None
        written.append(path)
    return written


def output_paths(args):
    """Every file the command will write, for ``check_outputs``."""
    paths = [Path(args.out), Path(args.csv) if args.csv else default_csv_path(args.out)]
    prefix = map_prefix(args)
    if args.bias:
        paths += [Path(f"{prefix}_bias.nii.gz"), Path(f"{prefix}_restore.nii.gz")]
    if args.pve:
        paths += [Path(f"{prefix}_pve_0.nii.gz"), Path(f"{prefix}_pveseg.nii.gz")]
    paths += [Path(p) for p in (args.lesions, args.lesion_labels) if p]
    return paths


def check_outputs(args):
    """Each output's folder must exist and be writable, before any time is spent fitting."""
    for path in output_paths(args):
        folder = path.parent
        if path.is_dir():
            raise CommandError(f"{path}: is a folder, not a file name")
        if not folder.is_dir():
            why = "is a file, not a folder" if folder.exists() else "does not exist"
            raise CommandError(f"{path}: the folder {folder} {why}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CommandError(f"{path}: the folder {folder} is not writable")


def class_table(label_image, result, affine, method):
    """``region_stats`` with the affine, plus each class's mean intensity and soft volume."""
    K = result.means.shape[0]
    table = label_maps.region_stats(label_image, names=list(range(K)), affine=affine)
    table["mean_intensity"] = result.means[:, 0]
    if method == "soft":
        table["soft_volume_ml"] = label_maps.soft_volumes_ml(result.resp, affine)
    if getattr(result, "fractions", None) is not None:
        table["pve_volume_ml"] = label_maps.soft_volumes_ml(result.fractions, affine)
    return table


def run(args, progress):
    data, mask, img = load_inputs(args.scan, args.mask)
    voxel_ml = nifti.voxel_volume_ml(img.affine)
    progress(f"read {args.scan}: shape {data.shape}, voxel {voxel_ml * 1000:.3g} mm^3, "
             f"{int(mask.sum())} voxels in the mask ({mask.sum() * voxel_ml:.1f} mL)")
    # the voxel sizes weight the prior's neighbours (anisotropic voxels: closer ones count more)
    options = {"spacing": tuple(float(z) for z in nifti.voxel_sizes_mm(img.affine))}
    if args.connectivity is not None:
        options["connectivity"] = args.connectivity
    prior = segmentation.DIPY_MODEL if args.no_proportions else {}
    options["progress"] = sys.stderr.isatty() if args.progress is None else args.progress
    real_scan = {"bias_field": args.bias, "partial_volume": bool(args.pve)}
    if args.three_tissue is not None:
        real_scan["three_tissue"] = args.three_tissue
    progress(f"fitting {args.classes} classes by {args.method} EM on the intensities")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            labels, result = segmentation.segment_image(
                data, mask, n_components=args.classes, method=args.method,
                random_state=args.seed, **options, **(real_scan if args.beta == 0 else {}))
            iterations = f"{result.n_iter} iterations"
            if args.beta > 0:  # continued from the plain fit: the same as one call with beta
                progress(f"plain fit done in {iterations}; continuing under the spatial prior "
                         f"(beta {args.beta:g}, {args.method} = "
                         f"{MODELS[args.method, args.no_proportions]})")
                labels, result = segmentation.segment_image(
                    data, mask, n_components=args.classes, method=args.method,
                    beta=args.beta, start=result, **options, **prior, **real_scan)
                iterations += f" + {result.n_iter} with the prior"
        except ValueError as exc:
            raise CommandError(f"{args.scan}: {exc}") from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    csv_path = Path(args.csv) if args.csv else default_csv_path(args.out)
    progress(f"fitted in {iterations}; writing {args.out} and {csv_path}")
    try:
        nifti.save_label_image(args.out, labels, img)
    except (ValueError, OSError) as exc:
        raise CommandError(f"{args.out}: {exc}") from None
    if args.bias or args.pve:
        for path in write_real_scan_maps(args, result, mask, img):
            print(f"wrote {path}", file=sys.stderr)
    table = class_table(labels, result, img.affine, args.method)
    try:
        _for_csv(table).to_csv(csv_path)
    except OSError as exc:
        raise CommandError(f"{csv_path}: {exc}") from None
    if args.lesions or args.lesion_labels:
        write_lesions(args, data, mask, img, progress)
    progress("done")
    return table


def write_lesions(args, data, mask, img, progress):
    """``find_lesions`` on the scan (same mask and seed; ``--classes`` tissues), then its table
    (``--lesions``) and its label volume (``--lesion-labels``)."""
    try:
        table, lesion_labels = lesions.find_lesions(
            data, mask, affine=img.affine, n_tissues=args.classes,
            min_volume_ml=args.min_lesion_ml, random_state=args.seed)
    except ValueError as exc:
        raise CommandError(f"{args.scan}: {exc}") from None
    progress(f"{len(table)} lesion(s) of at least {args.min_lesion_ml:g} mL, "
             f"{table['volume_ml'].sum():.2f} mL in total")
    if args.lesion_labels:
        try:
            nifti.save_label_image(args.lesion_labels, lesion_labels, img)
        except (ValueError, OSError) as exc:
            raise CommandError(f"{args.lesion_labels}: {exc}") from None
    if args.lesions:
        try:
            _for_csv(table).to_csv(args.lesions)
        except OSError as exc:
            raise CommandError(f"{args.lesions}: {exc}") from None


def main(argv=None):
    """Run the command; returns the exit code (0, or 2 for a bad file or argument)."""
    args = build_parser().parse_args(argv)
    try:
        if args.classes < 1:
            raise CommandError(f"--classes must be >= 1, got {args.classes}")
        if args.seed < 0:
            raise CommandError(f"--seed must be >= 0, got {args.seed}")
        if not np.isfinite(args.beta) or args.beta < 0:
            raise CommandError(f"--beta must be a finite number >= 0, got {args.beta}")
        if args.no_proportions and (args.method != "soft" or args.beta == 0):
            raise CommandError("--no-proportions applies to the mean-field prior: it needs "
                               "--method soft and --beta > 0")
        if args.pve and args.method != "soft":
            raise CommandError("--pve needs --method soft (fractions come from probabilities)")
        if args.three_tissue is not None:
            if not args.pve:
                raise CommandError("--three-tissue is the partial-volume model's prior: it "
                                   "needs --pve")
            if not 0 <= args.three_tissue < 1:
                raise CommandError(f"--three-tissue must be in [0, 1), got {args.three_tissue}")
        if not str(args.out).endswith(nifti.NIFTI_SUFFIXES):
            raise CommandError(f"{args.out}: the output name must end in .nii or .nii.gz")
        if not (np.isfinite(args.min_lesion_ml) and args.min_lesion_ml > 0):
            raise CommandError(f"--min-lesion-ml must be a finite number > 0, got "
                               f"{args.min_lesion_ml}")
        if args.lesion_labels and not str(args.lesion_labels).endswith(nifti.NIFTI_SUFFIXES):
            raise CommandError(f"{args.lesion_labels}: the lesion labels' name must end in "
                               ".nii or .nii.gz")
        check_outputs(args)
        run(args, Progress(4 + (args.beta > 0) + bool(args.lesions or args.lesion_labels)))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
