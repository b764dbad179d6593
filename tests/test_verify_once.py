"""convert's check reads the source once and runs each side's encoder once, without weakening it.

* every source tensor is read from disk exactly once in a verified convert (the writer's arrays
  serve the source run), for TF1 and safetensors sources, and the written file once too;
* ``base`` and a head share one encoder pass (CheckpointRunner) with results bit-equal to runs of
  their own, never for causal-lm (another mask) or multiple-choice (another batch shape);
* a written file that differs still fails the check, and the report carries its time.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from electra_bridge.converters import api, convert, read
from electra_bridge.converters.engine.format import NativeTensor
from electra_bridge.converters.formats import safetensors_file, tf1_bundle
from electra_bridge.runtimes import CheckpointRunner, probe_batch, runner as runner_module
from electra_bridge.runtimes.runner import PrecomputedRunner, Retained

from helpers import FIXTURES


@pytest.fixture
def reads(monkeypatch):
    """(file name, tensor name) -> how often it was read from disk, for TF1 bundles and safetensors files."""
    seen: Counter = Counter()
    bundle_read, st_load = tf1_bundle.BundleReader.read, safetensors_file.SafetensorsFile.load

    def counted_bundle(self, name):
        seen[(Path(self.prefix).parent.name, name)] += 1
        return bundle_read(self, name)

    def counted_st(self, name):
        seen[(self.path.parent.name, name)] += 1
        return st_load(self, name)

    monkeypatch.setattr(tf1_bundle.BundleReader, "read", counted_bundle)
    monkeypatch.setattr(safetensors_file.SafetensorsFile, "load", counted_st)
    return seen


@pytest.mark.parametrize("source", ["tf1/pretraining", "hf/pretraining", "hf/masked-lm"])
def test_a_verified_convert_reads_every_source_tensor_once(source, reads, tmp_path):
    src = FIXTURES / source
    result = convert(src, tmp_path / "out", "safetensors")
    assert result.report.ok
    from_source = Counter({k: v for k, v in reads.items() if k[0] == src.name})
    from_output = Counter({k: v for k, v in reads.items() if k[0] != src.name})
    assert from_source and set(from_source.values()) == {1}, from_source.most_common(3)
    # the written side reads each written tensor once too (from the staging folder, renamed to out)
    assert from_output and set(from_output.values()) == {1}, from_output.most_common(3)
    assert len(from_source) == len(result.source.tensors)


def test_no_verify_keeps_nothing(tmp_path, monkeypatch):
    kept = []
    original = Retained.__init__

    def spy(self, ckpt, keep=True):
        original(self, ckpt, keep)
        kept.append(self)

    monkeypatch.setattr(Retained, "__init__", spy)
    convert(FIXTURES / "hf" / "pretraining", tmp_path / "out", "safetensors", verify=False)
    assert kept and kept[0].nbytes == 0     # --no-verify: the writer's arrays are not held


def test_the_source_arrays_are_gone_before_the_written_side_loads(tmp_path, monkeypatch):
    """Peak memory near one copy: when the written side loads its first tensor, nothing is retained."""
    holders, at_written_load = [], []
    original = Retained.__init__

    def spy(self, ckpt, keep=True):
        original(self, ckpt, keep)
        holders.append(self)

    st_load = safetensors_file.SafetensorsFile.load

    def load(self, name):
        if holders and self.path.parent.name.startswith(".out.partial-"):   # the staging folder
            at_written_load.append(holders[0].nbytes)
        return st_load(self, name)

    monkeypatch.setattr(Retained, "__init__", spy)
    monkeypatch.setattr(safetensors_file.SafetensorsFile, "load", load)
    src = FIXTURES / "tf1" / "pretraining"
    convert(src, tmp_path / "out", "safetensors")
    assert at_written_load and set(at_written_load) == {0}


def _bump_one(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, copy=True)   # one element: a constant shift of a bias would vanish in the LayerNorm
    out.flat[0] += np.float32(1e-2)
    return out


def _perturbing_write(original):
    def write(path, tensors, metadata=None):
        def bumped(t):
            if t.name.endswith("encoder.layer.1.output.dense.bias"):
                return NativeTensor(t.name, t.shape, t.dtype, lambda: _bump_one(t.load()))
            return t
        return original(path, [bumped(t) for t in tensors], metadata)
    return write


def test_a_written_file_that_differs_still_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_file, "write", _perturbing_write(safetensors_file.write))
    with pytest.raises(api.VerificationError) as err:
        convert(FIXTURES / "tf1" / "pretraining", tmp_path / "out", "safetensors")
    report = err.value.report
    assert not report.ok and report.first_divergence == "layer 1"
    assert {h.head for h in report.heads} == {"base", "pretraining"}
    assert all(not h.ok for h in report.heads)        # base's and the head's outputs both caught it
    assert not (tmp_path / "out").exists()


def test_the_report_carries_its_time(tmp_path):
    result = convert(FIXTURES / "hf" / "pretraining", tmp_path / "out", "safetensors", report=tmp_path / "r.json")
    assert 0 < result.report.seconds < 60
    assert json.loads((tmp_path / "r.json").read_text())["seconds"] == pytest.approx(result.report.seconds)
    assert result.report.table().splitlines()[-1].startswith("verified in ")
    marker = json.loads((tmp_path / "out" / "electra-bridge.json").read_text())
    assert marker["verification"]["seconds"] == pytest.approx(result.report.seconds)
    report = api.verify(tmp_path / "out", FIXTURES / "hf" / "pretraining")
    assert report.ok and report.seconds > 0


def _forward_calls(monkeypatch) -> list[str]:
    calls = []
    forward = runner_module.forward

    def counted(params, cfg, head, batch, ops):
        calls.append(head)
        return forward(params, cfg, head, batch, ops)

    monkeypatch.setattr(runner_module, "forward", counted)
    return calls


@pytest.mark.parametrize("head", ["pretraining", "masked-lm", "sequence-classification", "question-answering"])
def test_base_and_the_head_share_one_encoder_pass(head, monkeypatch):
    ckpt = read(FIXTURES / "hf" / head)
    batch = probe_batch(ckpt.config, head)
    alone = {h: CheckpointRunner(ckpt).run(h, batch) for h in ("base", head)}   # before counting
    calls = _forward_calls(monkeypatch)
    shared = CheckpointRunner(ckpt)
    results = {h: shared.run(h, batch) for h in ("base", head)}
    assert calls == [head]
    for h in ("base", head):
        assert results[h].outputs.keys() == alone[h].outputs.keys()
        for name in alone[h].outputs:
            assert np.array_equal(results[h].outputs[name], alone[h].outputs[name]), (h, name)
        assert all(np.array_equal(x, y) for x, y in zip(results[h].hidden_states, alone[h].hidden_states))
    other = {k: v.copy() for k, v in batch.items()}
    other["input_ids"][0, 1] = (other["input_ids"][0, 1] + 1) % ckpt.config.vocab_size
    shared.run("base", other)                          # another batch: a pass of its own
    shared.release()
    shared.run(head, batch)                            # released: run again
    assert calls == [head, head, head]


@pytest.mark.parametrize("head", ["causal-lm", "multiple-choice"])
def test_no_sharing_where_the_encoder_differs(head, monkeypatch):
    ckpt = read(FIXTURES / "hf" / head)
    calls = _forward_calls(monkeypatch)
    runner = CheckpointRunner(ckpt)
    base = runner.run("base", probe_batch(ckpt.config, "base"))
    own = runner.run(head, probe_batch(ckpt.config, head))
    assert calls == ["base", head]
    if head == "causal-lm":   # the causal mask changes every position but the last of a full row
        assert not np.allclose(base.hidden_states[-1], own.hidden_states[-1])


def test_precomputed_runner_answers_equal_batches_and_reruns_others(monkeypatch):
    ckpt = read(FIXTURES / "hf" / "pretraining")
    calls = _forward_calls(monkeypatch)
    pre = PrecomputedRunner.on_probe_batches(CheckpointRunner(ckpt))
    assert calls == ["pretraining"] and pre.heads == ("base", "pretraining") and pre.ckpt is ckpt
    batch = probe_batch(ckpt.config, "pretraining")
    pre.run("base", {k: v.copy() for k, v in batch.items()})
    pre.run("pretraining", batch)
    assert calls == ["pretraining"]
    shorter = {k: v[:, :5] for k, v in batch.items()}
    pre.run("pretraining", shorter)
    assert calls == ["pretraining", "pretraining"]


def test_retained_serves_one_array_per_tensor_until_dropped():
    ckpt = read(FIXTURES / "tf1" / "pretraining")
    kept = Retained(ckpt)
    name = next(iter(ckpt.tensors))
    first = np.asarray(kept.ckpt.tensors[name])
    assert first.flags.c_contiguous and first is np.asarray(kept.ckpt.tensors[name])
    assert np.array_equal(first, np.asarray(ckpt.tensors[name])) and kept.nbytes == first.nbytes
    kept.drop()
    again = np.asarray(kept.ckpt.tensors[name])
    assert again is not first and np.array_equal(again, first) and kept.nbytes == 0


def test_small_numpy_runs_use_one_blas_thread(monkeypatch):
    from electra_bridge.runtimes import blas, ops_numpy

    api = blas.openblas()
    if api is None:
        pytest.skip("numpy is not linked against OpenBLAS here")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    setter, getter = api.set_threads, api.get_threads
    original, before = getter(), 2     # two threads, so that one is a change even on a one-core machine
    setter(before)
    try:
        seen = []
        run = ops_numpy.NumpyOps().compile(lambda params, batch: seen.append(getter()))
        run({}, {"input_ids": np.zeros((3, 11), dtype=np.int64)})                       # the probe batch: 33 tokens
        run({}, {"input_ids": np.zeros((2, ops_numpy.SMALL_RUN_TOKENS), dtype=np.int64)})  # large: untouched
        assert seen == [1, before] and getter() == before
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", str(before))                         # the user's choice stands
        run({}, {"input_ids": np.zeros((3, 11), dtype=np.int64)})
        assert seen[-1] == before
    finally:
        setter(original)


@pytest.mark.parametrize("shape", [(768, 3072), (3, 5), (1, 7), (7, 1), (0, 4)])
def test_contiguous_copies_a_transposed_view_exactly(shape):
    from electra_bridge.runtimes import blas

    stored = np.random.default_rng(0).standard_normal(shape[::-1], dtype=np.float32)
    view = stored.T
    out = blas.contiguous(view)
    assert out.flags.c_contiguous and out.dtype == np.float32 and np.array_equal(out, view)
    assert view.flags.c_contiguous or not np.shares_memory(out, stored)   # a copy unless it already was one
    assert blas.contiguous(stored) is stored                                   # already contiguous: itself
    half = stored.astype(np.float16).T                                          # other dtypes: numpy's copy
    assert np.array_equal(blas.contiguous(half), half) and blas.contiguous(half).flags.c_contiguous
    strided = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]            # not a transpose: numpy's copy
    assert np.array_equal(blas.contiguous(strided), strided)


def test_preload_imports_the_runtime_in_the_background_and_never_raises(monkeypatch):
    import sys

    from electra_bridge.runtimes.runner import RUNTIMES, preload

    thread = preload("numpy")
    thread.join(60)
    assert not thread.is_alive() and RUNTIMES["numpy"] in sys.modules
    assert preload("no-such-runtime") is None
    monkeypatch.setitem(RUNTIMES, "broken", "electra_bridge.runtimes.no_such_module")
    thread = preload("broken")        # the failure is load_ops' to report, in the caller's thread
    thread.join(60)
    assert not thread.is_alive()


def test_the_source_side_runs_beside_the_writer(tmp_path, monkeypatch):
    """Every tensor is read before the first is written; the source run then happens in its own thread
    while the writer writes (it starts before the write ends), and the written side comes after."""
    import threading

    events = []
    forward = runner_module.forward

    def counted(params, cfg, head, batch, ops):
        events.append(("forward", threading.current_thread().name))
        return forward(params, cfg, head, batch, ops)

    st_write = safetensors_file.write

    def write(path, tensors, metadata=None):
        events.append(("write", None))
        return st_write(path, tensors, metadata)

    monkeypatch.setattr(runner_module, "forward", counted)
    monkeypatch.setattr(safetensors_file, "write", write)
    convert(FIXTURES / "tf1" / "pretraining", tmp_path / "out", "safetensors")
    assert events[0] == ("write", None)
    assert events[1:] == [("forward", "source run"), ("forward", threading.current_thread().name)]


def test_a_failing_source_run_fails_the_convert(tmp_path, monkeypatch):
    def broken(params, cfg, head, batch, ops):
        raise RuntimeError("source run broke")

    monkeypatch.setattr(runner_module, "forward", broken)
    with pytest.raises(RuntimeError, match="source run broke"):
        convert(FIXTURES / "hf" / "pretraining", tmp_path / "out", "safetensors")
    assert not (tmp_path / "out").exists()
