"""Build the HTML report: one page per notebook plus an index, readable offline.

Usage (from the repository root; ``make report`` does exactly this)::

    PYTHONPATH=$PWD .venv/bin/python scripts/build_report.py [--no-execute] [--out DIR] [NOTEBOOK ...]

Without a notebook list every ``notebooks/*.ipynb`` is used, in file-name order.
With ``--execute`` (the default) each notebook is run on a copy held in memory, in
the notebooks' own folder and with the Python that runs this script; the committed
``.ipynb`` files are never written. The kernel inherits the environment, so
``PYTHONPATH`` must reach the repository root for ``import em_helpers`` and ``emlab``.

Output in ``DIR`` (default ``report/``):

- ``<notebook>.html``: nbconvert's lab template with figures embedded as data URIs,
  no require.js, and MathJax loaded from ``DIR/mathjax`` so equations render without
  a network;
- ``mathjax/``: a copy of MathJax 2.7 from the ``jupyter-server-mathjax`` package;
- ``index.html``: a sentence saying that the data are generated stand-ins (linking to
  ``DATA_PAGE``), then the notebooks in two groups by their number (``notebook_group``): "The
  course questions" (00 to ``COURSE_LAST``) and "Beyond the course" (the rest). One section per
  notebook, in order: its title (the first markdown heading) linking to its page, its short
  answer, its key figure as a thumbnail linking to the page, and the outputs of its code cells
  tagged ``headline``.

Cell tags (cell metadata ``tags``; nbval and nbconvert ignore them) say what the index shows:

- ``answer`` (markdown cells): the written answer. Without any, the first markdown cell whose
  first heading is "Answer" is used. The short answer is taken from each answer cell, never
  retyped: its first paragraph (after the heading), cut to its bold lead-in and first sentence;
  a list gives one such line per item.
- ``key-figure`` (a code cell): its first image output becomes the thumbnail (downscaled to
  ``THUMB_WIDTH`` pixels, embedded as a data URI).
- ``headline`` (code cells): their outputs (tables, text, figures) are shown in full.

A notebook without these tags still gets its section, with what it has.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import shutil
import sys
from pathlib import Path

import jupyter_server_mathjax
import nbformat
from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html

REPO = Path(__file__).resolve().parent.parent
HEADLINE_TAG = "headline"
ANSWER_TAG = "answer"
KEY_FIGURE_TAG = "key-figure"
THUMB_WIDTH = 480  # pixels of a thumbnail (shown at half that width: sharp on HiDPI screens)
# The two MathJax configs that jupyter-server-mathjax ships are TeX-AMS-MML_HTMLorMML-full
# and Safe; nbconvert's default (TeX-AMS_CHTML-full) is absent there and leaves math raw.
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# That package ships only the STIX-Web fonts (MathJax's default TeX fonts are stripped),
# so HTML-CSS output is told to use them, as Jupyter's classic notebook did.
MATHJAX_FONTS = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], webFont: "STIX-Web", imageFont: null}});
</script>"""
# nbconvert's lab template, minus the require.js <script> it loads from a CDN (only
# needed for widgets, which these notebooks do not use), plus the font setting above.
PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}""" + MATHJAX_FONTS + """{{ super() }}{%- endblock html_head_js_mathjax -%}
"""
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
# The index's two groups: notebooks numbered 00..COURSE_LAST answer the course's questions.
COURSE_LAST = 5
COURSE_GROUP = "The course questions"
BEYOND_GROUP = "Beyond the course"
# The data page, relative to the report folder (report/ sits next to docs/).
DATA_PAGE = "../docs/data.md"


# --------------------------------------------------------------------------- notebooks
def find_notebooks(folder):
    """Return the ``.ipynb`` files directly in `folder`, sorted by file name."""
    return sorted(Path(folder).glob("*.ipynb"))


def notebook_group(name):
    """``COURSE_GROUP`` for a notebook whose file name starts with a number up to
    ``COURSE_LAST`` (``05_compare_images``), else ``BEYOND_GROUP`` (a later number, or none)."""
    match = re.match(r"\d+", Path(name).stem)
    return COURSE_GROUP if match and int(match.group(0)) <= COURSE_LAST else BEYOND_GROUP


def notebook_title(nb, fallback):
    """Text of the first markdown heading of `nb`, or `fallback` if it has none."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            match = HEADING.match(line)
            if match:
                return match.group(1)
    return fallback


def headline_cells(nb):
    """The code cells of `nb` tagged ``headline`` (cell metadata ``tags``)."""
    return [
        cell
        for cell in nb.cells
        if cell.cell_type == "code" and HEADLINE_TAG in cell.get("metadata", {}).get("tags", [])
    ]


def tagged_cells(nb, tag, cell_type):
    """The cells of `nb` of type `cell_type` whose metadata ``tags`` include `tag`."""
    return [cell for cell in nb.cells
            if cell.cell_type == cell_type and tag in cell.get("metadata", {}).get("tags", [])]


def first_heading(source):
    """Text of the first markdown heading line in `source`, or None."""
    for line in source.splitlines():
        match = HEADING.match(line)
        if match:
            return match.group(1)
    return None


def answer_cells(nb):
    """The markdown cells tagged ``answer``; without any, the first markdown cell whose first
    heading is "Answer" (as a one-element list); otherwise an empty list."""
    cells = tagged_cells(nb, ANSWER_TAG, "markdown")
    if cells:
        return cells
    for cell in nb.cells:
        heading = first_heading(cell.source) if cell.cell_type == "markdown" else None
        if heading is not None and heading.strip().rstrip(":.").lower() == "answer":
            return [cell]
    return []


LIST_ITEM = re.compile(r"^[ \t]{0,3}(?:[*+-]|\d+[.)])\s+")
# Spans in which a full stop never ends a sentence: inline/display math and inline code.
PROTECTED = re.compile(r"\$\$.+?\$\$|\$[^$]+\$|`[^`]*`", re.S)
SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z*_`$(\"“]|\s*$)")


def first_sentence(text):
    """`text` up to the end of its first sentence (a full stop, ! or ? followed by a capital
    or the end); full stops inside math and code do not count."""
    masked = PROTECTED.sub(lambda m: "x" * len(m.group(0)), text)
    match = SENTENCE_END.search(masked)
    return text[:match.end()] if match else text


def shorten(text):
    """A paragraph cut to its bold lead-in (``**…**`` at its start, if any) and first sentence."""
    text = " ".join(text.split())
    lead = ""
    if text.startswith("**"):
        end = text.find("**", 2)
        if end > 0:
            lead, text = text[:end + 2], text[end + 2:].strip()
    return " ".join(part for part in (lead, first_sentence(text) if text else "") if part)


def short_answer(source):
    """The short answer (markdown) of one answer cell: its first paragraph after any heading,
    cut by ``shorten``; a list keeps one shortened line per item."""
    lines = [line for line in source.splitlines() if not HEADING.match(line)]
    blocks = [b for b in re.split(r"\n\s*\n", "\n".join(lines)) if b.strip()]
    if not blocks:
        return ""
    block = blocks[0].strip("\n")
    if not LIST_ITEM.match(block):
        return shorten(block)
    items, current = [], []
    for line in block.splitlines():
        if LIST_ITEM.match(line) and current:
            items.append(" ".join(current))
            current = []
        current.append(LIST_ITEM.sub("", line, count=1) if not current else line.strip())
    items.append(" ".join(current))
    return "\n".join(f"* {shorten(item)}" for item in items)


def key_figure(nb):
    """``(mime, base64)`` of the first image output of the first code cell tagged
    ``key-figure``, or None."""
    for cell in tagged_cells(nb, KEY_FIGURE_TAG, "code"):
        for output in cell.get("outputs", []):
            for mime in ("image/png", "image/jpeg"):
                if mime in output.get("data", {}):
                    return mime, "".join(output.data[mime].split())
    return None


def thumbnail(payload, width=THUMB_WIDTH):
    """A base64 PNG of the base64 image `payload`, scaled down to `width` pixels if wider."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    if image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.convert("RGB").resize((width, height), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


class _ThisPython(KernelSpecManager):
    """Kernel specs that always start ipykernel with the Python running this script."""

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())


def execute(nb, cwd, timeout=600):
    """Run every cell of `nb` in place (an in-memory copy) with `cwd` as working folder.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    km = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisPython())
    try:
        NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    finally:  # nbclient leaves a kernel it did not create running
        if km.has_kernel:
            km.shutdown_kernel()
    return nb


# --------------------------------------------------------------------------- HTML pages
def copy_mathjax(out_dir):
    """Copy MathJax from the jupyter-server-mathjax package to ``out_dir/mathjax``."""
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = Path(out_dir) / "mathjax"
    shutil.copytree(source, target, dirs_exist_ok=True)
    return target


def export_page(nb, name, out_dir):
    """Write `nb` as ``out_dir/<name>.html`` (images embedded, local MathJax); return the path."""
    exporter = HTMLExporter(template_name="lab", embed_images=True, mathjax_url=MATHJAX_URL)
    exporter.raw_template = PAGE_TEMPLATE
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": name}})
    path = Path(out_dir) / f"{name}.html"
    path.write_text(body, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- index
def output_html(output):
    """One stored cell output as an HTML fragment (richest format first)."""
    if output.output_type == "stream":
        return f"<pre>{html.escape(output.text)}</pre>"
    if output.output_type == "error":
        return f"<pre class='error'>{html.escape(output.ename)}: {html.escape(output.evalue)}</pre>"
    data = output.get("data", {})
    if "text/html" in data:
        return data["text/html"]
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            payload = "".join(data[mime].split())  # base64, possibly wrapped
            return f"<img src='data:{mime};base64,{payload}' alt='figure'>"
    if "image/svg+xml" in data:
        return data["image/svg+xml"]
    if "text/markdown" in data:
        return markdown2html(data["text/markdown"])
    if "text/latex" in data:
        return f"<div>{html.escape(data['text/latex'])}</div>"
    if "text/plain" in data:
        return f"<pre>{html.escape(data['text/plain'])}</pre>"
    return ""


INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script type="text/x-mathjax-config">
MathJax.Hub.Config({{tex2jax: {{inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true}},
                    messageStyle: "none"}});
</script>
{fonts}
<script src="{mathjax}"></script>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.4; }}
section {{ border-top: 1px solid #ccc; padding: 0.5em 0 1em; }}
.headline {{ overflow-x: auto; }}
.headline table {{ border-collapse: collapse; font-size: 0.9em; }}
.headline th, .headline td {{ border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }}
.headline img {{ max-width: 100%; }}
.summary {{ display: flex; gap: 1.2em; align-items: flex-start; margin-bottom: 0.8em; }}
.summary .answer {{ flex: 1; }}
.summary .answer ul {{ margin: 0; padding-left: 1.2em; }}
.summary .answer p {{ margin-top: 0; }}
a.thumb img {{ width: {thumb_css}px; border: 1px solid #ccc; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="data-note">The course's two scans (<code>Image1.csv</code>, <code>Image2.csv</code>) were not
available, so the ones used here are generated stand-ins: <a href="{data_page}">the data page</a>
says how they were made and how to use the real files.</p>
<p>The notebooks in reading order: each one's short answer (taken from its written answer) and its
key figure; a title or a figure opens the page with the code, all figures and the full answer.</p>
{sections}
</body>
</html>
"""


def summary_html(href, heading, answers, figure):
    """The answer-and-thumbnail block of one section ("" if the notebook has neither)."""
    parts = []
    if figure is not None:
        mime, payload = figure
        parts.append(f"<a class='thumb' href='{html.escape(href)}'><img "
                     f"src='data:image/png;base64,{thumbnail(payload)}' "
                     f"alt='key figure of {html.escape(heading)}'></a>")
    text = "\n\n".join(short_answer(cell.source) for cell in answers)
    if text.strip():
        parts.append(f"<div class='answer'>\n{markdown2html(text)}\n</div>")
    return f"<div class='summary'>\n{''.join(parts)}\n</div>\n" if parts else ""


def index_html(entries, title="EM for mixture models: report"):
    """The index page for `entries`, a list of ``(page_href, title, headline_cells)`` or
    ``(page_href, title, headline_cells, answer_cells, key_figure)`` (see ``write_index``), in
    reading order. A group heading (``notebook_group`` of the page's name) opens wherever the
    group changes."""
    sections, group = [], None
    for href, heading, cells, *extra in entries:
        answers, figure = extra if extra else ([], None)
        if notebook_group(href) != group:
            group = notebook_group(href)
            sections.append(f"<h2 class='group'>{html.escape(group)}</h2>")
        outputs = "\n".join(output_html(o) for cell in cells for o in cell.get("outputs", []))
        block = f"<div class='headline'>\n{outputs}\n</div>\n" if outputs else ""
        sections.append(
            f"<section>\n<h3><a href='{html.escape(href)}'>{html.escape(heading)}</a></h3>\n"
            f"{summary_html(href, heading, answers, figure)}{block}</section>"
        )
    return INDEX_TEMPLATE.format(
        title=html.escape(title), mathjax=MATHJAX_URL, fonts=MATHJAX_FONTS,
        sections="\n".join(sections), thumb_css=THUMB_WIDTH // 2,
        data_page=html.escape(DATA_PAGE),
    )


def write_index(notebooks, out_dir):
    """Write ``out_dir/index.html`` for `notebooks`, a list of ``(path, NotebookNode)``."""
    entries = [
        (f"{path.stem}.html", notebook_title(nb, path.stem), headline_cells(nb),
         answer_cells(nb), key_figure(nb))
        for path, nb in notebooks
    ]
    target = Path(out_dir) / "index.html"
    target.write_text(index_html(entries), encoding="utf-8")
    return target


# --------------------------------------------------------------------------- main
def build(paths, out_dir, run=True, timeout=600, log=print):
    """Execute (optionally) and export every notebook in `paths`, then write the index."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out_dir)
    done = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        if run:
            log(f"executing {path}")
            execute(nb, cwd=path.resolve().parent, timeout=timeout)
        export_page(nb, path.stem, out_dir)
        done.append((path, nb))
    index = write_index(done, out_dir)
    log(f"wrote {index} ({len(done)} notebooks)")
    return index


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks in reading order (default: notebooks/*.ipynb by name)")
    parser.add_argument("--out", type=Path, default=REPO / "report", help="output folder")
    parser.add_argument("--execute", action=argparse.BooleanOptionalAction, default=True,
                        help="run each notebook (a copy) before exporting (default: yes)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or find_notebooks(REPO / "notebooks")
    if not paths:
        parser.error("no notebooks given and none found in notebooks/")
    build(paths, args.out, run=args.execute, timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
