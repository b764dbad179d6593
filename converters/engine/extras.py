"""Which pip extras this installation has: the import names each extra of pyproject.toml provides.

A format or runtime that needs an extra is refused up front with the pip command that adds it
(``MissingDependencyError``, exit 2), instead of failing inside a framework import.
"""

from __future__ import annotations

import importlib.util

from electra_bridge.schemas import MissingDependencyError

#: extra -> the top-level modules it installs (pyproject.toml [project.optional-dependencies])
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "tf": ("tensorflow",),
    "jax": ("jax",),
    "onnx": ("onnx", "onnxruntime"),
    "tokenizers": ("tokenizers",),
    "plot": ("matplotlib",),
    "keras": ("keras",),
    "ray": ("ray",),
}


def missing_modules(extra: str | None) -> list[str]:
    if extra is None:
        return []
    return [m for m in EXTRA_MODULES[extra] if not _installed(m)]


def _installed(module: str) -> bool:
    # A folder of that name on sys.path (e.g. a project's own keras/ of fixtures) is found as a
    # namespace package, which has no origin: that is not the framework. A finder that refuses the
    # name (an import hook raising ImportError) means it cannot be imported either.
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return False
    return spec is not None and spec.origin is not None


def require(extra: str | None, what: str) -> None:
    """Raise MissingDependencyError naming the pip command unless ``extra`` is installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingDependencyError(f"{what} needs {', '.join(missing)}: pip install 'electra-bridge[{extra}]'")
