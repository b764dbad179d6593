"""Half-precision torch artifacts (issue 12): ``convert --to torchscript|torch-export --dtype
float16|bfloat16``, every head, against the float32 original.

The artifacts hold half weights (LayerNorm's float32) and compute embeddings and matmuls in the
half dtype with LayerNorm, softmax and the mask in float32; they take int64 and return float32.
Each is written by the real convert path (which verifies it), then run again here at a shape the
convert step did not use, against the numpy float32 reference of the untouched fixture.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import HEADS, run_cli, spec
from test_precision import flips_are_near_ties

from electra_bridge.converters import convert, inspect, open_runner, read, write
from electra_bridge.converters.engine import pipeline
from electra_bridge.runtimes import CheckpointRunner, compare, probe_batch
from electra_bridge.runtimes.probe import PROBE_BATCH, precision_batch
from electra_bridge.runtimes.verify import TOLERANCES, tolerance
from electra_bridge.schemas import FormatError

torch = pytest.importorskip("torch")

FORMATS = {"torchscript": "model.pt", "torch-export": "model.pt2"}
HALF = ("float16", "bfloat16")
CASES = [pytest.param(fmt, head, dtype, id=f"{fmt}-{head}-{dtype}") for fmt in FORMATS for dtype in HALF
         for head in HEADS]


def _agrees_fully(report) -> None:
    for h in report.heads:
        assert h.agreement or h.head == "base", h.head
        for g in h.agreement:
            assert g.fraction == 1.0, (h.head, g.text())


@pytest.mark.parametrize("fmt,head,dtype", CASES)
def test_half_artifact_every_head_against_the_float32_original(tmp_path, fmt, head, dtype):
    out = tmp_path / "out"
    report = convert(spec.HF_SAFETENSORS / head, out, fmt, dtype=dtype).report
    assert report.ok, report.table()
    assert (report.atol, report.rtol) == tolerance(fmt, dtype) == TOLERANCES[("numpy", dtype)]   # its dtype's row
    original = CheckpointRunner(read(spec.HF_SAFETENSORS / head), "numpy")
    # verified on the probe rows plus the long and repeated-token rows (runtimes/probe.precision_batch)
    verified = precision_batch(original.config, head)
    assert report.inputs[f"{head}:input_ids"] == list(verified["input_ids"].shape)
    if dtype == "float16":
        _agrees_fully(report)
    else:   # bfloat16 keeps every probe row; the precision rows may flip a near tie of the random fixture
        flips_are_near_ties(report.heads, original.run(head, verified).outputs, verified, rows_from=PROBE_BATCH)
    runner = open_runner(out)
    assert (runner.runtime, runner.dtype) == (fmt, dtype)               # recorded in the file, reported

    # the stored tensors: half everywhere but LayerNorm (its kernel runs in float32)
    info = inspect(out)
    assert info["dtype"] == dtype and info["input_dtype"] == "int64"
    layer_norm = {t["name"] for t in info["tensors"] if ".LayerNorm." in t["name"]}
    assert layer_norm and {t["dtype"] for t in info["tensors"] if t["name"] in layer_norm} == {"float32"}
    assert {t["dtype"] for t in info["tensors"] if t["name"] not in layer_norm} == {dtype}

    # again at a shape convert did not use (batch 4, the longest sequence), against the float32 original
    cfg = runner.config
    batch = probe_batch(cfg, head, batch=4, seq=cfg.max_position_embeddings, choices=4, seed=7)
    again = compare(runner, original, batch_for=lambda h: batch)
    assert again.ok, again.table()
    flips_are_near_ties(again.heads, original.run(head, batch).outputs, batch)
    got = runner.run(head, batch)
    assert all(v.dtype == np.float32 for v in got.outputs.values())
    assert all(s.dtype == np.float32 for s in got.hidden_states)


@pytest.mark.parametrize("dtype", HALF)
def test_half_artifact_rounds_activations_not_only_weights(dtype):
    """The artifact really computes in the half dtype: it differs from float32 arithmetic on the same
    half weights (the torch runtime), by more than that runtime differs from numpy, yet stays in its row."""
    from electra_bridge.runtimes.torch_module import from_checkpoint

    ckpt = pipeline.cast(read(spec.HF_SAFETENSORS / "pretraining"), dtype)
    batch = probe_batch(ckpt.config, "pretraining")
    float32_math = CheckpointRunner(ckpt, "torch").run("pretraining", batch).outputs["logits"]
    numpy_math = CheckpointRunner(ckpt, "numpy").run("pretraining", batch).outputs["logits"]
    module = from_checkpoint(ckpt, dtype=dtype)
    with torch.no_grad():
        half = module(*(torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    half_math = half["logits"].numpy()
    assert half_math.dtype == np.float32
    assert np.max(np.abs(half_math - float32_math)) > 10 * max(np.max(np.abs(numpy_math - float32_math)), 1e-7)
    assert np.max(np.abs(half_math - float32_math)) < tolerance("torchscript", dtype)[0]


def _scaled(tmp_path: Path, scale: float) -> Path:
    """token-classification with layer 1's FFN weights scaled: its activations grow ~scale**2."""
    ckpt = read(spec.HF_SAFETENSORS / "token-classification")
    tensors = dict(ckpt.arrays())
    for name in ("encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.output.dense.weight"):
        tensors[name] = tensors[name] * scale
    return write(ckpt.with_(tensors=tensors), tmp_path / f"x{scale:g}", "safetensors")


@pytest.mark.parametrize("fmt", FORMATS)
def test_float16_overflow_is_refused_naming_the_layer_and_bfloat16_converts(tmp_path, fmt):
    src = _scaled(tmp_path, 300)      # layer 1 FFN peaks at ~7.9e4 > 65504 (weights stay in range)
    proc = run_cli("convert", src, tmp_path / "fp16", "--to", fmt, "--dtype", "float16")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "float16 overflow at layer 1 ffn" in proc.stderr, proc.stderr
    assert "max-abs nan" not in (proc.stdout + proc.stderr).lower()     # the audit speaks, not a NaN check
    assert not (tmp_path / "fp16").exists()
    proc = run_cli("convert", src, tmp_path / "bf16", "--to", fmt, "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert open_runner(tmp_path / "bf16").dtype == "bfloat16"


def test_float16_layer_norm_of_large_activations_is_computed_in_float32(tmp_path):
    """Layer 1 FFN at ~3.5e4 fits float16, but its squares (LayerNorm's variance) do not: the float16
    artifact passes because LayerNorm runs in float32; the same math with float16 statistics does not
    (the variance overflows to inf, every position normalizes to LayerNorm's bias)."""
    from electra_bridge.runtimes.forward import forward
    from electra_bridge.runtimes.ops_torch import HalfTorchOps

    src = _scaled(tmp_path, 200)
    report = convert(src, tmp_path / "out", "torchscript", dtype="float16").report
    assert report.ok, report.table()
    assert report.heads[0].peaks and all(p.ok for p in report.heads[0].peaks)
    assert max(p.max_abs for p in report.heads[0].peaks) > 256       # squares beyond 65504

    class Float16Statistics(HalfTorchOps):
        def mean(self, x, axis):
            return torch.mean(x.to(self.dtype), dim=axis, keepdim=True)

    ops = Float16Statistics(torch.float16)
    ckpt = pipeline.cast(read(src), "float16")
    params = {n: ops.param(t) for n, t in ckpt.tensors.items()}
    batch = probe_batch(ckpt.config, ckpt.head)
    with torch.no_grad():
        logits = forward(params, ckpt.config, ckpt.head, {k: ops.inputs(v) for k, v in batch.items()}, ops)
    reference = CheckpointRunner(read(src), "numpy").run(ckpt.head, batch).outputs["logits"]
    float16_statistics = logits.outputs["logits"].float().numpy()
    assert np.max(np.abs(float16_statistics - reference)) > 10 * tolerance("torchscript", "float16")[0]
    assert report.heads[0].outputs[0].max_abs < tolerance("torchscript", "float16")[0]


def test_the_record_names_the_dtype_and_an_unknown_one_is_refused(tmp_path):
    from electra_bridge.runtimes.torch_artifacts import META_NAME, parse_metadata

    out = write(pipeline.cast(read(spec.HF_SAFETENSORS / "pretraining"), "bfloat16"), tmp_path / "ts", "torchscript")
    with zipfile.ZipFile(out / "model.pt") as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(f"/extra/{META_NAME}")]
        meta = json.loads(archive.read(name))
    assert (meta["dtype"], meta["input_dtype"], meta["output_dtype"]) == ("bfloat16", "int64", "float32")
    legacy = dict(meta)
    del legacy["dtype"]
    assert parse_metadata(json.dumps(legacy), out)["dtype"] == "float32"    # files written before half artifacts
    with pytest.raises(FormatError, match="float8"):
        parse_metadata(json.dumps({**meta, "dtype": "float8"}), out)


def test_a_half_checkpoint_keeps_its_dtype_in_the_artifact(tmp_path):
    """No --dtype: a float16 checkpoint becomes a float16 artifact (stored dtypes are kept), verified
    under the float16 row; --dtype float32 widens it into a float32 artifact."""
    half = write(pipeline.cast(read(spec.HF_SAFETENSORS / "sequence-classification"), "float16"),
                 tmp_path / "half", "safetensors")
    report = convert(half, tmp_path / "kept", "torch-export").report
    assert report.ok and open_runner(tmp_path / "kept").dtype == "float16"
    assert (report.atol, report.rtol) == tolerance("torch-export", "float16")
    convert(half, tmp_path / "wide", "torch-export", dtype="float32")
    assert open_runner(tmp_path / "wide").dtype == "float32"
    assert set(inspect(tmp_path / "wide")["dtypes"]) == {"float32"}
