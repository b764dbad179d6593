"""The TF runtime: runtimes/forward.py over plain tf ops in a tf.function, every head.

Checked against the numpy reference and transformers' PyTorch golden outputs (all 8 heads,
causal-lm included though transformers has no TF class for it), and live against
transformers' own TFElectraFor<Head> on the TF-written h5 fixtures.
"""

import numpy as np
import pytest

from helpers import HEADS, max_abs, run_python, spec

from electra_bridge.converters import read
from electra_bridge.runtimes import CheckpointRunner, compare, probe_batch

tf = pytest.importorskip("tensorflow")

H5 = spec.HERE / "hf-h5"
TF_HEADS = tuple(h for h in HEADS if h != "causal-lm")
TOL = 1e-5
#: (batch, sequence, choices): batch 1, the probe size, the longest sequence the fixtures allow
SHAPES = ((1, 5, 2), (3, 11, 3), (4, spec.CONFIG["max_position_embeddings"], 4))


def assert_results_close(ours, ref, where):
    assert set(ours.outputs) == set(ref.outputs)
    for name, value in ref.outputs.items():
        assert ours.outputs[name].dtype == np.float32 and ours.outputs[name].shape == value.shape, (name, where)
        assert max_abs(ours.outputs[name], value) <= TOL, (name, where, max_abs(ours.outputs[name], value))
    for i, (x, y) in enumerate(zip(ours.hidden_states, ref.hidden_states, strict=True)):
        assert max_abs(x, y) <= TOL, ("hidden", i, where)


@pytest.mark.parametrize("head", HEADS)
def test_tf_runtime_equals_numpy_reference_at_every_shape_with_one_trace(head):
    ckpt = read(spec.HF_SAFETENSORS / head)
    runner, reference = CheckpointRunner(ckpt, "tf"), CheckpointRunner(ckpt, "numpy")
    for seed, (b, s, k) in enumerate(SHAPES):  # padded rows, both segment ids
        batch = probe_batch(ckpt.config, head, batch=b, seq=s, choices=k, seed=seed)
        assert_results_close(runner.run(head, batch), reference.run(head, batch), (b, s))
    # varying batch and sequence lengths reuse one graph instead of retracing
    assert runner._fn(head).tracing_count() == 1


def test_compare_reports_tf_against_numpy_as_equal():
    report = compare(CheckpointRunner(read(H5 / "masked-lm"), "tf"), CheckpointRunner(read(spec.HF_SAFETENSORS / "masked-lm")))
    assert report.ok and [h.head for h in report.heads] == ["base", "masked-lm"]
    assert max(d.max_abs for h in report.heads for d in h.outputs) <= TOL


def test_release_then_run_again():
    runner = CheckpointRunner(read(H5 / "pretraining"), "tf")
    batch = probe_batch(runner.config, "pretraining")
    first = runner.run("pretraining", batch).outputs["logits"]
    runner.release()
    assert np.array_equal(runner.run("pretraining", batch).outputs["logits"], first)


@pytest.mark.oracle
@pytest.mark.parametrize("head", TF_HEADS)
def test_tf_runtime_equals_live_transformers_tf_class_on_the_h5_fixture(head):
    transformers = pytest.importorskip("transformers")
    from electra_bridge.converters.formats import h5

    model = getattr(transformers, h5.TF_MODELS[head][0]).from_pretrained(H5 / head)
    runner = CheckpointRunner(read(H5 / head), "tf")
    for seed, (b, s, k) in enumerate(SHAPES):  # explicit token_type_ids: both segments, padded rows
        batch = probe_batch(runner.config, head, batch=b, seq=s, choices=k, seed=seed + 7)
        theirs = model({n: tf.constant(v) for n, v in batch.items()}, output_hidden_states=True, training=False)
        ours = runner.run(head, batch)
        for name, value in ours.outputs.items():
            assert max_abs(value, theirs[name].numpy()) <= TOL, (name, b, s)
        for i, (x, y) in enumerate(zip(ours.hidden_states, theirs.hidden_states, strict=True)):
            assert max_abs(x, y.numpy()) <= TOL, ("hidden", i)


def test_without_tensorflow_the_runtime_names_the_extra():
    proc = run_python("""
        from electra_bridge.runtimes import load_ops
        from electra_bridge.schemas import MissingDependencyError
        try:
            load_ops("tf")
        except MissingDependencyError as exc:
            print(exc)
    """, blocked=("tensorflow",))
    assert proc.returncode == 0 and "pip install 'electra-bridge[tf]'" in proc.stdout, proc.stderr[-2000:]
