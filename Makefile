# make test: create .venv if missing, install the pinned set once, then ruff + import contracts + pytest.
# make demo: the end-to-end demo on a local Prefect server (CPU, generated data).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install test lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

demo: $(STAMP)
	bash demo/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
