"""Runners: anything that computes head outputs on a batch, returning numpy arrays.

A runner has ``name`` (for reports), ``runtime`` and ``dtype`` (keys of the tolerance
table), ``config``, ``heads`` (what it can compute) and ``run(head, batch) -> Result``
with numpy arrays. ``CheckpointRunner`` runs the shared forward pass with the ops of a
framework; artifact formats (ONNX, TorchScript) supply their own runners.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from electra_bridge.schemas import (
    Checkpoint, ElectraConfig, LazyTensor, MissingDependencyError, SchemaError, get_head, materialize, runnable_heads,
)

from . import probe
from .blas import contiguous
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


def preload(runtime: str) -> threading.Thread | None:
    """Import ``runtime``'s framework in a background thread and return it (None for an unknown runtime).

    convert calls it before reading and writing, which mostly wait on I/O and copy without the GIL, so
    a framework's import overlaps them instead of starting the check. A failed import is left for
    ``load_ops`` to raise, in the caller's thread, with its message."""
    if runtime not in RUNTIMES:
        return None

    def run() -> None:
        try:
            importlib.import_module(RUNTIMES[runtime])
        except BaseException:   # noqa: BLE001 -- reported by load_ops where it matters
            pass

    thread = threading.Thread(target=run, name=f"import {runtime}", daemon=True)
    thread.start()
    return thread


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
        #: (batch, own head's Result) of the last run that computed the encoder for ``base`` too
        self._shared: tuple[dict[str, np.ndarray], Result] | None = None

    def _parameters(self) -> dict:
        if self._params is None:  # materialized on first run, one tensor at a time
            self._params = {n: self.ops.param(t) for n, t in self.ckpt.tensors.items()}
        return self._params

    def release(self) -> None:
        """Drop the framework copy of the weights (re-read on the next run) and the shared run."""
        self._params = None
        self._shared = None

    def _fn(self, head: str):
        if head not in self._compiled:
            cfg, ops = self.config, self.ops

            def run(params, batch):
                result = forward(params, cfg, head, batch, ops)
                return result.outputs, result.hidden_states

            self._compiled[head] = ops.compile(run)
        return self._compiled[head]

    def _shares_encoder(self) -> bool:
        """Whether ``base`` and the own head run the very same encoder on the same batch: the own head
        is neither causal (causal-lm masks the future; base does not) nor multiple-choice (it flattens
        [B, K, S]). Then one forward pass yields both results (``base`` is its last hidden state)."""
        own = get_head(self.ckpt.head)
        return own.name != "base" and not own.causal and not own.choices

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        """``head``'s outputs and hidden states on ``batch`` (int arrays [B, S] or [B, K, S]; numpy out).

        ``base`` and the own head share one encoder pass when ``_shares_encoder``: the first of the two
        on a batch runs the own head (its hidden states are base's) and the second, on an equal batch,
        takes that result, as verify's pair of runs does. Both are what a run of their own returns:
        forward.py's ``base`` output is exactly the encoder's last hidden state."""
        if head not in self.heads:
            raise SchemaError(f"{self.name} has head {self.ckpt.head!r}; it can run {', '.join(self.heads)}, not {head!r}")
        if head in ("base", self.ckpt.head) and self._shares_encoder():
            if self._shared is None or not _same_batch(self._shared[0], batch):
                self._shared = ({k: np.array(v, copy=True) for k, v in batch.items()},
                                self._run(self.ckpt.head, batch))
            own = self._shared[1]
            return own if head == self.ckpt.head else Result({"last_hidden_state": own.hidden_states[-1]},
                                                             own.hidden_states)
        return self._run(head, batch)

    def _run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        inputs = {k: self.ops.inputs(v) for k, v in batch.items()}
        outputs, states = self._fn(head)(self._parameters(), inputs)
        to_np = self.ops.to_numpy
        return Result({k: to_np(v) for k, v in outputs.items()}, tuple(to_np(s) for s in states))


def _same_batch(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.shape(a[k]) == np.shape(b[k]) and np.array_equal(a[k], b[k]) for k in a)


class Retained:
    """``ckpt`` whose tensors stay in memory once loaded, so one read serves the writer and the check.

    ``retained.ckpt`` hands out each tensor as a C-contiguous array in its stored dtype (what a
    writer streams and ``ops.param`` takes without a copy), loading it from the source on first
    use and keeping it until ``drop()``; afterwards a load reads the source again (correct, slow).
    Peak memory is one copy of the checkpoint's tensors. Callers must not write into the arrays:
    the writer and the runner share them."""

    def __init__(self, ckpt: Checkpoint, keep: bool = True):
        self._arrays: dict[str, np.ndarray] = {}
        self._kept = keep   # False: a pass-through (nothing is kept)
        self._sources = dict(ckpt.tensors)
        self._ahead: Ahead | None = None
        self.ckpt = ckpt.with_(tensors={n: LazyTensor(tuple(t.shape), np.dtype(t.dtype),
                                                      lambda n=n, t=t: self._load(n, t))
                                        for n, t in ckpt.tensors.items()})

    def _load(self, name: str, tensor) -> np.ndarray:
        if self._ahead is not None and self._kept and self._ahead.thread is None:
            for other, source in self._sources.items():   # every tensor now, in order; then the run starts
                self._keep(other, source)
            self._ahead.start()
        return self._keep(name, tensor)

    def _keep(self, name: str, tensor) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None:
            arr = contiguous(materialize(tensor))   # a strided view copied once (rules.TRANSPOSE arrives contiguous)
            if self._kept:
                self._arrays[name] = arr
        return arr

    def run_ahead(self, fn: Callable[[Checkpoint], object]) -> "Ahead":
        """``fn(self.ckpt)`` computed in a background thread from the first load on: that load reads every
        tensor (one copy, as the source run needs them all anyway) and starts the thread, so the source
        run (numpy BLAS, no GIL) overlaps the writer (I/O, no GIL). ``result()`` joins it (or, if no
        tensor was ever loaded, runs ``fn`` there) and re-raises what ``fn`` raised."""
        self._ahead = Ahead(fn, self.ckpt)
        return self._ahead

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def drop(self) -> None:
        """Forget every kept array (the memory goes once no runner holds them)."""
        self._arrays.clear()
        self._kept = False


class Ahead:
    """``fn(ckpt)`` run in a thread of its own once ``start()`` is called; see ``Retained.run_ahead``."""

    def __init__(self, fn: Callable[[Checkpoint], object], ckpt: Checkpoint):
        self._fn, self._ckpt = fn, ckpt
        self.thread: threading.Thread | None = None
        self._outcome: tuple[bool, object] | None = None

    def start(self) -> None:
        def run() -> None:
            try:
                self._outcome = (True, self._fn(self._ckpt))
            except BaseException as exc:   # noqa: BLE001 -- re-raised by result(), in the caller's thread
                self._outcome = (False, exc)
        self.thread = threading.Thread(target=run, name="source run", daemon=True)
        self.thread.start()

    def result(self):
        if self.thread is None:
            return self._fn(self._ckpt)
        self.thread.join()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


class PrecomputedRunner:
    """A runner whose results on given batches were computed up front, its weights then released.

    ``PrecomputedRunner(inner, batches)`` runs ``inner`` on every batch of ``batches`` (head -> list of
    inputs) at once and calls ``inner.release()``; ``run(head, batch)`` returns the result of an
    array-equal batch, and otherwise runs ``inner`` again. convert uses it for the source side: it is
    run while the writer's arrays are still in memory, before the written side loads its own copy.
    The Runner fields (and ``ckpt``, when ``inner`` has one) read through to ``inner``."""

    def __init__(self, inner: Runner, batches: dict[str, list[dict[str, np.ndarray]]]):
        self.inner = inner
        self._results = {head: [({k: np.array(v, copy=True) for k, v in b.items()}, inner.run(head, b)) for b in bs]
                         for head, bs in batches.items()}
        inner.release()

    @classmethod
    def on_probe_batches(cls, inner: Runner, reduced: bool = False) -> "PrecomputedRunner":
        """``inner`` run on the batch compare feeds a pair of its config (probe.verification_batch):
        the precision batch when a side is reduced precision (``reduced``, or ``inner``'s own dtype),
        else the probe batch. Any other batch (another config's) makes ``inner`` run again."""
        reduced = reduced or inner.dtype in probe.PRECISION_DTYPES
        return cls(inner, {head: [probe.verification_batch(inner.config, head, reduced)] for head in inner.heads})

    name = property(lambda self: self.inner.name)
    runtime = property(lambda self: self.inner.runtime)
    dtype = property(lambda self: self.inner.dtype)
    config = property(lambda self: self.inner.config)
    heads = property(lambda self: self.inner.heads)

    @property
    def ckpt(self) -> Checkpoint:
        return self.inner.ckpt   # AttributeError for an artifact runner, as verify expects

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        for given, result in self._results.get(head, ()):
            if _same_batch(given, batch):
                return result
        return self.inner.run(head, batch)

    def release(self) -> None:
        self.inner.release()
