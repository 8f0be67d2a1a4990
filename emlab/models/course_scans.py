"""The course's two scans as a model sees them: loading, the generating truth, the fits.

- ``load_images`` (every scan of ``data/``, found next to the package whatever the working
  folder), ``load_truth`` (``data/truth.json``), ``true_parameters``;
- ``Parameters`` (means, covariances, weights) with ``as_parameters`` and ``class_name``, which
  ``emlab.models.bootstrap`` and ``emlab.report.tables`` share; ``matched_to_classes`` renumbers
  a fit's components after the true classes, for comparing it with the truth;
- ``fit_hard_and_soft`` (both EM variants from one start) and ``bayes_accuracy`` (the Bayes rule
  under given parameters);
- ``class_covariances`` (each true class's covariance, missing cells handled) and
  ``added_noise`` (the isotropic noise variance ``c`` in ``Sigma_2 - Sigma_1 ~ c I``, estimated
  from two scans alone, with a bootstrap standard error).

The files in ``data/`` are generated stand-ins for the course's (see ``docs/data.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from em_helpers import (align_to_truth, e_step_soft, label_mapping, load_image, m_step, one_hot,
                        run_em)
from emlab.engine.validation import (check_class_labels, check_covariances, check_int,
                                     check_means, check_points)

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
    if isinstance(names, str) or not hasattr(names, "__len__") or len(names) == 0:
        raise ValueError(f"names must be a non-empty sequence of file stems, got {names!r}")
    if data_dir is None:
        data_dir = _default_data_dir("load_images", "data_dir", "path/to/checkout/data")
    if not isinstance(data_dir, (str, PathLike)):
        raise ValueError(f"data_dir must be a str or path-like (the folder of the scans), got "
                         f"{type(data_dir).__name__}")
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
    if not isinstance(path, (str, PathLike)):
        raise ValueError(f"path must be a str or path-like (the truth.json file), got "
                         f"{type(path).__name__}")
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
    if not isinstance(truth, dict) or not {"means", "covariances"} <= set(truth):
        raise ValueError("truth must be the dict of load_truth (with keys 'means' and "
                         f"'covariances'), got {type(truth).__name__}")
    covariances = truth["covariances"]
    if not isinstance(image, str) or image not in covariances:
        raise ValueError(f"image must be one of {sorted(covariances)}, got {image!r}")
    means = check_means(truth["means"], len(truth["means"][0]), "truth['means']")
    K, d = means.shape
    covs = check_covariances(covariances[image], K, d, f"truth['covariances'][{image!r}]")
    return Parameters(means, covs, np.full(K, 1.0 / K))



def class_name(k, names):
    k = check_int(k, "k", minimum=0)
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
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold numeric arrays: {exc}") from None
    K = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or covs.shape != (K, means.shape[1], means.shape[1]) or \
            weights.shape != (K,):
        raise ValueError(f"{name}: inconsistent shapes means {means.shape}, covariances "
                         f"{covs.shape}, weights {weights.shape}; expected (K, d), (K, d, d), (K,)")
    if not (np.isfinite(means).all() and np.isfinite(covs).all() and np.isfinite(weights).all()):
        raise ValueError(f"{name} must be finite (its means, covariances and weights)")
    return Parameters(means, covs, weights)



def matched_to_classes(params, labels, y):
    """``params`` with its components renumbered so that component ``k`` is the one whose points
    (``labels``) overlap true class ``k`` most (Hungarian matching, ``label_mapping``).

    A mixture's numbering is arbitrary; this renaming is only for comparing estimates with the
    true classes (``align_to_truth`` does the same for a whole ``EMResult``).

    Parameters
    ----------
    params : EMResult, MStepResult or Parameters
    labels : array-like of shape (N,)
        The component of every point (e.g. ``R.argmax(axis=0)``).
    y : array-like of shape (N,)
        True classes.

    Returns
    -------
    Parameters
    """
    params = as_parameters(params, "params")
    K = len(params.weights)
    y = check_class_labels(y)
    mapping = label_mapping(y, check_class_labels(labels, len(y), "labels"))
    if mapping.size > K:
        raise ValueError(f"labels must be in 0..{K - 1} (params has {K} components), got "
                         f"{mapping.size - 1}")
    if mapping.size < K:  # components that own no point keep their order after the others
        mapping = np.concatenate([mapping, np.setdiff1d(np.arange(K), mapping)])
    order = np.argsort(mapping)
    return Parameters(params.means[order], params.covariances[order], params.weights[order])



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
    if isinstance(init, dict) and "means" not in init:
        raise ValueError(f"an init dict needs 'means' and may have 'covariances' and "
                         f"'weights'; got keys {sorted(init)}")
    if isinstance(init, str) or init is None:
        raise ValueError(f"init must be an array of means (K, d) or a dict with 'means', got "
                         f"{init!r}")
    means = init["means"] if isinstance(init, dict) else init
    n_components = check_means(means, X.shape[1], "init").shape[0]
    with threadpool_limits(limits=1, user_api="blas"):
        hard = run_em(X, n_components, method="hard", init=init, max_iter=max_iter, tol=tol)
        start = {"means": hard.means, "covariances": hard.covariances, "weights": hard.weights}
        soft = run_em(X, n_components, method="soft", init=start, max_iter=max_iter, tol=tol)
    if y is not None:
        y = check_class_labels(y, X.shape[0])
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
    y = check_class_labels(y, R.shape[1])
    return float(np.mean(np.argmax(R, axis=0) == y))



def class_covariances(X, y, n_components=None):
    """The covariance matrix of each true class, estimated from its own points.

    The M-step on the true (one-hot) partition with no covariance floor: for complete data the
    biased sample covariance of each class; a missing cell is replaced by its conditional
    expectation given the row's observed cell (under the class's available-case Gaussian) and
    its conditional variance is added, as ``m_step`` does.

    Parameters
    ----------
    X : array-like of shape (N, d)
        ``NaN`` marks a missing cell.
    y : array-like of shape (N,)
        True classes ``0 .. K-1``.
    n_components : int, optional
        ``K``; default ``max(y) + 1``.

    Returns
    -------
    ndarray of shape (K, d, d)
    """
    X = check_points(X)
    y = check_class_labels(y, X.shape[0])
    K = int(y.max()) + 1 if n_components is None else check_int(n_components, "n_components",
                                                                   minimum=1)
    counts = np.bincount(y, minlength=K)
    if counts.size > K or np.any(counts < 2):
        raise ValueError(f"every class 0..{K - 1} needs at least 2 points, got counts "
                         f"{counts.tolist()}")
    return np.asarray(m_step(X, one_hot(y, K), reg_covar=0.0).covariances)


@dataclass(frozen=True)
class NoiseEstimate:
    """The isotropic noise variance that turns one scan's class covariances into the other's.

    ``c`` is the least-squares fit of ``c I`` to the differences ``Sigma_2,k - Sigma_1,k`` over
    all classes (Frobenius norm): the mean of their diagonal entries. ``se`` and ``interval``
    (95 %, percentiles) come from ``n_boot`` bootstrap resamples, drawn within each class and
    independently in each scan (no pairing of rows between the scans is assumed).
    ``differences`` (K, d, d) holds the per-class differences and ``boot`` the resampled ``c``.
    """

    c: float
    se: float
    interval: tuple
    differences: np.ndarray
    boot: np.ndarray


def _isotropic_fit(differences):
    d = differences.shape[-1]
    return float(np.trace(differences, axis1=1, axis2=2).sum() / (len(differences) * d))


def added_noise(first, second, n_boot=1000, random_state=0):
    """Estimate, from two scans alone, the variance ``c`` of noise added to the second.

    If the second scan is the first plus independent noise ``N(0, c I)``, every class covariance
    grows by ``c I``: ``Sigma_2,k - Sigma_1,k = c I``. The class covariances come from each
    scan's own points and labels (``class_covariances``), so no generating parameter is used.

    Parameters
    ----------
    first, second : tuple (X, y)
        The two scans as returned by ``load_images`` (``NaN`` marks a missing cell), with the
        same classes.
    n_boot : int, default 1000
        Bootstrap resamples for the standard error and the interval.
    random_state : int, default 0

    Returns
    -------
    NoiseEstimate
    """
    n_boot = check_int(n_boot, "n_boot", minimum=2)
    random_state = check_int(random_state, "random_state", minimum=0)
    scans = []
    for name, scan in (("first", first), ("second", second)):
        if not isinstance(scan, (tuple, list)) or len(scan) != 2:
            raise ValueError(f"{name} must be a pair (X, y), got {type(scan).__name__}")
        X = check_points(scan[0], f"{name} X")
        scans.append((X, check_class_labels(scan[1], X.shape[0], f"{name} y")))
    K = max(int(np.max(y)) for _, y in scans) + 1
    covs = [class_covariances(X, y, K) for X, y in scans]
    if covs[0].shape != covs[1].shape:
        raise ValueError(f"the scans have different dimensions: {covs[0].shape} and "
                         f"{covs[1].shape}")
    differences = covs[1] - covs[0]
    rng = np.random.default_rng(random_state)
    members = [[np.flatnonzero(y == k) for k in range(K)] for _, y in scans]
    boot = np.empty(n_boot)
    for b in range(n_boot):
        resampled = []
        for (X, y), groups in zip(scans, members):
            rows = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
            resampled.append(class_covariances(X[rows], y[rows], K))
        boot[b] = _isotropic_fit(resampled[1] - resampled[0])
    low, high = np.percentile(boot, [2.5, 97.5])
    return NoiseEstimate(_isotropic_fit(differences), float(boot.std(ddof=1)),
                         (float(low), float(high)), differences, boot)
