"""Running several segmenters side by side on one image: ours (with and without the prior)
and dipy's, with their wall times.

- ``wall_time``: the wall time of one call;
- ``segment_with_methods``: one label image per named method, every prior of ours continuing
  from one plain fit of the same image (so that the plain fit is computed once), with dipy's
  model (``DIPY_MODEL``: no class proportions, one variance per class) so that ours and dipy's
  differ only in the approximation (mean field against ICM), not in the model.
"""

from __future__ import annotations

import time

from emlab.imaging.dipy_hmrf import segment_dipy_hmrf
from emlab.imaging.segmentation import DIPY_MODEL, segment_image
from emlab.engine.validation import check_int

METHOD_KINDS = ("ours", "dipy")


def wall_time(run):
    """Wall time of one call of ``run()`` (no arguments), in seconds (``time.perf_counter``)."""
    if not callable(run):
        raise ValueError(f"run must be a callable taking no arguments, got {type(run).__name__}")
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _check_methods(methods):
    if not isinstance(methods, dict) or not methods:
        raise ValueError("methods must be a non-empty dict {name: (kind, beta)}")
    for name, spec in methods.items():
        if not (isinstance(spec, tuple) and len(spec) == 2 and spec[0] in METHOD_KINDS):
            raise ValueError(f"methods[{name!r}] must be a pair (kind, beta) with kind in "
                             f"{METHOD_KINDS}, got {spec!r}")
        if isinstance(spec[1], bool) or not isinstance(spec[1], (int, float)) or spec[1] < 0:
            raise ValueError(f"methods[{name!r}]: beta must be a number >= 0, got {spec[1]!r}")


def segment_with_methods(image, mask, methods, n_components=3, random_state=0):
    """Segment ``image`` inside ``mask`` with every method of ``methods``.

    Parameters
    ----------
    image : array-like of shape (H, W)
    mask : array-like of bool, shape (H, W)
    methods : dict {name: (kind, beta)}
        ``kind`` is ``"ours"`` (soft EM; with ``beta > 0`` the mean-field Potts prior with
        dipy's model, ``DIPY_MODEL``, started from the plain fit, which is computed once for
        all of them) or ``"dipy"``
        (``segment_dipy_hmrf`` with that beta).
    n_components : int, default 3
    random_state : int, default 0
        The seed of the plain fit and of dipy's runs.

    Returns
    -------
    dict {name: (labels, n_iter)}
        The label image (``segment_image``'s format) and the number of iterations (for a prior
        of ours: the iterations under the prior, after the plain fit).
    """
    _check_methods(methods)
    K = check_int(n_components, "n_components", minimum=1)
    plain, plain_fit = segment_image(image, mask, K, "soft", random_state=random_state)
    out = {}
    for name, (kind, beta) in methods.items():
        if kind == "dipy":
            labels, info = segment_dipy_hmrf(image, mask, K, beta=beta, random_state=random_state)
            out[name] = labels, info["n_iter"]
        elif beta == 0:
            out[name] = plain, plain_fit.n_iter
        else:
            labels, fit = segment_image(image, mask, K, "soft", beta=beta, start=plain_fit,
                                        **DIPY_MODEL)
            out[name] = labels, fit.n_iter
    return out
