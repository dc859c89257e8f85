# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the whole demo pipeline (dvc repro)
#   make test   set up .venv and run the test suite
# Data: EASYCORE_DATA (or data.root in params.yaml) must point at the data folder; default ../shared/data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)

	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks

clean-runs:
	rm -rf runs data/prepared reports/notebooks
