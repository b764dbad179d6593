"""TensorFlow ops for runtimes/forward.py: plain tf ops (no Keras), compiled with tf.function.

Line for line the numpy reference (ops_numpy.py): float32 parameters, int64 inputs, exact
``tf.math.erf`` (forward.py builds erf GELU from it), the same additive mask (finfo.min,
PT semantics -- not HF TF's -10000, which only differs on fully padded rows).

``compile`` traces once per head with a signature whose batch, choice and sequence dims
are ``None``, so any batch/sequence shape reuses the same graph instead of retracing; the
ops therefore read dims that may be unknown at trace time through ``tf.shape``.
"""

from __future__ import annotations

import os

import numpy as np

# TF's C++ start-up notices (oneDNN, CPU features) would drown the CLI's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from .forward import BaseOps

NAME = "tf"


class TFOps(BaseOps):
    """float32 throughout; dims unknown at trace time come from tf.shape (dynamic)."""

    def __init__(self, dtype=tf.float32):
        self.dtype = dtype

    # ---- runner hooks -----------------------------------------------------------------------
    def param(self, array) -> tf.Tensor:
        return tf.constant(np.asarray(array, dtype=self.dtype.as_numpy_dtype))

    def inputs(self, array) -> tf.Tensor:
        return tf.constant(np.asarray(array, dtype=np.int64))

    def to_numpy(self, x) -> np.ndarray:
        return x.numpy()

    def compile(self, fn):
        """tf.function over ``fn(params, batch)``, traced once with unknown batch/sequence dims.

        The signature is fixed on the first call (parameter shapes are the model's; input
        ranks are 2, or 3 for multiple-choice), so later calls with other shapes reuse it.
        """
        compiled: dict[tuple, object] = {}

        def spec(x, dynamic: bool) -> tf.TensorSpec:
            shape = [None] * len(x.shape) if dynamic else x.shape
            return tf.TensorSpec(shape, x.dtype)

        def call(params, batch):
            key = (tuple((k, tuple(v.shape)) for k, v in sorted(params.items())),
                   tuple((k, len(v.shape)) for k, v in sorted(batch.items())))
            if key not in compiled:
                signature = ({k: spec(v, False) for k, v in params.items()},
                             {k: spec(v, True) for k, v in batch.items()})
                compiled[key] = tf.function(fn, input_signature=signature)
            return compiled[key](params, batch)

        # how many graphs were traced: one per head and model, whatever the input shapes
        call.tracing_count = lambda: sum(f.experimental_get_tracing_count() for f in compiled.values())
        return call

    # ---- the Ops protocol (runtimes/forward.py) ----------------------------------------------
    def matmul(self, a, b):
        return tf.matmul(a, b)  # BatchMatMulV2 broadcasts [B, S, in] @ [in, out]

    def transpose(self, x, axes):
        return tf.transpose(x, perm=axes)

    def reshape(self, x, shape):
        return tf.reshape(x, tf.stack([tf.cast(s, tf.int32) for s in shape]))

    def shape(self, x):
        dynamic = tf.shape(x)
        return tuple(s if s is not None else dynamic[i] for i, s in enumerate(x.shape.as_list()))

    def take(self, table, ids):
        return tf.gather(table, ids, axis=0)

    def erf(self, x):
        return tf.math.erf(x)

    def tanh(self, x):
        return tf.math.tanh(x)

    def exp(self, x):
        return tf.math.exp(x)

    def sqrt(self, x):
        return tf.math.sqrt(x)

    def maximum(self, x, y):
        return tf.maximum(x, y)

    def mean(self, x, axis):
        return tf.reduce_mean(x, axis=axis, keepdims=True)

    def max(self, x, axis):
        return tf.reduce_max(x, axis=axis, keepdims=True)

    def sum(self, x, axis):
        return tf.reduce_sum(x, axis=axis, keepdims=True)

    def to_float(self, x):
        return tf.cast(x, self.dtype)

    def arange(self, n):
        return tf.range(tf.cast(n, tf.int64), dtype=tf.int64)

    def less_equal(self, a, b):
        return tf.cast(a <= b, self.dtype)

    def float_min(self):
        return float(np.finfo(self.dtype.as_numpy_dtype).min)


def make_ops() -> TFOps:
    return TFOps()
