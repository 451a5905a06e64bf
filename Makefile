# Two commands do all set-up on a fresh Debian machine with Python 3.11+:
#   make demo   venv + pinned dependencies + the example project end to end
#   make test   the whole test suite (needs redis-server, postgresql, chromium; see README)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench system-deps clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/feature-layer demo

system-deps:
	bash scripts/system-deps.sh

test: install system-deps
	$(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder

lint: install
	$(BIN)/ruff check feature_layer tests benchmarks

.PHONY: test-year-ahead
test-year-ahead: install system-deps  # the whole suite with the wall clock a year ahead (libfaketime)
	bash scripts/year-ahead.sh $(BIN)/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder

.PHONY: fuzz
fuzz: install  # >= 10,000 generated inputs over every input surface; results in docs/fuzz.md
	FEATURE_LAYER_FUZZ=full FEATURE_LAYER_FUZZ_REPORT=docs/fuzz.md $(BIN)/python -m pytest -n 0 -q -p tests.fuzz.fuzz_harness tests/fuzz

bench: install
	bash scripts/system-deps.sh --bench
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) target logs .feature_layer data
