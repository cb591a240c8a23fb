# The two commands a newcomer needs: `make demo` and `make test` (layer contracts, lint, then the tests).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DEMO_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-quick test clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]" "$(TORCH)"
	$(PY) -m reports.web.fetch_assets || echo "(the web pages will load plotly.js's full bundle)"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nas demo $(DEMO_ARGS)

demo-quick: $(STAMP)
	$(VENV)/bin/nas demo --quick

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check --quiet nas evaluators storage reports tests bench
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) work .pytest_cache
