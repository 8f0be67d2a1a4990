"""Make the course's two scans: three 2-D Gaussians, 200 points each, in class order.

The course's original Image1.csv and Image2.csv are not available, so this seeded script writes
stand-ins with the same shape (600 rows, two coordinates, classes concatenated in order):

* ``Image1.csv``: the clean scan, drawn from the means and covariances in ``TRUTH`` below.
* ``Image2.csv``: a noisier scan of the *same* anatomy: every Image1 point plus independent
  acquisition noise N(0, 1.2 I), so each class covariance grows by 1.2 I; then 4 % of the cells
  (48 of 1200) are removed at random (left empty), never both cells of one row.
* ``Image2_complete.csv``: Image2 before the cells were removed (to score imputation).
* ``truth.json``: the generating parameters, the seed and the missing cells.

Running it again rewrites the four files byte for byte (a test checks this)::

    python data/make_images.py            # writes next to this script
    python data/make_images.py --out DIR  # writes into DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 1402  # the course ran in the 1401-02 academic year
N_PER_CLASS = 200
CLASS_NAMES = ["background", "normal tissue", "tumour"]
MEANS = [[2.0, 2.0], [7.0, 3.0], [4.5, 7.5]]
COVARIANCES_IMAGE1 = [
    [[0.60, 0.15], [0.15, 0.50]],
    [[1.00, -0.30], [-0.30, 0.80]],
    [[0.70, 0.25], [0.25, 1.10]],
]
NOISE_VARIANCE = 1.2  # Image2 = Image1 + N(0, NOISE_VARIANCE * I)
MISSING_FRACTION = 0.04  # of the 1200 cells of Image2
FLOAT_FORMAT = "%.6f"


def make_images(seed: int = SEED) -> dict:
    """Draw both scans; return the arrays, the missing mask and the truth record."""
    rng = np.random.default_rng(seed)
    clean = np.vstack([
        rng.multivariate_normal(mean, cov, size=N_PER_CLASS)
        for mean, cov in zip(MEANS, COVARIANCES_IMAGE1)
    ])
    noisy = clean + rng.normal(scale=np.sqrt(NOISE_VARIANCE), size=clean.shape)

    n_rows, n_cols = noisy.shape
    n_missing = round(MISSING_FRACTION * n_rows * n_cols)
    missing = np.zeros_like(noisy, dtype=bool)
    for cell in rng.permutation(n_rows * n_cols):  # cells in random order
        row, col = divmod(int(cell), n_cols)
        if missing[row].sum() < n_cols - 1:  # every row keeps one observed cell
            missing[row, col] = True
        if missing.sum() == n_missing:
            break
    with_gaps = np.where(missing, np.nan, noisy)

    cov2 = (np.array(COVARIANCES_IMAGE1) + NOISE_VARIANCE * np.eye(2)).round(10).tolist()
    truth = {
        "seed": seed,
        "n_per_class": N_PER_CLASS,
        "class_names": CLASS_NAMES,
        "means": MEANS,
        "covariances": {"Image1": COVARIANCES_IMAGE1, "Image2": cov2},
        "noise_variance_image2": NOISE_VARIANCE,
        "missing_fraction_image2": MISSING_FRACTION,
        "missing_cells_image2": [[int(r), int(c)] for r, c in np.argwhere(missing)],
    }
    return {"Image1": clean, "Image2": with_gaps, "Image2_complete": noisy,
            "missing": missing, "truth": truth}


def write_images(out_dir: Path, seed: int = SEED) -> list[Path]:
    """Write the three CSVs and truth.json into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = make_images(seed)
    paths = []
    for name in ("Image1", "Image2", "Image2_complete"):
        path = out_dir / f"{name}.csv"
        frame = pd.DataFrame(made[name], columns=["x1", "x2"])
        frame.to_csv(path, index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n")
        paths.append(path)
    path = out_dir / "truth.json"
    path.write_text(json.dumps(made["truth"], indent=1) + "\n")
    paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write into (default: this script's folder)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in write_images(args.out, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
