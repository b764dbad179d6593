"""A stderr progress bar (tqdm) for long work -- reading, writing, running -- and the hooks that drive it.

Shown only when stderr is a terminal and the user did not ask for ``--quiet``: CI logs
and pipes never see carriage-return noise. Erased when done (``leave=False``): results
go to stdout.

Ticks come from two hooks that work for every format without touching it:
``track_tensors`` wraps a Checkpoint's tensors in LazyTensors that tick when loaded (a
writer or a runtime materializes each tensor once), and ``TrackedRunner`` ticks per
head run. Between ticks a drawn bar is redrawn every ``HEARTBEAT_S`` seconds, so its elapsed
time moves through a step that has none (torch.export tracing the graph, an ONNX export).
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

import numpy as np
from tqdm import tqdm

from electra_bridge.runtimes.forward import Result
from electra_bridge.runtimes.runner import CheckpointRunner, Runner
from electra_bridge.schemas import Checkpoint, ElectraConfig

_enabled: bool | None = None   # None: automatic (stderr is a TTY)
#: seconds between redraws of a drawn bar while no tick comes
HEARTBEAT_S = 1.0


def configure(enabled: bool | None) -> None:
    """``False`` silences every bar (``--quiet``); ``None`` restores the TTY check."""
    global _enabled
    _enabled = enabled


def is_enabled(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    if _enabled is False:
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class _Bar(tqdm):
    monitor_interval = 0   # no monitor thread: a bar lives inside one call


class Progress:
    """``with Progress(total, "reading") as bar: bar.update(); bar.describe("running")``.

    ``count`` is the number of ticks so far, drawn or not."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None):
        self.total, self.desc, self.count = max(1, int(total)), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = is_enabled(self.stream)
        self._bar = _Bar(total=self.total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True,
                         disable=not self.enabled, unit="step")
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True) if self.enabled else None
        if self._heartbeat is not None:
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            self._bar.refresh()   # tqdm draws under its own lock: safe beside update() in the worker

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self, desc: str) -> None:
        self.desc = desc
        self._bar.set_description_str(desc)

    def update(self, n: int = 1) -> None:
        n = min(n, self.total - self.count)
        if n > 0:
            self.count += n
            self._bar.update(n)

    def close(self) -> None:
        self._closed.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self._bar.close()   # leave=False: the bar is erased
        self.enabled = False


def track_tensors(ckpt: Checkpoint, bar: Progress) -> Checkpoint:
    """The same checkpoint whose tensors tick ``bar`` once each time one is loaded."""
    return ckpt.on_load(lambda name, array: bar.update())


class TrackedRunner:
    """A Runner that names each run on ``bar`` and ticks when it is done; the rest is ``inner``'s.

    The Runner fields (runtime/runner.py) are read through to ``inner`` -- ``name`` can be
    set -- and ``ckpt`` exists only when ``inner`` is a CheckpointRunner."""

    def __init__(self, inner: Runner, bar: Progress, label: str):
        self._inner, self._bar, self._label = inner, bar, label

    @property
    def inner(self) -> Runner:
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @name.setter
    def name(self, value: str) -> None:
        self._inner.name = value

    @property
    def runtime(self) -> str:
        return self._inner.runtime

    @property
    def dtype(self) -> str:
        return self._inner.dtype

    @property
    def config(self) -> ElectraConfig:
        return self._inner.config

    @property
    def heads(self) -> tuple[str, ...]:
        return self._inner.heads

    @property
    def ckpt(self) -> Checkpoint:
        if not isinstance(self._inner, CheckpointRunner):
            raise AttributeError(f"{type(self._inner).__name__} runs an artifact; it has no checkpoint")
        return self._inner.ckpt

    def run(self, head: str, batch: dict[str, np.ndarray]) -> Result:
        self._bar.describe(f"running {self._label} {head}")
        result = self._inner.run(head, batch)
        self._bar.update()
        return result

    def release(self) -> None:
        self._inner.release()
