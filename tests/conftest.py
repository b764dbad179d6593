import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    """Oracle tests need transformers; skip them (loudly) where it is not installed."""
    if importlib.util.find_spec("transformers") is None:
        skip = pytest.mark.skip(reason="transformers not installed (pip install 'electra-bridge[test]')")
        for item in items:
            if "oracle" in item.keywords:
                item.add_marker(skip)
