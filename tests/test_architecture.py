"""The package's shape: import contracts (pyproject's [tool.importlinter]) and a size limit per module.

schemas imports nothing else of ours; runtimes may import schemas, never converters; within
converters, cli > demo > api > helpers > formats > engine, each importing only downward.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from helpers import ROOT

MAX_LINES = 400
PACKAGES = ("converters", "runtimes", "schemas")

LINT = """
import sys
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True))
"""


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter", reason="needs import-linter (pip install 'electra-bridge[test]')")
    proc = subprocess.run([sys.executable, "-c", LINT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_contracts_cover_every_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = pyproject["tool"]["importlinter"]["root_packages"]
    assert len(pyproject["tool"]["importlinter"]["contracts"]) >= 3
    for package in pyproject["tool"]["setuptools"]["packages"]:
        assert any(package == r or package.startswith(r + ".") for r in roots), package
    for package in PACKAGES:   # grimp skips folders without __init__.py: each subpackage needs one
        for folder in (ROOT / package).rglob("*"):
            if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
                assert (folder / "__init__.py").exists(), f"{folder.relative_to(ROOT)} has no __init__.py"


def test_no_module_exceeds_the_line_limit():
    long = {str(path.relative_to(ROOT)): n for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if "__pycache__" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
