"""Tests of the command ``python -m emlab.cli.segment``: it round-trips a small NIfTI scan (labels
with the scan's affine and header, a CSV equal to ``region_stats``), and refuses every bad file
with exit code 2 and one line naming the file."""

import gzip
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from emlab.imaging import label_maps, lesions, phantoms, segmentation
from emlab.cli import segment

AFFINE = np.array([[2.0, 0, 0, -30.0], [0, 1.0, 0, 12.0], [0, 0, 1.5, 7.0], [0, 0, 0, 1]])


def run_command(*args):
    """The command in a process of its own, as a user runs it."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "emlab.cli.segment", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def three_tissue_volume(seed=0):
    """A (14, 16, 12) volume of three slabs of intensity 1, 2 and 3 plus noise, in a box mask."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((14, 16, 12), dtype=int)
    truth[:, 6:11] = 1
    truth[:, 11:] = 2
    data = truth + 1.0 + rng.normal(0, 0.2, truth.shape)
    mask = np.zeros(truth.shape, dtype=np.uint8)
    mask[1:13, 1:15, 1:11] = 1
    return data.astype(np.float32), mask, truth


@pytest.fixture
def scan_files(tmp_path):
    data, mask, _ = three_tissue_volume()
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    return tmp_path


def run_in_process(capsys, *args):
    """``segment.main`` in this process (the same code path, without a new interpreter)."""
    code = segment.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_the_command_round_trips_a_small_scan(scan_files, method, capsys):
    out, csv = scan_files / "labels.nii.gz", scan_files / "stats.csv"
    args = (scan_files / "scan.nii.gz", "--mask", scan_files / "mask.nii.gz", "--classes", 3,
            "--beta", 1, "--method", method, "--seed", 0, "--out", out, "--csv", csv)
    before = {p.name: p.read_bytes() for p in scan_files.iterdir()}
    # soft: as a user runs it, in a process of its own; hard: through main()
    done = run_command(*args) if method == "soft" else run_in_process(capsys, *args)
    assert done.returncode == 0, done.stderr
    assert "[5/5] done" in done.stderr and done.stdout == ""
    assert "continuing under the spatial prior" in done.stderr
    assert all((scan_files / name).read_bytes() == data for name, data in before.items())
    scan = nib.load(scan_files / "scan.nii.gz")
    written = nib.load(out)
    labels = np.asarray(written.dataobj).astype(np.int64)
    assert written.shape == scan.shape
    np.testing.assert_allclose(written.affine, scan.affine)
    np.testing.assert_allclose(written.header.get_zooms(), scan.header.get_zooms())
    assert written.header.get_xyzt_units() == scan.header.get_xyzt_units()
    # the same labels as a direct call with the same seed
    data, mask, truth = three_tissue_volume()
    expected, fit = segmentation.segment_image(data, mask.astype(bool), 3, method, beta=1.0,
                                               random_state=0, spacing=(2.0, 1.0, 1.5))
    np.testing.assert_array_equal(labels, expected)
    assert (labels[mask == 0] == -1).all()
    assert label_maps.dice(np.where(mask == 1, truth, -1), labels).min() > 0.95
    # the CSV holds region_stats of the label volume under the scan's affine
    table = pd.read_csv(csv, index_col="class")
    stats = label_maps.region_stats(labels, names=[0, 1, 2], affine=scan.affine)
    pd.testing.assert_frame_equal(table[stats.columns], stats, check_names=False,
                                  check_index_type=False)
    assert table["volume_ml"].sum() == pytest.approx(mask.sum() * 3.0 / 1000)
    np.testing.assert_allclose(table["mean_intensity"], fit.means[:, 0])
    # at most 10 significant digits: no binary-rounding tails such as 239.19999999999996
    written = re.findall(r"\d+\.\d+", csv.read_text())
    assert written and max(len(w.replace(".", "").lstrip("0")) for w in written) <= 10
    if method == "soft":
        np.testing.assert_allclose(table["soft_volume_ml"].sum(), table["volume_ml"].sum())
    else:
        assert "soft_volume_ml" not in table


def test_the_default_mask_is_the_nonzero_voxels_and_the_csv_sits_beside_the_labels(tmp_path,
                                                                                   capsys):
    data, mask, _ = three_tissue_volume()
    nib.save(nib.Nifti1Image(data * mask, AFFINE), tmp_path / "scan.nii")
    done = run_in_process(capsys, tmp_path / "scan.nii", "--out", tmp_path / "labels.nii")
    assert done.returncode == 0, done.stderr
    labels = np.asarray(nib.load(tmp_path / "labels.nii").dataobj)
    np.testing.assert_array_equal(labels >= 0, mask == 1)
    assert (tmp_path / "labels.csv").is_file()


def test_bad_files_exit_with_code_2_and_one_line(scan_files, capsys):
    d = scan_files
    data, mask, _ = three_tissue_volume()
    (d / "notes.txt").write_text("not a scan")
    (d / "broken.nii.gz").write_bytes(gzip.compress(b"garbage"))
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), AFFINE), d / "series.nii.gz")
    nib.save(nib.Nifti1Image(mask[:, :-1], AFFINE), d / "small_mask.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(mask), AFFINE), d / "empty_mask.nii.gz")
    holes = data.copy()
    holes[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(holes, AFFINE), d / "holes.nii.gz")
    scan, msk, out = d / "scan.nii.gz", d / "mask.nii.gz", d / "labels.nii.gz"
    cases = [
        ((d / "nowhere.nii.gz", "--out", out), "nowhere.nii.gz: no such file"),
        ((d / "notes.txt", "--out", out), "notes.txt: not a NIfTI file"),
        ((d / "broken.nii.gz", "--out", out), "broken.nii.gz: not a readable NIfTI file"),
        ((d / "series.nii.gz", "--out", out), "series.nii.gz: a 4-D image"),
        ((scan, "--mask", d / "small_mask.nii.gz", "--out", out),
         "small_mask.nii.gz: the mask has shape (14, 15, 12) but the scan has shape"),
        ((scan, "--mask", d / "empty_mask.nii.gz", "--out", out),
         "empty_mask.nii.gz: the mask is empty"),
        ((d / "holes.nii.gz", "--mask", msk, "--out", out),
         "holes.nii.gz: scan has 1 non-finite pixel(s) inside the mask"),
        ((scan, "--out", d / "labels.png"), "labels.png: the output name must end in .nii"),
        ((scan, "--out", out, "--beta", -1), "--beta must be a finite number >= 0"),
        ((scan, "--out", out, "--no-proportions"),
         "--no-proportions applies to the mean-field prior: it needs --method soft and --beta"),
        ((scan, "--out", out, "--beta", 1, "--method", "hard", "--no-proportions"),
         "--no-proportions applies to the mean-field prior"),
    ]
    for number, (args, message) in enumerate(cases):
        # the first in a process of its own (no traceback reaches the user), the rest in this one
        done = run_command(*args) if number == 0 else run_in_process(capsys, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr
        assert "Traceback" not in done.stderr
        assert not out.exists()


def test_no_proportions_gives_dipys_mean_field(scan_files, capsys):
    """``--no-proportions``: the mean field without class proportions and with one variance
    per class, as ``segment_image(..., proportions=False, covariance_type="full")``; the
    default follows ``segment_image``'s (estimated proportions, one variance)."""
    data, mask, _ = three_tissue_volume()
    data = data + np.random.default_rng(1).normal(0, 0.4, data.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), scan_files / "noisy.nii.gz")
    common = dict(random_state=0, spacing=(2.0, 1.0, 1.5))
    fits = {}
    for flag, options in (((), {}), (("--no-proportions",), {"proportions": False,
                                                              "covariance_type": "full"})):
        out = scan_files / f"labels{len(flag)}.nii.gz"
        done = run_in_process(capsys, scan_files / "noisy.nii.gz", "--mask",
                              scan_files / "mask.nii.gz", "--beta", 0.5, "--out", out, *flag)
        assert done.returncode == 0, done.stderr
        assert ("without proportions" in done.stderr) == bool(flag)
        labels = np.asarray(nib.load(out).dataobj).astype(np.int64)
        expected, fit = segmentation.segment_image(data, mask.astype(bool), 3, beta=0.5,
                                                   **common, **options)
        np.testing.assert_array_equal(labels, expected)
        fits[flag] = fit
    variances = {flag: fit.covariances[:, 0, 0] for flag, fit in fits.items()}
    np.testing.assert_allclose(variances[()], variances[()][0])  # one, shared
    assert np.ptp(variances[("--no-proportions",)]) > 1e-4  # one per class


def test_progress_bars_on_request_and_none_by_default_off_a_terminal(scan_files, capsys):
    scan, mask = scan_files / "scan.nii.gz", scan_files / "mask.nii.gz"
    args = (scan, "--mask", mask, "--beta", "0.5", "--out", scan_files / "labels.nii.gz")
    quiet = run_in_process(capsys, *args)  # pytest's stderr is not a terminal
    assert quiet.returncode == 0, quiet.stderr
    assert "it/s" not in quiet.stderr and "soft EM + mean field" not in quiet.stderr
    shown = run_in_process(capsys, *args, "--progress")
    assert shown.returncode == 0, shown.stderr
    assert "hard EM" in shown.stderr and "soft EM + mean field" in shown.stderr
    assert "change=" in shown.stderr


def tiled_volume(seed=0):
    """Three tissues (1, 2, 3) in interleaved tiles of 3 voxels (no smooth trend a field could
    take up) plus noise, in a box mask."""
    rng = np.random.default_rng(seed)
    truth = sum(g // 3 for g in np.indices((14, 16, 12))) % 3
    data = truth + 1.0 + rng.normal(0, 0.1, truth.shape)
    mask = np.zeros(truth.shape, dtype=np.uint8)
    mask[1:13, 1:15, 1:11] = 1
    return data, mask, truth


def test_bias_and_pve_write_fast_style_maps_with_the_scan_affine(tmp_path):
    data, mask, truth = tiled_volume()
    field = np.exp(0.1 * np.linspace(-1, 1, data.shape[0]))[:, None, None]
    img = nib.Nifti1Image((data * field).astype(np.float32), AFFINE)
    nib.save(img, tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    prefix = tmp_path / "maps" / "fast"
    prefix.parent.mkdir()
    done = run_command(tmp_path / "scan.nii.gz", "--mask", tmp_path / "mask.nii.gz",
                       "--out", tmp_path / "labels.nii.gz", "--bias", "--pve", prefix)
    assert done.returncode == 0, done.stderr
    names = ["bias", "restore", "pve_0", "pve_1", "pve_2"]
    maps = {name: nib.load(f"{prefix}_{name}.nii.gz") for name in names}
    inside = mask == 1
    for name, written in maps.items():
        np.testing.assert_allclose(written.affine, AFFINE)
        assert written.shape == data.shape, name
    bias = maps["bias"].get_fdata()
    restored = maps["restore"].get_fdata()
    # the same maps as a direct call (float32 on disk)
    _, fit = segmentation.segment_image(data * field, inside, 3, spacing=(2.0, 1.0, 1.5),
                                        bias_field=True, partial_volume=True)
    np.testing.assert_allclose(bias, fit.bias_field, rtol=1e-6)
    np.testing.assert_allclose(restored, fit.restored, rtol=1e-5, atol=1e-6)
    assert (bias[~inside] == 1).all()
    fractions = np.stack([maps[f"pve_{k}"].get_fdata()[inside] for k in range(3)])
    np.testing.assert_allclose(fractions.sum(axis=0), 1.0, atol=1e-6)
    assert (fractions.argmax(axis=0) == truth[inside]).mean() > 0.95
    pveseg = nib.load(f"{prefix}_pveseg.nii.gz")
    np.testing.assert_allclose(pveseg.affine, AFFINE)
    pveseg = np.asarray(pveseg.dataobj)
    np.testing.assert_array_equal(pveseg[inside], fit.fractions.argmax(axis=0))
    assert (pveseg[~inside] == -1).all()
    table = pd.read_csv(tmp_path / "labels.csv", index_col="class")
    assert table["pve_volume_ml"].sum() == pytest.approx(inside.sum() * 3.0 / 1000)


def test_pve_with_hard_em_is_refused(scan_files, capsys):
    done = run_in_process(capsys, scan_files / "scan.nii.gz", "--out",
                          scan_files / "labels.nii.gz", "--method", "hard", "--pve",
                          scan_files / "fast")
    assert done.returncode == 2
    assert "--pve needs --method soft" in done.stderr


def test_the_lesion_options_round_trip_a_scan_with_a_lesion(tmp_path):
    """``--lesions`` and ``--lesion-labels``: the same table and labels as ``find_lesions``,
    the labels with the scan's affine; the implanted lesion is the one row."""
    data, mask, _ = three_tissue_volume()
    data, truth = phantoms.implant_lesion(data, (7, 8, 6), (3.0, 3.0, 3.0), intensity=5.0,
                                          texture_sd=0.2, mask=mask.astype(bool),
                                          affine=AFFINE)
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    csv, labels_path = tmp_path / "lesions.csv", tmp_path / "lesions.nii.gz"
    done = run_command(tmp_path / "scan.nii.gz", "--mask", tmp_path / "mask.nii.gz",
                       "--out", tmp_path / "labels.nii.gz", "--lesions", csv,
                       "--lesion-labels", labels_path, "--min-lesion-ml", 0.01)
    assert done.returncode == 0, done.stderr
    assert "1 lesion(s) of at least 0.01 mL" in done.stderr and "[5/5] done" in done.stderr
    written = nib.load(labels_path)
    np.testing.assert_allclose(written.affine, AFFINE)
    scan = np.asarray(nib.load(tmp_path / "scan.nii.gz").dataobj)
    expected_table, expected_labels = lesions.find_lesions(
        scan, mask.astype(bool), affine=AFFINE, min_volume_ml=0.01)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected_labels)
    table = pd.read_csv(csv, index_col="lesion")
    pd.testing.assert_frame_equal(table, expected_table, check_index_type=False)
    assert len(table) == 1
    assert label_maps.dice(truth.astype(int), (expected_labels == 1).astype(int))[1] > 0.9


def test_the_lesion_options_refuse_bad_values(scan_files, capsys):
    scan, out = scan_files / "scan.nii.gz", scan_files / "labels.nii.gz"
    for extra, message in ((("--lesion-labels", scan_files / "l.png"), "l.png: the lesion"),
                           (("--lesions", scan_files / "l.csv", "--min-lesion-ml", "-1"),
                            "--min-lesion-ml must be a finite number > 0")):
        done = run_in_process(capsys, scan, "--out", out, *extra)
        assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
        assert not out.exists()


def test_three_tissue_reaches_the_fractions_and_needs_pve(tmp_path, scan_files):
    data, mask, _ = tiled_volume()
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    done = run_command(tmp_path / "scan.nii.gz", "--mask", tmp_path / "mask.nii.gz",
                       "--out", tmp_path / "labels.nii.gz", "--pve", tmp_path / "fast",
                       "--three-tissue", "0")
    assert done.returncode == 0, done.stderr
    inside = mask == 1
    _, fit = segmentation.segment_image(data.astype(np.float32), inside, 3,
                                        spacing=(2.0, 1.0, 1.5), partial_volume=True,
                                        three_tissue=0.0)
    written = np.stack([nib.load(tmp_path / f"fast_pve_{k}.nii.gz").get_fdata()[inside]
                        for k in range(3)])
    np.testing.assert_allclose(written, fit.fractions, atol=1e-6)
    refused = run_command(scan_files / "scan.nii.gz", "--out", scan_files / "labels.nii.gz",
                          "--three-tissue", "0.1")
    assert refused.returncode == 2 and "--three-tissue is the partial-volume model's prior" \
        in refused.stderr


def test_outputs_that_cannot_be_written_stop_the_command_before_the_fit(scan_files, capsys):
    """A missing or unusable output folder is reported in one line naming the file, before the
    scan is read or fitted (it once came after the whole fit, as an OSError's text)."""
    d = scan_files
    scan, out = d / "scan.nii.gz", d / "labels.nii.gz"
    (d / "a_file").write_text("")
    (d / "folder.nii.gz").mkdir()
    cases = [
        (("--out", d / "nowhere" / "labels.nii.gz"),
         f"labels.nii.gz: the folder {d / 'nowhere'} does not exist"),
        (("--out", d / "a_file" / "labels.nii.gz"), f"the folder {d / 'a_file'} is a file, not a folder"),
        (("--out", d / "folder.nii.gz"), "folder.nii.gz: is a folder, not a file name"),
        (("--out", out, "--csv", d / "nowhere" / "stats.csv"), "stats.csv: the folder"),
        (("--out", out, "--pve", d / "nowhere" / "fast"), "fast_pve_0.nii.gz: the folder"),
        (("--out", out, "--bias", "--pve", d / "nowhere" / "fast"),
         "fast_bias.nii.gz: the folder"),
        (("--out", out, "--lesions", d / "nowhere" / "l.csv"), "l.csv: the folder"),
        (("--out", out, "--lesion-labels", d / "nowhere" / "l.nii.gz"), "l.nii.gz: the folder"),
        (("--out", out, "--seed", -1), "--seed must be >= 0, got -1"),
    ]
    for args, message in cases:
        done = run_in_process(capsys, scan, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            done.stderr
        assert not out.exists()
