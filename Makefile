# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the whole demo pipeline (dvc repro)
#   make test   set up .venv and run the test suite (all of it: CI); `make test-fast` leaves out the tests marked slow
#               (dvc repro in temporary repositories, multi-process runs): the edit loop (measured 2026-12-06, 2 CPU
#               cores of an AMD EPYC, nothing beside it: 654 tests in 2 min 53 s; make test: 678 tests, ~30 min
#               with the study running beside it)
# Data: EASYCORE_DATA (or data.root in params.yaml) must point at the data folder; default ../shared/data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DVC = PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/dvc

.PHONY: setup demo test test-fast bench clean-runs push pull reports

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

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow" --durations=10

# Results through the DVC remote (.dvc/config: default ../easycore-dvc-remote beside the repository; README
# "Results through a DVC remote" for S3 / GCS / SSH / HTTP): every cached output (prepared data, proxy records,
# selections, final model weights, per-image outcomes) and the run-cache (so `dvc repro` / `dvc exp run` elsewhere
# restores a stage instead of running it). Never the resume checkpoints (runs/**/.*.state.pt: not outputs).
push: $(STAMP)
	$(DVC) push --run-cache

pull: $(STAMP)
	$(DVC) pull --run-cache

# Re-execute every report notebook of PARAMS (default params.yaml) from the outputs in the workspace, without
# training (easycore/report/render.py): after `make pull` all six, byte-identical to the committed ones; on a fresh clone
# without the runs, the coresets report alone, from the committed <report.dir>/outcomes.npz. Then `git diff`.
PARAMS ?= params.yaml
reports: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/easycore reports --params $(PARAMS)

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

# Another params profile (params-gpu.yaml, params-gpu-check.yaml, params-paper.yaml, ...) by plain `dvc repro`, in a
# clone of the committed HEAD beside the workspace (PROFILE_DIR, default ../easycore-<profile>) that shares the
# workspace's DVC cache (and so its run-cache and remote: `make push` afterwards sends what it made). Run again after
# an interruption: finished stages come from the cache / run-cache, a killed training resumes from its checkpoint.
# At the end: the cost per part of every run it logged (benchmarks/study_wall.py, from runs/timings).
#   make profile PROFILE=params-gpu.yaml        the GPU study (docs/scale.md "The GPU study")
#   make gpu-validate                           FGSM-RS PreAct ResNet-18 (params-gpu-check.yaml): its full-data run only
PROFILE ?= params-gpu.yaml
PROFILE_DIR ?= ../easycore-$(patsubst params-%,%,$(basename $(notdir $(PROFILE))))
TARGETS ?=
.PHONY: profile gpu-validate
profile: $(STAMP)
	test -d $(PROFILE_DIR)/.git || git clone -q . $(PROFILE_DIR)
	git -C $(PROFILE_DIR) fetch -q "$(CURDIR)" HEAD && git -C $(PROFILE_DIR) checkout -q --force --detach FETCH_HEAD
	cp $(PROFILE) $(PROFILE_DIR)/params.yaml
	cache="$$($(DVC) cache dir)" && cd $(PROFILE_DIR) && $(DVC) cache dir --local "$$cache"
	cd $(PROFILE_DIR) && git diff --quiet HEAD -- params.yaml || rm -f dvc.lock   # another profile: not the demo's lock
	cd $(PROFILE_DIR) && PYTHONPATH="$(abspath $(PROFILE_DIR))" $(abspath $(BIN))/easycore check -q   # matrix.yaml first
	cd $(PROFILE_DIR) && PYTHONPATH="$(abspath $(PROFILE_DIR))" $(DVC) repro $(TARGETS)
	cd $(PROFILE_DIR) && $(abspath $(BIN))/python -m benchmarks.study_wall runs/timings || true   # its cost per part
	@echo "profile: $(PROFILE) finished in $(PROFILE_DIR); its reports come here with: make adopt PROFILE=$(PROFILE)"

gpu-validate:
	$(MAKE) profile PROFILE=params-gpu-check.yaml TARGETS=evaluate_full

# When `make profile PROFILE=...` has finished: its report outputs (under report.dir, e.g. reports/study-v2/) into
# the workspace, only if the run is finished (`dvc status` clean in PROFILE_DIR), ran its commit's code and
# that profile; with provenance.json + pipeline.lock; then the tables README.md and docs/*.md copy (easycore tables).
.PHONY: adopt
adopt: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/easycore adopt $(PROFILE_DIR) --profile $(PROFILE)
