"""Skips for what an installation lacks, so the suite passes (with skips) on the core install alone.

* ``@pytest.mark.requires("torch")`` (any pyproject extras; a module may set
  ``pytestmark = pytest.mark.requires("onnx")``): skipped unless every distribution of those
  extras is installed -- the same check as ``helpers.requires``, without importing it.
* ``@pytest.mark.oracle``: compares against transformers' own classes; skipped without transformers.

`make test-core` runs the suite in an environment with only the core dependencies
(+ pytest, hypothesis); anything that fails there but passes in `make test` lacks one of these.
"""

import importlib.util

import pytest
from helpers import missing_for


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*extras): skip unless every distribution of these pyproject "
                                       "extras is installed")


def pytest_collection_modifyitems(config, items):
    no_transformers = importlib.util.find_spec("transformers") is None
    oracle_skip = pytest.mark.skip(reason="transformers not installed (pip install 'electra-bridge[test]')")
    for item in items:
        if no_transformers and "oracle" in item.keywords:
            item.add_marker(oracle_skip)
        extras = [e for mark in item.iter_markers("requires") for e in mark.args]
        missing = [m for extra in extras for m in missing_for(extra)]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"needs the {'/'.join(dict.fromkeys(extras))} extra (pip install "
                       f"'electra-bridge[{','.join(dict.fromkeys(extras))}]'; missing: {', '.join(dict.fromkeys(missing))})"))
