"""Benchmark our EM against scikit-learn (issue 7): time per iteration, peak memory, a plot.

Run ``make bench`` (or ``python benchmarks/bench_em.py``) from the repository root. It writes
``benchmarks/RESULTS.md`` and ``benchmarks/time_vs_n.png``; ``--quick`` is a smoke run on small
data that prints the table and writes nothing unless ``--out`` is given; ``--big`` adds
N = 4 000 000.

Method
------
* Data: three 2-D Gaussians in equal thirds (seeded), N points. The start is poor on purpose
  (three means below the data), so that no method converges within the measured iterations;
  every run checks that it did exactly the iterations asked for.
* Per-iteration time: the slope ``(t(n2) - t(n1)) / (n2 - n1)`` between two fits from the same
  start stopped after ``n1`` and ``n2`` iterations, so the set-up (validation, copies,
  initialisation) cancels. Per repeat the configurations run one after the other (interleaved),
  and the table reports the median over the repeats, of the times and of the per-repeat ratios.
* Compared: our hard EM with ``KMeans(algorithm="lloyd", init=<same means>, n_init=1, tol=0)``;
  our soft EM with ``GaussianMixture(covariance_type="full", <same means, precisions,
  weights>, tol=0)``; and one ``X.sum()`` pass, the memory-bandwidth floor. Before timing, the
  fits of each N are checked to give the same parameters as scikit-learn's.
* Threads: threadpoolctl limits BLAS and OpenMP to 1 thread, then leaves the default. One-thread
  times are CPU times (``time.process_time``), which a busy shared machine does not inflate;
  with the default thread count CPU time adds up the threads, so those rows use wall time.
* Peak memory: each configuration runs alone in a fresh subprocess at N = 10^6 (one thread);
  the peak is the rise of the resident set size (VmHWM, reset just before the fit) above its
  level once the data exist.
"""

from __future__ import annotations

import cProfile
import pstats
import time
import tracemalloc
import warnings
from pathlib import Path

import common  # benchmarks/common.py, the shared harness
import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

import em_helpers as em
from emlab.engine import fastpath

SEED = 0
N_COMPONENTS = 3
CENTRES = np.array([[0.0, 0.0], [1.5, 0.25], [0.5, 1.5]])
SCALES = np.array([[1.0, 0.6], [0.7, 1.2], [1.1, 0.8]])
START_MEANS = np.array([[-1.0, -1.0], [-0.5, -1.0], [-1.0, -0.5]])
ITERATIONS = {"hard": (2, 12), "soft": (2, 8)}  # (n1, n2) of the slope
REG_COVAR = 1e-6
CONFIGS = ("ours hard", "KMeans", "ours soft", "GaussianMixture", "X.sum")
SKLEARN_OF = {"ours hard": "KMeans", "ours soft": "GaussianMixture"}
MEMORY_N = 10 ** 6


# ------------------------------------------------------------------------------- data, fits

def make_data(n_points, seed=SEED):
    """Three anisotropic 2-D Gaussians in equal thirds (shuffled); (N, 2) float64."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, N_COMPONENTS, n_points)
    X = rng.standard_normal((n_points, 2))
    X *= SCALES[z]
    X += CENTRES[z]
    return X


def soft_start():
    """Means, covariances (identity) and weights (equal) of the soft start."""
    return {"means": START_MEANS.copy(), "covariances": np.stack([np.eye(2)] * N_COMPONENTS),
            "weights": np.full(N_COMPONENTS, 1.0 / N_COMPONENTS)}


def fit(config, X, n_iter):
    """Run one configuration for exactly ``n_iter`` iterations; return the fitted object."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0 / max_iter: every method warns it did not converge
        if config == "ours hard":
            return em.run_em(X, N_COMPONENTS, "hard", init=START_MEANS, max_iter=n_iter,
                             reg_covar=REG_COVAR)
        if config == "ours soft":
            return em.run_em(X, N_COMPONENTS, "soft", init=soft_start(), max_iter=n_iter, tol=0,
                             reg_covar=REG_COVAR)
        if config == "KMeans":
            return KMeans(N_COMPONENTS, init=START_MEANS, n_init=1, algorithm="lloyd", tol=0,
                          max_iter=n_iter).fit(X)
        if config == "GaussianMixture":
            start = soft_start()
            # every parameter is given, so the cheapest init_params: "kmeans" would run KMeans
            return GaussianMixture(N_COMPONENTS, covariance_type="full", tol=0, max_iter=n_iter,
                                   reg_covar=REG_COVAR, means_init=start["means"],
                                   weights_init=start["weights"],
                                   precisions_init=np.linalg.inv(start["covariances"]),
                                   init_params="random_from_data", random_state=SEED).fit(X)
    raise ValueError(f"unknown configuration {config!r}")


def n_iterations_done(config, model):
    return model.n_iter if config.startswith("ours") else model.n_iter_


def check_same_parameters(X, fitted):
    """Assert that ours and scikit-learn's agree after the same iterations from the same start."""
    hard, km = fitted["ours hard"], fitted["KMeans"]
    np.testing.assert_array_equal(hard.labels, km.labels_)
    np.testing.assert_allclose(hard.means, km.cluster_centers_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hard.objective, km.inertia_, rtol=1e-9)
    soft, gm = fitted["ours soft"], fitted["GaussianMixture"]
    np.testing.assert_allclose(soft.means, gm.means_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(soft.covariances, gm.covariances_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(soft.weights, gm.weights_, rtol=1e-8)
    np.testing.assert_allclose(soft.objective, gm.score(X) * len(X), rtol=1e-8)


# ---------------------------------------------------------------------------------- timing

def clock(threads):
    """The clock of a thread setting: CPU time with one thread, wall time otherwise."""
    return time.process_time if threads == "1" else time.perf_counter


def time_sum(X, timer, calls=20):
    """Seconds per ``X.sum()`` (one pass over the data), averaged over ``calls`` calls."""
    start = timer()
    for _ in range(calls):
        X.sum()
    return (timer() - start) / calls


def time_fit(config, X, n_iter, timer, calls=1):
    """Seconds per fit of ``n_iter`` iterations, averaged over ``calls`` fits; the last model."""
    start = timer()
    for _ in range(calls):
        model = fit(config, X, n_iter)
    elapsed = (timer() - start) / calls
    done = n_iterations_done(config, model)
    if done != n_iter:
        raise RuntimeError(f"{config} stopped after {done} iterations instead of {n_iter}: "
                           "the benchmark start must not converge")
    return elapsed, model


def per_iteration_times(X, threads, repeats):
    """Per-repeat seconds per iteration of every configuration: {config: [float, ...]}."""
    timer = clock(threads)
    calls = max(1, 3 * 10 ** 5 // len(X))  # small N: average several fits per measurement
    slopes = {config: [] for config in CONFIGS}
    fitted = {}
    for _ in range(repeats):
        for config in CONFIGS:
            if config == "X.sum":
                slopes[config].append(time_sum(X, timer))
                continue
            n1, n2 = ITERATIONS["hard" if config in ("ours hard", "KMeans") else "soft"]
            t1, _ = time_fit(config, X, n1, timer, calls)
            t2, fitted[config] = time_fit(config, X, n2, timer, calls)
            slopes[config].append((t2 - t1) / (n2 - n1))
    return slopes, fitted


# ------------------------------------------------------------------------------ whole fits

WHOLE_N = 10 ** 6
WHOLE_SOFT_ITER = 20
WHOLE_CONFIGS = ("ours hard", "KMeans", "ours hard, 1 iteration", "KMeans, 1 iteration",
                 "ours soft", "GaussianMixture")
# Per-iteration ratios at N = 10^6, one thread, in RESULTS.md before issue 17 (commit eeddf7a,
# a run at load average 1.1): another run, so a comparison within that run's ranges is noise
PREVIOUS_PER_ITERATION = {"ours hard / KMeans": (0.74, 0.23, 1.11),
                          "ours soft / GaussianMixture": (0.046, 0.03, 0.06)}


def whole_fit(config, X, start):
    """A whole fit from ``start`` (the k-means++ means run_em would draw), set-up included:
    hard EM and KMeans to convergence (or one iteration), soft EM and GaussianMixture for
    exactly ``WHOLE_SOFT_ITER`` iterations from the soft start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one iteration, tol=0: every method warns
        one = config.endswith("1 iteration")
        if config.startswith("ours hard"):
            return em.run_em(X, N_COMPONENTS, "hard", init=start, max_iter=1 if one else 1000,
                             reg_covar=REG_COVAR)
        if config.startswith("KMeans"):
            return KMeans(N_COMPONENTS, init=start, n_init=1, algorithm="lloyd", tol=0,
                          max_iter=1 if one else 1000).fit(X)
    return fit(config, X, WHOLE_SOFT_ITER)


def whole_fit_times(X, repeats):
    """{config: [CPU seconds of a whole fit, one per repeat]} (one thread, interleaved), after
    checking that ours and scikit-learn's fits agree (labels, iterations, parameters)."""
    start = em.initial_means(X, N_COMPONENTS, "kmeans++", random_state=SEED)
    with threadpool_limits(limits=1):
        fitted = {config: whole_fit(config, X, start) for config in WHOLE_CONFIGS}
        hard, km = fitted["ours hard"], fitted["KMeans"]
        assert hard.converged and hard.n_iter == km.n_iter_, (hard.n_iter, km.n_iter_)
        np.testing.assert_array_equal(hard.labels, km.labels_)
        np.testing.assert_allclose(hard.means, km.cluster_centers_, rtol=1e-9, atol=1e-12)
        soft, gm = fitted["ours soft"], fitted["GaussianMixture"]
        assert soft.n_iter == gm.n_iter_ == WHOLE_SOFT_ITER
        np.testing.assert_allclose(soft.means, gm.means_, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(soft.covariances, gm.covariances_, rtol=1e-8, atol=1e-12)
        times = {config: [] for config in WHOLE_CONFIGS}
        for _ in range(repeats):
            for config in WHOLE_CONFIGS:
                started = time.process_time()
                whole_fit(config, X, start)
                times[config].append(time.process_time() - started)
    return times, {"hard": hard.n_iter, "n": len(X)}


WHOLE_PAIRS = (("ours hard", "KMeans"), ("ours hard, 1 iteration", "KMeans, 1 iteration"),
               ("ours soft", "GaussianMixture"))


def whole_fit_table(times, iterations):
    lines = ["| fit (set-up included) | iterations | ours, ms | scikit-learn, ms | ours / theirs |",
             "|---|---:|---:|---:|---:|"]
    names = {"ours hard": "hard EM vs KMeans (lloyd), to convergence",
             "ours hard, 1 iteration": "hard EM vs KMeans (lloyd), one iteration",
             "ours soft": "soft EM vs GaussianMixture (full)"}
    counts = {"ours hard": iterations["hard"], "ours hard, 1 iteration": 1,
              "ours soft": WHOLE_SOFT_ITER}
    for ours, theirs in WHOLE_PAIRS:
        ratio = common.ratio_stats(times[ours], times[theirs])
        lines.append(f"| {names[ours]} | {counts[ours]} | {1e3 * np.median(times[ours]):.1f} | "
                     f"{1e3 * np.median(times[theirs]):.1f} | {_ratio(ratio)} |")
    return "\n".join(lines) + "\n"


def whole_fit_targets(times, rows, peaks):
    """(text, met) for issue 17's targets: whole fits, per-iteration ratios, hard-fit memory."""
    hard = common.ratio_stats(times["ours hard"], times["KMeans"])[0]
    soft = common.ratio_stats(times["ours soft"], times["GaussianMixture"])[0]
    out = [(f"whole hard fit <= 0.6 x KMeans (lloyd): {hard:.2f} x", hard <= 0.6),
           (f"whole soft fit ({WHOLE_SOFT_ITER} iterations) <= 0.08 x GaussianMixture: "
            f"{soft:.3f} x", soft <= 0.08)]
    row = next((r for r in rows if r["n"] == 10 ** 6 and r["threads"] == "1"), None)
    if row is not None:
        for key, (before, low, high) in PREVIOUS_PER_ITERATION.items():
            now = row["ratios"][key][0]
            out.append((f"per iteration {key} no worse than before issue 17 ({before:.3g} x, "
                        f"range {low:.3g}-{high:.3g}, in another run): {now:.3g} x (range "
                        f"{row['ratios'][key][1]:.3g}-{row['ratios'][key][2]:.3g})",
                        now <= before))
    if peaks and "ours hard" in peaks:
        ratio = peaks["ours hard"]["rss"] / peaks["KMeans"]["rss"]
        out.append((f"peak memory (RSS) of a hard fit <= 1.5 x KMeans': "
                    f"{peaks['ours hard']['rss']:.0f} vs {peaks['KMeans']['rss']:.0f} MiB "
                    f"({ratio:.2f} x)", ratio <= 1.5))
    return out


# ---------------------------------------------------------------------------------- memory

def memory_child(config, n_points):
    """Run in a fresh process: print the peaks (MiB) of one fit, as JSON.

    ``rss``: rise of the resident set size (pages actually touched); ``allocated``: peak of the
    bytes allocated (tracemalloc, which numpy reports to), from a second run of the same fit.
    """
    X = make_data(n_points)
    n_iter = ITERATIONS["hard" if config in ("ours hard", "KMeans") else "soft"][1]
    with threadpool_limits(limits=1):
        fit(config, X[:1000], 1)  # warm up: lazy imports and first-call allocations
        with common.PeakRSS() as rss:
            model = fit(config, X, n_iter)
        del model
        tracemalloc.start()
        fit(config, X, n_iter)
        allocated = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    common.print_child_result(config=config, rss=rss.rise, allocated=allocated)


def peak_memory(n_points):
    """{config: {"rss": MiB, "allocated": MiB}}, every configuration in its own subprocess."""
    peaks = {}
    for config in CONFIGS[:-1]:
        peaks[config] = common.run_memory_child(__file__, config, n_points)
    return peaks


# --------------------------------------------------------------------------------- profile

def _function_name(key):
    filename, _, name = key
    return name if filename == "~" else f"{Path(filename).stem}.{name}"


def _profile_fit(config, X, n_iter, repeats):
    """{function: (own seconds, calls)} of a fit, own seconds the median over ``repeats``."""
    runs = []
    for _ in range(repeats):
        profiler = cProfile.Profile(time.process_time)
        with threadpool_limits(limits=1):
            profiler.runcall(fit, config, X, n_iter)
        runs.append({_function_name(key): (value[2], value[1])
                     for key, value in pstats.Stats(profiler).stats.items()})
    return {name: (float(np.median([run.get(name, (0.0, 0))[0] for run in runs])), calls)
            for name, (_, calls) in runs[0].items()}


def profile_per_iteration(config, X, top=8, repeats=3):
    """cProfile own time per iteration of the ``top`` functions of a fit (one thread).

    Like the timing, a slope: the profile of the fit stopped after ``n1`` iterations is
    subtracted from the one stopped after ``n2`` (each the median of ``repeats`` runs), so the
    set-up is not counted; functions not called in every iteration (set-up noise) are left out.
    Returns ``[(name, ms per iteration, calls per iteration), ...]`` and the total ms per
    iteration.
    """
    n1, n2 = ITERATIONS["hard" if config in ("ours hard", "KMeans") else "soft"]
    own = [_profile_fit(config, X, n_iter, repeats) for n_iter in (n1, n2)]
    rows = []
    for name, (seconds, calls) in own[1].items():
        seconds0, calls0 = own[0].get(name, (0.0, 0))
        per_iteration = (calls - calls0) / (n2 - n1)
        if per_iteration >= 1:
            rows.append((name, 1e3 * max(seconds - seconds0, 0.0) / (n2 - n1), per_iteration))
    rows.sort(key=lambda row: -row[1])
    return rows[:top], sum(row[1] for row in rows)


def profile_table(rows, total):
    lines = ["| function (own time) | ms / iteration | share | calls / iteration |",
             "|---|---:|---:|---:|"]
    for name, ms, calls in rows:
        lines.append(f"| `{name}` | {ms:.2f} | {ms / total:.0%} | {calls:.0f} |")
    lines.append(f"| all functions | {total:.2f} | 100% | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- report

def summarise(slopes):
    """Medians of the times and of the per-repeat ratios, with the ratios' min-max range."""
    median = {config: float(np.median(v)) for config, v in slopes.items()}
    ratios = {}
    for ours, theirs in (("ours hard", "KMeans"), ("ours soft", "GaussianMixture"),
                         ("ours hard", "X.sum"), ("ours soft", "X.sum")):
        ratios[f"{ours} / {theirs}"] = common.ratio_stats(slopes[ours], slopes[theirs])
    return median, ratios


_ratio = common.format_ratio


def results_table(rows):
    head = ("| N | threads (clock) | ours hard | KMeans | hard / KMeans | ours soft | "
            "GaussianMixture | soft / GM | X.sum | hard / X.sum | soft / X.sum |\n"
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for row in rows:
        m, r = row["median"], row["ratios"]
        clock_name = "CPU" if row["threads"] == "1" else "wall"
        lines.append(
            f"| {row['n']:,} | {row['threads']} ({clock_name}) | {1e3 * m['ours hard']:.2f} | "
            f"{1e3 * m['KMeans']:.2f} | {_ratio(r['ours hard / KMeans'])} | "
            f"{1e3 * m['ours soft']:.2f} | {1e3 * m['GaussianMixture']:.1f} | "
            f"{_ratio(r['ours soft / GaussianMixture'])} | {1e3 * m['X.sum']:.3f} | "
            f"{_ratio(r['ours hard / X.sum'])} | {_ratio(r['ours soft / X.sum'])} |")
    return head + "\n".join(lines) + "\n"


def memory_table(peaks, n_points):
    lines = ["| fit | peak RSS rise, MiB | ours / scikit-learn | peak allocated, MiB | "
             "ours / scikit-learn |", "|---|---:|---:|---:|---:|"]
    for ours, theirs in SKLEARN_OF.items():
        rss = peaks[ours]["rss"] / peaks[theirs]["rss"]
        allocated = peaks[ours]["allocated"] / peaks[theirs]["allocated"]
        lines.append(f"| {ours} | {peaks[ours]['rss']:.1f} | {rss:.2f} | "
                     f"{peaks[ours]['allocated']:.1f} | {allocated:.2f} |")
        lines.append(f"| {theirs} | {peaks[theirs]['rss']:.1f} | | "
                     f"{peaks[theirs]['allocated']:.1f} | |")
    data_mib = n_points * 2 * 8 / 2 ** 20
    return ("\n".join(lines) + f"\n\nX itself is {data_mib:.1f} MiB. RSS counts the pages a "
            "fit touches (the target uses it); allocated counts every byte allocated "
            "(tracemalloc), touched or not.\n")


def targets(rows, peaks):
    """(text, met) for every target of the issue, at N = 10^6 and one thread."""
    row = next((r for r in rows if r["n"] == 10 ** 6 and r["threads"] == "1"), None)
    if row is None:
        return []
    r = row["ratios"]
    out = [
        (f"soft EM per iteration <= 0.25 x GaussianMixture: "
         f"{r['ours soft / GaussianMixture'][0]:.3f} x",
         r["ours soft / GaussianMixture"][0] <= 0.25),
        (f"hard EM per iteration <= 2 x KMeans: {r['ours hard / KMeans'][0]:.2f} x",
         r["ours hard / KMeans"][0] <= 2),
        (f"hard EM per iteration <= 15 x one X.sum() pass: {r['ours hard / X.sum'][0]:.1f} x",
         r["ours hard / X.sum"][0] <= 15),
    ]
    if peaks:
        for ours, theirs in SKLEARN_OF.items():
            ratio = peaks[ours]["rss"] / peaks[theirs]["rss"]
            out.append((f"peak memory (RSS) of {ours} <= {theirs}: {peaks[ours]['rss']:.0f} vs "
                        f"{peaks[theirs]['rss']:.0f} MiB ({ratio:.2f} x)", ratio <= 1))
    return out


def whole_fit_markdown(whole, rows, peaks, memory_n):
    times, iterations = whole
    checks = whole_fit_targets(times, rows, peaks if memory_n == 10 ** 6 else {})
    repeats = len(times["ours hard"])
    return [
        f"## Whole fits (issue 17; N = {iterations['n']:,}, d = 2, K = 3, one thread)", "",
        "Each fit as a user runs it, set-up included (validation, standardisation, the "
        "start's covariances and weights, the final E-step), from the same start: the "
        "k-means++ means that `run_em` would draw itself (`initial_means`, seed 0). Hard EM "
        "and KMeans (lloyd, tol=0: both stop when no label changes) run to convergence, and "
        "were checked to stop after the same iterations with the same labels; soft EM and "
        f"GaussianMixture run exactly {WHOLE_SOFT_ITER} iterations from the soft start "
        "above, checked to give the same means and covariances (rtol 1e-8). CPU time, median "
        f"of {repeats} interleaved repeats; ratios: median of the per-repeat ratios "
        "(min-max). The one-iteration row shows the set-up's share.", "",
        whole_fit_table(times, iterations),
        "**Targets (issue 17)**", "",
        *[f"- {'met' if met else 'MISSED'}: {text}" for text, met in checks], "",
        *whole_fit_limits(times, rows)]


def whole_fit_limits(times, rows):
    """What bounds the whole hard fit when its target is missed, with this run's numbers."""
    whole = common.ratio_stats(times["ours hard"], times["KMeans"])[0]
    setup = common.ratio_stats(times["ours hard, 1 iteration"], times["KMeans, 1 iteration"])[0]
    row = next((r for r in rows if r["n"] == 10 ** 6 and r["threads"] == "1"), None)
    if whole <= 0.6 or row is None:
        return []
    return [f"The whole hard fit ({whole:.2f} x) is bounded by its iterations: a fit of one "
            f"iteration, mostly set-up, takes {setup:.2f} x KMeans' (the set-up is one pass "
            "over X, the start's E-step is the first iteration's and the converged last "
            "E-step the final one), but from this start both methods need the iterations "
            "counted above, and one iteration alone is "
            f"{row['ratios']['ours hard / KMeans'][0]:.2f} x KMeans' (see the limits below).",
            ""]


def write_markdown(folder, rows, peaks, memory_n, profiles, machine, load, repeats, plot_name,
                   whole=None):
    lines = [
        "# EM benchmark: ours against scikit-learn",
        "",
        "Written by `make bench` (`benchmarks/bench_em.py`; its docstring gives the method). "
        "Ratios are the result: the machine is shared and noisy, the seconds are not portable.",
        "",
        f"Machine: {machine}. Load average before / after the run: {load[0]} / {load[1]}.",
        "",
        f"Data: three 2-D Gaussians, K = 3, seed {SEED}. Per-iteration time = slope between "
        f"{ITERATIONS['hard'][0]} and {ITERATIONS['hard'][1]} iterations (hard EM, KMeans) or "
        f"{ITERATIONS['soft'][0]} and {ITERATIONS['soft'][1]} (soft EM, GaussianMixture) from "
        f"the same start; median of {repeats} interleaved repeats. Times in ms per iteration "
        "(X.sum: ms per pass); ratios are the median of the per-repeat ratios, with their "
        "min-max range. One thread: CPU time; default threads "
        f"({common.default_threads()} here, for BLAS and OpenMP alike): wall time.",
        "",
        "Before timing, every N checked that ours and scikit-learn's give the same labels and "
        "means (hard, vs KMeans) and the same means, covariances, weights and log-likelihood "
        "(soft, vs GaussianMixture, rtol 1e-8).",
        "",
        results_table(rows),
        f"![time per iteration vs N]({plot_name})",
        "",
    ]
    lines += [f"## Peak memory at N = {memory_n:,} (one thread, one subprocess per fit)", "",
              memory_table(peaks, memory_n)]
    checks = targets(rows, peaks if memory_n == 10 ** 6 else {})
    if checks:
        lines += ["## Targets (issue 7; N = 10^6, one thread)", ""]
        lines += [f"- {'met' if met else 'MISSED'}: {text}" for text, met in checks]
        lines.append("")
    if whole is not None:
        lines += whole_fit_markdown(whole, rows, peaks, memory_n)
    lines += limits_notes(rows, peaks, memory_n)
    if profiles:
        n_points = max(r["n"] for r in rows)
        lines += [f"## Profile of one iteration (cProfile own time, N = {n_points:,}, one thread)",
                  "", "A slope like the timing (the fit stopped after n1 iterations is subtracted "
                  "from the one stopped after n2; medians of 3 runs). Own time excludes the "
                  "callees; numpy calls made through operators (`@`, `+=`) count in the function "
                  "that makes them. The profiler's own cost per call inflates the times: read "
                  "the shares.", ""]
        for config, (top, total) in profiles.items():
            lines += [f"**{config}**", "", profile_table(top, total)]
    return common.write_section(folder, "em", "\n".join(lines))


def _mib(n_bytes):
    return n_bytes / 2 ** 20


def limits_notes(rows, peaks, memory_n):
    """What limits each missed target, with the numbers of this run."""
    row = next((r for r in rows if r["n"] == 10 ** 6 and r["threads"] == "1"), None)
    notes = []
    if row is not None and row["ratios"]["ours hard / X.sum"][0] > 15:
        x_bytes = 10 ** 6 * 2 * 8
        bandwidth = x_bytes / row["median"]["X.sum"] / 1e9
        notes.append(
            f"Hard EM vs one X.sum() pass ({row['ratios']['ours hard / X.sum'][0]:.1f} x): "
            f"X.sum() reads the {_mib(x_bytes):.1f} MiB of X at {bandwidth:.0f} GB/s because "
            f"they stay in the {common.cache_size()} last-level cache, so this floor is a "
            "cache-bandwidth floor. A hard iteration in numpy is a series of separate calls "
            f"per block of {fastpath.BLOCK_ROWS:,} points: building t(x) (a copy and d "
            "products), the scores (K, 1 + d) @ (1 + d, b), their minimum, the one-hot, and "
            "the sums (K, b) @ (b, m); each call reads or writes the block again and pays its "
            "own overhead (the profile below splits the iteration). Once few points change "
            "component, an iteration builds t(x) and sums it only for the points that moved "
            "(`fastpath.HardMemory`), but it still scores every point. Fusing them into one loop "
            "over the points, as the Cython of KMeans does, is out of reach of pure "
            "numpy/scipy; the iteration is still "
            f"{row['ratios']['ours hard / KMeans'][0]:.2f} x KMeans' (Lloyd).")
    if peaks and memory_n == 10 ** 6 and peaks["ours hard"]["rss"] > peaks["KMeans"]["rss"]:
        K, d, n = N_COMPONENTS, 2, memory_n
        notes.append(
            f"Peak memory of hard EM vs KMeans ({peaks['ours hard']['rss']:.0f} vs "
            f"{peaks['KMeans']['rss']:.0f} MiB RSS): `run_em` reads X without copying it and "
            "builds the (K, N) one-hot `resp` only if a caller reads it; what remains is the "
            f"fast path's transposed standardised coordinates ({_mib(n * d * 8):.1f} MiB, so "
            "that each block is a plain copy rather than a strided transpose), a (K, N) boolean "
            f"assignment per iteration ({_mib(K * n):.1f} MiB, two alive for the convergence "
            f"test) and the int64 labels ({_mib(n * 8):.1f} MiB), where KMeans keeps a centred "
            f"copy of X and int32 labels ({_mib(n * 4):.1f} MiB).")
    if notes:
        return ["## What limits the missed targets", ""] + [f"- {note}" for note in notes] + [""]
    return []


def plot(path, rows):
    import matplotlib

    matplotlib.use("Agg")  # a script writing a file: no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    styles = {"ours hard": ("C0", "o-"), "KMeans": ("C0", "s--"), "ours soft": ("C3", "o-"),
              "GaussianMixture": ("C3", "s--"), "X.sum": ("grey", "^:")}
    for ax, threads in zip(axes, ("1", "default")):
        sub = [r for r in rows if r["threads"] == threads]
        n = [r["n"] for r in sub]
        for config in CONFIGS:
            color, style = styles[config]
            label = config + (" (one pass)" if config == "X.sum" else "")
            times = [r["median"][config] if r["median"][config] > 0 else np.nan for r in sub]
            ax.loglog(n, times, style, color=color, label=label)  # noise < 0: not drawn
        if threads == "1":
            ax.set_title("1 thread (CPU time)")
        else:
            ax.set_title(f"default: {common.default_threads()} threads (wall time)")
        ax.set_xlabel("N (points)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds per iteration")
    axes[0].legend(fontsize="small")
    fig.suptitle("EM time per iteration vs N (K = 3, d = 2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main

def options(parser):
    """bench_em's own options."""
    parser.add_argument("--big", action="store_true", help="also N = 4 000 000")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="the values of N to time (replaces the defaults)")


def main(argv=None):
    args = common.parse_args(argv, __doc__, repeats=(7, 3), memory_child=("CONFIG", "N"),
                             options=options, quick_help="smoke run: N up to 10^5, 3 repeats; "
                             "writes files only with --out")
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    repeats = args.repeats
    sizes = [10 ** 4, 10 ** 5] if args.quick else [10 ** 4, 10 ** 5, 10 ** 6]
    if args.big:
        sizes.append(4 * 10 ** 6)
    if args.sizes:
        sizes = sorted(args.sizes)
    out = args.out
    load_before = common.load_average()
    started = time.perf_counter()
    rows = []
    for n_points in sizes:
        X = make_data(n_points)
        for threads in ("1", "default"):
            limit = 1 if threads == "1" else None
            with threadpool_limits(limits=limit):
                slopes, fitted = per_iteration_times(X, threads, repeats)
            if threads == "1":
                check_same_parameters(X, fitted)
            median, ratios = summarise(slopes)
            rows.append({"n": n_points, "threads": threads, "median": median, "ratios": ratios})
            print(f"N={n_points:>9,} threads={threads:<7} "
                  + "  ".join(f"{k}={_ratio(v)}" for k, v in ratios.items()), flush=True)
    with threadpool_limits(limits=1):
        X = make_data(10 ** 5 if args.quick else WHOLE_N)
    whole = whole_fit_times(X, max(3, repeats if args.quick else 5))
    print("whole fits", {k: round(float(np.median(v)), 4) for k, v in whole[0].items()},
          flush=True)
    memory_n = 10 ** 5 if args.quick else MEMORY_N
    peaks = peak_memory(memory_n)
    X = make_data(max(sizes))
    profiles = {config: profile_per_iteration(config, X) for config in ("ours hard", "ours soft")}
    load_after = common.load_average()
    print(f"done in {time.perf_counter() - started:.0f} s")
    machine = common.machine_description("sklearn")
    if out is None:
        print(results_table(rows))
        print(memory_table(peaks, memory_n))
        print("\n".join(whole_fit_markdown(whole, rows, peaks, memory_n)))
        return
    out.mkdir(parents=True, exist_ok=True)
    plot(out / "time_vs_n.png", rows)
    results = write_markdown(out, rows, peaks, memory_n, profiles, machine,
                             (load_before, load_after), repeats, "time_vs_n.png", whole)
    print(results.read_text())


if __name__ == "__main__":
    main()
