"""The course's two scans as a model sees them: loading, the generating truth, the fits.

- ``load_images`` (every scan of ``data/``, found next to the package whatever the working
  folder), ``load_truth`` (``data/truth.json``), ``true_parameters``;
- ``Parameters`` (means, covariances, weights) with ``as_parameters`` and ``class_name``, which
  ``emlab.models.bootstrap`` and ``emlab.report.tables`` share;
- ``fit_hard_and_soft`` (both EM variants from one start) and ``bayes_accuracy`` (the Bayes rule
  under given parameters).

The files in ``data/`` are generated stand-ins for the course's (see ``docs/data.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from em_helpers import align_to_truth, e_step_soft, load_image, run_em
from emlab.engine.validation import check_covariances, check_means, check_points

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
# ^ The repository's data/ folder, found from this file rather than the working folder. It is
# there in a checkout and in an editable install; `pip install .` copies the package but not
# data/, and then the functions below ask for an explicit folder.


def _default_data_dir(function, argument, example):
    """``DATA_DIR``, or a FileNotFoundError that says how to pass the folder to `function`."""
    if not (DATA_DIR / "make_images.py").is_file():  # the repository's data/ has its generator
        raise FileNotFoundError(
            f"{DATA_DIR}: not the repository's data folder (a non-editable install does not "
            f"copy data/ next to the package). Pass the folder of the scans to {function}, "
            f"e.g. {function}({argument}={example!r}), or install the checkout in editable mode "
            "(pip install -e .)")
    return DATA_DIR



@dataclass(frozen=True)
class Parameters:
    """Mixture parameters (or their standard errors): ``means`` (K, d), ``covariances``
    (K, d, d), ``weights`` (K,)."""

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray



def load_images(names=("Image1", "Image2"), data_dir=None, n_components=3):
    """Load several scans with ``load_image``.

    Parameters
    ----------
    names : sequence of str, default ("Image1", "Image2")
        File stems: ``<data_dir>/<name>.csv``.
    data_dir : str or path-like, optional
        Default: the repository's ``data`` folder (``DATA_DIR``), whatever the working folder;
        required when the package is installed without it (``pip install .``).
    n_components : int, default 3

    Returns
    -------
    dict
        ``name -> (X, y)``, in the order of ``names``; ``X`` (N, 2) with ``NaN`` for missing
        cells, ``y`` (N,) the true classes.
    """
    if isinstance(names, str) or len(names) == 0:
        raise ValueError(f"names must be a non-empty sequence of file stems, got {names!r}")
    if data_dir is None:
        data_dir = _default_data_dir("load_images", "data_dir", "path/to/checkout/data")
    data_dir = Path(data_dir)
    return {name: load_image(data_dir / f"{name}.csv", n_components) for name in names}



def load_truth(path=None):
    """Read ``truth.json``: the generating parameters of the scans.

    Parameters
    ----------
    path : str or path-like, optional
        Default: ``truth.json`` in the repository's ``data`` folder (``DATA_DIR``); required
        when the package is installed without it (``pip install .``).

    Returns
    -------
    dict
        The JSON record; it has at least ``class_names``, ``means`` (K x d) and
        ``covariances`` (image name -> K x d x d).
    """
    import json

    if path is None:
        path = _default_data_dir("load_truth", "path", "path/to/checkout/data/truth.json")
        path = path / "truth.json"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected the truth.json record)")
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from None
    missing = [key for key in ("class_names", "means", "covariances") if key not in truth]
    if not isinstance(truth, dict) or missing:
        raise ValueError(f"{path}: missing keys {missing}; expected class_names, means and "
                         "covariances (one entry per image)")
    return truth



def true_parameters(truth, image):
    """The generating parameters of one scan as arrays.

    Parameters
    ----------
    truth : dict
        As returned by ``load_truth``.
    image : str
        A key of ``truth["covariances"]``, e.g. ``"Image1"``.

    Returns
    -------
    Parameters
        ``means`` (K, d), ``covariances`` (K, d, d) and ``weights`` (K,): every class has the
        same number of points, so each weight is ``1 / K``.
    """
    covariances = truth["covariances"]
    if image not in covariances:
        raise ValueError(f"image must be one of {sorted(covariances)}, got {image!r}")
    means = check_means(truth["means"], len(truth["means"][0]), "truth['means']")
    K, d = means.shape
    covs = check_covariances(covariances[image], K, d, f"truth['covariances'][{image!r}]")
    return Parameters(means, covs, np.full(K, 1.0 / K))



def class_name(k, names):
    return names[k] if k < len(names) else f"class {k}"



def as_parameters(params, name):
    """Read means, covariances and weights from any object that has them as attributes."""
    try:
        means = np.asarray(params.means, dtype=float)
        covs = np.asarray(params.covariances, dtype=float)
        weights = np.asarray(params.weights, dtype=float)
    except AttributeError:
        raise ValueError(f"{name} must have means, covariances and weights attributes "
                         f"(an EMResult, MStepResult or Parameters), got {type(params).__name__}"
                         ) from None
    K = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or covs.shape != (K, means.shape[1], means.shape[1]) or \
            weights.shape != (K,):
        raise ValueError(f"{name}: inconsistent shapes means {means.shape}, covariances "
                         f"{covs.shape}, weights {weights.shape}; expected (K, d), (K, d, d), (K,)")
    return Parameters(means, covs, weights)



def fit_hard_and_soft(X, init, y=None, max_iter=500, tol=1e-6):
    """Hard EM (the statement's algorithm) from ``init``, then soft EM from the hard fit.

    Starting the full Gaussian mixture from the converged hard (k-means) solution is the usual
    fixed start (scikit-learn's ``GaussianMixture`` does the same by default). BLAS is limited
    to one thread meanwhile: on these tiny problems extra threads only add overhead.

    Parameters
    ----------
    X : array-like of shape (N, d)
    init : array of shape (K, d) or dict
        Start of the hard run (see ``run_em``).
    y : array-like of shape (N,), optional
        True classes; when given both fits are aligned to them (``align_to_truth``).
    max_iter, tol
        Passed to ``run_em``.

    Returns
    -------
    dict
        ``{"hard": EMResult, "soft": EMResult}``.
    """
    from threadpoolctl import threadpool_limits

    X = check_points(X)
    n_components = len(init["means"]) if isinstance(init, dict) else len(np.asarray(init))
    with threadpool_limits(limits=1, user_api="blas"):
        hard = run_em(X, n_components, method="hard", init=init, max_iter=max_iter, tol=tol)
        start = {"means": hard.means, "covariances": hard.covariances, "weights": hard.weights}
        soft = run_em(X, n_components, method="soft", init=start, max_iter=max_iter, tol=tol)
    if y is not None:
        hard, soft = align_to_truth(hard, y), align_to_truth(soft, y)
    return {"hard": hard, "soft": soft}



def bayes_accuracy(X, y, params):
    """Share of points that the Bayes rule with the given (true) parameters classifies right.

    The rule assigns ``x`` to ``argmax_k pi_k N(x; mu_k, Sigma_k)`` (missing cells marginalised
    out). With the generating parameters it is the best any classifier can do on average, so its
    errors measure how much the classes overlap, whatever the fitting method.

    Parameters
    ----------
    X : array-like of shape (N, d)
    y : array-like of shape (N,)
        True classes, numbered like the components of ``params``.
    params : Parameters
        E.g. ``true_parameters(truth, image)``.

    Returns
    -------
    float
    """
    params = as_parameters(params, "params")
    R, _ = e_step_soft(X, params.means, params.covariances, params.weights)
    y = np.asarray(y)
    if y.shape != (R.shape[1],):
        raise ValueError(f"y must have shape ({R.shape[1]},), got {y.shape}")
    return float(np.mean(np.argmax(R, axis=0) == y))
