# The README's two commands are `make run` and `make test`; the rest are helpers.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1

export PATH := $(abspath $(VENV))/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
# the project's own Prefect database (.prefect/home/prefect.db), for make run's temporary server and make prefect-server
export PREFECT_HOME ?= $(abspath .prefect/home)
export PREFECT_LOCAL_STORAGE_PATH ?= $(abspath .prefect/storage)
export DVC_NO_ANALYTICS ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: setup run test test-fast benchmark benchmark-table repro mlflow-ui prefect-server serve worker exps lint clean

# Fashion-MNIST (the benchmark's data) from Debian's package; root installs it, others are told how.
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

setup: $(STAMP) $(FASHION)

$(FASHION):
	@if [ "$$(id -u)" = 0 ]; then \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } && \
	  echo "installed Debian's dataset-fashion-mnist" || \
	  echo "could not install dataset-fashion-mnist (make benchmark needs it; make run and make test do not)"; \
	else echo "Fashion-MNIST is missing: run  sudo apt-get install dataset-fashion-mnist  (only make benchmark needs it)"; fi

# torch/torchvision are pinned in pyproject.toml, so one install command gets a consistent set.
# uv installs it: the same pins in about 25 s where pip takes about 2.5 min, nearly all of it
# unpacking torch's 6 GB. uv reads no pip configuration, so pip's own sources on this machine
# (local wheel folders and indexes, where torch lies on disk) are handed to it; where uv cannot
# be had, pip installs as before. Bytecode is compiled at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set, every command would otherwise compile torch, timm and Prefect
# again (10.9 s against 5.0 s to import the benchmark flow, measured here).
UV_VERSION := 0.13.9
UV_SOURCES = $(addprefix --find-links ,$(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))) \
             $(addprefix --extra-index-url ,$(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null))
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(PY) -m pip install --quiet uv==$(UV_VERSION) 2>/dev/null; then \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode --index-strategy unsafe-best-match \
	    $(UV_SOURCES) -e '.[dev]'; \
	else echo "uv unavailable: installing with pip (about 2.5 min)"; $(PY) -m pip install --quiet -e '.[dev]'; fi
	touch $(STAMP)

# The main job: train digits-vit, run the params.yaml grid, write the report, log to MLflow.
run: setup
	$(PY) -m flows.benchmark

# Two pytest workers with one torch thread each: on 2 cores this beats one worker with two threads
# (much of the suite is Python start-up and imports in subprocesses), and never oversubscribes.
TEST_WORKERS ?= 2
test: setup lint
	mkdir -p $(PREFECT_HOME)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# ruff with the rules in pyproject.toml (under a second); `make test` runs it first
lint: setup
	$(VENV)/bin/ruff check psaq flows tasks tests benchmarks

test-fast: setup
	mkdir -p $(PREFECT_HOME)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

# The Fashion-MNIST benchmark (fashion-vit, 2 training seeds, and fashion-swin, 1; 108 points): it
# prints its plan and cold-time estimate first; reports in reports/<model>/, MLflow runs, and the
# README's Fashion-MNIST tables written from the summaries (copied to benchmarks/results/fashion/).
benchmark: setup
	$(PY) -m flows.benchmark --params benchmarks/fashion-vit.yaml --params benchmarks/fashion-swin.yaml
	$(PY) benchmarks/readme_tables.py

# The digits tables: 2 trained models x 3 synthesis seeds x 5 modes x 6 bit settings, official
# numerics and psaq's options measured against them.
benchmark-table: setup
	$(PY) benchmarks/digits_table.py

# DVC experiments, one row each, in a terminal's width: FP32, psaq's top-1 and its differences from
# noise and real images per setting, and the grid (`dvc exp show` alone lists ~100 dependency hashes)
EXP_COLUMNS := Experiment|Created|fp32$$|W\d.*\.psaq$$|W\d.*_vs_(gaussian|real)$$|grid\.(bits|seeds|methods)
exps: setup
	$(VENV)/bin/dvc exp show --no-pager --drop '.*' --keep '$(EXP_COLUMNS)'

repro: setup
	$(PY) -m flows.dvc_stages sync
	$(VENV)/bin/dvc repro

mlflow-ui: setup
	$(VENV)/bin/mlflow server --host $(HOST) --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(abspath mlflow.db) --default-artifact-root $(abspath mlruns)

# the run's log lines stream to `prefect deployment run --watch` (the server's default streams events only)
prefect-server: setup
	mkdir -p $(PREFECT_HOME)
	PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true \
	$(VENV)/bin/prefect server start --host $(HOST)

# task runs log warnings only: each task's state (Cached, Completed, Skipped) is already an event,
# and a benchmark's 250 tasks would add 700 log lines to a --watch before the run's result
serve: setup
	PREFECT_API_URL=http://$(HOST):4200/api PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL=WARNING \
	$(PY) -m flows.serve

# The deployments on a process work pool, and its worker in the foreground: a flow run per
# deployment run or schedule, one at a time, with no `make serve` process. Kept alive past the
# terminal, e.g. under systemd (README: "A schedule that survives the terminal").
POOL ?= psaq
worker: setup
	PREFECT_API_URL=http://$(HOST):4200/api $(PY) -m flows.serve --pool $(POOL)
	PREFECT_API_URL=http://$(HOST):4200/api PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL=WARNING \
	$(VENV)/bin/prefect worker start --pool $(POOL) --type process

clean:
	rm -rf data models metrics reports pipeline exports .prefect mlflow.db mlruns .psaq-cache
