# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use and install everything with torch pinned (constraints.txt).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= client,train,export,serve,openvino,dev

.PHONY: setup demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: synthetic cohort -> CV training -> report -> Grad-CAM -> export -> Triton -> client.
demo: $(STAMP)
	$(VENV)/bin/gliodeploy demo --out demo_output --overwrite

## Lint, format check and the whole test suite (what CI runs).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) bench/run_benchmarks.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
