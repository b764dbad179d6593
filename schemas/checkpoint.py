"""Checkpoint: config + head + canonical tensors + assets + provenance, as one immutable value.

Tensors are numpy arrays or ``LazyTensor`` handles (shape and dtype known, bytes read on
demand), so a reader can hand over a 1 GB model without holding it, and a writer can
stream it out one tensor at a time. Functions return new Checkpoints; none mutates one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Union

import numpy as np

from .config import ElectraConfig
from .heads import config_for_head, get_head, head_shapes
from .tensors import check_tensors


@dataclass(frozen=True)
class LazyTensor:
    """A tensor whose bytes are read only when ``load()`` (or ``np.asarray``) is called."""

    shape: tuple[int, ...]
    dtype: np.dtype
    loader: Callable[[], np.ndarray] = field(repr=False)

    def load(self) -> np.ndarray:
        arr = self.loader()
        if tuple(arr.shape) != tuple(self.shape):
            raise ValueError(f"lazy tensor produced shape {arr.shape}, promised {self.shape}")
        return arr

    def __array__(self, dtype=None, copy=None):
        arr = self.load()
        return arr if dtype is None else arr.astype(dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


TensorLike = Union[np.ndarray, LazyTensor]


def materialize(t: TensorLike) -> np.ndarray:
    return t.load() if isinstance(t, LazyTensor) else t


@dataclass(frozen=True)
class Checkpoint:
    config: ElectraConfig
    head: str
    tensors: Mapping[str, TensorLike]
    #: file name -> bytes (vocab.txt, tokenizer.json, ...), copied next to every output
    assets: Mapping[str, bytes] = field(default_factory=dict)
    #: where it came from: format, path, net, notes
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_head(self.head)
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        object.__setattr__(self, "assets", MappingProxyType(dict(self.assets)))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    # ---- access ----------------------------------------------------------------------
    def array(self, name: str) -> np.ndarray:
        return materialize(self.tensors[name])

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor as a numpy array (loads lazy tensors)."""
        return {name: materialize(t) for name, t in self.tensors.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape) for name, t in self.tensors.items()}

    @property
    def num_parameters(self) -> int:
        return int(sum(int(np.prod(t.shape, dtype=np.int64)) for t in self.tensors.values()))

    def with_(self, **changes) -> "Checkpoint":
        return replace(self, **changes)

    def on_load(self, hook: Callable[[str, np.ndarray], None]) -> "Checkpoint":
        """The same checkpoint whose tensors call ``hook(name, array)`` each time one is loaded
        (progress ticks, checksums: what watches the loads costs no read of its own)."""
        def wrap(name: str, t: TensorLike) -> LazyTensor:
            def load() -> np.ndarray:
                array = materialize(t)
                hook(name, array)
                return array
            return LazyTensor(tuple(t.shape), np.dtype(t.dtype), load)
        return self.with_(tensors={name: wrap(name, t) for name, t in self.tensors.items()})

    @property
    def hf_config(self) -> ElectraConfig:
        """The config.json a transformers class for this head expects."""
        return config_for_head(self.config, self.head)

    def validate(self, source: str = "checkpoint") -> "Checkpoint":
        """Check config validity and that tensors are exactly what ``head`` needs."""
        self.config.validate(self.head)
        check_tensors(head_shapes(self.config, self.head), self.shapes(), source=source)
        return self

    def as_head(self, head: str) -> "Checkpoint":
        """The same weights seen as another head whose tensors are a subset (e.g. any -> base,
        masked-lm <-> causal-lm). Raises if the tensors do not fit."""
        needed = head_shapes(self.config, head)
        cfg = config_for_head(self.config, head)
        sub = {n: t for n, t in self.tensors.items() if n in needed}
        return Checkpoint(cfg, head, sub, self.assets, {**self.provenance, "viewed_as": head}).validate(
            f"{self.provenance.get('path', 'checkpoint')} as {head}")
