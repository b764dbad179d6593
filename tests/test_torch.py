"""The torch runtime and the TorchScript / torch.export artifacts, every head.

Artifacts are written through the real convert path (which verifies them), then run in a
fresh interpreter that can import only torch and numpy, at three (batch, sequence) shapes
none of which is the example shape they were traced/exported with.
"""

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from helpers import HEADS, max_abs, run_cli, run_python, spec

from electra_bridge.converters import detect_format, get_format, inspect, open_runner, read, verify, write
from electra_bridge.runtimes import CheckpointRunner, compare, probe_batch
from electra_bridge.schemas import Checkpoint, FormatError

torch = pytest.importorskip("torch")

TOL = 1e-5
ARTIFACTS = {"torchscript": "model.pt", "torch-export": "model.pt2"}
#: (batch, sequence, choices): batch 1, the probe size, and the longest sequence the fixtures allow
SHAPES = ((1, 5, 2), (3, 11, 3), (4, spec.CONFIG["max_position_embeddings"], 4))
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@pytest.mark.oracle
@pytest.mark.parametrize("head", HEADS)
def test_torch_runtime_equals_live_transformers(head):
    transformers = pytest.importorskip("transformers")
    model = getattr(transformers, spec.HF_CLASS[head]).from_pretrained(spec.HF_SAFETENSORS / head).eval()
    runner = CheckpointRunner(read(spec.HF_SAFETENSORS / head), "torch")
    for seed, (b, s, k) in enumerate(SHAPES):  # explicit token_type_ids with both segments, padded rows
        batch = probe_batch(runner.config, head, batch=b, seq=s, choices=k, seed=seed + 5)
        with torch.no_grad():
            theirs = model(**{n: torch.from_numpy(v) for n, v in batch.items()}, output_hidden_states=True)
        ours = runner.run(head, batch)
        for name, value in ours.outputs.items():
            assert max_abs(value, theirs[name].numpy()) <= TOL, (name, b, s)
        for i, (x, y) in enumerate(zip(ours.hidden_states, theirs.hidden_states, strict=True)):
            assert max_abs(x, y.numpy()) <= TOL, ("hidden", i)


def test_torch_runtime_verifies_against_numpy_and_catches_a_changed_weight():
    ckpt = read(spec.HF_SAFETENSORS / "pretraining")
    assert compare(CheckpointRunner(ckpt, "torch"), CheckpointRunner(ckpt, "numpy")).ok
    tensors = dict(ckpt.arrays())
    bias = tensors["encoder.layer.1.output.dense.bias"].copy()
    bias[0] += 1e-2  # one element: a uniform shift would vanish in the following LayerNorm
    tensors["encoder.layer.1.output.dense.bias"] = bias
    report = compare(CheckpointRunner(ckpt.with_(tensors=tensors), "torch"), CheckpointRunner(ckpt, "numpy"))
    assert not report.ok
    assert report.heads[0].first_divergence == "layer 1"


def test_fusion_replaces_every_layer_norm_softmax_and_gelu():
    ckpt = read(spec.HF_SAFETENSORS / "masked-lm")
    runner = CheckpointRunner(ckpt, "torch")
    layers = ckpt.config.num_hidden_layers
    # LayerNorm: embeddings + 2 per layer + generator head; GELU: 1 per layer + generator head
    assert runner._fn("masked-lm").fused_counts == {"layer_norm": 2 * layers + 2, "softmax": layers, "gelu": layers + 1}


# ---- artifacts -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """(format, head) -> folder, written by the format's writer (convert's own check is
    exercised by the CLI test; the fresh-process test below is the stronger check)."""
    root = tmp_path_factory.mktemp("torch-artifacts")
    return {(fmt, head): write(read(spec.HF_SAFETENSORS / head), root / fmt / head, fmt)
            for fmt in ARTIFACTS for head in HEADS}


def _reference(head: str) -> tuple[dict, list[dict]]:
    """Per shape: the inputs and the numpy reference outputs."""
    runner = CheckpointRunner(read(spec.HF_SAFETENSORS / head), "numpy")
    batches = [probe_batch(runner.config, head, batch=b, seq=s, choices=k, seed=i) for i, (b, s, k) in enumerate(SHAPES)]
    return batches, [runner.run(head, batch).outputs for batch in batches]


#: packages the fresh process must not import
FOREIGN = ("electra_bridge", "transformers", "tensorflow", "jax", "onnxruntime", "scipy")
#: import-blocked there; torch.export.load's dynamo import probes find_spec("tensorflow"/"onnxruntime")
#: to build its skip list, which the blocker would turn into an error, so those two are checked
#: through sys.modules afterwards instead.
BLOCKED = {"torchscript": FOREIGN, "torch-export": ("electra_bridge", "transformers", "jax", "scipy")}

FRESH = """
import json, sys
import numpy as np, torch
jobs = json.loads({jobs!r})
for job in jobs:
    if job["format"] == "torchscript":
        model = torch.jit.load(job["file"])
    else:
        model = torch.export.load(job["file"]).module()
    for i, npz in enumerate(job["inputs"]):
        batch = np.load(npz)
        with torch.no_grad():
            out = model(*(torch.from_numpy(batch[n]) for n in {inputs!r}))
        np.savez(job["outputs"][i], **{{k: v.numpy() for k, v in out.items()}})
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {foreign!r})
print(json.dumps({{"leaked": leaked}}))
"""


@pytest.mark.parametrize("fmt", ARTIFACTS)
def test_artifacts_equal_numpy_in_a_fresh_torch_only_process(fmt, artifacts, tmp_path):
    jobs, expected = [], {}
    for head in HEADS:
        batches, refs = _reference(head)
        names = [tmp_path / f"{head}-in{i}.npz" for i in range(len(SHAPES))]
        for name, batch in zip(names, batches):
            np.savez(name, **batch)
        outs = [str(tmp_path / f"{head}-out{i}.npz") for i in range(len(SHAPES))]
        jobs.append({"format": fmt, "file": str(artifacts[fmt, head] / ARTIFACTS[fmt]),
                     "inputs": [str(n) for n in names], "outputs": outs})
        expected[head] = (refs, outs)
    proc = run_python(FRESH.format(jobs=json.dumps(jobs), inputs=INPUTS, foreign=FOREIGN), blocked=BLOCKED[fmt])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"leaked": []}  # nothing else was imported
    errors = {}
    for head, (refs, outs) in expected.items():
        for (b, s, k), ref, out in zip(SHAPES, refs, outs):
            got = np.load(out)
            for name, value in ref.items():
                assert got[name].shape == value.shape, (head, name, b, s)
                errors[head, name, b, s] = max_abs(got[name], value)
            assert [n for n in got.files if n.startswith("hidden_states.")] == [
                f"hidden_states.{i}" for i in range(spec.CONFIG["num_hidden_layers"] + 1)]
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, bad
    assert len(errors) == len(SHAPES) * (len(HEADS) + 1)  # QA has two outputs


@pytest.mark.parametrize("fmt", ARTIFACTS)
def test_runner_detects_and_verifies_against_checkpoint(fmt, artifacts):
    folder = artifacts[fmt, "question-answering"]
    assert detect_format(folder) == fmt
    assert detect_format(folder / ARTIFACTS[fmt]) == fmt
    runner = open_runner(folder)
    assert (runner.runtime, runner.heads) == (fmt, ("question-answering",))
    report = compare(runner, CheckpointRunner(read(spec.HF_SAFETENSORS / "question-answering"), "torch"))
    assert report.ok
    head = report.heads[0]
    assert [d.name for d in head.outputs] == ["start_logits", "end_logits"]
    assert [d.name for d in head.drift] == ["embeddings", "layer 0", "layer 1"]


@pytest.mark.parametrize("fmt", ARTIFACTS)
def test_mlm_decoder_is_the_embedding_storage(fmt, artifacts):
    folder = artifacts[fmt, "masked-lm"]
    v, e = spec.CONFIG["vocab_size"], spec.CONFIG["embedding_size"]
    with zipfile.ZipFile(folder / ARTIFACTS[fmt]) as archive:
        blobs = [i for i in archive.infolist() if "/data/" in i.filename and i.file_size == v * e * 4]
    assert len(blobs) == 1, [b.filename for b in blobs]  # the [V, E] table is stored once
    info = inspect(folder)
    names = [t["name"] for t in info["tensors"]]
    assert "embeddings.word_embeddings.weight" in names and "generator_lm_head.weight" not in names
    assert info["distinct_storages"] == len(names)
    assert info["outputs"][0] == "logits" and info["inputs"] == list(INPUTS)
    assert {"config.json", "vocab.txt", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["ElectraForMaskedLM"]


@pytest.mark.parametrize("fmt", ARTIFACTS)
def test_untied_decoder_is_kept_and_used(fmt, tmp_path):
    ckpt = read(spec.HF_SAFETENSORS / "masked-lm")
    cfg = dataclasses.replace(ckpt.config, tie_word_embeddings=False)
    tensors = dict(ckpt.arrays())
    rng = np.random.default_rng(0)
    emb = tensors["embeddings.word_embeddings.weight"]
    tensors["generator_lm_head.weight"] = (emb + rng.normal(0, 0.1, emb.shape)).astype(np.float32)
    untied = Checkpoint(cfg, "masked-lm", tensors, ckpt.assets).validate()
    out = write(untied, tmp_path / "untied", fmt)
    runner = open_runner(out)
    assert compare(runner, CheckpointRunner(untied, "numpy")).ok
    assert not compare(runner, CheckpointRunner(ckpt, "numpy")).ok  # the decoder really is the untied one
    with zipfile.ZipFile(out / ARTIFACTS[fmt]) as archive:
        assert sum(i.file_size == emb.nbytes for i in archive.infolist() if "/data/" in i.filename) == 2


def test_check_dynamic_rejects_a_frozen_artifact():
    from electra_bridge.converters.formats.torch_common import EXAMPLE, check_dynamic
    from electra_bridge.runtimes.torch_module import example_inputs, from_checkpoint

    ckpt = read(spec.HF_SAFETENSORS / "token-classification")
    module = from_checkpoint(ckpt)
    example = example_inputs(ckpt.config, ckpt.head, **EXAMPLE)
    frozen = lambda *args: module(*example)  # noqa: E731  (ignores its inputs, like a shape-frozen trace)
    with pytest.raises(FormatError, match="froze a shape"):
        check_dynamic(frozen, module, ckpt, "torchscript")
    check_dynamic(module, module, ckpt, "torchscript")


def test_plain_torch_save_is_not_taken_for_an_artifact(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    assert not any(get_format(fmt).detect(tmp_path) for fmt in ARTIFACTS)
    with pytest.raises(FormatError):
        detect_format(tmp_path)
    with pytest.raises(FormatError):
        open_runner(tmp_path, "torchscript")


@pytest.mark.parametrize("fmt", ARTIFACTS)
def test_cli_convert_with_head(fmt, tmp_path):
    out = tmp_path / "base"
    proc = run_cli("convert", spec.HF_SAFETENSORS / "masked-lm", out, "--to", fmt, "--head", "base")
    assert proc.returncode == 0, proc.stderr
    assert detect_format(out) == fmt and open_runner(out).heads == ("base",)
    report = verify(out, spec.HF_SAFETENSORS / "masked-lm", runtime="torch")
    assert [h.head for h in report.heads] == ["base"] and report.heads[0].outputs[0].max_abs <= TOL
    assert not verify(out, spec.HF_SAFETENSORS / "causal-lm").ok  # other weights: told apart


def test_cli_verify_exit_codes(artifacts):
    folder = artifacts["torchscript", "sequence-classification"]
    proc = run_cli("verify", folder, spec.HF_SAFETENSORS / "sequence-classification", "--runtime", "torch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("verify", artifacts["torchscript", "base"], spec.HF_SAFETENSORS / "causal-lm")  # other weights
    assert proc.returncode == 1, proc.stdout + proc.stderr
