# make demo      : create .venv if missing, install, train the demo model on the CPU and show its heads
# make test      : create .venv if missing, install, run make lint, the whole test suite and the
#                  tutorials/*.ipynb notebooks (executed with nbmake, kernel python3 of .venv)
# make test-fast : the same without the tests marked slow (pytest -m "not slow"): about 3 min
#                  on 2 CPU cores
# make lint      : ruff check, ruff format --check and the import-linter layers contract (pyproject)
# make tl3-venv  : create .venv-tl3 if missing: torch and TransformerLens 3.9, the reference that
#                  tests/test_tl3_*differential.py compare our model with (tests/tl3_env.py;
#                  without a package registry it says so and the differential tests skip)
# make browser   : install Debian's chromium (apt-get install -y chromium, as root or with
#                  password-less sudo) when no Chromium-family browser is found: the headless
#                  browser of tests/test_report_browser.py (tests/browser.py); a no-op when one is
#                  present or apt-get is missing (those tests then skip, saying why)
# TORCH_SPEC     : torch==2.13.0 installs the CPU build from this machine's disk; any other spec
#                  (e.g. TORCH_SPEC=torch) installs a CUDA build from PyPI.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
WHEELS     ?= /opt/wheels
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed-$(subst =,_,$(subst <,_,$(subst >,_,$(TORCH_SPEC))))

.PHONY: setup demo test test-fast lint format bench assets clean tl3-venv browser

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then \
		if command -v uv >/dev/null 2>&1; then uv venv --python $(PYTHON) $(VENV); \
		else $(PYTHON) -m venv $(VENV); fi; \
	fi
	@if command -v uv >/dev/null 2>&1; then \
		links=""; [ -d "$(WHEELS)" ] && links="--find-links $(WHEELS)"; \
		uv pip install --python $(BIN)/python $$links "$(TORCH_SPEC)" && \
		uv pip install --python $(BIN)/python $$links -e ".[dev]"; \
	else \
		$(BIN)/python -m pip install -q --upgrade pip && \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)" && \
		$(BIN)/python -m pip install -q -e ".[dev]"; \
	fi
	@touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/inducthead demo --device cpu

# exit status 3: no package registry to install from (tests/tl3_env.py); the tests then skip
tl3-venv:
	@WHEELS=$(WHEELS) $(PYTHON) tests/tl3_env.py || [ $$? -eq 3 ]

browser:
	@$(PYTHON) tests/browser.py

test: lint tl3-venv browser
	$(BIN)/python -m pytest -q
	$(BIN)/python -m pytest -q --nbmake tutorials

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# every benchmarks/*.py script (benchmarks/run_all.py); BENCH="a b" runs only those
bench: setup
	$(BIN)/python benchmarks/run_all.py $(if $(BENCH),--only $(BENCH))

assets: setup
	$(BIN)/python assets/build.py $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) .venv-tl3 .pytest_cache .ruff_cache runs
