# bayes-moe: `make demo` and `make test` create the environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch must be installed before the package: a bare `torch`
# requirement with no torch present would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The second interpreter of `make test-all`: Python 3.13 resolves ArviZ 1.x (DataTree),
# the default Python 3.11 ArviZ 0.23 (InferenceData). Each gets its own venv.
# python3.13 from PATH, else the newest 3.13 that pyenv has (its shim alone answers
# "command not found" until a version is selected).
PYTHON313 ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null \
	|| PYENV_VERSION=$$(pyenv latest 3.13 2>/dev/null) pyenv which python3.13 2>/dev/null \
	|| echo python3.13)
VENV313 ?= .venv313

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[test,dask,panel]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bayes-moe demo --out report

test: $(STAMP)
	$(BIN)/python -m pytest

# The whole suite twice: default Python (ArviZ 0.23), then Python 3.13 (ArviZ 1.x).
test-all:
	$(MAKE) test
	$(MAKE) test PYTHON=$(PYTHON313) VENV=$(VENV313)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff "mypy==2.4.1"
	$(BIN)/ruff check bayes_moe tests examples benchmarks
	$(BIN)/mypy bayes_moe

clean:
	rm -rf $(VENV) $(VENV313) report
