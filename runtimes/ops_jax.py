"""JAX ops for runtimes/forward.py: the same math as ops_numpy, jitted over the parameter pytree.

Contracts: parameters are float32 ``jax.Array`` (canonical layout; nothing is transposed
here), inputs int32 (JAX's default integer width without x64; token ids fit), outputs
converted back to numpy float32. ``compile`` is ``jax.jit``: the config and head are
closed over (static), so a head is traced once per batch shape. Numerics as the numpy
reference: exact erf GELU (``jax.scipy.special.erf``, never ``jax.nn.gelu``'s tanh
default), LayerNorm over the last axis with the two-pass variance (flax's LayerNorm
defaults to E[x^2]-E[x]^2; we follow torch), ``finfo.min`` additive mask, and matmuls
at ``precision="highest"`` so a GPU/TPU does not silently drop to TF32/bf16 passes
(JAX's default matmul precision on accelerators is not full float32). ``shape`` returns static Python ints under jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf as _erf

from .forward import BaseOps

NAME = "jax"


class JaxOps(BaseOps):
    """float32 jax.numpy ops; everything forward.py calls, one line each."""

    def __init__(self, dtype=jnp.float32):
        self.dtype = jnp.dtype(dtype)

    def compile(self, fn):
        return jax.jit(fn)

    def param(self, array) -> jax.Array:
        return jnp.asarray(np.asarray(array, dtype=self.dtype))

    def inputs(self, array) -> jax.Array:
        return jnp.asarray(np.asarray(array), dtype=jnp.int32)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    transpose = staticmethod(jnp.transpose)
    reshape = staticmethod(jnp.reshape)
    exp = staticmethod(jnp.exp)
    tanh = staticmethod(jnp.tanh)
    sqrt = staticmethod(jnp.sqrt)
    maximum = staticmethod(jnp.maximum)

    def matmul(self, a, b):
        return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)

    def shape(self, x):
        return tuple(int(d) for d in x.shape)  # static under jit (shapes are known at trace time)

    def take(self, table, ids):
        return jnp.take(table, ids, axis=0)

    def erf(self, x):
        return _erf(x)

    def mean(self, x, axis):
        return jnp.mean(x, axis=axis, keepdims=True)

    def max(self, x, axis):
        return jnp.max(x, axis=axis, keepdims=True)

    def sum(self, x, axis):
        return jnp.sum(x, axis=axis, keepdims=True)

    def to_float(self, x):
        return x.astype(self.dtype)

    def arange(self, n):
        return jnp.arange(n, dtype=jnp.int32)

    def less_equal(self, a, b):
        return (a <= b).astype(self.dtype)

    def float_min(self):
        return float(jnp.finfo(self.dtype).min)


def make_ops() -> JaxOps:
    return JaxOps()
