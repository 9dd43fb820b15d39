# Two commands: `make demo` (set up, run every method on the embedded default) and `make test` (set up, run the tests).
# Both create .venv from scratch on first use; nothing is downloaded at run time except
# packages from the package index.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
# The CPU build of torch by default. On a GPU machine: make demo TORCH="torch==2.13.0" plus
# your CUDA index (PIP_EXTRA_INDEX_URL), or install torch into .venv yourself first.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
DEMO   ?= runs/demo

.PHONY: setup demo test clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "vlmt needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

setup: $(BIN)/.installed

demo: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/vlmt evaluate --name demo --bench synth --per-family 1 --work $(DEMO)

test: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
