"""Tests of the packaging: pyproject.toml's ranges admit requirements.txt's pins, the command
``emlab-segment`` is ``python -m emlab.cli.segment``, the wheel holds the two top-level names and
nothing else, the Makefile installs the project instead of setting PYTHONPATH, and (in the
Makefile's venv) the project is installed so that it imports from any folder."""

import ast
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SUPPORTED = ("3.11", "3.12", "3.13")


def pins():
    """{canonical name: (Version, marker or None)} of requirements.txt."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # one exact pin per line
            assert spec.operator == "==", line
            found[canonicalize_name(req.name)] = (Version(spec.version), req.marker)
    return found


PINS = pins()
DECLARED = [Requirement(r) for r in PROJECT["dependencies"]] + [
    Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]


def environments():
    return [{"python_version": v, "python_full_version": f"{v}.0"} for v in SUPPORTED]


@pytest.mark.parametrize("req", DECLARED, ids=[str(r) for r in DECLARED])
def test_every_declared_range_admits_its_pin(req):
    name = canonicalize_name(req.name)
    assert name in PINS, f"{req.name} is declared in pyproject.toml but not pinned in requirements.txt"
    version, marker = PINS[name]
    assert marker is None, f"{req.name} is pinned for some Pythons only ({marker})"
    assert req.specifier.contains(version, prereleases=True), (
        f"pyproject.toml's {req} does not admit requirements.txt's {req.name}=={version}")


def test_the_ranges_are_ranges_and_the_build_backend_is_pinned():
    assert all(not any(s.operator == "==" for s in r.specifier) for r in DECLARED)
    assert all(r.specifier for r in DECLARED), "every dependency has a lower bound"
    (backend,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    version, _ = PINS[canonicalize_name(backend.name)]
    assert backend.specifier.contains(version), (backend, version)


def test_every_third_party_import_of_the_package_is_declared():
    """A module the package imports at run time must be a dependency (or the standard library)."""
    distributions = importlib.metadata.packages_distributions()
    declared = {canonicalize_name(r.name) for r in map(Requirement, PROJECT["dependencies"])}
    ours = {"em_helpers", "emlab"}
    missing = set()
    for path in [ROOT / "em_helpers.py", *(ROOT / "emlab").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in ours or top in sys.stdlib_module_names:
                    continue
                dists = {canonicalize_name(d) for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert missing == set(), f"imported but not in pyproject's dependencies: {sorted(missing)}"


def test_python_versions_agree_between_pyproject_and_makefile():
    requires = SpecifierSet(PROJECT["requires-python"])
    assert all(requires.contains(f"{v}.0") for v in SUPPORTED)
    assert not requires.contains("3.10.0") and not requires.contains("3.14.0")
    assert "(3, 11) <= sys.version_info[:2] <= (3, 13)" in (ROOT / "Makefile").read_text()


def test_the_console_script_is_the_module_command():
    target = PROJECT["scripts"]["emlab-segment"]
    module, function = target.split(":")
    assert module == "emlab.cli.segment"
    main = getattr(importlib.import_module(module), function)
    assert callable(main)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_the_packages_are_listed_explicitly_and_cover_every_folder():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["py-modules"] == ["em_helpers"]
    assert setuptools["packages"]["find"]["include"] == ["emlab", "emlab.*"]
    folders = {p.parent for p in (ROOT / "emlab").rglob("*.py")}
    assert all((folder / "__init__.py").is_file() for folder in folders), \
        "every folder of emlab/ needs an __init__.py to be found and installed"
    assert not (ROOT / "src").exists()


# ----------------------------------------------------------------------------- the Makefile
def makefile():
    return (ROOT / "Makefile").read_text(encoding="utf-8")


def test_nothing_sets_pythonpath():
    files = [ROOT / "Makefile", ROOT / "pytest.ini", ROOT / ".ci" / "run",
             *(ROOT / "tests").glob("*.py")]
    offenders = [p.relative_to(ROOT).as_posix() for p in files if p != Path(__file__)
                 and "PYTHONPATH" in p.read_text(encoding="utf-8")]
    assert offenders == []
    assert not re.search(r"(?m)^\s*pythonpath\s*=.*(^|\s)\.(\s|$)", (ROOT / "pytest.ini").read_text())


def test_notebooks_do_not_reach_for_the_checkout():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        assert "sys.path" not in path.read_text(encoding="utf-8"), path.name


def test_the_makefile_installs_the_project_after_the_pins_and_tests_it_installed():
    text = makefile()
    pins_at = text.index("pip install --quiet -r requirements.txt")
    editable_at = text.index("--editable .")
    assert pins_at < editable_at
    assert re.search(r"\$\(STAMP\): requirements\.txt pyproject\.toml", text)
    test_recipe = text.split("\ntest: ")[1].split("\n\n")[0]
    assert "$(PY) -P -m pytest" in test_recipe and "--durations=" in test_recipe
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_make_lab_starts_jupyterlab_from_the_venv_on_the_notebooks():
    lab = makefile().split("\nlab: ")[1].split("\n\n")[0]
    assert "$(STAMP)" in lab and "$(PY) -m jupyter lab" in lab and "notebooks" in lab
    assert "jupyterlab" in PINS


def test_the_bench_target_has_one_line_per_script():
    bench = makefile().split("\nbench: ")[1].split("\n\n")[0].splitlines()[1:]
    scripts = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    named = sorted(m.group(1) for line in bench
                   if (m := re.search(r"benchmarks/(bench_\w+\.py)", line)))
    assert named == scripts


# ----------------------------------------------------------------------------- installed
def in_the_makefiles_venv():
    return Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()


def require_installed():
    """Skip outside the Makefile's venv (e.g. a shared venv with PYTHONPATH), unless CI=true."""
    # Metadata found through sys.path elsewhere (the checkout's emlab.egg-info, on PYTHONPATH)
    # is not an installation in this environment.
    prefix = Path(sys.prefix).resolve()
    for distribution in importlib.metadata.distributions(name="emlab"):
        if prefix in Path(distribution.locate_file("")).resolve().parents:
            return distribution
    if in_the_makefiles_venv() or os.environ.get("CI") == "true":
        pytest.fail("the project is not installed in this venv (make installs it with "
                    "pip install --editable .)")
    pytest.skip("the project is not installed in this environment")


def clean_environment():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}


def test_the_installed_project_imports_from_any_folder(tmp_path):
    require_installed()
    code = ("import em_helpers, emlab.imaging.segmentation as s, emlab.models.course_scans as c; "
            "print(em_helpers.__file__); print(s.__file__); print(len(c.load_images()))")
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_environment(), timeout=120)
    assert done.returncode == 0, done.stderr
    files = done.stdout.splitlines()
    assert Path(files[0]).resolve() == ROOT / "em_helpers.py"  # editable: the checkout's files
    assert files[2] == "2"  # load_images found data/ from another folder


def test_the_installed_command_is_the_module_command(tmp_path):
    distribution = require_installed()
    (entry,) = [e for e in distribution.entry_points
                if e.group == "console_scripts" and e.name == "emlab-segment"]
    assert entry.value == PROJECT["scripts"]["emlab-segment"]
    script = Path(sys.executable).parent / "emlab-segment"
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                               cwd=tmp_path, env=clean_environment(), timeout=120)
    by_module = subprocess.run([sys.executable, "-m", "emlab.cli.segment", "--help"],
                               capture_output=True, text=True, cwd=tmp_path,
                               env=clean_environment(), timeout=120)
    assert by_script.returncode == 0 == by_module.returncode, by_script.stderr
    assert by_script.stdout == by_module.stdout and "--classes" in by_script.stdout


def test_the_wheel_holds_the_package_and_the_course_module_only(tmp_path):
    """`pip install .` installs what the wheel holds: every module of ours, the command."""
    try:
        setuptools_version = Version(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        setuptools_version = None
    backend = Requirement(PYPROJECT["build-system"]["requires"][0])
    if setuptools_version is None or not backend.specifier.contains(setuptools_version):
        if in_the_makefiles_venv():
            pytest.fail(f"the pinned build backend {backend} is not installed")
        pytest.skip(f"the build backend {backend} is not installed here")
    source = tmp_path / "source"  # a copy, so that the build leaves the checkout as it was
    shutil.copytree(ROOT / "emlab", source / "emlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "em_helpers.py"):
        shutil.copy2(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--no-build-isolation", "--wheel-dir", str(tmp_path), str(source)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("emlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    expected = {"em_helpers.py", *(p.relative_to(ROOT).as_posix()
                                   for p in (ROOT / "emlab").rglob("*.py"))}
    assert modules == expected
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "emlab-segment = emlab.cli.segment:main" in \
        zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_source_file_is_ignored_by_git():
    """A fresh clone must have every file the package and its docs need (a pattern for the
    report's output once hid emlab/report/__init__.py)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard",
                           "--", "emlab", "em_helpers.py", "tests", "docs", "notebooks", "data",
                           "scripts", "benchmarks", "pyproject.toml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ignored = [name for name in done.stdout.splitlines()
               if "__pycache__" not in name and not name.endswith((".pyc", ".log"))
               and ".ipynb_checkpoints" not in name and ".egg-info/" not in name]
    assert ignored == [], f"files git ignores (a clone would lack them): {ignored}"
