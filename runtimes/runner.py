"""Runners: anything that computes head outputs on a batch, returning numpy arrays.

A runner has ``name`` (for reports), ``runtime`` and ``dtype`` (keys of the tolerance
table), ``config``, ``heads`` (what it can compute) and ``run(head, batch) -> Result``
with numpy arrays. ``CheckpointRunner`` runs the shared forward pass with the ops of a
framework; artifact formats (ONNX, TorchScript) supply their own runners.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from electra_bridge.schemas import Checkpoint, ElectraConfig, MissingDependencyError, SchemaError, runnable_heads

from .forward import Result, forward

#: runtime name -> module providing ``make_ops()`` (lazy: a missing framework only fails when used)
RUNTIMES = {
    "numpy": "electra_bridge.runtimes.ops_numpy",
    "torch": "electra_bridge.runtimes.ops_torch",
    "tf": "electra_bridge.runtimes.ops_tf",
    "jax": "electra_bridge.runtimes.ops_jax",
    "keras": "electra_bridge.runtimes.ops_keras",
}

#: the pip extra that installs each runtime's framework
RUNTIME_EXTRAS = {"torch": "torch", "tf": "tf", "jax": "jax", "keras": "keras"}


class Runner(Protocol):
    name: str
    runtime: str
    dtype: str
    config: ElectraConfig
    heads: tuple[str, ...]

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result: ...

    def release(self) -> None:
        """Free the runner's weights; verify calls it once a side is done (a later run reloads)."""


def load_ops(runtime: str):
    """The ops namespace of ``runtime``; raises MissingDependencyError with the pip extra to install."""
    if runtime not in RUNTIMES:
        raise SchemaError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    try:
        module = importlib.import_module(RUNTIMES[runtime])
    except ImportError as exc:
        extra = RUNTIME_EXTRAS.get(runtime, runtime)
        raise MissingDependencyError(
            f"the {runtime} runtime needs {exc.name or 'its framework'}: pip install 'electra-bridge[{extra}]'"
        ) from exc
    return module.make_ops()


#: the half-precision dtypes a checkpoint may store, lossiest first (a runner's ``dtype`` is the lossiest present)
HALF_DTYPES = ("bfloat16", "float16")


def weights_dtype(ckpt: Checkpoint) -> str:
    """The tolerance-table dtype of a checkpoint: "bfloat16" or "float16" when any tensor is stored so,
    else "float32". Runtimes compute in float32 either way (``ops.param`` widens half weights)."""
    stored = {np.dtype(t.dtype).name for t in ckpt.tensors.values()}
    return next((d for d in HALF_DTYPES if d in stored), "float32")


class CheckpointRunner:
    """Runs a canonical Checkpoint through ``forward`` with one framework's ops.

    Parameters are converted once (``ops.param``: float32, also from float16/bfloat16 weights,
    whose stored dtype sets ``dtype``); an ops namespace may offer ``compile``
    (tf.function / jax.jit) which is applied per head.
    """

    def __init__(self, ckpt: Checkpoint, runtime: str = "numpy", name: str | None = None):
        self.ops = load_ops(runtime)
        self.runtime = runtime
        self.dtype = weights_dtype(ckpt)
        self.ckpt = ckpt
        self.config = ckpt.config
        self.heads = runnable_heads(ckpt.head)
        self.name = name or ckpt.provenance.get("path", "checkpoint")
        self._params: dict | None = None
        self._compiled: dict[str, object] = {}

    def _parameters(self) -> dict:
        if self._params is None:  # materialized on first run, one tensor at a time
            self._params = {n: self.ops.param(t) for n, t in self.ckpt.tensors.items()}
        return self._params

    def release(self) -> None:
        """Drop the framework copy of the weights (re-read on the next run)."""
        self._params = None

    def _fn(self, head: str):
        if head not in self._compiled:
            cfg, ops = self.config, self.ops

            def run(params, batch):
                result = forward(params, cfg, head, batch, ops)
                return result.outputs, result.hidden_states

            self._compiled[head] = ops.compile(run)
        return self._compiled[head]

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        if head not in self.heads:
            raise SchemaError(f"{self.name} has head {self.ckpt.head!r}; it can run {', '.join(self.heads)}, not {head!r}")
        inputs = {k: self.ops.inputs(v) for k, v in batch.items()}
        outputs, states = self._fn(head)(self._parameters(), inputs)
        to_np = self.ops.to_numpy
        return Result({k: to_np(v) for k, v in outputs.items()}, tuple(to_np(s) for s in states))
