"""The JAX runtime: runtimes/forward.py jitted over JAX ops, against the numpy reference and FlaxElectra."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import FIXTURES, HEADS, max_abs

pytest.importorskip("jax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from electra_bridge.converters import read  # noqa: E402
from electra_bridge.runtimes import CheckpointRunner, probe_batch  # noqa: E402
from electra_bridge.runtimes.forward import ACTIVATIONS  # noqa: E402
from electra_bridge.runtimes.ops_jax import make_ops  # noqa: E402

TOL = 1e-5


@functools.lru_cache(maxsize=None)
def checkpoint(head: str):
    return read(FIXTURES / "hf" / head)


def compare_runners(ckpt, head, batch):
    """(max-abs of every output and hidden state, JAX vs the numpy reference; the JAX result)."""
    a = CheckpointRunner(ckpt, "jax").run(head, batch)
    b = CheckpointRunner(ckpt, "numpy").run(head, batch)
    errors = {k: max_abs(a.outputs[k], b.outputs[k]) for k in b.outputs}
    errors.update({f"hidden {i}": max_abs(x, y) for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states))})
    assert len(a.hidden_states) == len(b.hidden_states) == ckpt.config.num_hidden_layers + 1
    for k, v in a.outputs.items():
        assert isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == b.outputs[k].shape, k
    return errors, a


@pytest.mark.parametrize("head, change", [
    ("masked-lm", {"hidden_act": "gelu_new"}),
    ("pretraining", {"hidden_act": "relu"}),
    ("multiple-choice", {"summary_type": "last"}),
    ("multiple-choice", {"summary_type": "mean", "summary_activation": "tanh", "hidden_act": "silu"}),
])
def test_jax_follows_config_variants(head, change):
    ckpt = checkpoint(head)
    ckpt = ckpt.with_(config=ckpt.config.replace(**change))
    errors, _ = compare_runners(ckpt, head, probe_batch(ckpt.config, head))
    assert max(errors.values()) <= TOL, errors


def test_untied_generator_and_fully_masked_row():
    ckpt = read(FIXTURES / "hf-flax" / "untied-masked-lm-pt")
    batch = probe_batch(ckpt.config, "masked-lm")
    batch["attention_mask"][-1] = 0            # a row with no visible token: finfo.min everywhere
    errors, _ = compare_runners(ckpt, "masked-lm", batch)
    assert max(errors.values()) <= TOL, errors


def test_gelu_is_exact_erf_not_tanh():
    ops = make_ops()
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    ours = np.asarray(ACTIVATIONS["gelu"](jnp.asarray(x), ops))
    exact = np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False))
    tanh = np.asarray(jax.nn.gelu(jnp.asarray(x)))  # jax's default is the tanh approximation
    assert max_abs(ours, exact) <= 1e-6
    assert max_abs(ours, tanh) > 1e-4


def test_compiled_per_head_and_shape_is_static():
    ops = make_ops()
    assert ops.shape(jnp.zeros((2, 3))) == (2, 3) and all(type(d) is int for d in ops.shape(jnp.zeros((2, 3))))
    runner = CheckpointRunner(checkpoint("token-classification"), "jax")
    small = probe_batch(runner.config, "token-classification", batch=2, seq=5)
    big = probe_batch(runner.config, "token-classification", batch=4, seq=9)
    assert runner.run("token-classification", small).outputs["logits"].shape == (2, 5, 4)
    assert runner.run("token-classification", big).outputs["logits"].shape == (4, 9, 4)
    fn = runner._fn("token-classification")
    assert hasattr(fn, "lower")  # a jax.jit-wrapped function


@pytest.mark.oracle
@pytest.mark.parametrize("head", HEADS)
def test_jax_runtime_equals_transformers_flax(head):
    """Oracle: FlaxElectraFor<Head> on the transformers-written msgpack, explicit token_type_ids."""
    import transformers

    folder = FIXTURES / "hf-flax" / head
    cls = "FlaxElectra" + {"base": "Model"}.get(head, "For" + read(folder).config.architectures[0][len("ElectraFor"):])
    model, params = getattr(transformers, cls).from_pretrained(folder, _do_init=False)  # skips a random init
    batch = probe_batch(read(folder).config, head)
    out = model(**batch, params=params)
    ours = CheckpointRunner(read(folder), "jax").run(head, batch).outputs
    errors = {k: max_abs(ours[k], np.asarray(getattr(out, k))) for k in ours}
    print(f"{head}: jax runtime vs FlaxElectra {errors}")
    assert max(errors.values()) <= TOL, errors
