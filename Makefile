# The two commands: `make demo` and `make test`. Each creates .venv when it is missing and installs
# what it needs. Without CUDA the CPU wheel torch==2.13.0 is installed before anything that depends
# on torch, so no multi-GB CUDA build is ever pulled.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.editgrpo-installed
TORCH_CPU ?= torch==2.13.0
DEMO_OUT  ?= runs/demo

.PHONY: demo test lint bench venv clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "CUDA device found: installing torch from the package index"; $(PIP) install -q "torch>=2.6"; \
	else \
	  echo "no CUDA device: installing the CPU wheel $(TORCH_CPU)"; $(PIP) install -q "$(TORCH_CPU)"; \
	fi
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/editgrpo demo --out $(DEMO_OUT)

# Chromium for the test that renders an evaluation report in a real browser
# (tests/unit/eval/test_report.py): installed from the Debian packages when running as root and none
# is on PATH (about 15 s with apt-get update); otherwise the test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (Debian package) for the report screenshot test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	    || echo "chromium could not be installed: the screenshot test will skip"; \
	else echo "no chromium and not root: the report screenshot test will skip (install chromium to run it)"; fi

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
