"""Tests of ``emlab.report.animation``: the frames show what the EM runs' histories hold."""

import base64
import gc
import io
import re
import warnings

import matplotlib
import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import cdist
from synthetic import mixture

import em_helpers as em
from emlab.report import animation, plotting

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.colors import to_rgba  # noqa: E402


def discard(anim):
    """Close an animation that a test inspected without rendering it; matplotlib would warn,
    whenever it gets collected, that it was never rendered: intended here."""
    plt.close(anim.figure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        anim.animation = None
        gc.collect()


@pytest.fixture(scope="module")
def runs():
    X = mixture(seed=3, n=120)
    start = X[np.argsort(X[:, 0])[:3]]  # the three leftmost points: a poor start, so EM moves
    hard = em.run_em(X, 3, method="hard", init=start, max_iter=100)
    soft = em.run_em(X, 3, method="soft", init=start, max_iter=200)
    return X, hard, soft


@pytest.mark.parametrize(("n_entries", "max_frames"), [(1, 5), (12, 25), (25, 25), (88, 20),
                                                       (1000, 7), (26, 25)])
def test_frame_schedule_keeps_the_ends_and_at_most_max_frames(n_entries, max_frames):
    schedule = np.asarray(animation.frame_schedule(n_entries, max_frames))
    assert len(schedule) == min(n_entries, max_frames)
    assert schedule[0] == 0 and schedule[-1] == n_entries - 1
    assert (np.diff(schedule) > 0).all()
    if n_entries > max_frames:  # dense at the start, where EM moves most
        assert schedule[1] - schedule[0] <= schedule[-1] - schedule[-2]


@pytest.mark.parametrize(("args", "message"), [((0, 5), "n_entries"), ((10, 1), "max_frames")])
def test_frame_schedule_rejects_bad_counts(args, message):
    with pytest.raises(ValueError, match=message):
        animation.frame_schedule(*args)


def test_history_labels_are_each_entrys_e_step(runs):
    X, hard, soft = runs
    # hard: the nearest mean, checked against scipy's distances
    for entry in hard.history:
        np.testing.assert_array_equal(animation.history_labels(X, entry, "hard"),
                                      cdist(X, entry["means"]).argmin(axis=1))
    # the last entry's labels are the run's own final labels, for both methods
    np.testing.assert_array_equal(animation.history_labels(X, hard.history[-1], "hard"),
                                  hard.labels)
    np.testing.assert_array_equal(animation.history_labels(X, soft.history[-1], "soft"),
                                  soft.labels)
    with pytest.raises(ValueError, match="method"):
        animation.history_labels(X, soft.history[0], "fuzzy")


def test_each_frame_draws_its_entry_and_leaves_the_inputs_alone(runs):
    X, hard, soft = runs
    X_before = X.copy()
    means_before = [h["means"].copy() for h in soft.history]
    anim = animation.em_animation(X, [hard, soft], titles=["hard", "soft"], max_frames=6)
    try:
        assert len(anim.schedule) == 6 and anim.schedule[-1] == len(soft.history) - 1
        hard_panel, soft_panel = anim.panels
        for t in (0, 3, len(soft.history) - 1):
            shown = soft_panel.draw(t)
            entry = soft.history[t]
            labels = animation.history_labels(X, entry, "soft")
            colours = soft_panel.points.get_facecolors()
            expected = [to_rgba(plotting.CLASS_COLORS[k]) for k in labels]
            np.testing.assert_allclose(colours, expected)
            np.testing.assert_allclose(soft_panel.means.get_offsets(), entry["means"])
            for k, ellipse in enumerate(soft_panel.ellipses):
                target = plotting.covariance_ellipse(entry["means"][k], entry["covariances"][k], 2)
                assert ellipse.width == pytest.approx(target.width)
                assert ellipse.height == pytest.approx(target.height)
                np.testing.assert_allclose(ellipse.center, entry["means"][k])
            x, y = soft_panel.line.get_data()
            np.testing.assert_array_equal(x, np.arange(t + 1))
            np.testing.assert_allclose(y, soft.objective_trace[:t + 1])
            assert shown == t and f"iteration {t} of {len(soft.history) - 1}" in \
                soft_panel.ax.get_title()
        # a run that stopped earlier stays at its last entry
        assert hard_panel.draw(10 ** 6) == len(hard.history) - 1
    finally:
        discard(anim)
    np.testing.assert_array_equal(X, X_before)
    for h, before in zip(soft.history, means_before):
        np.testing.assert_array_equal(h["means"], before)


def test_html_embeds_every_frame_and_closes_the_figure(runs):
    X, hard, soft = runs
    plt.close("all")
    html = animation.em_animation_html(X, [hard, soft], max_frames=4, figsize=(4, 3), dpi=30)
    assert plt.get_fignums() == []  # no static copy left to be shown under the player
    frames = re.findall(r'frames\[(\d+)\] = "data:image/jpeg;base64,([^"]+)"', html)
    assert [int(i) for i, _ in frames] == [0, 1, 2, 3]
    assert Image.open(io.BytesIO(base64.b64decode(frames[-1][1]))).size == (120, 90)
    assert "<script" in html and "http" not in html  # nothing to fetch: plays offline
    assert ".fa-play:before" in html  # the buttons' icons, without Font Awesome


def test_html_refuses_to_drop_frames_silently(runs):
    X, hard, _ = runs
    anim = animation.em_animation(X, [hard], max_frames=3, figsize=(4, 3), dpi=30)
    with plt.rc_context({"animation.embed_limit": 1e-6}), pytest.raises(ValueError,
                                                                        match="embed_limit"):
        animation.animation_html(anim, frame_format="png")
    assert plt.get_fignums() == []
    unrendered = animation.em_animation(X, [hard], max_frames=2)
    with pytest.raises(ValueError, match="frame_format"):
        animation.animation_html(unrendered, "gif")
    assert plt.get_fignums() == []
    discard(unrendered)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda X, r: (X[:, :1], r, None), "2 columns"),
        (lambda X, r: (X, [], None), "at least one"),
        (lambda X, r: (X[:-1], r, None), "fitted to"),
        (lambda X, r: (X, r, ["only one title"]), "titles"),
        (lambda X, r: (X, ["run"], None), r"results\[0\] must be an EMResult"),
        (lambda X, r: (X, None, None), "results must be a sequence of EMResult"),
        (lambda X, r: (X, r[0], None), "results must be a sequence of EMResult"),
    ],
)
def test_bad_inputs_are_named(runs, change, message):
    X, hard, soft = runs
    args = change(X, [hard, soft])
    with pytest.raises(ValueError, match=message):
        animation.em_animation(args[0], args[1], titles=args[2])
    plt.close("all")


def test_offline_player_replaces_only_the_cdn_stylesheet():
    html = ('<link rel="stylesheet"\nhref="https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/'
            'font-awesome.min.css">\n<script>var x = 1;</script>')
    out = animation.offline_player(html)
    assert out == animation.ICON_CSS + "\n<script>var x = 1;</script>"
    with pytest.raises(ValueError, match="Font Awesome"):
        animation.offline_player("<script>var x = 1;</script>")


def test_history_labels_and_animation_html_name_what_they_were_given(runs):
    X, hard, _ = runs
    with pytest.raises(ValueError, match="entry must be a history entry .* covariances"):
        animation.history_labels(X, {"means": hard.means}, "soft")
    with pytest.raises(ValueError, match="entry must be a history entry"):
        animation.history_labels(X, "entry", "hard")
    with pytest.raises(ValueError, match="em_anim must be an EMAnimation"):
        animation.animation_html("player")
