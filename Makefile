# Two commands: `make test` (unit tests + every notebook under nbval) and
# `make report` (run the notebooks, export HTML to report/). `make lab` opens the notebooks in
# JupyterLab. Each builds .venv first: the pins of requirements.txt, then this project in
# editable mode (pyproject.toml), so `import em_helpers` and `import emlab` work from any folder.
.PHONY: test report lab bench data clean

# Python 3.11, 3.12 or 3.13 (requirements.txt installs the same pins on all three). The first
# of python3.11, python3.12, python3.13, python3 on PATH is used; override with PYTHON=...
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# matplotlib needs a writable config folder (git-ignored); MPLBACKEND must stay unset so
# ipykernel picks its inline backend (an exported MPLBACKEND=Agg makes every figure disappear).
export MPLCONFIGDIR := $(CURDIR)/.mplconfig
unexport MPLBACKEND
# One BLAS thread for tests and notebooks: the last digits of BLAS results depend on the
# thread count, and on 2 shared cores OpenBLAS threads slow small problems down. (The
# benchmark sets its own thread counts with threadpoolctl.)
test report: export OPENBLAS_NUM_THREADS := 1
test report: export OMP_NUM_THREADS := 1
test report: export MKL_NUM_THREADS := 1

# (Re)create the venv when it is missing or requirements.txt or pyproject.toml is newer than the
# stamp. The pins include the build backend (setuptools), so the editable install builds with
# them (--no-build-isolation) and pip checks that the pins satisfy pyproject's ranges.
$(STAMP): requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3.11, 3.12, 3.13 or python3 on PATH" >&2; exit 1; }
	@$(PYTHON) -c '$(SUPPORTED)' || \
	  { echo "error: Python 3.11 to 3.13 is required, $(PYTHON) is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c '$(SUPPORTED)' || \
	  { echo "error: $(VENV) is not Python 3.11 to 3.13: remove it and run make again" >&2; exit 1; }
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-build-isolation --editable .
	touch $@

# One pytest run: tests/ plus every notebook re-executed and compared by nbval, with this venv's
# Python as the kernel. `-P` keeps the current folder off sys.path, so the tests import the
# installed project, as the notebooks' kernels (started in notebooks/) do. --durations lists the
# slowest tests. Exit code 5 (nothing collected) is an error. Two pytest-xdist workers, one file
# each at a time (--dist loadfile: a notebook's cells stay in order in one kernel), use both
# cores: about 2 minutes instead of 3.
test: $(STAMP)
	@mkdir -p $(MPLCONFIGDIR)
	$(PY) -P -m pytest -n 2 --dist loadfile tests notebooks --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg --durations=10 -ra; \
	  rc=$$?; [ $$rc -ne 5 ] || echo "error: pytest collected no tests" >&2; exit $$rc

# Execute copies of the notebooks and write a fresh report/ (HTML + index.html + MathJax).
report: $(STAMP)
	@mkdir -p $(MPLCONFIGDIR)
	rm -rf report
	$(PY) scripts/build_report.py --out report

# JupyterLab from the venv, on the notebooks (the kernel is the venv's Python). Jupyter refuses
# to run as root unless told, as in many containers: then --allow-root is added.
lab: $(STAMP)
	@mkdir -p $(MPLCONFIGDIR)
	$(PY) -m jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Each script writes its own section of benchmarks/RESULTS.md (docs/benchmarks.md; about 20
# minutes in all; bench_scale needs about 1.6 GB free in the temporary folder and deletes its
# files). One line per script.
bench: $(STAMP)
	$(PY) benchmarks/bench_em.py
	$(PY) benchmarks/bench_segmentation.py
	$(PY) benchmarks/bench_scale.py --repeats 5
	$(PY) benchmarks/bench_imputers.py
	$(PY) benchmarks/bench_lesions.py
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements-bench.txt && $(PY) benchmarks/bench_real_scans.py

data: $(STAMP)
	$(PY) data/make_images.py

clean:
	rm -rf report .mplconfig
