"""A small stderr progress bar for long work (reading, writing, running), and the hooks that drive it.

Shown only when stderr is a terminal and the user did not ask for ``--quiet``: CI logs
and pipes never see carriage-return noise. Erased when done (results go to stdout).
No dependency: one line redrawn at most ten times a second.

Ticks come from two hooks that work for every format without touching it:
``track_tensors`` wraps a Checkpoint's tensors in LazyTensors that tick when loaded (a
writer or a runtime materializes each tensor once), and ``TrackedRunner`` ticks per
head run.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from electra_bridge.schemas import Checkpoint, LazyTensor, materialize

_enabled: bool | None = None   # None: automatic (stderr is a TTY)


def configure(enabled: bool | None) -> None:
    """``False`` silences every bar (``--quiet``); ``None`` restores the TTY check."""
    global _enabled
    _enabled = enabled


def is_enabled(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    if _enabled is False:
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """``with Progress(total, "reading") as bar: bar.update(); bar.describe("running")``."""

    WIDTH = 24

    def __init__(self, total: int, desc: str, stream: TextIO | None = None):
        self.total, self.desc, self.count = max(1, int(total)), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = is_enabled(self.stream)
        self.start = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self, desc: str) -> None:
        self.desc = desc
        self._draw(force=True)

    def update(self, n: int = 1) -> None:
        self.count = min(self.total, self.count + n)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.count < self.total:
            return
        self._last = now
        done = int(self.WIDTH * self.count / self.total)
        bar = "#" * done + "." * (self.WIDTH - done)
        line = f"{self.desc[:48]:<48} [{bar}] {self.count}/{self.total} {now - self.start:5.1f}s"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:   # erase the bar: results belong on stdout, not under a stale bar
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
        self.enabled = False


class _Null:
    def update(self, n: int = 1) -> None: ...
    def describe(self, desc: str) -> None: ...


NULL = _Null()


def track_tensors(ckpt: Checkpoint, bar) -> Checkpoint:
    """The same checkpoint whose tensors tick ``bar`` once each time one is loaded."""
    def wrap(t):
        def load() -> np.ndarray:
            arr = materialize(t)
            bar.update()
            return arr
        return LazyTensor(tuple(t.shape), np.dtype(t.dtype), load)
    return ckpt.with_(tensors={name: wrap(t) for name, t in ckpt.tensors.items()})


class TrackedRunner:
    """A Runner that names each run on ``bar`` and ticks when it is done; everything else is the inner runner's."""

    def __init__(self, inner, bar, label: str):
        self._inner, self._bar, self._label = inner, bar, label

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    def run(self, head, batch):
        self._bar.describe(f"running {self._label} {head}")
        result = self._inner.run(head, batch)
        self._bar.update()
        return result
