# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fixtures bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in the extras (torch==2.13.0): an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/electra-bridge demo

test: $(STAMP)
	$(PY) -m pytest -q

fixtures: $(STAMP)
	$(PY) fixtures/make_fixtures.py

bench: $(STAMP)
	@echo "see benchmarks/README.md"

clean:
	rm -rf $(VENV) demo-out
