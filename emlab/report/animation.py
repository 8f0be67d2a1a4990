"""EM runs as animations: the points recoloured, means and 2σ ellipses moving, the objective
growing, iteration by iteration, from the ``history`` that ``run_em`` records.

- ``frame_schedule``: which history entries become frames (all of a short run, a geometric
  selection of a long one);
- ``history_labels``: the assignment under the parameters of one history entry (the E-step of
  that entry, recomputed with ``em_helpers.e_step`` / ``e_step_soft``);
- ``em_animation``: a matplotlib ``FuncAnimation`` of several runs side by side;
- ``animation_html``: the animation as self-contained HTML and JavaScript (``to_jshtml``: the
  frames are image data URIs inside the page, and ``offline_player`` replaces the one stylesheet
  it loads from a CDN, so it plays offline; no ffmpeg needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from em_helpers import EMResult, e_step, e_step_soft
from emlab.report.plotting import CLASS_COLORS, covariance_ellipse
from emlab.engine.validation import check_int, check_points

# matplotlib's player draws its buttons with Font Awesome icons loaded from a CDN; offline the
# buttons would be blank. These glyphs (in every common font) stand in for the icons.
ICON_CSS = """<style>
.animation .fa { font-style: normal; font-family: sans-serif; }
.animation .fa-flip-horizontal { display: inline-block; transform: scaleX(-1); }
.animation .fa-minus:before { content: "\\2212"; }
.animation .fa-plus:before { content: "+"; }
.animation .fa-play:before { content: "\\25B6"; }
.animation .fa-pause:before { content: "||"; }
.animation .fa-step-backward:before { content: "|\\25C0"; }
.animation .fa-step-forward:before { content: "\\25B6|"; }
.animation .fa-fast-backward:before { content: "|\\25C0\\25C0"; }
.animation .fa-fast-forward:before { content: "\\25B6\\25B6|"; }
</style>
"""
CDN_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>", re.S)

OBJECTIVE_LABELS = {"hard": "sum of squares $J$", "soft": r"log-likelihood $\ell$"}


def frame_schedule(n_entries, max_frames=25):
    """History indices to draw: all of them if there are at most `max_frames`, otherwise
    `max_frames` indices spaced geometrically (EM moves most in its first iterations).

    Parameters
    ----------
    n_entries : int
        Length of the longest ``history`` (``n_iter + 1``), at least 1.
    max_frames : int, default 25
        At least 2.

    Returns
    -------
    ndarray of int, shape (n_frames,)
        Strictly increasing, starting at 0 and ending at ``n_entries - 1``;
        ``n_frames = min(n_entries, max_frames)``.
    """
    check_int(n_entries, "n_entries", minimum=1)
    check_int(max_frames, "max_frames", minimum=2)
    if n_entries <= max_frames:
        return np.arange(n_entries)
    # the coarsest geometric grid over 1..n_entries with max_frames distinct integers; rounding
    # merges points early on, so grow the grid until enough are left (at n_entries points
    # every integer is hit, so this ends)
    n_points = max_frames
    while True:
        grid = np.unique(np.rint(np.geomspace(1, n_entries, n_points)).astype(int)) - 1
        if grid.size >= max_frames:
            return np.append(grid[:max_frames - 1], n_entries - 1)
        n_points += 1


def history_labels(X, entry, method):
    """The label of every point under the parameters of one ``history`` entry.

    Parameters
    ----------
    X : array-like of shape (N, d); ``NaN`` marks a missing cell
    entry : dict
        One element of ``EMResult.history`` (keys ``means``, ``covariances``, ``weights``).
    method : {"hard", "soft"}
        Hard: the nearest mean (``e_step``); soft: the largest responsibility (``e_step_soft``).

    Returns
    -------
    ndarray of int, shape (N,)
    """
    needed = ("means",) if method == "hard" else ("means", "covariances", "weights")
    if not isinstance(entry, dict) or not set(needed) <= set(entry):
        raise ValueError(f"entry must be a history entry (a dict with {', '.join(needed)}), "
                         f"got {type(entry).__name__}"
                         + (f" with {', '.join(entry)}" if isinstance(entry, dict) else ""))
    if method == "hard":
        R = e_step(X, entry["means"])
    elif method == "soft":
        R, _ = e_step_soft(X, entry["means"], entry["covariances"], entry["weights"])
    else:
        raise ValueError(f"method must be 'hard' or 'soft', got {method!r}")
    return np.argmax(R, axis=0)


def check_results(X, results, titles):
    """Validate the runs to animate; return (X copy, list of results, list of titles)."""
    X = check_points(X)
    if X.shape[1] != 2:
        raise ValueError(f"X must have 2 columns to be drawn in the plane, got {X.shape[1]}")
    if isinstance(results, (EMResult, str)) or not hasattr(results, "__iter__"):
        raise ValueError(f"results must be a sequence of EMResult, got "
                         f"{type(results).__name__}")
    results = list(results)
    if not results:
        raise ValueError("results must hold at least one EMResult")
    for i, result in enumerate(results):
        if not isinstance(result, EMResult):
            raise ValueError(f"results[{i}] must be an EMResult (run_em's result), got "
                             f"{type(result).__name__}")
        if result.resp.shape[1] != X.shape[0]:
            raise ValueError(f"results[{i}] was fitted to {result.resp.shape[1]} points, "
                             f"X has {X.shape[0]}")
        if result.method not in OBJECTIVE_LABELS or not result.history:
            raise ValueError(f"results[{i}] needs method 'hard' or 'soft' and a history")
    titles = [f"{r.method} EM" for r in results] if titles is None else list(titles)
    if len(titles) != len(results):
        raise ValueError(f"titles has {len(titles)} entries for {len(results)} results")
    return X, results, titles


class RunPanels:
    """The artists of one run: a scatter panel and its objective panel, updated per frame."""

    def __init__(self, ax_points, ax_objective, X, result, title, point_size):
        from matplotlib.ticker import MaxNLocator

        self.X, self.result, self.title = X, result, title
        self.complete = ~np.isnan(X).any(axis=1)
        self.colors = np.array([CLASS_COLORS[k % len(CLASS_COLORS)]
                                for k in range(result.means.shape[0])])
        self.ax = ax_points
        first = result.history[0]
        self.points = ax_points.scatter(*X[self.complete].T, s=point_size, alpha=1.0,
                                        edgecolors="none")
        self.means = ax_points.scatter(*first["means"].T, marker="X", s=110, c=self.colors,
                                       edgecolors="black", linewidths=1.0, zorder=3)
        self.ellipses = []
        for k in range(result.means.shape[0]):
            ellipse = covariance_ellipse(first["means"][k], first["covariances"][k], 2.0,
                                         fill=False, color=self.colors[k], lw=1.5, ls="--")
            self.ellipses.append(ax_points.add_patch(ellipse))
        ax_points.set(xlabel="$x_1$", ylabel="$x_2$")
        self.trace = result.objective_trace
        ax_objective.plot(self.trace, color="0.8", lw=1.5)
        (self.line,) = ax_objective.plot([], [], marker="o", ms=3, color="black")
        ax_objective.set(xlabel="iteration", ylabel=OBJECTIVE_LABELS[result.method],
                         title="objective so far (grey: the whole run)")
        # few ticks and no legend: every frame redraws them, and text is most of a frame's cost
        for ax in (ax_points, ax_objective):
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=ax is ax_objective))
            ax.yaxis.set_major_locator(MaxNLocator(5))

    def draw(self, t):
        """Show history entry ``t`` (the last one if the run stopped earlier); return it."""
        t = min(int(t), len(self.result.history) - 1)
        entry = self.result.history[t]
        labels = history_labels(self.X, entry, self.result.method)
        self.points.set_color(self.colors[labels[self.complete]])
        self.means.set_offsets(entry["means"])
        for k, ellipse in enumerate(self.ellipses):
            target = covariance_ellipse(entry["means"][k], entry["covariances"][k], 2.0)
            ellipse.set_center(target.center)
            ellipse.set_width(target.width)
            ellipse.set_height(target.height)
            ellipse.set_angle(target.angle)
        self.line.set_data(np.arange(t + 1), self.trace[:t + 1])
        self.ax.set_title(f"{self.title}: iteration {t} of {len(self.result.history) - 1}")
        return t


def em_animation(X, results, titles=None, max_frames=20, figsize=(9, 6), dpi=64,
                 interval=400, point_size=8):
    """Several EM runs on the same points, side by side, as a matplotlib animation.

    Each run gets a column: on top the points coloured by their assignment at that iteration
    (``history_labels``), the means (crosses) and 2σ ellipses; below, the objective so far over
    the whole run's curve (grey). Frame ``f`` shows history entry ``frame_schedule(...)[f]`` of every
    run (a run that has already stopped stays at its last entry). Rows with a missing
    coordinate are assigned but, having no place in the plane, not drawn.

    Parameters
    ----------
    X : array-like of shape (N, 2)
        The points the runs were fitted to (not modified).
    results : sequence of EMResult
        Fitted with ``run_em`` on `X`; their ``history`` is drawn.
    titles : sequence of str, optional
        One per run; default ``"<method> EM"``.
    max_frames : int, default 20
    figsize : (float, float); dpi : float
        Size of the figure, hence of every embedded frame (the defaults give 576 x 384 pixels).
    interval : int
        Milliseconds between frames.
    point_size : float

    Returns
    -------
    EMAnimation
        Its figure stays open; ``animation_html`` renders it and closes the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    X, results, titles = check_results(X, results, titles)
    schedule = frame_schedule(max(len(r.history) for r in results), max_frames)
    fig, axes = plt.subplots(2, len(results), figsize=figsize, dpi=dpi, squeeze=False,
                             height_ratios=(2.2, 1), layout="constrained")
    for ax in axes[0]:
        ax.sharex(axes[0, 0])
        ax.sharey(axes[0, 0])
    complete = X[~np.isnan(X).any(axis=1)]
    axes[0, 0].set(xlim=(complete[:, 0].min() - 1, complete[:, 0].max() + 1),
                   ylim=(complete[:, 1].min() - 1, complete[:, 1].max() + 1))
    panels = [RunPanels(axes[0, j], axes[1, j], X, result, title, point_size)
              for j, (result, title) in enumerate(zip(results, titles))]

    def update(frame):
        for panel in panels:
            panel.draw(schedule[frame])
        return []

    update(0)
    fig.canvas.draw()  # lay the panels out once, then keep them still: a constrained layout
    fig.set_layout_engine("none")  # redone per frame would cost most of the rendering time
    animation = FuncAnimation(fig, update, frames=len(schedule), interval=interval, blit=False)
    return EMAnimation(animation, fig, schedule, panels)


@dataclass
class EMAnimation:
    """What ``em_animation`` returns: the matplotlib animation, its figure, the history index
    of every frame (``schedule``) and the per-run artists (``panels``, one ``RunPanels`` each;
    ``panels[j].draw(t)`` shows history entry ``t`` of run ``j``)."""

    animation: object
    figure: object
    schedule: np.ndarray
    panels: list


def animation_html(em_anim, frame_format="jpeg"):
    """An ``EMAnimation`` as one HTML fragment (JavaScript player, frames embedded as data URIs);
    closes its figure, so that no static copy of it is shown as well.

    ``frame_format`` is matplotlib's ``animation.frame_format`` for this call: JPEG frames of
    these scatter plots are about 2.5 times smaller than PNG ones (about 50 kB against 120 kB at
    the default size), which keeps a notebook that stores the player light.

    Raises ValueError if matplotlib dropped frames because the page would exceed
    ``rcParams["animation.embed_limit"]`` (MB): the player would otherwise stop early silently.
    """
    import matplotlib.pyplot as plt

    if not isinstance(em_anim, EMAnimation):
        raise ValueError(f"em_anim must be an EMAnimation (em_animation's result), got "
                         f"{type(em_anim).__name__}")
    n_frames = len(em_anim.schedule)
    try:
        if frame_format not in ("png", "jpeg"):
            raise ValueError(f"frame_format must be 'png' or 'jpeg', got {frame_format!r}")
        with plt.rc_context({"animation.frame_format": frame_format}):
            html = em_anim.animation.to_jshtml()
    finally:
        plt.close(em_anim.figure)
    embedded = html.count(f'"data:image/{frame_format};base64,')
    if embedded < n_frames:
        limit = plt.rcParams["animation.embed_limit"]
        raise ValueError(f"only {embedded} of {n_frames} frames fit in animation.embed_limit = "
                         f"{limit} MB: lower dpi, figsize or max_frames")
    return offline_player(html)


def offline_player(html):
    """`html` from ``to_jshtml`` with its CDN stylesheet (Font Awesome, for the buttons' icons)
    replaced by ``ICON_CSS``, so that the player needs no network. Raises ValueError if the
    link is not there (a matplotlib version with another template)."""
    if not CDN_LINK.search(html):
        raise ValueError("html has no Font Awesome <link> to replace: not to_jshtml's output?")
    return CDN_LINK.sub(lambda _: ICON_CSS, html, count=1)


def em_animation_html(X, results, frame_format="jpeg", **kwargs):
    """``animation_html(em_animation(X, results, **kwargs), frame_format)``: the runs' player."""
    return animation_html(em_animation(X, results, **kwargs), frame_format)
