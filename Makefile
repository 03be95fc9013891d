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
# (no official weights can be downloaded here), with a few steps per stage: every stage runs. Twelve timing
# rounds: quantize's sign test needs five or more to show int8 slower than float at all, so with three the
# latency-aware choices of what ships never ran.
SMOKE := --set stages.distill.steps=2 --set stages.distill.batch_size=2 --set stages.distill.train_samples=4 \
	--set stages.distill.eval_batches=1 --set stages.prune.iterations=1 --set stages.prune.importance=magnitude \
	--set stages.prune.finetune.steps=1 --set stages.prune.finetune.batch_size=2 --set stages.prune.finetune.train_samples=2 \
	--set stages.prune.finetune.eval_batches=1 --set stages.quantize.calibration_samples=2 --set stages.quantize.eval_samples=1 \
	--set stages.profile.runs=12 --set stages.profile.warmup=1 --set stages.bundle.out=exported/smoke/bundle

# recipes/facevid2vid-mobile.yaml on a randomly initialised vox-256 teacher (173 M parameters, about 1.1 TFLOP
# per frame on the CPU): every stage, with batches of one so that the teacher runs on a handful of frames
# (2 training pairs, 1 held-out pair that every stage's quality reuses, 1 fine-tuning pair). Smoke-only:
# the bitstream format is fitted on 1 clip of 8 frames (the default, 4 clips of 100, tries every step of
# five payload tensors on the 256x256 receiver: over 10 minutes on 2 cores). No gate is changed.
FV2V_SMOKE := --set stages.distill.steps=2 --set stages.distill.batch_size=1 --set stages.distill.train_samples=2 \
	--set stages.distill.eval_batches=1 --set stages.prune.iterations=1 --set stages.prune.importance=magnitude \
	--set stages.prune.finetune.steps=1 --set stages.prune.finetune.batch_size=1 --set stages.prune.finetune.train_samples=1 \
	--set stages.prune.finetune.eval_batches=1 --set stages.quantize.calibration_samples=2 --set stages.quantize.eval_samples=1 \
	--set stages.profile.runs=12 --set stages.profile.warmup=1 --set stages.bundle.bitstream_clips=1 \
	--set stages.bundle.bitstream_frames=8 --set stages.bundle.out=exported/smoke-facevid2vid/bundle

# The same overrides for recipes/cse-mobile.yaml on a randomly initialised R50-FPN-DL teacher (smpl_27554's
# 27 554 vertices); the later --set of the bundle folder wins.
CSE_SMOKE := $(SMOKE) --set stages.bundle.out=exported/smoke-cse/bundle

# recipes/liveportrait-mobile.yaml on a randomly initialised LivePortrait (130 M parameters with stitching; 256x256 in,
# 512x512 out, area-resized to the student's 256x256 for the frame losses): face-vid2vid's overrides, its own bundle.
LP_SMOKE := $(FV2V_SMOKE) --set stages.bundle.out=exported/smoke-liveportrait/bundle

smoke: install
	$(BIN)/compress run recipes/fomm-mobile.yaml --out exported/smoke $(SMOKE)
	$(BIN)/compress bundle verify exported/smoke/bundle
	$(BIN)/compress run recipes/facevid2vid-mobile.yaml --out exported/smoke-facevid2vid $(FV2V_SMOKE)
	$(BIN)/compress bundle verify exported/smoke-facevid2vid/bundle
	$(BIN)/compress run recipes/cse-mobile.yaml --out exported/smoke-cse $(CSE_SMOKE)
	$(BIN)/compress bundle verify exported/smoke-cse/bundle
	$(BIN)/compress run recipes/liveportrait-mobile.yaml --out exported/smoke-liveportrait $(LP_SMOKE)
	$(BIN)/compress bundle verify exported/smoke-liveportrait/bundle

# FOMM's rows (docs/results.*, the README headline), then face-vid2vid's and CSE's from their demo recipes:
# their own docs/results-<family>.*, pareto and loss images, headline in docs/models/<family>.md (no
# pruned-teacher comparison recipe for them).
# One torch thread per process for training and timing: two threads on two shared cores ran about 10x slower.
bench: export OMP_NUM_THREADS = 1
bench: install
	$(BIN)/python -m compress.results
	$(BIN)/python -m compress.results --recipe recipes/facevid2vid-mobile-demo.yaml --comparison none \
		--suffix=-facevid2vid --headline-doc docs/models/facevid2vid.md
	$(BIN)/python -m compress.results --recipe recipes/cse-mobile-demo.yaml --comparison none \
		--suffix=-cse --headline-doc docs/models/cse.md
	$(BIN)/python -m compress.codec.bench

clean:
	rm -rf $(VENV) exported/runs
