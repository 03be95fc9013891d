PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install demo test lint smoke bench clean

install: $(STAMP)

# Reinstalls only when the dependency list or the constraints change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

demo: install
	$(BIN)/compress run recipes/fomm-mobile-demo.yaml

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# Style and hygiene (pyproject.toml [tool.ruff]): the line length, imports, pyflakes, formatting.
lint: install
	$(BIN)/ruff check compress tests
	$(BIN)/ruff format --check compress tests

# The full-size path (recipes/fomm-mobile.yaml) on a randomly initialised vox-256 teacher
# (no official weights can be downloaded here), with a few steps per stage: every stage runs.
SMOKE := --set stages.distill.steps=2 --set stages.distill.batch_size=2 --set stages.distill.train_samples=4 \
	--set stages.distill.eval_batches=1 --set stages.prune.iterations=1 --set stages.prune.importance=magnitude \
	--set stages.prune.finetune.steps=1 --set stages.prune.finetune.batch_size=2 --set stages.prune.finetune.train_samples=2 \
	--set stages.prune.finetune.eval_batches=1 --set stages.quantize.calibration_samples=2 --set stages.quantize.eval_samples=1 \
	--set stages.profile.runs=3 --set stages.profile.warmup=1 --set stages.bundle.out=exported/smoke/bundle

# The same overrides for recipes/cse-mobile.yaml on a randomly initialised R50-FPN-DL teacher (smpl_27554's
# 27 554 vertices); the later --set of the bundle folder wins.
CSE_SMOKE := $(SMOKE) --set stages.bundle.out=exported/smoke-cse/bundle

smoke: install
	$(BIN)/compress run recipes/fomm-mobile.yaml --out exported/smoke $(SMOKE)
	$(BIN)/compress bundle verify exported/smoke/bundle
	$(BIN)/compress run recipes/cse-mobile.yaml --out exported/smoke-cse $(CSE_SMOKE)
	$(BIN)/compress bundle verify exported/smoke-cse/bundle

# FOMM's reports: docs/results.*, the README headline; each other family's: docs/results-<family>/.
bench: install
	$(BIN)/python -m compress.results
	OMP_NUM_THREADS=1 $(BIN)/python -m compress.results --recipe recipes/cse-mobile-demo.yaml
	$(BIN)/python -m compress.codec.bench

clean:
	rm -rf $(VENV) exported/runs
