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
- ``index.html``: a link to every page, in order, titled by each notebook's first
  markdown heading, with the outputs of the code cells tagged ``headline`` below it.
"""

from __future__ import annotations

import argparse
import html
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


# --------------------------------------------------------------------------- notebooks
def find_notebooks(folder):
    """Return the ``.ipynb`` files directly in `folder`, sorted by file name."""
    return sorted(Path(folder).glob("*.ipynb"))


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
</style>
</head>
<body>
<h1>{title}</h1>
<p>The notebooks in reading order; each page holds the code, the figures and the written answers.</p>
{sections}
</body>
</html>
"""


def index_html(entries, title="EM for mixture models: report"):
    """The index page for `entries`, a list of ``(page_href, title, headline_cells)``."""
    sections = []
    for href, heading, cells in entries:
        outputs = "\n".join(output_html(o) for cell in cells for o in cell.get("outputs", []))
        block = f"<div class='headline'>\n{outputs}\n</div>\n" if outputs else ""
        sections.append(
            f"<section>\n<h2><a href='{html.escape(href)}'>{html.escape(heading)}</a></h2>\n"
            f"{block}</section>"
        )
    return INDEX_TEMPLATE.format(
        title=html.escape(title), mathjax=MATHJAX_URL, fonts=MATHJAX_FONTS,
        sections="\n".join(sections),
    )


def write_index(notebooks, out_dir):
    """Write ``out_dir/index.html`` for `notebooks`, a list of ``(path, NotebookNode)``."""
    entries = [
        (f"{path.stem}.html", notebook_title(nb, path.stem), headline_cells(nb))
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
