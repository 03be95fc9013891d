PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install demo test bench clean

install: $(STAMP)

# Reinstalls only when the dependency list or the constraints change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

demo: install
	$(BIN)/compress run recipes/fomm-mobile-demo.yaml

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: install
	$(BIN)/python -m compress.results

clean:
	rm -rf $(VENV) exported/runs
