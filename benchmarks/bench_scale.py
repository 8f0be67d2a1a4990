"""Benchmark EM past one machine (issue 12): run_em in memory against run_em on a dask array.

Run ``python benchmarks/bench_scale.py`` from the repository root (``make bench`` runs it after
``bench_em.py``). It writes section "scale" of ``benchmarks/RESULTS.md``; ``--quick`` is a smoke
run on small data that prints the section and writes nothing unless ``--out`` is given.

Method
------
* Data: three Gaussians (K = 3, seeded, equal thirds), written block by block to a ``.npy``
  file in a temporary folder (deleted at the end): 10^8 points in 1-D (800 MB) and 2 x 10^7
  points in 2-D (320 MB). The dask array reads it with one loader task per chunk, which opens
  the file with ``mmap_mode="r"`` inside the worker and copies its rows; only the path and the
  row range travel in the graph (a pickled ``np.memmap`` would ship the whole array, and
  ``da.from_array`` of a memmap copies it into the client).
* Compared, soft EM from the same full start (means, covariances, weights): an iteration of
  ``run_em``'s in-memory fast path on the loaded array (``fastpath.soft_pass`` and the M-step
  from its sums, one thread), and an iteration of ``run_em`` on the dask array
  (``ChunkedData.one_pass`` and ``distributed.m_step``) with a ``LocalCluster`` of 1 and of 2
  worker processes (one thread each). BLAS and OpenMP are limited to one thread (environment
  variables set before numpy loads, which the workers inherit), so "1 worker" and "in memory"
  use one core each.
* Per-iteration time: each of ``N_ITER`` iterations is timed on its own (wall time: dask's
  work runs in other processes), and a configuration's time is the median over its iterations.
  On a shared machine a burst of load hits a few iterations, not the median; an earlier version
  took the slope between two whole fits and got negative slopes in memory, because the
  set-up's noise (copies of 800 MB) exceeded the iterations' time. Per repeat the three
  configurations run one after the other (interleaved); the speed-up and the ratios are medians
  of the per-repeat ratios.
* Checks: the three configurations' parameters after ``N_ITER`` iterations agree to rtol
  1e-10; and before timing, ``run_em`` itself on the dask array (2 workers) gave the parameters
  of ``run_em`` in memory after 2 iterations (rtol 1e-10).
* Workers: started without the ``MALLOC_TRIM_THRESHOLD_`` that distributed's nannies set by
  default (``malloc_effect`` measures what it costs, and the section reports it).
* Client memory: the rise of the benchmark process's peak resident set (VmHWM, reset through
  ``/proc/self/clear_refs`` just before the iterations) above its resident set at that moment,
  on the cluster (the scheduler runs in this process too); also the process's absolute peak,
  which includes the interpreter and its libraries (a constant, not proportional to N).
  Workers' peaks are reported for information.
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy loads; the worker processes inherit it

import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py, the shared harness; it finds the project)
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import distributed  # noqa: E402
import numpy as np  # noqa: E402

import em_helpers as em  # noqa: E402
from emlab.engine import chunked as dist_em  # noqa: E402
from emlab.engine import fastpath  # noqa: E402

SEED = 0
K = 3
CENTRES = np.array([[0.0, 0.0], [3.0, 1.0], [1.0, 3.0]])
N_ITER = 6  # timed iterations per configuration and repeat
REG_COVAR = 1e-6
# Rows per chunk. Each task costs a few ms of scheduling (about 2.5 ms here), a fixed cost per
# pass that 2 workers do not halve; but with few chunks a worker slowed by the machine's other
# load holds up the pass (32 MiB chunks, 24 and 10 of them, gave a 1-D speed-up of 0.91 in a run
# where two of three repeats were hit). 16 MiB: 48 and 20 chunks of the full data (the quick
# data: 31 and 13 chunks of 256 KiB).
CHUNK_BYTES = {"full": 16 * 2 ** 20, "quick": 2 ** 18}
DATASETS = {"full": ((10 ** 8, 1), (2 * 10 ** 7, 2)), "quick": ((10 ** 6, 1), (2 * 10 ** 5, 2))}
CONFIGS = ("in memory", "dask, 1 worker", "dask, 2 workers")
TARGET_SPEEDUP = 1.6
TARGET_MEMORY_SHARE = 0.10


# ------------------------------------------------------------------------------- data

def write_npy(path, n_points, d, seed=SEED, block=10 ** 7):
    """Three Gaussians in d dimensions, written block by block to ``path`` (float64)."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n_points, d))
    for start in range(0, n_points, block):
        n = min(block, n_points - start)
        z = rng.integers(0, K, n)
        out[start: start + n] = rng.standard_normal((n, d)) + CENTRES[z, :d]
    out.flush()
    del out


def read_rows(path, block_info=None):
    """One chunk of the dask array: its rows of the .npy, opened (memory-mapped) here."""
    r0, r1 = block_info[None]["array-location"][0]
    return np.array(np.load(path, mmap_mode="r")[r0:r1])


def npy_as_dask(path, chunk_bytes):
    """A dask array over a .npy file, one loader task per chunk of about ``chunk_bytes``."""
    mm = np.load(path, mmap_mode="r")
    shape, dtype = mm.shape, mm.dtype
    del mm
    rows = max(1, chunk_bytes // (8 * shape[1]))
    chunks = (tuple(min(rows, shape[0] - s) for s in range(0, shape[0], rows)), (shape[1],))
    return da.map_blocks(read_rows, str(path), chunks=chunks, dtype=dtype,
                         meta=np.empty((0, 0), dtype))


def start_of(d):
    """A poor full start (means below the data, unit covariances): no convergence early."""
    return {"means": CENTRES[:, :d] - 2.0, "covariances": np.stack([np.eye(d)] * K),
            "weights": np.full(K, 1 / K)}


# ------------------------------------------------------------------------------- timing

def _worker_status():
    return Path("/proc/self/status").read_text()


def iterate_in_memory(X, d, n_iter):
    """Seconds of each of ``n_iter`` soft EM iterations of ``run_em``'s in-memory fast path
    (``fastpath.soft_pass`` and the M-step from its sums), and the parameters after them."""
    data = fastpath.CompleteData.of(X)
    start = start_of(d)
    means, covs, weights = start["means"], start["covariances"], start["weights"]
    seconds = []
    for _ in range(n_iter):
        started = time.perf_counter()
        _, stats = fastpath.soft_pass(data, means, covs, weights)
        means, covs = fastpath.gaussians_from_statistics(stats, data.shift, REG_COVAR)
        weights = stats[:, 0] / X.shape[0]
        seconds.append(time.perf_counter() - started)
    return seconds, {"means": means, "covariances": covs, "weights": weights}


def iterate_on_dask(X, d, n_iter):
    """The same iterations on a dask array (``emlab.engine.chunked``: one pass over the chunks
    and the M-step from the summed sums), timed one by one, and the parameters after them."""
    data = dist_em.ChunkedData.of(X)  # the first pass (centring), not timed
    start = start_of(d)
    means, covs, weights = start["means"], start["covariances"], start["weights"]
    seconds = []
    for iteration in range(1, n_iter + 1):
        started = time.perf_counter()
        stats, _, _ = data.one_pass("soft", means, covs, weights)
        means, covs, weights = dist_em.m_step(data, stats, REG_COVAR, iteration)
        seconds.append(time.perf_counter() - started)
    return seconds, {"means": means, "covariances": covs, "weights": weights}


def check_same(ours, reference):
    for key in ("means", "covariances", "weights"):
        np.testing.assert_allclose(ours[key], reference[key], rtol=1e-10, atol=1e-10)


def run_em_agrees(path, d, chunk_bytes):
    """Before timing: run_em itself on the dask array equals run_em in memory (2 iterations)."""
    start = start_of(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", em.EMConvergenceWarning)
        ours = em.run_em(npy_as_dask(path, chunk_bytes), K, "soft", init=start, max_iter=2,
                         tol=0.0)
        reference = em.run_em(np.load(path), K, "soft", init=start, max_iter=2, tol=0.0)
    check_same(vars(ours), vars(reference))


def in_memory(path, d):
    """Per-iteration seconds in memory (the data loaded first), and the final parameters."""
    X = np.load(path)
    return iterate_in_memory(X, d, N_ITER)


def worker_environ(default_malloc=False):
    """The environment the nannies set before starting a worker: distributed's own, without
    ``MALLOC_TRIM_THRESHOLD_`` unless ``default_malloc`` (see ``malloc_effect``)."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if not default_malloc:
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def start_cluster(n_workers, default_malloc=False):
    """A LocalCluster of single-threaded workers and its Client (see ``worker_environ``)."""
    if not default_malloc:  # a nanny leaves its pre-spawn environment in this process
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ":
                          worker_environ(default_malloc)}):
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                           processes=True, dashboard_address=":0",
                                           silence_logs=logging.CRITICAL)
    return cluster, distributed.Client(cluster)


def time_block_pass(rows=2 ** 21, calls=5):
    """Median seconds of one chunk's soft E-step (``distributed.block_pass``), where it runs."""
    block = np.random.default_rng(SEED).standard_normal((rows, 1))
    start = start_of(1)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        dist_em.block_pass(block, np.zeros(1), "soft", start["means"], start["covariances"],
                           start["weights"])
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def malloc_effect():
    """One chunk's E-step (2^21 1-D rows) in a worker started with distributed's default
    environment, which sets ``MALLOC_TRIM_THRESHOLD_=65536``, and without that variable.

    Setting any glibc malloc threshold switches off glibc's adaptive mmap threshold, so each
    of the fast path's per-block temporaries above 128 KiB is mapped and unmapped again, and
    every page of it faults; the workers of the timings run without the variable.
    """
    seconds = {}
    for default_malloc in (True, False):
        cluster, client = start_cluster(1, default_malloc)
        try:
            client.wait_for_workers(1, timeout=120)
            seconds[default_malloc] = client.submit(time_block_pass, pure=False).result()
        finally:
            client.close()
            cluster.close()
    return seconds[True], seconds[False]


def on_cluster(path, d, n_workers, reference, chunk_bytes, check_run_em=False):
    """Per-iteration seconds on a fresh LocalCluster, the client's memory, the workers' peaks."""
    cluster, client = start_cluster(n_workers)
    try:
        client.wait_for_workers(n_workers, timeout=120)
        if check_run_em:
            run_em_agrees(path, d, chunk_bytes)
        X = npy_as_dask(path, chunk_bytes)
        with common.PeakRSS() as rss:
            seconds, fit = iterate_on_dask(X, d, N_ITER)
        memory = {"rise": rss.rise, "peak": rss.peak,
                  "workers": max(common.status_mib("VmHWM", s)
                                 for s in client.run(_worker_status).values())}
        check_same(fit, reference)
    finally:
        client.close()
        cluster.close()
    return seconds, memory


def measure(path, d, repeats, chunk_bytes):
    """{config: [seconds of each iteration, all repeats]}, per-repeat medians, memory."""
    times = {c: [] for c in CONFIGS}
    medians = {c: [] for c in CONFIGS}
    memory = {c: [] for c in CONFIGS[1:]}
    for repeat in range(repeats):
        seconds, reference = in_memory(path, d)
        runs = {"in memory": seconds}
        for config, n_workers in (("dask, 1 worker", 1), ("dask, 2 workers", 2)):
            runs[config], mem = on_cluster(path, d, n_workers, reference, chunk_bytes,
                                           check_run_em=repeat == 0 and n_workers == 2)
            memory[config].append(mem)
        for config, seconds in runs.items():
            times[config] += seconds
            medians[config].append(float(np.median(seconds)))
        print(f"  repeat {repeat + 1}: " + "  ".join(f"{c}={medians[c][-1]:.3f} s/it"
                                                     for c in CONFIGS)
              + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
    return times, medians, memory


# ------------------------------------------------------------------------------- report

def summarise(n_points, d, times, medians, memory):
    data_mib = n_points * d * 8 / 2 ** 20
    row = {"n": n_points, "d": d, "data_mib": data_mib,
           "median": {c: float(np.median(times[c])) for c in CONFIGS},
           "speedup": common.ratio_stats(medians["dask, 1 worker"], medians["dask, 2 workers"]),
           "vs_memory": {c: common.ratio_stats(medians[c], medians["in memory"])
                         for c in CONFIGS[1:]}}
    row["memory"] = {c: {k: float(np.max([m[k] for m in memory[c]])) for k in memory[c][0]}
                     for c in memory}
    return row


_range = common.format_ratio


def results_table(rows):
    lines = ["| data | in memory, s/it | dask 1 worker, s/it | dask 2 workers, s/it | "
             "1 -> 2 workers speed-up | dask 1 worker / in memory | "
             "dask 2 workers / in memory |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median"]
        lines.append(f"| {r['n']:,} x {r['d']} ({r['data_mib']:.0f} MiB) | "
                     f"{m['in memory']:.3f} | {m['dask, 1 worker']:.3f} | "
                     f"{m['dask, 2 workers']:.3f} | {_range(r['speedup'])} | "
                     f"{_range(r['vs_memory']['dask, 1 worker'])} | "
                     f"{_range(r['vs_memory']['dask, 2 workers'])} |")
    return "\n".join(lines) + "\n"


def memory_table(rows):
    lines = ["| data | cluster | client peak rise, MiB | share of the data | client peak "
             "(absolute), MiB | worker peak, MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        for config, mem in r["memory"].items():
            lines.append(f"| {r['n']:,} x {r['d']} ({r['data_mib']:.0f} MiB) | "
                         f"{config.removeprefix('dask, ')} | {mem['rise']:.1f} | "
                         f"{mem['rise'] / r['data_mib']:.1%} | {mem['peak']:.0f} | "
                         f"{mem['workers']:.0f} |")
    return "\n".join(lines) + "\n"


def targets(rows):
    checks = []
    for r in rows:
        label = f"{r['n']:,} x {r['d']}"
        checks.append((f"speed-up from 1 to 2 workers {r['speedup'][0]:.2f} (target >= "
                       f"{TARGET_SPEEDUP}), {label}", r["speedup"][0] >= TARGET_SPEEDUP))
        worst = max(m["rise"] for m in r["memory"].values())
        checks.append((f"client peak rise {worst:.1f} MiB = {worst / r['data_mib']:.1%} of the "
                       f"data (target <= {TARGET_MEMORY_SHARE:.0%}), {label}",
                       worst <= TARGET_MEMORY_SHARE * r["data_mib"]))
    return checks


def markdown(rows, repeats, machine, load, chunk_rows, malloc):
    lines = [
        "# Larger than memory: run_em on a dask array",
        "",
        "Written by `benchmarks/bench_scale.py` (its docstring gives the method). Ratios "
        "measured side by side are the result: the machine is shared and noisy.",
        "",
        f"Machine: {machine}. Load average before / after the run: {load[0]} / {load[1]}.",
        "",
        f"Soft EM, K = {K}, from the same poor start; each of {N_ITER} iterations timed on its "
        f"own (wall time), median over the iterations of {repeats} interleaved repeats; ratios: "
        "median of the per-repeat ratios, min-max in brackets. Data in a memory-mapped `.npy` "
        f"on local disk, read by one loader task per chunk: {chunk_rows}; one thread per "
        "worker and for the in-memory path. Checks: the three configurations' parameters agree "
        "to rtol 1e-10, and `run_em` on the dask array gave `run_em`'s in-memory parameters.",
        "",
        results_table(rows),
        "The workers run without the `MALLOC_TRIM_THRESHOLD_=65536` that distributed sets by "
        "default (`distributed.nanny.pre-spawn-environ`): setting any glibc malloc threshold "
        "turns off its adaptive mmap threshold, so every per-block temporary of the fast path "
        "above 128 KiB is mapped, page-faulted and unmapped again. One chunk's E-step (2^21 "
        f"1-D rows) took {malloc[0]:.3f} s in a worker with the default and {malloc[1]:.3f} s "
        f"without ({malloc[0] / malloc[1]:.1f} x).",
        "",
        "If a pass costs a part F that does not parallelise (scheduling, the client's graph "
        "and M-step) plus work W that does, then 1 worker takes F + W and 2 take F + W / 2: "
        "F = 2 T2 - T1 = " + ", ".join(
            f"{2 * r['median']['dask, 2 workers'] - r['median']['dask, 1 worker']:.3f} s "
            f"({r['n']:,} x {r['d']})" for r in rows) + ".",
        "",
        f"## Client memory ({N_ITER} iterations on the cluster)",
        "",
        memory_table(rows),
        "## Targets (issue 12)",
        "",
    ]
    lines += [f"- {'met' if met else 'MISSED'}: {text}" for text, met in targets(rows)]
    lines.append("")
    return "\n".join(lines)


def options(parser):
    """bench_scale's own option."""
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the .npy files")


def main(argv=None):
    args = common.parse_args(argv, __doc__, repeats=(3, 1), options=options,
                             quick_help="small data, one repeat")
    repeats, out = args.repeats, args.out
    load_before = common.load_average()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.tmp))
    rows, chunk_rows = [], []
    try:
        size = "quick" if args.quick else "full"
        for n_points, d in DATASETS[size]:
            need = n_points * d * 8
            free = shutil.disk_usage(folder).free
            if free < 2 * need:
                raise SystemExit(f"{folder} has {free / 2 ** 30:.1f} GiB free; "
                                 f"{2 * need / 2 ** 30:.1f} GiB needed")
            path = folder / f"points_{n_points}x{d}.npy"
            write_npy(path, n_points, d)
            chunks = npy_as_dask(path, CHUNK_BYTES[size]).chunks[0]
            chunk_rows.append(f"{len(chunks)} chunks of {chunks[0]:,} rows of {d}-D points")
            print(f"N={n_points:,} d={d}: {path}", flush=True)
            times, medians, memory = measure(path, d, repeats, CHUNK_BYTES[size])
            rows.append(summarise(n_points, d, times, medians, memory))
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    malloc = malloc_effect()
    print(f"one chunk's E-step in a worker: {malloc[0]:.3f} s with distributed's default "
          f"MALLOC_TRIM_THRESHOLD_, {malloc[1]:.3f} s without", flush=True)
    load_after = common.load_average()
    print(f"done in {time.perf_counter() - started:.0f} s")
    text = markdown(rows, repeats, common.machine_description("dask", "distributed"),
                    (load_before, load_after), ", ".join(chunk_rows), malloc)
    common.publish(out, "scale", text)


if __name__ == "__main__":
    main()
