# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv.
# `make test-core` runs the suite where only the core dependencies (+ pytest, hypothesis) are installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CORE_VENV := .venv-core
CORE_PY := $(CORE_VENV)/bin/python
CORE_STAMP := $(CORE_VENV)/.installed

.PHONY: demo test test-core fixtures bench clean

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

# The light core proven: no torch/tf/jax/onnx/transformers/safetensors; tests needing them skip.
$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	echo '*' > $(CORE_VENV)/.gitignore
	$(CORE_PY) -m pip install --quiet --upgrade pip
	$(CORE_PY) -m pip install --quiet -e . 'pytest>=7' 'hypothesis>=6.100'
	touch $(CORE_STAMP)

test-core: $(CORE_STAMP)
	$(CORE_PY) -m pytest -q

fixtures: $(STAMP)
	$(PY) fixtures/make_fixtures.py

# `make bench` lists the benchmarks (no set-up needed); `make bench BENCH=onnx ARGS="--repeats 10"` sets up
# .venv (the test extra holds the bench one) and runs benchmarks/bench_onnx.py (minutes; builds electra-base-size models).
ifeq ($(BENCH),)
bench:
	@for f in benchmarks/bench_*.py; do printf '%-32s %s\n' "$$f" "$$(sed -n '1s/^"""//p' $$f)"; done
	@echo "run one: make bench BENCH=<name> [ARGS='...']   (details: benchmarks/README.md)"
else
bench: $(STAMP)
	$(PY) benchmarks/bench_$(BENCH).py $(ARGS)
endif

clean:
	rm -rf $(VENV) $(CORE_VENV) demo-out
