# One-command entry points. `make test` sets up .venv (if needed) and runs the
# lint and the whole test suite, slow end-to-end tests included.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26"
	$(BIN)/python -m pip install --quiet -e ".[tests]"
	$(BIN)/python -m pip check
	@if $(BIN)/python -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
	  echo "error: a CUDA (nvidia-*) wheel was pulled; check the torch pin" >&2; exit 1; fi
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest tests

demo: $(STAMP)
	$(BIN)/python demo/fashion_mnist_demo.py $(DEMO_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) work_dirs .pytest_cache
