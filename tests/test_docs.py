"""Tests of README.md and docs/: a README a newcomer reads (short, the data caveat near the top,
the issue's order), links that resolve, every page listed in the docs index, module names that
exist, and Python examples that run. (Their numbers are checked by tests/test_prose.py.)"""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
PAGE_IDS = [p.relative_to(ROOT).as_posix() for p in PAGES]
MAX_README_LINES = 150
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"(<!--[^>]*-->\s*)?```python\n(.*?)```", re.S)
NOT_EXECUTED = "<!-- not executed:"


def text(page):
    return page.read_text(encoding="utf-8")


def local_links(page):
    """(target, resolved path) of every link of `page` that is not a URL or an anchor."""
    for target in LINK.findall(text(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        yield target, (page.parent / target.split("#")[0]).resolve()


def test_the_readme_is_short():
    n_lines = len(text(README).splitlines())
    assert n_lines <= MAX_README_LINES, f"README.md has {n_lines} lines (at most {MAX_README_LINES})"


def test_the_readme_follows_the_newcomers_order():
    """What this is, the data caveat, the commands, the reading order, the map, the links."""
    headings = [h.lower() for h in re.findall(r"(?m)^## (.+)$", text(README))]
    expected = ["data", "commands", "reading order", "package", "documentation"]
    positions = [next((i for i, h in enumerate(headings) if word in h), None) for word in expected]
    assert None not in positions and positions == sorted(positions), headings
    first = text(README).split("\n## ")[0]
    assert len([p for p in first.split("\n\n")[1:] if p.strip()]) == 1, "one opening paragraph"


def test_the_data_caveat_is_near_the_top_and_links_the_data_page():
    head = "\n".join(text(README).splitlines()[:30])
    assert "not available" in head and "generated" in head and "stand-ins" in head
    assert "](docs/data.md)" in head and "copy them into `data/`" in head


def test_the_commands_and_the_reading_order_are_given():
    readme = text(README)
    for command in ("make test", "make report", "make lab", "pip install", "emlab-segment"):
        assert command in readme, command
    order = [m for m in re.findall(r"\]\(notebooks/(\d\d)_", readme)]
    assert order == sorted(order) and order[0] == "00" and len(order) == len(
        list((ROOT / "notebooks").glob("*.ipynb"))), order


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page):
    broken = [target for target, path in local_links(page) if not path.exists()]
    assert broken == [], f"{page.relative_to(ROOT)}: links to missing files {broken}"


def test_every_docs_page_is_in_the_docs_index_and_the_index_in_the_readme():
    index = DOCS / "README.md"
    listed = {path for _, path in local_links(index)}
    missing = [p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in listed]
    assert missing == [], f"pages missing from docs/README.md: {missing}"
    assert index.resolve() in {path for _, path in local_links(README)}


def test_the_module_map_lives_in_the_package_only():
    """The README links the map in emlab/__init__.py rather than repeating it."""
    assert "](emlab/__init__.py)" in text(README)
    modules = {p.stem for p in (ROOT / "emlab").rglob("*.py") if p.stem != "__init__"}
    named = {m for m in modules if f"emlab.{m.split('.')[-1]}" in text(README)
             or re.search(rf"`emlab\.\w+\.{m}`", text(README))}
    assert len(named) <= 2, f"the README lists modules: {sorted(named)}"


def dotted_names(page):
    return sorted(set(re.findall(r"\bemlab(?:\.[A-Za-z_]\w*)+", text(page))))


def resolves(name):
    """True if `name` is a module of ours, or an attribute of one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_module_the_pages_name_exists(page):
    missing = [name for name in dotted_names(page) if not resolves(name)]
    assert missing == [], f"{page.relative_to(ROOT)} names what does not exist: {missing}"


def test_resolves_tells_old_names_from_new():
    assert resolves("emlab.engine.chunked.SAMPLE_ROWS") and resolves("emlab.cli.segment")
    assert not resolves("emlab.segment") and not resolves("emlab.engine.chunked.SAMPLE_ROW")


def examples():
    found = []
    for page in PAGES:
        for index, match in enumerate(CODE_BLOCK.finditer(text(page))):
            if not (match.group(1) or "").startswith(NOT_EXECUTED):
                found.append(pytest.param(match.group(2),
                                          id=f"{page.relative_to(ROOT).as_posix()}-{index}"))
    return found


@pytest.mark.parametrize("code", examples())
def test_the_python_examples_run(code, monkeypatch):
    """Each example runs as written from the checkout's root folder (the usage examples say
    so), in a fresh namespace: no name is used before it is defined."""
    monkeypatch.chdir(ROOT)
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def test_an_example_that_uses_a_name_before_defining_it_fails(monkeypatch):
    monkeypatch.chdir(ROOT)
    code = 'import em_helpers as em\nX, y = em.load_image("data/Image2.csv")\nR = em.e_step(X, means)'
    with pytest.raises(NameError, match="means"):
        exec(compile(code, "<example>", "exec"), {})
