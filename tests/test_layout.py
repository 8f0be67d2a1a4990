"""Tests of the layout itself: ``em_helpers`` stays the small course module, each ``emlab``
module stays one concern of a readable size, dependencies run one way (no cycles), no module
reaches into another's underscore names, and every module has a test file of its own."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"em_helpers": ROOT / "em_helpers.py",
           **{f"emlab.{p.stem}": p for p in sorted((ROOT / "emlab").glob("*.py"))
              if p.stem != "__init__"}}
# The modules that em_helpers itself needs; everything else is an application of it.
CORE_SUPPORT = {"emlab.validation", "emlab.fastpath", "emlab.covariance", "emlab.units",
                "emlab.distributed"}


def project_imports(path):
    """{imported project module: set of names taken from it} for one source file."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "emlab":  # from emlab import segmentation, ...
                for alias in node.names:
                    found.setdefault(f"emlab.{alias.name}", set())
            elif node.module in MODULES:
                found.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.setdefault(alias.name, set())
    return found


GRAPH = {name: project_imports(path) for name, path in MODULES.items()}


def test_the_package_init_imports_nothing_of_ours():
    assert project_imports(ROOT / "emlab" / "__init__.py") == {}


def test_there_is_no_import_cycle():
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in GRAPH[node]:
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join(path + [node, dep]))
            if dep not in state:
                visit(dep, path + [node])
        state[node] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name, [])


def test_dependencies_run_one_way():
    assert set(GRAPH["em_helpers"]) <= CORE_SUPPORT, GRAPH["em_helpers"]
    for name in CORE_SUPPORT:
        assert "em_helpers" not in GRAPH[name], f"{name} imports em_helpers back"


def test_no_module_takes_another_modules_underscore_names():
    for name, deps in GRAPH.items():
        for dep, names in deps.items():
            private = sorted(n for n in names if n.startswith("_") and n != "__future__")
            assert not private, f"{name} imports {private} from {dep}"
        source = MODULES[name].read_text()
        for dep in deps:
            alias = dep.rsplit(".", 1)[-1]
            assert f"{alias}._" not in source, f"{name} uses an underscore name of {dep}"


def test_the_course_module_and_every_package_module_stay_readable():
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert lines["em_helpers"] <= 1200, lines["em_helpers"]
    too_long = {name: n for name, n in lines.items() if name != "em_helpers" and n > 900}
    assert not too_long, too_long


def test_every_module_has_a_docstring_and_a_test_file():
    for name, path in MODULES.items():
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"
        test_file = ROOT / "tests" / f"test_{name.rsplit('.', 1)[-1]}.py"
        assert test_file.is_file(), f"{name} has no {test_file.name}"


def test_the_package_docstring_lists_every_module():
    listed = ast.get_docstring(ast.parse((ROOT / "emlab" / "__init__.py").read_text()))
    missing = [name for name in MODULES if name != "em_helpers" and f"``{name}``" not in listed]
    assert not missing, missing


def test_no_merge_conflict_markers_are_left_in_the_sources():
    paths = [*MODULES.values(), ROOT / "emlab" / "__init__.py", ROOT / "README.md",
             *(ROOT / "tests").glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"),
             *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip().strip('",').rstrip("\\n")
            assert not (text.startswith(("<<<<<<< ", ">>>>>>> ")) or text == "======="), \
                f"{path.name}:{number}: a merge conflict marker"
