"""Shared test helpers: fixture locations, golden files, subprocess runs with blocked imports."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
sys.path.insert(0, str(FIXTURES))
import spec  # noqa: E402  (fixtures/spec.py: the tiny models' description)

HEADS = spec.HEADS


@functools.cache
def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@functools.cache
def missing_for(extra: str) -> tuple[str, ...]:
    """The distributions of pyproject's ``extra`` (nested extras expanded) that are not installed."""
    missing = []
    for requirement in _extras()[extra]:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        nested = re.search(r"\[([^]]+)\]", requirement)
        if name == "electra-bridge" and nested:
            missing += [m for sub in nested.group(1).split(",") for m in missing_for(sub.strip())]
            continue
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return tuple(dict.fromkeys(missing))


def requires(*extras: str):
    """Skip a test (or a parametrised case: ``pytest.param(..., marks=requires("tf"))``) unless every
    distribution of the given pyproject extras is installed. The reason names what is missing."""
    missing = [m for extra in extras for m in missing_for(extra)]
    return pytest.mark.skipif(bool(missing), reason=f"needs the {'/'.join(extras)} extra "
                              f"(pip install 'electra-bridge[{','.join(extras)}]'; missing: {', '.join(missing)})")


def golden(head: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[np.ndarray]]:
    """(inputs, outputs, hidden states) that transformers computed for ``head``'s fixture."""
    g = np.load(spec.GOLDEN / f"{head}.npz")
    inputs = {k.split(":", 1)[1]: g[k] for k in g.files if k.startswith("input:")}
    outputs = {k.split(":", 1)[1]: g[k] for k in g.files if k.startswith("output:")}
    hidden = [g[f"hidden:{i}"] for i in range(sum(k.startswith("hidden:") for k in g.files))]
    return inputs, outputs, hidden


def assert_same_tensors(a, b, *, same_config: bool = True) -> None:
    """Two Checkpoints hold the same tensor names, each bit-equal (dtype, shape, bytes);
    with ``same_config`` also the same head and config."""
    if same_config:
        assert a.head == b.head and a.config == b.config
    assert set(a.tensors) == set(b.tensors), sorted(set(a.tensors) ^ set(b.tensors))
    for name in a.tensors:
        x, y = a.array(name), b.array(name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


_BLOCKER = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked by test: ' + name)
        return None
sys.meta_path.insert(0, _Block())
"""


def run_python(code: str, *, blocked: tuple[str, ...] = (), cwd: Path | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` raises ImportError."""
    source = _BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``electra-bridge`` CLI in a subprocess."""
    exe = Path(sys.executable).parent / "electra-bridge"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, timeout=900)


def cli_json(*args: str) -> dict:
    proc = run_cli(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)
