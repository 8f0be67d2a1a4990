"""Tests of ``data/make_images.py``: the seeded generator reproduces the committed scans byte for
byte, and they match their specification in ``data/truth.json``."""

import importlib.util
import json
from pathlib import Path

import numpy as np

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
