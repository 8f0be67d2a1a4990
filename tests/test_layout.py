"""Tests of the layout itself: ``em_helpers`` stays the small course module, ``emlab`` is in
folders by concern whose dependencies run one way (engine, then ``em_helpers``, then models,
imaging, and on top the command line and the report, which nothing in the package imports), no
module reaches into another's underscore names, and every module has a test file of its own."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "models", "imaging", "report", "cli")
MODULES = {"em_helpers": ROOT / "em_helpers.py",
           **{".".join(p.relative_to(ROOT).with_suffix("").parts): p
              for p in sorted((ROOT / "emlab").rglob("*.py")) if p.stem != "__init__"}}
PACKAGES = {"emlab", *(f"emlab.{folder}" for folder in FOLDERS)}
# The layer of each folder: a module imports only from its own folder and from lower layers.
# The command line and the report sit side by side on top; nothing in the package imports them.
LAYER = {"engine": 0, "em_helpers": 1, "models": 2, "imaging": 3, "cli": 4, "report": 4}


def layer_of(name):
    return LAYER["em_helpers"] if name == "em_helpers" else LAYER[name.split(".")[1]]


def folder_of(name):
    return name if name == "em_helpers" else name.split(".")[1]


def project_imports(path):
    """{imported project module: set of names taken from it} for one source file."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PACKAGES:  # from emlab.imaging import segmentation, ...
                for alias in node.names:
                    found.setdefault(f"{node.module}.{alias.name}", set())
            elif node.module in MODULES:
                found.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.setdefault(alias.name, set())
    return found


GRAPH = {name: project_imports(path) for name, path in MODULES.items()}


def test_the_package_and_folder_inits_import_nothing_of_ours():
    for path in (ROOT / "emlab").rglob("__init__.py"):
        assert project_imports(path) == {}, path
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"


def test_the_package_has_its_folders_and_no_loose_modules():
    assert sorted(p.name for p in (ROOT / "emlab").iterdir()
                  if p.is_dir() and p.name != "__pycache__") == sorted(FOLDERS)
    assert [p.name for p in (ROOT / "emlab").glob("*.py")] == ["__init__.py"]


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
    for name, deps in GRAPH.items():
        for dep in deps:
            same_folder = folder_of(dep) == folder_of(name)
            assert same_folder or layer_of(dep) < layer_of(name), \
                f"{name} (layer {folder_of(name)}) imports {dep} (layer {folder_of(dep)})"


def test_em_helpers_uses_only_the_engine_and_the_engine_nothing_above_it():
    assert {folder_of(dep) for dep in GRAPH["em_helpers"]} <= {"engine"}, GRAPH["em_helpers"]
    for name in GRAPH:
        if folder_of(name) == "engine":
            assert {folder_of(dep) for dep in GRAPH[name]} <= {"engine"}, (name, GRAPH[name])


def test_nothing_in_the_package_imports_the_report_or_the_command_line():
    for name, deps in GRAPH.items():
        for dep in deps:
            if folder_of(dep) in ("report", "cli"):
                assert folder_of(name) == folder_of(dep), f"{name} imports {dep}"


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
    paths = [*MODULES.values(), *(ROOT / "emlab").rglob("__init__.py"), ROOT / "README.md",
             *(ROOT / "tests").glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"),
             *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip().strip('",').rstrip("\\n")
            assert not (text.startswith(("<<<<<<< ", ">>>>>>> ")) or text == "======="), \
                f"{path.name}:{number}: a merge conflict marker"
