"""The shared harness of the benchmark scripts (``benchmarks/bench_*.py``).

A benchmark script imports this module as ``import common`` (the script's folder is on
``sys.path``) and uses, in the order a script needs them:

* ``parse_args(argv, doc, repeats=(full, quick), ...)``: the command line every script shares:
  ``--quick`` (a smoke run that writes nothing unless ``--out`` is given), ``--repeats``,
  ``--out`` (the folder of ``RESULTS.md``; default ``benchmarks/``, none with ``--quick``) and
  the hidden ``--memory-child`` with which a script re-runs itself in a fresh process. Options
  of the script's own are added by an ``options(parser)`` callable.
* ``load_average()``: the 1, 5 and 15 minute load averages, as text for the report.
* ``ratio_stats(ours, theirs)`` and ``format_ratio(stats)``: the median of the per-repeat ratios
  and their range, the statistic every table reports (the machines are shared and noisy:
  ratios measured side by side, not seconds, are the result).
* ``PeakRSS`` (a context manager) in the child, ``run_memory_child(script, *args)`` in the
  parent: the peak resident set size of one run alone in a fresh process.
* ``machine_description(*packages)``: CPU, cores, cache, RAM, OS and library versions.
* ``write_section(folder, name, markdown)``: replace the script's own section of
  ``RESULTS.md`` and leave the others as they are; ``publish(out, name, markdown)``: that, or
  only print the section when ``out`` is None (``--quick`` without ``--out``).

The scripts import the project (``em_helpers``, ``emlab``) from the repository root: ``make
bench`` puts it on ``PYTHONPATH``, and so does importing this module when a script is run as
``python benchmarks/bench_x.py`` (the one place that touches ``sys.path``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent  # benchmarks/
ROOT = HERE.parent  # the repository root
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_x.py`, not through `make bench`
    sys.path.append(str(ROOT))

# The order of the sections in RESULTS.md; a section not listed here goes after them.
SECTIONS = ("em", "segmentation", "scale")


# ------------------------------------------------------------------------------ command line

def parse_args(argv, doc, repeats, memory_child=None, options=None, quick_help=None):
    """Parse the shared options (and the script's own, added by ``options(parser)``).

    ``repeats``: (full run, ``--quick`` run) defaults of ``--repeats``; ``memory_child``: the
    metavars of the hidden ``--memory-child`` arguments (None: the script has no child).
    Returns the namespace with ``repeats`` filled in (an int >= 1) and ``out`` the folder to
    write to (None: print only).
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=quick_help or "smoke run on small data; writes only with --out")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"default {repeats[0]} (quick: {repeats[1]})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of RESULTS.md (default: benchmarks/, none with --quick)")
    if memory_child:
        parser.add_argument("--memory-child", nargs=len(memory_child), metavar=memory_child,
                            help=argparse.SUPPRESS)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or repeats[1 if args.quick else 0]
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.out is None and not args.quick:
        args.out = HERE
    return args


def load_average():
    """The 1, 5 and 15 minute load averages, e.g. ``'1.1 1.2 1.7'``."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# -------------------------------------------------------------------------------- statistics

def ratio_stats(numerator, denominator):
    """(median, min, max) of the per-repeat ratios ``numerator[i] / denominator[i]``."""
    per_repeat = np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float)
    return float(np.median(per_repeat)), float(per_repeat.min()), float(per_repeat.max())


def format_ratio(stats, digits=2):
    """``'median (min-max)'`` of ``ratio_stats``, at ``digits`` decimals."""
    median, low, high = stats
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


# ------------------------------------------------------------------------------------ memory

def status_mib(key, status=None):
    """One ``kB`` field of ``/proc/self/status`` (or of the ``status`` text given), in MiB."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


class PeakRSS:
    """``with PeakRSS() as rss: run()``: the resident set's high-water mark during the block.

    On entry the kernel's high-water mark (VmHWM) is reset to the current resident set
    (``/proc/self/clear_refs``); on exit ``rss.before`` (MiB resident on entry), ``rss.peak``
    (the high-water mark, MiB) and ``rss.rise`` (``peak - before``) are set. Linux only.
    """

    def __enter__(self):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        self.before = status_mib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = status_mib("VmHWM")
        self.rise = self.peak - self.before
        return False


def print_child_result(**values):
    """In a memory child: print its result as the JSON line ``run_memory_child`` reads."""
    print(json.dumps(values), flush=True)


def run_memory_child(script, *args):
    """Run ``python script --memory-child *args`` in a fresh process; its result (a dict)."""
    out = subprocess.run([sys.executable, str(script), "--memory-child", *map(str, args)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- machine

def cache_size():
    """Size of the last-level cache as the kernel reports it (e.g. '32 MiB')."""
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"))
    if not caches:
        return "last-level"
    size = caches[-1].read_text().strip()
    return f"{int(size[:-1]) // 1024} MiB" if size.endswith("K") else size


def default_threads():
    """The largest thread count of the native pools (BLAS, OpenMP) loaded so far."""
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info()), default=1)


def _memory_gib():
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"MemTotal:\s+(\d+) kB", text).group(1)) / 2 ** 20
    except (OSError, AttributeError):
        return float("nan")


def machine_description(*packages):
    """CPU, cores, cache, RAM and OS; the versions of Python, numpy and ``packages`` (names
    of modules, e.g. ``"sklearn"``); the native thread pools loaded so far."""
    from threadpoolctl import threadpool_info

    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    versions = [f"numpy {np.__version__}"]
    for name in packages:
        module = importlib.import_module(name)
        label = "scikit-learn" if name == "sklearn" else name
        versions.append(f"{label} {getattr(module, '__version__', '?')}")
    pools = sorted({" ".join(filter(None, (i["internal_api"], i.get("version"))))
                    + f" ({i['num_threads']} threads)" for i in threadpool_info()})
    return (f"{cpu}, {os.cpu_count()} cores, {cache_size()} last-level cache, "
            f"{_memory_gib():.0f} GiB RAM, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, {', '.join(versions)}; "
            f"native pools: {', '.join(pools) or 'none loaded'}")


# ---------------------------------------------------------------------------------- RESULTS.md

def _section_pattern(name):
    return re.compile(rf"<!-- section: {re.escape(name)} -->\n.*?<!-- end: {re.escape(name)} -->\n",
                      re.S)


def write_section(folder, name, markdown):
    """Write ``markdown`` as section ``name`` of ``folder/RESULTS.md``; return the file's path.

    A section runs from ``<!-- section: NAME -->`` to ``<!-- end: NAME -->``. The script's own
    section is replaced and the others are left as they are, so ``make bench`` can run the
    scripts one after the other and one script can be re-run alone. A new section goes in the
    order of ``SECTIONS``, or after every section if its name is not listed there. The folder
    is created if need be.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lower-case letters, digits, _ and -")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    block = f"<!-- section: {name} -->\n{markdown.rstrip()}\n<!-- end: {name} -->\n"
    if _section_pattern(name).search(text):
        text = _section_pattern(name).sub(lambda _: block, text, count=1)
    else:
        found = re.findall(r"<!-- section: ([a-z0-9_-]+) -->", text)
        names = [*found, name]
        rank = {n: (SECTIONS.index(n) if n in SECTIONS else len(SECTIONS), i)
                for i, n in enumerate(names)}
        sections = {n: _section_pattern(n).search(text) for n in found}
        blocks = {n: m.group(0) for n, m in sections.items() if m}
        blocks[name] = block
        text = "\n".join(blocks[n] for n in sorted(blocks, key=rank.__getitem__))
    path.write_text(text)
    return path


def publish(out, name, markdown):
    """Print ``markdown``; with a folder ``out`` (not None) write it first as section ``name``
    of ``out/RESULTS.md`` (``write_section``)."""
    if out is not None:
        write_section(out, name, markdown)
    print(markdown)
