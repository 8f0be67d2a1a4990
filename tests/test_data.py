"""The course data: the generator reproduces the committed files, and the loader reads every
plausible layout of a scan (or refuses it with a message that names the problem)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import em_helpers as em

DATA = Path(__file__).resolve().parents[1] / "data"


def _generator():
    spec = importlib.util.spec_from_file_location("make_images", DATA / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_committed_files_byte_for_byte(tmp_path):
    for path in _generator().write_images(tmp_path):
        assert path.read_bytes() == (DATA / path.name).read_bytes(), path.name


def test_committed_data_matches_the_specification():
    truth = json.loads((DATA / "truth.json").read_text())
    X1, y1 = em.load_image(DATA / "Image1.csv")
    X2, y2 = em.load_image(DATA / "Image2.csv")
    full, _ = em.load_image(DATA / "Image2_complete.csv")
    assert X1.shape == X2.shape == (600, 2)
    np.testing.assert_array_equal(y1, np.repeat([0, 1, 2], 200))
    assert not np.isnan(X1).any() and not np.isnan(full).any()
    missing = np.isnan(X2)
    assert missing.sum() == 48 and not missing.all(axis=1).any()
    assert sorted(map(list, np.argwhere(missing))) == truth["missing_cells_image2"]
    np.testing.assert_array_equal(X2[~missing], full[~missing])
    cov1 = np.array(truth["covariances"]["Image1"])
    np.testing.assert_allclose(truth["covariances"]["Image2"], cov1 + 1.2 * np.eye(2))
    # the samples look like their generating classes (loose: 200 points per class)
    for k in range(3):
        block = full[y2 == k]
        np.testing.assert_allclose(block.mean(axis=0), truth["means"][k], atol=0.35)
        np.testing.assert_allclose(np.cov(block.T), truth["covariances"]["Image2"][k], atol=0.5)


# ------------------------------------------------------------------ the loader's layouts

POINTS = np.array([[1.5, 2.0], [3.25, np.nan], [-1.0, 4.0], [np.nan, 0.5], [2.0, 2.0],
                   [0.0, 1.0]])


def _fmt(v):
    return "" if np.isnan(v) else repr(float(v))


def _write(tmp_path, text, name="scan.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


LAYOUTS = {
    "n_by_2_header": lambda P: "x1,x2\n" + "".join(f"{_fmt(a)},{_fmt(b)}\n" for a, b in P),
    "n_by_2_plain": lambda P: "".join(f"{_fmt(a)},{_fmt(b)}\n" for a, b in P),
    "n_by_2_index_header": lambda P: ",x1,x2\n" + "".join(
        f"{i},{_fmt(a)},{_fmt(b)}\n" for i, (a, b) in enumerate(P)),
    "n_by_2_index_from_1": lambda P: "".join(
        f"{i + 1},{_fmt(a)},{_fmt(b)}\n" for i, (a, b) in enumerate(P)),
    "two_by_n": lambda P: "\n".join(",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "two_by_n_row_names": lambda P: "\n".join(
        f"x{j + 1}," + ",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "two_by_n_index_row": lambda P: ",".join(str(i) for i in range(len(P))) + "\n" + "\n".join(
        ",".join(_fmt(v) for v in P[:, j]) for j in range(2)),
    "semicolons_nan_tokens": lambda P: "x1;x2\n" + "".join(
        f"{a};{b}\n".replace("nan", "NaN") for a, b in P),
    "tabs": lambda P: "".join(f"{_fmt(a)}\t{_fmt(b)}\n" for a, b in P),
    "spaces_complete_only": lambda P: "".join(
        f"{a} {b}\n" for a, b in np.nan_to_num(P, nan=7.0)),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loader_reads_every_plausible_layout(tmp_path, layout):
    expected = np.nan_to_num(POINTS, nan=7.0) if layout == "spaces_complete_only" else POINTS
    X, y = em.load_image(_write(tmp_path, LAYOUTS[layout](POINTS)), n_components=3)
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2, 2])


def test_loader_keeps_a_row_with_nothing_observed(tmp_path):
    X, y = em.load_image(_write(tmp_path, "x1,x2\n1,2\n,\n3,4\n5,6\n7,8\n9,1\n"))
    assert X.shape == (6, 2) and np.isnan(X[1]).all()


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("x1,x2\n", "no data rows"),
    ("x1,x2\n1,2\n3,abc\n5,6\n", "text 'abc' in a numeric cell"),
    ("1,2,3\n4,5,6\n7,8,9\n3,2,1\n", "expected 2 coordinates"),
    ("1,2\n3,4\n5,6\n7,8\n", "multiple of n_components=3"),
    ("1,\n2,\n3,\n", "coordinate 2 is missing in every row"),
    ("1,2\n3,inf\n5,6\n", "infinite value"),
    ("1,2\n3,4,5\n6,7\n", "different numbers of fields"),
])
def test_loader_refuses_bad_files_with_a_clear_message(tmp_path, text, message):
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=message) as info:
        em.load_image(path)
    assert "bad.csv" in str(info.value)


def test_loader_refuses_binary_and_missing_files(tmp_path):
    path = tmp_path / "scan.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ValueError, match="scan.csv"):
        em.load_image(path)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        em.load_image(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match="n_components"):
        em.load_image(DATA / "Image1.csv", n_components=0)


def test_loader_reads_two_by_n_with_index_row_and_row_names(tmp_path):
    text = "," + ",".join(str(i) for i in range(6)) + "\n" + "\n".join(
        f"x{j + 1}," + ",".join(_fmt(v) for v in POINTS[:, j]) for j in range(2))
    X, _ = em.load_image(_write(tmp_path, text))
    np.testing.assert_array_equal(X, POINTS)
