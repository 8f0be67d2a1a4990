"""The numbers quoted in the notebooks' written answers must be among their printed outputs.

nbval guards the stored outputs (a re-run must print the same thing); this test guards the prose
that quotes them: every number in a markdown cell must equal, at the precision the prose gives it,
a number printed by one of that notebook's code cells, or be one of the notebook's constants
(``CONSTANTS`` below: values of the statement or of the data's design, which no cell prints).

How a prose number is read (the exclusions are few, and each has a reason):

* **Skipped text.** Inline code and code blocks (identifiers, shapes, calls), URLs and link
  targets, HTML tags, the section number at the start of a heading (``## 3. …``) and section
  references (``§10.2``).
* **Math is read, with its indices removed.** Answers quote results in LaTeX (``$\\ell=-2193.3367$``),
  so numbers inside ``$…$`` count; subscripts, superscripts and command names (``\\mu_1``,
  ``10^{-6}``, ``\\mathcal``) are removed first, since they are notation, not results
  (``\\tfrac12`` is read as 1/2).
* **Names are not numbers.** A number glued to a letter (``Image2``, ``x1``, ``Q4``, ``2σ``) or
  part of a version string (``1.12.1``) is a name.
* **Small integers are exempt.** 0 to 10 without a decimal point are mostly ordinals and counts
  of the design (question 2, distribution 0, seeds 0 and 2, three classes); every output table
  prints them in its index anyway, so checking them would guard nothing.
* **Sign is not compared.** The prose often says "falls by 0.3" for a printed -0.3; the digits
  are what drift.

A prose number ``x`` with ``d`` decimals matches a printed number ``y`` if ``|y|`` rounded to
``d`` decimals is ``|x|`` (so "0.68" matches a printed "0.6807", and "0.2800" a printed "0.28").
A percentage (``91.83 %``, or each end of ``5–40 %`` and of ``5, 10 and 40 %``) also matches
``100 y`` (a printed share 0.9183). Thousands separators (``13 742``, ``1,882,989``) and the
unicode minus are understood on both sides.

Printed outputs are stream text, ``text/plain`` and the text of ``text/html`` (pandas tables;
scripts and styles removed). Outputs of cells that nbval does not compare (``# NBVAL_IGNORE_OUTPUT``
first line or an ``nbval-ignore-output`` tag, i.e. timings) do not count: a number quoted from them
would not be guarded. Figures do not count either: a number that is only visible in a figure must
also be printed.

``README.md`` and the pages of ``docs/`` are read by the same rules; a number there must appear in
a source the page links to (a notebook's compared outputs, ``benchmarks/RESULTS.md``,
``data/truth.json``) or be one of ``DOC_CONSTANTS`` (the section at the end of this file).
"""

from __future__ import annotations

import copy
import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# Values of the statement or of the data's design, which the prose may quote without a cell
# printing them. Keyed by notebook file name; a notebook not listed has none.
# data/truth.json (the generating parameters): means (2, 2), (7, 3), (4.5, 7.5); Image1's
# variances 0.5 to 1.1; Image2 = Image1 + N(0, 1.2 I) noise; 200 points per class, 600 per scan.
CONSTANTS: dict[str, list[float]] = {
    "00_theory.ipynb": [2000],  # rows the notebook samples from its CMM for the Q5 checks
    "01_plot_data.ipynb": [
        199, 399, 400, 599,  # the rows of each class in the data files (0-199, 200-399, ...)
        4.5, 7.5,  # the generating means (2, 2), (7, 3), (4.5, 7.5) of data/truth.json
        0.5, 1.1,  # the range of Image1's true variances (data/truth.json)
        1.2,       # the variance of the noise added to make Image2 (data design)
    ],
    "02_e_step.ipynb": [200],  # points per class (data design)
    "03_m_step.ipynb": [
        1.8, 1.7,  # true variances of Image2's background (data/truth.json)
        1.2,       # the variance of the noise added to make Image2 (data design)
    ],
    "04_em_loop.ipynb": [
        500,  # the iteration cap the notebook's text states
        0.5,  # the nearest-mean boundary is halfway between the two means (geometry)
    ],
    "05_compare_images.ipynb": [
        1.2,  # the variance of the noise added to make Image2 (data design)
        200,  # points per class, in sigma / sqrt(200)
        0.6,  # a true variance, in the worked example sqrt(0.6 / 200)
        1200,  # cells of a scan: 600 points x 2 coordinates
        0.055, 0.095,  # sqrt(0.6 / 200) and sqrt(1.8 / 200): arithmetic on the design's values
        1.96,  # the normal 97.5 % quantile: the figure's 95 % intervals are +-1.96 SE
    ],
    "06_model_choice.ipynb": [200],  # points per class (data design)
    "07_missing_data.ipynb": [
        1.2,   # the variance of Image2's added noise (data design)
        1200,  # cells of a scan: 600 points x 2 coordinates
        80,    # 40 % of the 1200 cells, one per row at most, is 80 % of the 600 points (sweep)
    ],
    "08_mri_slice.ipynb": [
        42, 40, 11, 30,  # the implanted lesion's design: centre (42, 40), semi-axes 11 and 7, 30°
    ],
}

# --------------------------------------------------------------------------- reading prose
MINUS = "\u2212"
NUMBER = (
    r"(?<![\w.])"                                       # not glued to a name or a decimal point
    r"(?P<sign>[+\-" + MINUS + r"]?)"
    r"(?P<digits>\d{1,3}(?:(?:,|[ \u00a0\u202f\u2009])\d{3})+(?![\d.,]\d)|\d+(?:\.\d+)?)"
    r"(?![\w]|\.\d)"                                    # not a unit glued on, not a version
)
NUMBER_RE = re.compile(NUMBER)
# What may follow a number for it to share a later percent sign: "5–40 %", "5, 10 and 40 %".
PERCENT_TAIL = re.compile(
    r"(?:\s*(?:–|-|to|and|or|,)\s*[+\-" + MINUS + r"]?\d+(?:\.\d+)?)*\s*%"
)
SMALL_INTEGERS = 10


def strip_scripts(math):
    """`math` (LaTeX) without its sub/superscripts and command names."""
    math = re.sub(r"\\[td]?frac\s*(\d)\s*(\d)", r" \1 / \2 ", math)  # \tfrac12 is 1/2
    math = re.sub(r"\\[A-Za-z]+\*?|\\.", " ", math)
    out, i = [], 0
    while i < len(math):
        if math[i] in "_^":
            i += 1
            while i < len(math) and math[i] == " ":
                i += 1
            if i < len(math) and math[i] == "{":
                depth = 0
                while i < len(math):
                    depth += {"{": 1, "}": -1}.get(math[i], 0)
                    i += 1
                    if depth == 0:
                        break
            else:
                i += 1  # a single-character index
            out.append(" ")
        else:
            out.append(math[i])
            i += 1
    return "".join(out)


def prose_text(source):
    """The text of a markdown cell in which its numbers are read (see the module docstring)."""
    text = re.sub(r"```.*?```", " ", source, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"<[^>\n]+>", " ", text)
    text = re.sub(r"§\s*[\d.]*\d", " ", text)
    text = re.sub(r"(?m)^(\s{0,3}#{1,6}\s+)\d+(?:\.\d+)*[.:)]?(?=\s)", r"\1", text)
    text = re.sub(r"\$\$(.+?)\$\$", lambda m: " " + strip_scripts(m.group(1)) + " ", text,
                  flags=re.S)
    text = re.sub(r"\$(.+?)\$", lambda m: " " + strip_scripts(m.group(1)) + " ", text, flags=re.S)
    return text


def to_decimal(digits):
    return Decimal(re.sub(r"[, \u00a0\u202f\u2009]", "", digits))


def prose_numbers(source):
    """The numbers a markdown cell states: a list of dicts with ``text``, ``value`` (a Decimal,
    unsigned), ``percent`` and ``context`` (the words around it)."""
    text = prose_text(source)
    found = []
    for match in NUMBER_RE.finditer(text):
        value = to_decimal(match["digits"])
        if "." not in match["digits"] and value <= SMALL_INTEGERS:
            continue
        start, end = match.span()
        found.append({
            "text": match.group(0).strip(),
            "value": value,
            "percent": bool(PERCENT_TAIL.match(text, end)),
            "context": " ".join(text[max(0, start - 40):end + 30].split()),
        })
    return found


# --------------------------------------------------------------------------- reading outputs
OUTPUT_NUMBER_RE = re.compile(
    r"(?<![\d.])[+\-" + MINUS + r"]?"
    r"(\d{1,3}(?:[,\u00a0\u202f\u2009]\d{3})+(?![\d])|\d+(?:\.\d+)?(?:[eE][+\-]?\d+)?)"
)
IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"
IGNORE_TAGS = {"nbval-ignore-output", "nbval-skip"}


def output_is_compared(cell):
    """False for code cells whose outputs nbval leaves out (marker line or tag)."""
    first = cell.source.splitlines()[0].strip() if cell.source.strip() else ""
    tags = set(cell.get("metadata", {}).get("tags", []))
    return first not in (IGNORE_MARKER, "# NBVAL_SKIP") and not tags & IGNORE_TAGS


def html_text(fragment):
    soup = BeautifulSoup(fragment, "html.parser")
    for tag in soup(["script", "style"]):
        tag.decompose()
    return soup.get_text(" ")


def printed_text(output):
    """The text a reader sees of one stored output (no images)."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return f"{output.ename}: {output.evalue}"
    data = output.get("data", {})
    parts = [data.get("text/plain", "")]
    if "text/html" in data:
        parts.append(html_text(data["text/html"]))
    parts.append(data.get("text/latex", ""))
    parts.append(data.get("text/markdown", ""))
    return "\n".join(parts)


def output_numbers(nb):
    """Every number printed by the compared outputs of `nb`: a set of unsigned Decimals.

    A comma-grouped number ("1,882,989") adds both its value and its groups, since an output may
    also be a list written without spaces.
    """
    numbers = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or not output_is_compared(cell):
            continue
        for output in cell.get("outputs", []):
            text = printed_text(output)
            for match in OUTPUT_NUMBER_RE.finditer(text):
                numbers.add(abs(to_decimal(match.group(1))))
                if re.search(r"[,\u00a0\u202f\u2009]", match.group(1)):
                    numbers.update(Decimal(g) for g in re.split(r"[,\u00a0\u202f\u2009]",
                                                                 match.group(1)))
    return numbers


# --------------------------------------------------------------------------- matching
def decimals(value):
    return max(0, -value.as_tuple().exponent)


def rounded_forms(numbers, places):
    """``numbers`` rounded to `places` decimals, both ways of rounding a half."""
    quantum = Decimal(1).scaleb(-places)
    forms = set()
    for y in numbers:
        if y.is_finite():
            for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN):
                forms.add(y.quantize(quantum, rounding=rounding))
    return forms


class Printed:
    """The numbers of one notebook's outputs, to look prose numbers up in."""

    def __init__(self, numbers):
        self.numbers = set(numbers)
        self.percents = {y * 100 for y in self.numbers}
        self.cache = {}

    def has(self, value, percent=False):
        places = decimals(value)
        key = (places, percent)
        if key not in self.cache:
            pool = self.numbers | (self.percents if percent else set())
            self.cache[key] = rounded_forms(pool, places)
        return value in self.cache[key]


def unmatched_numbers(nb, constants=()):
    """Prose numbers of `nb` that no printed output and no constant explains.

    Returns a list of strings "cell N: 'x' in '…context…'", empty when the prose is consistent.
    """
    printed = Printed(output_numbers(nb))
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            problems += [f"cell {index}: {quote} is not among the printed outputs"
                         for quote in unexplained(cell.source, printed, constants)]
    return problems


def unexplained(source, printed, constants):
    """The numbers of the markdown `source` that neither `printed` (a Printed) nor `constants`
    explains, each quoted as "'x' in \"…context…\"" (marked if read as a percentage)."""
    constants = {Decimal(str(c)) for c in constants}
    quotes = []
    for number in prose_numbers(source):
        if number["value"] in constants or printed.has(number["value"], number["percent"]):
            continue
        kind = " (a percentage)" if number["percent"] else ""
        quotes.append(f"{number['text']!r}{kind} in \"…{number['context']}…\"")
    return quotes


# --------------------------------------------------------------------------- the notebooks
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.name for p in NOTEBOOK_PATHS])
def test_every_prose_number_is_printed(path):
    nb = nbformat.read(path, as_version=4)
    problems = unmatched_numbers(nb, CONSTANTS.get(path.name, []))
    assert problems == [], (
        f"{path.name}: numbers in the prose with no match among the printed outputs (fix the "
        f"prose, print the number, or, for a constant of the statement/design, add it to "
        f"CONSTANTS[{path.name!r}] in tests/test_prose.py):\n  " + "\n  ".join(problems))


def test_constants_name_only_existing_notebooks():
    assert set(CONSTANTS) <= {p.name for p in NOTEBOOK_PATHS} | {"06_model_choice.ipynb",
                                                                  "09_brain_volumes.ipynb"}


# --------------------------------------------------------------------------- the rules
def numbers_of(source):
    return [(n["text"], n["percent"]) for n in prose_numbers(source)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("accuracy 0.9183 (49 points)", [("0.9183", False), ("49", False)]),
        ("## 3. Side by side, 13 742 pixels", [("13 742", False)]),
        ("1,882,989 voxels, −0.0519 and +0.2051", [("1,882,989", False), ("−0.0519", False),
                                                  ("+0.2051", False)]),
        ("from 5–40 % and 12.5 %; 20 to 26 % below", [("40", True), ("12.5", True),
                                                      ("20", True), ("26", True)]),
        ("at 5, 10, 20 and 40 %, not 30 here", [("20", True), ("40", True), ("30", False)]),
        ("Image2, x1, Q4, 2σ, dipy 1.12.1, `shape (3, 600)`", []),
        ("$\\ell=-2193.3367$, $\\mu_{12}$, $10^{-6}$, $\\beta_{\\text{dipy 77}}$ = 0.1",
         [("-2193.3367", False), ("0.1", False)]),
        ("$-\\tfrac12\\ln|\\Sigma|$, $\\frac{1}{2}$ (PRML §10.2.1)", []),
        ("[link](https://x.org/a/123.html) <img width=300> points 0–7, 11 of them",
         [("11", False)]),
    ],
)
def test_prose_numbers_follow_the_documented_rules(source, expected):
    assert numbers_of(source) == expected


def notebook(prose, printed, ignored=""):
    cells = [new_markdown_cell(prose),
             new_code_cell("print()", execution_count=1,
                           outputs=[new_output("stream", name="stdout", text=printed)])]
    if ignored:
        cells.append(new_code_cell("# NBVAL_IGNORE_OUTPUT\nprint()", execution_count=2,
                                   outputs=[new_output("stream", name="stdout", text=ignored)]))
    return new_notebook(cells=cells)


@pytest.mark.parametrize(
    ("prose", "printed"),
    [
        ("accuracy 0.9183", "0.9183"),
        ("about 0.92, i.e. 0.9", "[0.9183 0.1]"),
        ("weight 0.2800", "0.28"),
        ("91.83 % of the points", "accuracy 0.9183"),
        ("14.1 % CSF", "CSF: 14.1 %"),
        ("an error of −0.6739", "-0.6739"),
        ("13 742 pixels, 1,882,989 voxels", "13742 and 1882989"),
        ("13 742 pixels", "13,742"),
        ("from 5–40 %", "0.05 0.40"),
        ("a tolerance of 1e-06, written 0.000001", "tol=1e-06"),
    ],
)
def test_a_prose_number_matches_its_printed_value(prose, printed):
    assert unmatched_numbers(notebook(prose, printed)) == []


@pytest.mark.parametrize(
    ("prose", "printed", "reported"),
    [
        ("accuracy 0.9184", "0.9183", "0.9184"),
        ("accuracy 0.918", "0.9175", None),  # rounds half up to 0.918: accepted
        ("accuracy 0.919", "0.9183", "0.919"),
        ("share 0.9183", "91.83 %", "0.9183"),  # a share is not a percentage
        ("2093.1 in all", "2092.382", "2093.1"),
        ("took 0.532 s", "", "0.532"),
    ],
)
def test_a_changed_digit_is_reported(prose, printed, reported):
    problems = unmatched_numbers(notebook(prose, printed))
    if reported is None:
        assert problems == []
    else:
        assert len(problems) == 1 and repr(reported) in problems[0] and "cell 0" in problems[0]


def test_ignored_outputs_and_figures_do_not_count_but_constants_do():
    nb = notebook("took 0.532 s, weight 0.25, noise 1.2", "weight 0.25", ignored="took 0.532 s")
    nb.cells[1].outputs.append(new_output("display_data", data={
        "image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x480 with 1 Axes>"}))
    nb.cells.append(new_code_cell("x", execution_count=3, outputs=[new_output(
        "execute_result", execution_count=3,
        data={"text/html": "<script>var frames = [1.2];</script><table><td>7.25</td></table>",
              "text/plain": "<IPython.core.display.HTML object>"})]))
    problems = unmatched_numbers(nb, constants=[])
    assert [p.split("'")[1] for p in problems] == ["0.532", "1.2"]
    assert [p.split("'")[1] for p in unmatched_numbers(nb, constants=[1.2])] == ["0.532"]


# --------------------------------------------------------------------------- self-test
def mutated(token):
    """`token` (a decimal number's text) with its last digit changed."""
    last = int(token[-1])
    return token[:-1] + str((last + 5) % 10)


def output_texts(nb):
    return [printed_text(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def quoted_decimal(nb):
    """(cell index, token) of a prose number with 3+ decimals that is printed verbatim, and
    whose mutated form is printed nowhere."""
    texts = "\n".join(output_texts(nb))
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for number in prose_numbers(cell.source):
            token = number["text"].lstrip("+-" + MINUS)
            if (decimals(number["value"]) >= 3 and token in cell.source and token in texts
                    and mutated(token) not in texts and mutated(token) not in cell.source):
                return index, token
    return None


WITH_QUOTES = [p for p in NOTEBOOK_PATHS if quoted_decimal(nbformat.read(p, as_version=4))]


@pytest.mark.parametrize("path", WITH_QUOTES, ids=[p.name for p in WITH_QUOTES])
def test_self_test_an_edited_prose_number_or_output_is_reported(path):
    nb = nbformat.read(path, as_version=4)
    constants = CONSTANTS.get(path.name, [])
    index, token = quoted_decimal(nb)
    before = unmatched_numbers(nb, constants)

    prose_edit = copy.deepcopy(nb)
    prose_edit.cells[index].source = prose_edit.cells[index].source.replace(token, mutated(token))
    new = set(unmatched_numbers(prose_edit, constants)) - set(before)
    assert any(f"cell {index}: " in p and mutated(token) in p for p in new), (token, new)

    output_edit = copy.deepcopy(nb)
    for cell in output_edit.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "stream":
                output.text = output.text.replace(token, mutated(token))
            for mime, value in output.get("data", {}).items():
                if isinstance(value, str) and not mime.startswith("image/"):
                    output.data[mime] = value.replace(token, mutated(token))
    assert token not in "\n".join(output_texts(output_edit))
    new = set(unmatched_numbers(output_edit, constants)) - set(before)
    assert any(f"cell {index}: " in p and f"{token}'" in p for p in new), (token, new)


def test_self_test_covers_most_notebooks():
    assert len(WITH_QUOTES) >= len(NOTEBOOK_PATHS) - 2, [p.name for p in WITH_QUOTES]


# --------------------------------------------------------------------------- README and docs/
# The same rules for the Markdown pages: a number in README.md or docs/*.md must appear, at the
# page's precision, in a source the page itself links to: a notebook (its compared outputs),
# a Markdown file of benchmarks/ (RESULTS.md, written by `make bench`) or a JSON file of data/
# (truth.json: the data's design). A number the page quotes from nowhere it links is reported,
# so a page states few numbers and links to where they are produced. DOC_CONSTANTS are the few
# values of the design that no source prints.
ROOT = NOTEBOOKS.parent
MARKDOWN_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_CONSTANTS = [
    3.11, 3.12, 3.13,  # the supported Python versions (pyproject.toml, Makefile)
    26,                # a voxel's neighbours with the diagonals (connectivity=26)
    1200,              # cells of a scan: 600 points x 2 coordinates (data design)
]
LINK_TARGET = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def linked_files(page, source):
    """The local files that the Markdown `source` of `page` links to (anchors dropped)."""
    found = []
    for target in LINK_TARGET.findall(source):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the page
        found.append((page.parent / target.split("#")[0]).resolve())
    return found


def json_numbers(value):
    """Every number in a JSON document, and the length of every list (a count the prose may
    state, e.g. the removed cells)."""
    if isinstance(value, bool):
        return set()
    if isinstance(value, (int, float)):
        return {abs(Decimal(repr(value)))}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    numbers = {Decimal(len(value))} if isinstance(value, list) else set()
    for item in items:
        numbers |= json_numbers(item)
    return numbers


def text_numbers(text):
    numbers = set()
    for match in OUTPUT_NUMBER_RE.finditer(text):
        numbers.add(abs(to_decimal(match.group(1))))
    return numbers


def source_numbers(path):
    """The numbers a linked file provides, or None if it is not a source of numbers."""
    import json

    if not path.is_file():
        return None
    if path.suffix == ".ipynb":
        return output_numbers(nbformat.read(path, as_version=4))
    if path.suffix == ".md" and path.parent.name == "benchmarks":
        return text_numbers(path.read_text(encoding="utf-8"))
    if path.suffix == ".json" and path.parent.name == "data":
        return json_numbers(json.loads(path.read_text(encoding="utf-8")))
    return None


def unmatched_page_numbers(page, source=None, constants=DOC_CONSTANTS):
    """Numbers of the Markdown page that no linked source and no constant explains.

    `source` (the page's text) defaults to the file's; returns strings "'x' in '…context…'".
    """
    source = page.read_text(encoding="utf-8") if source is None else source
    pool, names = set(), []
    for path in dict.fromkeys(linked_files(page, source)):
        numbers = source_numbers(path)
        if numbers is not None:
            pool |= numbers
            names.append(path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT)
                         else path.name)
    where = ", ".join(names) or "none"
    return [f"{quote} is in none of the sources the page links to ({where})"
            for quote in unexplained(source, Printed(pool), constants)]


@pytest.mark.parametrize("page", MARKDOWN_PAGES, ids=[p.relative_to(ROOT).as_posix()
                                                      for p in MARKDOWN_PAGES])
def test_every_number_of_the_readme_and_docs_is_in_a_linked_source(page):
    problems = unmatched_page_numbers(page)
    assert problems == [], (
        f"{page.relative_to(ROOT)}: numbers that no linked source states (link the notebook or "
        f"benchmarks/RESULTS.md that prints it, drop the number, or, for a constant of the "
        f"design, add it to DOC_CONSTANTS in tests/test_prose.py):\n  " + "\n  ".join(problems))


def test_a_page_number_counts_only_from_the_sources_the_page_links(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "RESULTS.md").write_text("| ratio | 0.0531 |\n| N | 1,882,989 |\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "truth.json").write_text('{"noise": 1.2, "cells": [[1, 0], [4, 1]]}')
    nbformat.write(notebook("", "accuracy 0.9183"), tmp_path / "n.ipynb")
    page = tmp_path / "page.md"
    links = "[r](benchmarks/RESULTS.md#scale) [t](data/truth.json) [n](n.ipynb)"
    good = f"{links}: 0.053 and 1,882,989 voxels; noise 1.2; 91.83 %; Python 3.12."
    assert unmatched_page_numbers(page, good) == []
    # A changed digit, a number from a source the page does not link, a share quoted as a
    # number, and a constant left out of the list are each reported.
    for bad, reported in [
            (good.replace("0.053", "0.054"), ["'0.054'"]),
            (good.replace("[n](n.ipynb)", "[n](other.ipynb)"), ["'91.83' (a percentage)"]),
            (good.replace("91.83 %", "0.9184"), ["'0.9184'"]),
            (good.replace("[r](benchmarks/RESULTS.md#scale)", ""), ["'0.053'", "'1,882,989'"])]:
        problems = unmatched_page_numbers(page, bad)
        assert len(problems) == len(reported), (bad, problems)
        assert all(r in p for r, p in zip(reported, problems)), (bad, problems)
    assert "(truth.json, n.ipynb)" in unmatched_page_numbers(
        page, good.replace("[r](benchmarks/RESULTS.md#scale)", ""))[0]
    assert unmatched_page_numbers(page, good, constants=[]) != []


def planted_pages():
    """(page, token) for each real page with a quoted decimal whose last digit, changed, matches
    nothing in the page's linked sources: the number a self-test plants."""
    found = []
    for page in MARKDOWN_PAGES:
        source = page.read_text(encoding="utf-8")
        pool = set()
        for path in linked_files(page, source):
            pool |= source_numbers(path) or set()
        printed = Printed(pool)
        for number in prose_numbers(source):
            token = number["text"].lstrip("+-" + MINUS)
            wrong = mutated(token)
            if decimals(number["value"]) >= 1 and wrong not in source and \
                    not printed.has(Decimal(wrong), number["percent"]):
                found.append((page, token))
                break
    return found


PLANTED = planted_pages()


@pytest.mark.parametrize(("page", "token"), PLANTED,
                         ids=[p.relative_to(ROOT).as_posix() for p, _ in PLANTED])
def test_self_test_a_wrong_number_planted_in_a_page_is_reported(page, token):
    source = page.read_text(encoding="utf-8")
    before = set(unmatched_page_numbers(page, source))
    wrong = source.replace(token, mutated(token))
    new = set(unmatched_page_numbers(page, wrong)) - before
    # the report quotes the number with its sign, the token is without it
    quoted = re.compile("'[+" + MINUS + "-]?" + re.escape(mutated(token)) + "'")
    assert any(quoted.search(p) for p in new), (token, new)


def test_self_test_covers_the_pages_that_quote_decimals():
    assert {p.relative_to(ROOT).as_posix() for p, _ in PLANTED} >= {"README.md", "docs/data.md"}
