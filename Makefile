# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the whole demo pipeline (dvc repro)
#   make test   set up .venv and run the test suite
# Data: EASYCORE_DATA (or data.root in params.yaml) must point at the data folder; default ../shared/data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean-runs

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "requirements.lock is for Python 3.11: rm -rf $(VENV) and run make again with PYTHON=python3.11")'
	$(BIN)/python -m pip install -q pip==26.3
	$(BIN)/python -m pip install -r requirements.lock
	$(BIN)/python -m pip uninstall -q -y easycore 2>/dev/null || true
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
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

# On a CUDA machine: tests/test_cuda.py, the paper-scale epoch time (ResNet-18, full CIFAR-10, standard + TRADES-10,
# +- torch.compile), PGD-20 vs torchattacks, a 2-epoch demo pipeline; <= 15 min, one summary table appended to
# reports/benchmarks.md. Refuses without CUDA (exit 2). GPU_CHECK_ARGS: e.g. --parts epoch_time --budget 600.
.PHONY: gpu-check
gpu-check: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# The GPU study in shards (easycore/shards.py, docs/scale.md "The GPU study in shards"): each call trains the runs of
# params-gpu.yaml not yet committed under reports/gpu/ that fit in BUDGET seconds (empty: run to the end), then
# recomputes reports/gpu/README.md from whatever is committed. Commit reports/gpu/ after each shard.
#   make gpu-study BUDGET=480          make gpu-validate BUDGET=480   (FGSM-RS vs the published numbers)
BUDGET ?=
.PHONY: gpu-study gpu-validate
gpu-study: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/easycore shard --params params-gpu.yaml $(if $(BUDGET),--budget $(BUDGET))

gpu-validate: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/easycore shard --params params-gpu-check.yaml --only 'none/full-*' \
		$(if $(BUDGET),--budget $(BUDGET))
