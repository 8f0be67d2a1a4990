"""Tests of scripts/build_report.py: the index page, and pages rendered in headless Chromium.

The Chromium tests are skipped when Chromium is absent, except when CI=true (.ci/run installs
Debian's ``chromium``), where its absence fails them.
"""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from scripts import build_report

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


# --------------------------------------------------------------------------- helpers
def png_base64(width, height):
    """A small valid PNG, base64-encoded as notebooks store it."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_notebook(folder, name, cells):
    path = Path(folder) / f"{name}.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    return path


def code_cell(outputs=(), tags=(), source="pass"):
    cell = new_code_cell(source, outputs=list(outputs), execution_count=1)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def tiny_notebooks(folder):
    """Three notebooks; the second has a headline cell (table, text, figure) and a decoy."""
    headline = code_cell(
        tags=["headline"],
        outputs=[
            new_output("stream", name="stdout", text="bootstrap: 200 resamples\n"),
            new_output("execute_result", execution_count=1,
                       data={"text/html": "<table id='q5-table'><tr><td>0.123</td></tr></table>",
                             "text/plain": "PLAIN_FALLBACK"}),
            new_output("display_data", data={"image/png": png_base64(7, 5),
                                             "text/plain": "<Figure>"}),
        ],
    )
    decoy = code_cell(tags=["other"], outputs=[new_output("stream", name="stdout",
                                                          text="NOT_A_HEADLINE\n")])
    return [
        write_notebook(folder, "01_data", [new_markdown_cell("# Q1: the data $x_n$\n\nText.")]),
        write_notebook(folder, "02_compare", [
            code_cell(source="# a comment, not a heading"),
            new_markdown_cell("Intro line.\n\n## Q5: compare the images ##"),
            decoy,
            headline,
        ]),
        write_notebook(folder, "03_untitled", [new_markdown_cell("No heading here.")]),
    ]


def read_all(paths):
    return [(path, nbformat.read(path, as_version=4)) for path in paths]


def markdown_source(nb):
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


# --------------------------------------------------------------------------- the index
def test_find_notebooks_sorted_by_name_ignoring_other_files(tmp_path):
    for name in ["10_c", "02_b", "01_a"]:
        write_notebook(tmp_path, name, [])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_notebook(tmp_path / ".ipynb_checkpoints", "01_a-checkpoint", [])

    assert [p.stem for p in build_report.find_notebooks(tmp_path)] == ["01_a", "02_b", "10_c"]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ([new_markdown_cell("# Q1: plot the data")], "Q1: plot the data"),
        ([code_cell(source="# comment"), new_markdown_cell("Text\n\n### Q2 ###")], "Q2"),
        ([new_markdown_cell("#hashtag is not a heading"), new_markdown_cell("## Real")], "Real"),
        ([new_markdown_cell("No heading at all.")], "FALLBACK"),
    ],
)
def test_notebook_title_is_first_markdown_heading(cells, expected):
    assert build_report.notebook_title(new_notebook(cells=cells), "FALLBACK") == expected


def test_index_lists_titles_in_order_with_headline_outputs(tmp_path):
    index = build_report.write_index(read_all(tiny_notebooks(tmp_path)), tmp_path)
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")

    links = soup.select("section h2 a")
    assert [a["href"] for a in links] == ["01_data.html", "02_compare.html", "03_untitled.html"]
    assert [a.get_text() for a in links] == ["Q1: the data $x_n$", "Q5: compare the images",
                                             "03_untitled"]
    sections = soup.find_all("section")
    assert [bool(s.select(".headline")) for s in sections] == [False, True, False]
    headline = sections[1].select_one(".headline")
    assert headline.select_one("table#q5-table") is not None
    assert "bootstrap: 200 resamples" in headline.get_text()
    assert "PLAIN_FALLBACK" not in index.read_text()  # html preferred to plain text
    assert "NOT_A_HEADLINE" not in index.read_text()  # untagged cells stay out
    (img,) = headline.find_all("img")
    header, payload = img["src"].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (7, 5)


def test_export_is_offline_and_leaves_the_notebook_alone(tmp_path):
    source = tiny_notebooks(tmp_path)[1]
    before = source.read_bytes()
    out = tmp_path / "report"

    build_report.build([source], out, run=False, log=lambda message: None)

    assert source.read_bytes() == before
    soup = BeautifulSoup((out / "02_compare.html").read_text(encoding="utf-8"), "html.parser")
    external = [tag.get("src") or tag.get("href") for tag in soup.find_all(["script", "img", "link"])
                if (tag.get("src") or tag.get("href") or "").startswith(("http:", "https:", "//"))]
    assert external == []
    mathjax = [s["src"] for s in soup.find_all("script", src=True) if "MathJax.js" in s["src"]]
    assert mathjax == [build_report.MATHJAX_URL]
    script, configs = build_report.MATHJAX_URL.split("?config=")
    assert (out / script).is_file()
    for config in configs.split(","):  # every config named must ship in the copy
        assert (out / "mathjax" / "config" / f"{config}.js").is_file(), config
    assert all(img["src"].startswith("data:image/png;base64,") for img in soup.find_all("img"))


def test_execute_runs_a_copy_with_this_python_in_the_notebook_folder(tmp_path):
    source = write_notebook(tmp_path, "01_run", [
        new_markdown_cell("# Run me"),
        new_code_cell("import os, sys\nprint(6 * 7, sys.executable, os.getcwd(), sep='|')"),
    ])
    before = source.read_bytes()
    out = tmp_path / "report"

    build_report.build([source], out, run=True, log=lambda message: None)

    assert source.read_bytes() == before
    page = (out / "01_run.html").read_text(encoding="utf-8")
    assert f"42|{sys.executable}|{tmp_path}" in page


# --------------------------------------------------------------------------- Chromium
PROBE = """<script>
(function () {  /* added by the test: report image loading once MathJax is done */
  function report() {
    var images = Array.prototype.map.call(document.images, function (img) {
      return {src: img.getAttribute("src").slice(0, 40), loaded: img.complete && img.naturalWidth > 0};
    });
    var out = document.createElement("pre");
    out.id = "report-probe";
    var html_css = window.MathJax && MathJax.OutputJax && MathJax.OutputJax["HTML-CSS"];
    out.textContent = JSON.stringify({
      mathjax: !!(window.MathJax && MathJax.Hub),
      font: (html_css && html_css.fontInUse) || null,
      fonts: Array.from(document.fonts).map(function (f) { return [f.family, f.status]; }),
      images: images});
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    if (window.MathJax && MathJax.Hub) {
      MathJax.Hub.Register.StartupHook("End", function () { MathJax.Hub.Queue(report); });
    } else {
      report();
    }
  });
})();
</script>
"""


@pytest.fixture(scope="module")
def chromium():
    found = shutil.which("chromium")
    if found:
        return found
    reason = "Chromium is not installed (Debian package `chromium`, which .ci/run installs)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def render(chromium, page, workdir):
    """Load a copy of `page` (same folder, plus PROBE) headless; return (DOM soup, probe data)."""
    text = page.read_text(encoding="utf-8")
    cut = text.rindex("</body>")
    probe_page = page.with_name(f"_probe_{page.name}")
    probe_page.write_text(text[:cut] + PROBE + text[cut:], encoding="utf-8")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={workdir / 'chromium-profile'}", "--virtual-time-budget=15000",
        "--dump-dom", probe_page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    soup = BeautifulSoup(done.stdout, "html.parser")
    probe = soup.find(id="report-probe")
    assert probe is not None, f"the page's scripts did not finish: {done.stderr[-2000:]}"
    return soup, json.loads(probe.get_text())


def visible_text(soup):
    """Text a reader sees outside code inputs (where `$$` could legitimately appear)."""
    for tag in soup.select("script, style, .jp-InputArea, #report-probe"):
        tag.decompose()
    return soup.get_text()


def assert_web_fonts_used(probe):
    """MathJax typeset with its STIX web fonts (the copy ships no others), and they loaded."""
    assert probe["font"] == "STIX-Web", "MathJax fell back from its web fonts to local ones"
    stix = [(family, status) for family, status in probe["fonts"] if family.startswith("STIX")]
    assert [family for family, status in stix if status == "error"] == [], "web fonts failed to load"
    assert any(status == "loaded" for _, status in stix), "no web font was used"


def assert_math_and_images(soup, probe, n_display, n_images):
    assert probe["mathjax"], "MathJax did not load from the local copy"
    assert len(soup.select(".MathJax_Display")) >= n_display, "display math was not typeset"
    assert not soup.select(".merror, .MathJax_Error"), "MathJax reported an error"
    assert "Math Processing Error" not in soup.get_text()
    assert "$$" not in visible_text(soup), "raw $$ left in the page"
    assert len(probe["images"]) >= n_images
    assert [img for img in probe["images"] if not img["loaded"]] == []
    assert all(img["src"].startswith("data:image/") for img in probe["images"])


def test_index_of_tiny_notebooks_renders(chromium, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    build_report.copy_mathjax(out)
    index = build_report.write_index(read_all(tiny_notebooks(tmp_path)), out)

    soup, probe = render(chromium, index, tmp_path)

    assert_math_and_images(soup, probe, n_display=0, n_images=1)
    assert soup.select("section h2 .MathJax"), "inline math in a title was not typeset"
    assert_web_fonts_used(probe)


@pytest.fixture(scope="module")
def stored_report(chromium, tmp_path_factory):
    """Index of every stored notebook, plus the page of the first one with display math."""
    notebooks = read_all(build_report.find_notebooks(NOTEBOOKS))
    with_math = [(path, nb) for path, nb in notebooks if "$$" in markdown_source(nb)]
    if not with_math:
        pytest.skip("no notebook in notebooks/ has display math ($$) to render yet")
    path, nb = with_math[0]
    out = tmp_path_factory.mktemp("report")
    build_report.copy_mathjax(out)
    page = build_report.export_page(nb, path.stem, out)
    index = build_report.write_index(notebooks, out)
    return out, notebooks, nb, page, index


def test_stored_notebook_page_renders_math_and_figures(chromium, stored_report):
    out, _, nb, page, _ = stored_report
    n_display = markdown_source(nb).count("$$") // 2
    n_png = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                for o in c.outputs)

    soup, probe = render(chromium, page, out)

    assert_math_and_images(soup, probe, n_display, n_png)
    assert_web_fonts_used(probe)


def test_stored_index_renders(chromium, stored_report):
    out, notebooks, _, _, index = stored_report

    soup, probe = render(chromium, index, out)

    assert [a["href"] for a in soup.select("section h2 a")] == [f"{p.stem}.html" for p, _ in notebooks]
    with_headline = [any(c.outputs for c in build_report.headline_cells(nb)) for _, nb in notebooks]
    assert [bool(s.select(".headline")) for s in soup.find_all("section")] == with_headline
    assert_math_and_images(soup, probe, n_display=0, n_images=0)
