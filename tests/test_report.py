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

import build_report  # scripts/ is on pytest's pythonpath (pytest.ini)

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
    """Three notebooks. The first has an "## Answer" cell (a list) and a key figure wider than a
    thumbnail; the second a headline cell (table, text, figure), a decoy, and an answer cell
    tagged ``answer`` beside an untagged "## Answer"; the third nothing."""
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
    figure = code_cell(tags=["key-figure"], outputs=[new_output(
        "display_data", data={"image/png": png_base64(960, 400), "text/plain": "<Figure>"})])
    tagged_answer = new_markdown_cell("**Same means.** Both fits agree to $0.01$. More detail.")
    tagged_answer.metadata["tags"] = ["answer"]
    return [
        write_notebook(folder, "01_data", [
            new_markdown_cell("# Q1: the data $x_n$\n\nText."),
            code_cell(outputs=[new_output("display_data", data={"image/png": png_base64(3, 3)})]),
            figure,
            new_markdown_cell("## Answer\n\n* **Three groups.** They sit at $(2.5, 2)$ and "
                              "(7, 3). Second sentence.\n* **Gaps.** 48 cells, e.g. in\n  `x1`. "
                              "More.\n\nA second paragraph, not shown."),
        ]),
        write_notebook(folder, "02_compare", [
            code_cell(source="# a comment, not a heading"),
            new_markdown_cell("Intro line.\n\n## Q5: compare the images ##"),
            decoy,
            headline,
            new_markdown_cell("## Answer\n\nUNTAGGED_ANSWER"),
            tagged_answer,
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

    links = soup.select("section h3 a")
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


def test_index_shows_short_answers_and_thumbnails_linking_to_the_pages(tmp_path):
    index = build_report.write_index(read_all(tiny_notebooks(tmp_path)), tmp_path)
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")
    first, second, third = soup.find_all("section")

    (thumb,) = first.select("a.thumb")
    assert thumb["href"] == "01_data.html"
    header, payload = thumb.img["src"].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (build_report.THUMB_WIDTH,
                                                                       200)
    items = [li.get_text(" ", strip=True) for li in first.select(".answer li")]
    assert items == ["Three groups. They sit at $(2.5, 2)$ and (7, 3).",
                     "Gaps. 48 cells, e.g. in x1 ."]
    assert "second paragraph" not in first.get_text()
    assert second.select_one(".answer").get_text(" ", strip=True) == ("Same means. Both fits agree "
                                                                     "to $0.01$.")
    assert "UNTAGGED_ANSWER" not in second.get_text()  # a tagged answer wins over the heading
    assert not second.select("a.thumb") and not third.select(".summary")  # no tag: nothing made up



@pytest.mark.parametrize(("name", "group"), [
    ("00_theory", "The course questions"), ("05_compare_images.ipynb", "The course questions"),
    ("06_model_choice", "Beyond the course"), ("11_real_scans.html", "Beyond the course"),
    ("notes", "Beyond the course")])
def test_notebook_group_is_read_from_the_number(name, group):
    assert build_report.notebook_group(name) == group


def test_index_opens_with_the_data_note_and_groups_notebooks_by_number(tmp_path):
    paths = [write_notebook(tmp_path, stem, [new_markdown_cell(f"# {stem}")])
             for stem in ("00_a", "05_b", "06_c", "11_d")]
    index = build_report.write_index(read_all(paths), tmp_path)
    soup = BeautifulSoup(index.read_text(encoding="utf-8"), "html.parser")

    note = soup.select_one("p.data-note")
    assert "generated stand-ins" in note.get_text()
    assert note.a["href"] == "../docs/data.md"
    assert note.find_previous("h1") is not None and not note.find_previous("section")
    order = [(tag.name, tag.get_text(strip=True)) for tag in soup.select("h2.group, section h3")]
    assert order == [("h2", "The course questions"), ("h3", "00_a"), ("h3", "05_b"),
                     ("h2", "Beyond the course"), ("h3", "06_c"), ("h3", "11_d")]

@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("## Answer\n\nOne sentence. Two.", "One sentence."),
        ("**Lead in.** Rest of it, $x=1.5. Y$ inside math. Next one.",
         "**Lead in.** Rest of it, $x=1.5. Y$ inside math."),
        ("**Only a lead.**\n\nLater paragraph.", "**Only a lead.**"),
        ("No full stop at the end", "No full stop at the end"),
        ("Ends with a value 0.25. Then more.", "Ends with a value 0.25."),
        ("* a. B\n  c\n- **d.** E. F\n1. g", "* a.\n* **d.** E.\n* g"),
        ("## Answer\n", ""),
    ],
)
def test_short_answer_is_the_first_paragraph_cut_to_lead_and_first_sentence(source, expected):
    assert build_report.short_answer(source) == expected


def test_thumbnail_only_shrinks():
    small = png_base64(40, 30)
    assert Image.open(io.BytesIO(base64.b64decode(build_report.thumbnail(small)))).size == (40, 30)
    big = build_report.thumbnail(png_base64(1200, 600), width=300)
    assert Image.open(io.BytesIO(base64.b64decode(big))).size == (300, 150)


# Notebooks allowed, for now, to have no key figure, each with the reason.
WITHOUT_KEY_FIGURE: dict[str, str] = {}


@pytest.mark.parametrize("path", build_report.find_notebooks(NOTEBOOKS), ids=lambda p: p.name)
def test_every_stored_notebook_has_an_answer_and_a_key_figure(path):
    nb = nbformat.read(path, as_version=4)
    answers = build_report.answer_cells(nb)
    assert answers, (f"{path.name}: tag its written answer (markdown) 'answer', or give it the "
                     f"heading '## Answer'")
    assert all(build_report.short_answer(cell.source).strip() for cell in answers)
    if path.name not in WITHOUT_KEY_FIGURE:
        assert build_report.key_figure(nb) is not None, (
            f"{path.name}: tag the code cell of its key figure 'key-figure' (cell metadata tags)")



# What a grader reads: short cells in the course notebooks, no test machinery anywhere.
COURSE_WORD_LIMIT = 350  # any markdown cell of notebooks 00-05
ANSWER_WORD_LIMIT = 250  # a cell tagged "answer" in notebooks 00-05
TOOL_WORDS = ("NBVAL", "not compared by the tests")


def course_notebooks():
    return [p for p in build_report.find_notebooks(NOTEBOOKS)
            if build_report.notebook_group(p.name) == build_report.COURSE_GROUP]


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.name)
def test_course_notebook_cells_stay_short(path):
    nb = nbformat.read(path, as_version=4)
    long_cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        words = len(cell.source.split())
        limit = ANSWER_WORD_LIMIT if "answer" in cell.metadata.get("tags", []) else COURSE_WORD_LIMIT
        if words > limit:
            long_cells.append(f"cell {index}: {words} words (limit {limit})")
    assert long_cells == [], f"{path.name}: split these cells by sub-part: {long_cells}"


def test_course_notebooks_are_the_six_of_the_course():
    assert [p.name[:2] for p in course_notebooks()] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", build_report.find_notebooks(NOTEBOOKS), ids=lambda p: p.name)
def test_no_cell_shows_a_tool_word(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {index}: {word!r}" for index, cell in enumerate(nb.cells)
             for word in TOOL_WORDS if word.lower() in cell.source.lower()]
    assert found == [], (f"{path.name}: nbval markers belong in cell metadata tags "
                         f"(nbval-ignore-output, ...), not in what the report shows: {found}")

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
  var players = [];
  function frame(player) {
    var img = player.querySelector("img");
    return {src: (img.getAttribute("src") || "").slice(0, 30), loaded: img.complete && img.naturalWidth > 0,
            index: parseInt(player.querySelector("input[type=range]").value, 10),
            last: parseInt(player.querySelector("input[type=range]").max, 10)};
  }
  function play_then(done) {  /* matplotlib's player: step once, then play for a while */
    var found = Array.prototype.slice.call(document.querySelectorAll(".animation"));
    if (!found.length) { done(); return; }
    var click = function (title) {
      found.forEach(function (p) { p.querySelector("button[title='" + title + "']").click(); });
    };
    var start = found.map(frame);
    click("Next frame");
    setTimeout(function () {
      var stepped = found.map(frame);
      click("Play");
      setTimeout(function () {
        players = found.map(function (p, i) {
          return {start: start[i], stepped: stepped[i], played: frame(p)};
        });
        click("Pause");
        done();
      }, 1500);
    }, 200);
  }
  function report() {
    var images = Array.prototype.map.call(document.images, function (img) {
      return {src: img.getAttribute("src").slice(0, 40), loaded: img.complete && img.naturalWidth > 0,
              width: img.naturalWidth, thumb: !!img.closest("a.thumb")};
    });
    var out = document.createElement("pre");
    out.id = "report-probe";
    var html_css = window.MathJax && MathJax.OutputJax && MathJax.OutputJax["HTML-CSS"];
    out.textContent = JSON.stringify({
      players: players,
      mathjax: !!(window.MathJax && MathJax.Hub),
      font: (html_css && html_css.fontInUse) || null,
      fonts: Array.from(document.fonts).map(function (f) { return [f.family, f.status]; }),
      images: images});
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    if (window.MathJax && MathJax.Hub) {
      MathJax.Hub.Register.StartupHook("End", function () {
        MathJax.Hub.Queue(function () { play_then(report); });
      });
    } else {
      play_then(report);
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

    assert_math_and_images(soup, probe, n_display=0, n_images=2)
    assert soup.select("section h3 .MathJax"), "inline math in a title was not typeset"
    assert soup.select(".answer .MathJax"), "inline math in a short answer was not typeset"
    (thumb,) = [img for img in probe["images"] if img["thumb"]]
    assert thumb["loaded"] and thumb["width"] == build_report.THUMB_WIDTH
    assert_web_fonts_used(probe)


def has_player(nb):
    """True if a stored output of `nb` is a matplotlib animation player (``to_jshtml``)."""
    return any("class=\"animation\"" in o.get("data", {}).get("text/html", "")
               for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def stored_report(chromium, tmp_path_factory):
    """Index of every stored notebook, plus one page with display math: the first one that
    also holds an animation player if there is one (one render checks math, figures and the
    player, which keeps these tests fast), else the first with display math."""
    notebooks = read_all(build_report.find_notebooks(NOTEBOOKS))
    with_math = [(path, nb) for path, nb in notebooks if "$$" in markdown_source(nb)]
    if not with_math:
        pytest.skip("no notebook in notebooks/ has display math ($$) to render yet")
    path, nb = ([(p, n) for p, n in with_math if has_player(n)] or with_math)[0]
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
    assert len(probe["players"]) == has_player(nb)
    for player in probe["players"]:  # frames embedded: it steps and plays with no network
        assert player["start"]["index"] == 0 and player["start"]["loaded"]
        assert player["start"]["src"].startswith("data:image/")
        assert player["stepped"]["index"] == 1 and player["stepped"]["loaded"]
        assert player["played"]["index"] > 1 and player["played"]["loaded"]
        assert player["start"]["last"] >= 2  # more than two frames to play


def test_stored_index_renders(chromium, stored_report):
    out, notebooks, _, _, index = stored_report

    soup, probe = render(chromium, index, out)

    assert [a["href"] for a in soup.select("section h3 a")] == [f"{p.stem}.html" for p, _ in notebooks]
    with_headline = [any(c.outputs for c in build_report.headline_cells(nb)) for _, nb in notebooks]
    assert [bool(s.select(".headline")) for s in soup.find_all("section")] == with_headline
    with_figure = [build_report.key_figure(nb) is not None for _, nb in notebooks]
    assert [bool(s.select("a.thumb img")) for s in soup.find_all("section")] == with_figure
    thumbs = [img for img in probe["images"] if img["thumb"]]
    assert len(thumbs) == sum(with_figure)
    assert all(img["loaded"] and img["width"] > 0 for img in thumbs)
    assert soup.select(".answer .MathJax"), "the math of the short answers was not typeset"
    assert_math_and_images(soup, probe, n_display=0, n_images=sum(with_figure))
