# Two commands matter: `make test` and `make run`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test wheel-test run bench bench-quick check demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]' --group dev
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# Builds the wheel, installs it into a fresh venv outside the checkout and uses it (.ci/run).
wheel-test: $(STAMP)
	$(PY) -m pytest tests/wheel/check_wheel.py

run: $(STAMP)
	$(PY) -m service

demo: $(STAMP)
	$(PY) -m service.demo

bench: $(STAMP)
	$(PY) -m tests.bench

bench-quick: $(STAMP)
	$(PY) -m tests.bench --quick

check: $(STAMP)
	$(PY) -m ruff check actors service telemetry tests
	$(PY) -m mypy

clean:
	rm -rf $(VENV) bench-results.json
