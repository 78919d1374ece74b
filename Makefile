# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export DVC_NO_ANALYTICS ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: setup run test benchmark mlflow-ui clean

setup: $(STAMP)

# torch is pinned in pyproject.toml, so one pip command installs everything consistently.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/psaq quantize --model digits-vit --w-bits 4 --a-bits 8 --calib psaq --seed 0

test: setup
	$(PY) -m pytest -q

benchmark: setup
	$(PY) benchmarks/digits_table.py
