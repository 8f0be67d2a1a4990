"""Tests of ``benchmarks/common.py``, the benchmark scripts' shared harness: RESULTS.md
sections, ratio statistics, the shared command line and the peak-memory probe."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_section_is_replaced_in_place_and_the_others_are_kept(common, tmp_path):
    common.write_section(tmp_path, "scale", "# scale v1")
    common.write_section(tmp_path, "lesions", "# lesions")  # not in SECTIONS: after them
    common.write_section(tmp_path, "em", "# em v1")  # listed first: goes first
    path = common.write_section(tmp_path, "scale", "# scale v2\n\nbody")
    text = path.read_text()
    assert path == tmp_path / "RESULTS.md"
    assert text.index("# em v1") < text.index("# scale v2") < text.index("# lesions")
    assert "scale v1" not in text and text.count("<!-- section: scale -->") == 1
    assert text.endswith("<!-- end: lesions -->\n")
    with pytest.raises(ValueError, match="section name"):
        common.write_section(tmp_path, "Bad Name", "x")


def test_ratio_statistics_are_per_repeat_medians_with_their_range(common):
    stats = common.ratio_stats([1.0, 2.0, 9.0], [2.0, 2.0, 3.0])  # ratios 0.5, 1, 3
    assert stats == (1.0, 0.5, 3.0)
    assert common.format_ratio(stats) == "1.00 (0.50-3.00)"
    assert common.format_ratio(stats, digits=3) == "1.000 (0.500-3.000)"


def test_the_shared_command_line(common):
    doc = "A benchmark.\n\nMore."
    full = common.parse_args([], doc, repeats=(7, 3))
    assert full.repeats == 7 and full.out == common.HERE and not full.quick
    quick = common.parse_args(["--quick"], doc, repeats=(7, 3))
    assert quick.repeats == 3 and quick.out is None
    extra = common.parse_args(["--quick", "--out", "x", "--memory-child", "a", "5", "--big"],
                              doc, repeats=(7, 3), memory_child=("CONFIG", "N"),
                              options=lambda p: p.add_argument("--big", action="store_true"))
    assert extra.out == Path("x") and extra.memory_child == ["a", "5"] and extra.big
    with pytest.raises(SystemExit):
        common.parse_args(["--repeats", "0"], doc, repeats=(7, 3))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_rss_sees_an_allocation_that_is_freed_again(common):
    with common.PeakRSS() as rss:
        block = np.ones(64 * 2 ** 20 // 8)  # 64 MiB, touched
        del block
    assert rss.rise >= 60 and rss.peak >= rss.before + 60
    assert "cores" in common.machine_description() and sys.executable
