"""Keras 3 ops for runtimes/forward.py: ``keras.ops`` only, on whichever backend ``KERAS_BACKEND``
names (tensorflow, jax or torch; Keras reads it once, at its first import).

The same math as the numpy reference (ops_numpy.py): float32 parameters, int32 inputs (JAX's
default integer width; token ids fit), exact ``keras.ops.erf`` (forward.py builds the erf GELU
from it; never ``keras.ops.gelu``'s tanh form), LayerNorm as forward.py writes it (two-pass
variance), additive ``finfo(float32).min`` mask. The namespace also works on symbolic Keras
tensors: converters/formats/keras_model.py builds the ``.keras`` graph's activations and softmax
through it, so those are the same code as this runtime's.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up notices, when it is the backend

import keras  # noqa: E402
from keras import ops  # noqa: E402

from .forward import BaseOps  # noqa: E402

NAME = "keras"


class KerasOps(BaseOps):
    """float32 keras.ops; everything forward.py calls, one line each."""

    dtype = "float32"

    @property
    def backend(self) -> str:
        return keras.backend.backend()

    def param(self, array):
        return ops.convert_to_tensor(np.asarray(array, dtype=np.float32))

    def inputs(self, array):
        return ops.convert_to_tensor(np.asarray(array, dtype=np.int32))

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(x))

    def matmul(self, a, b):
        return ops.matmul(a, b)

    def transpose(self, x, axes):
        return ops.transpose(x, axes)

    def reshape(self, x, shape):
        return ops.reshape(x, shape)

    def shape(self, x):
        return tuple(ops.shape(x))

    def take(self, table, ids):
        return ops.take(table, ids, axis=0)

    def erf(self, x):
        return ops.erf(x)

    def tanh(self, x):
        return ops.tanh(x)

    def exp(self, x):
        return ops.exp(x)

    def sqrt(self, x):
        return ops.sqrt(x)

    def maximum(self, x, y):
        return ops.maximum(x, y)

    def mean(self, x, axis):
        return ops.mean(x, axis=axis, keepdims=True)

    def max(self, x, axis):
        return ops.max(x, axis=axis, keepdims=True)

    def sum(self, x, axis):
        return ops.sum(x, axis=axis, keepdims=True)

    def to_float(self, x):
        return ops.cast(x, self.dtype)

    def arange(self, n):
        return ops.arange(n, dtype="int32")

    def less_equal(self, a, b):
        return ops.cast(ops.less_equal(a, b), self.dtype)

    def float_min(self):
        return float(np.finfo(np.float32).min)


def make_ops() -> KerasOps:
    return KerasOps()
