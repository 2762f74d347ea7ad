# Two commands for a newcomer: `make run` (the default XOR experiment) and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint ui clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)            ## the default XOR experiment, logged to outputs/mlflow.db
	$(PY) -m runner $(ARGS)

lint: $(STAMP)            ## ruff, and the architecture's import contracts (pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

# Three workers on a 2-core machine: the Slurm and server tests mostly wait on their daemons,
# and a third worker trains meanwhile.
# The sources are compiled once first: where PYTHONDONTWRITEBYTECODE is set, each of the
# suite's few hundred Python processes compiled them again.
test: lint               ## lint, then the whole test suite, three tests at a time (pytest-xdist)
	$(PY) -m compileall -q runner hydra_plugins tests
	$(PY) -m pytest -q -n 3 --dist loadgroup $(ARGS)

ui: $(STAMP)             ## MLflow UI on the default store (localhost:5000), opened on the runs
	$(PY) -m runner.ui $(ARGS)

clean:
	rm -rf outputs
