"""The ``keras`` format and runtime: every head exported as ``model.keras``, loaded by plain
``keras.saving.load_model`` in a fresh process that imports only Keras, its backend and numpy,
and compared with transformers' PyTorch class at shapes the export never saw, per backend.
(Round trips, strict reads and the keras runtime against the golden files come from
test_registry.py.)"""

from __future__ import annotations

import json
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers import HEADS, max_abs, requires, run_python, spec

from electra_bridge.converters import convert, read, write
from electra_bridge.runtimes import probe_batch
from electra_bridge.schemas import FormatError, get_head

pytestmark = requires("keras")

#: (batch, sequence, choices): neither is the probe batch (3, 11, 3) the writer checks itself on
SHAPES = ((1, 7, 2), (4, 19, 3))
ATOL = 1e-5
#: backend -> the pyproject extra that installs it (torch too when it is installed)
BACKENDS = {"jax": "jax", "tensorflow": "tf", "torch": "torch"}
#: backend -> the top-level modules it is made of; the others are blocked in the fresh process
FRAMEWORKS = {"jax": ("jax", "jaxlib"), "tensorflow": ("tensorflow",), "torch": ("torch",)}

_RUN = """
import json, sys
import numpy as np
import keras
out = dict()
for head, folder in json.loads(open({job!r}).read()).items():
    model = keras.saving.load_model(folder + "/model.keras")
    for i, path in enumerate(sorted(__import__("glob").glob({inputs!r} + "/" + head + "-*.npz"))):
        batch = dict(np.load(path))
        for name, value in model(batch, training=False).items():
            out[f"{{head}}|{{i}}|{{name}}"] = np.asarray(keras.ops.convert_to_numpy(value))
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
leaked = sorted(m for m in sys.modules if m.split(".")[0] in {others!r})
assert not leaked, leaked
np.savez({result!r}, **out)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """Every head of the fixtures converted to keras (in this process), and the unseen batches."""
    root = tmp_path_factory.mktemp("keras")
    folders = {}
    for head in HEADS:
        src = read(spec.HF_SAFETENSORS / head, "safetensors")
        write(src, root / head, "keras")
        folders[head] = root / head
        for i, (batch, seq, choices) in enumerate(SHAPES):
            np.savez(root / f"{head}-{i}.npz", **probe_batch(src.config, head, batch=batch, seq=seq,
                                                             choices=choices, seed=10 + i))
    return folders


@cache
def _keras_outputs(backend: str, root: str) -> dict[str, np.ndarray]:
    folders = {head: f"{root}/{head}" for head in HEADS}
    job, result = f"{root}/job-{backend}.json", f"{root}/out-{backend}.npz"
    Path(job).write_text(json.dumps(folders))
    # under torch, frameworks stay importable: torch's start-up probes for (and may import) tensorflow and jax
    others = ([m for other, modules in FRAMEWORKS.items() if other != backend for m in modules]
              if backend != "torch" else [])
    # tensorflow's own start-up probes find_spec("tf_keras"): a blocked import there is an error, not absence
    blocked = ("electra_bridge", "transformers", *(("tf_keras",) if backend != "tensorflow" else ()), "flax", *others)
    code = _RUN.format(job=job, inputs=root, backend=backend, result=result, others=blocked)
    proc = run_python(code, blocked=blocked, env={"KERAS_BACKEND": backend}, cwd=Path(root))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(result))


@cache
def _transformers(head: str, root: str) -> list[tuple[dict, list]]:
    """transformers' PyTorch outputs and hidden states on the unseen batches."""
    import torch
    import transformers

    model = getattr(transformers, spec.HF_CLASS[head]).from_pretrained(spec.HF_SAFETENSORS / head).eval()
    out = []
    for i in range(len(SHAPES)):
        batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in np.load(f"{root}/{head}-{i}.npz").items()}
        with torch.no_grad():
            res = model(**batch, output_hidden_states=True)
        out.append(({n: res[n].numpy() for n in get_head(head).output_names}, [h.numpy() for h in res.hidden_states]))
    return out


def _backend_param(backend: str, extra: str):
    return pytest.param(backend, id=backend, marks=requires("keras", extra))


@pytest.mark.oracle
@requires("torch")
@pytest.mark.parametrize("backend", [_backend_param(b, e) for b, e in BACKENDS.items()])
@pytest.mark.parametrize("head", HEADS)
def test_plain_keras_load_matches_transformers_at_unseen_shapes(backend, head, exported):
    """Outputs and hidden states within 1e-5 of transformers' class, loaded with Keras alone."""
    root = str(next(iter(exported.values())).parent)
    ours = _keras_outputs(backend, root)
    for i, (outputs, hidden) in enumerate(_transformers(head, root)):
        for name, expected in outputs.items():
            got = ours[f"{head}|{i}|{name}"]
            assert got.shape == expected.shape and got.dtype == np.float32, (name, got.shape, expected.shape)
            assert max_abs(got, expected) <= ATOL, (name, i, max_abs(got, expected))
        assert not any(k.startswith(f"{head}|{i}|hidden_states.{len(hidden)}") for k in ours)
        for j, expected in enumerate(hidden):
            got = ours[f"{head}|{i}|hidden_states.{j}"]
            assert max_abs(got.reshape(expected.shape), expected) <= ATOL, (f"hidden {j}", i)


def test_the_file_names_its_inputs_outputs_and_layers_as_documented(exported):
    with zipfile.ZipFile(exported["question-answering"] / "model.keras") as z:
        config = json.loads(z.read("config.json"))["config"]
    classes = {entry["class_name"] for entry in config["layers"] if entry["module"] == "keras.layers"}
    assert classes == {"InputLayer", "Embedding", "LayerNormalization", "Dense"}
    assert not [e for e in config["layers"] if not e["module"].startswith(("keras.layers", "keras.src.ops"))]
    assert sorted(entry["config"]["name"] for entry in config["layers"] if entry["class_name"] == "InputLayer") \
        == ["attention_mask", "input_ids", "token_type_ids"]
    names = {entry["config"]["name"] for entry in config["layers"]}
    assert {"encoder-layer-1-attention-self-query", "qa_outputs", "embeddings_project"} <= names


def test_convert_verifies_and_reads_back(exported, tmp_path):
    result = convert(spec.HF_SAFETENSORS / "multiple-choice", tmp_path / "out", "keras", fmt="safetensors")
    assert result.report is not None and result.report.ok
    assert read(tmp_path / "out", "keras").head == "multiple-choice"
    assert {"config.json", "model.keras"} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_a_tied_lm_head_is_a_checked_copy_of_the_word_table(exported, tmp_path):
    """Keras has no standard tied layer: the copy is stored, and a copy that differs is refused on reading."""
    import shutil

    import h5py

    folder = tmp_path / "mlm"
    shutil.copytree(exported["masked-lm"], folder)
    with zipfile.ZipFile(folder / "model.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    (tmp_path / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        dense = [g for g in f["layers"] if g.startswith("dense") and f[f"layers/{g}/vars/0"].shape[1] ==
                 spec.CONFIG["vocab_size"]]
        assert len(dense) == 1
        f[f"layers/{dense[0]}/vars/0"][0, 0] += 1.0
    members["model.weights.h5"] = (tmp_path / "w.h5").read_bytes()
    with zipfile.ZipFile(folder / "model.keras", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(Exception, match="tied"):
        read(folder, "keras")


def test_not_a_zip_is_a_format_error(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="zip"):
        read(tmp_path, "keras")


@pytest.mark.parametrize("backend", [_backend_param(b, e) for b, e in BACKENDS.items()])
def test_keras_runtime_matches_golden_under_each_backend(backend):
    """``--runtime keras`` under KERAS_BACKEND=<backend>: every head within 1e-5 of the golden outputs."""
    code = f"""
    import sys, numpy as np
    sys.path.insert(0, {str(spec.HERE.parent / 'tests')!r})
    from helpers import golden, spec, HEADS
    from electra_bridge.converters import read
    from electra_bridge.runtimes import CheckpointRunner
    import keras
    assert keras.backend.backend() == {backend!r}
    worst = 0.0
    for head in HEADS:
        inputs, outputs, hidden = golden(head)
        res = CheckpointRunner(read(spec.HF_SAFETENSORS / head, "safetensors"), "keras").run(head, inputs)
        for name, want in outputs.items():
            worst = max(worst, float(np.max(np.abs(res.outputs[name] - want))))
        for ours, want in zip(res.hidden_states, hidden):
            worst = max(worst, float(np.max(np.abs(ours - want))))
    print(worst)
    """
    proc = run_python(code, env={"KERAS_BACKEND": backend})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert float(proc.stdout.split()[-1]) <= ATOL



#: keras-hub's ElectraBackbone uses the tanh GELU: its sequence_output measured 2.2e-4 to 2.6e-4 from
#: the erf reference on the fixtures, and 1.2e-6 once its feed-forward activation is swapped for erf
#: (so the GELU is the whole difference); this bounds that known approximation
KERAS_HUB_DRIFT = 1e-3


def _keras_hub_weights(ckpt) -> dict[str, np.ndarray]:
    """The canonical base weights under keras-hub ElectraBackbone's variable paths and layouts."""
    c, a = ckpt.config, ckpt.array
    n, h, d = c.num_attention_heads, c.hidden_size, c.head_dim
    out = {"token_embedding/embeddings": a("embeddings.word_embeddings.weight"),
           "position_embedding/embeddings": a("embeddings.position_embeddings.weight"),
           "segment_embedding/embeddings": a("embeddings.token_type_embeddings.weight"),
           "embeddings_layer_norm/gamma": a("embeddings.LayerNorm.weight"),
           "embeddings_layer_norm/beta": a("embeddings.LayerNorm.bias"),
           "embeddings_projection/kernel": a("embeddings_project.weight").T,
           "embeddings_projection/bias": a("embeddings_project.bias"),
           "pooled_dense/kernel": np.zeros((h, h), np.float32), "pooled_dense/bias": np.zeros(h, np.float32)}
    for i in range(c.num_hidden_layers):
        ours, theirs = f"encoder.layer.{i}", f"transformer_layer_{i}"
        attn = f"{theirs}/self_attention_layer"
        for p in ("query", "key", "value"):
            out[f"{attn}/{p}/kernel"] = a(f"{ours}.attention.self.{p}.weight").T.reshape(h, n, d)
            out[f"{attn}/{p}/bias"] = a(f"{ours}.attention.self.{p}.bias").reshape(n, d)
        out[f"{attn}/attention_output/kernel"] = a(f"{ours}.attention.output.dense.weight").T.reshape(n, d, h)
        out[f"{attn}/attention_output/bias"] = a(f"{ours}.attention.output.dense.bias")
        for theirs_name, ours_name in (("self_attention_layer_norm", "attention.output.LayerNorm"),
                                       ("feedforward_layer_norm", "output.LayerNorm")):
            out[f"{theirs}/{theirs_name}/gamma"] = a(f"{ours}.{ours_name}.weight")
            out[f"{theirs}/{theirs_name}/beta"] = a(f"{ours}.{ours_name}.bias")
        for theirs_name, ours_name in (("feedforward_intermediate_dense", "intermediate.dense"),
                                       ("feedforward_output_dense", "output.dense")):
            out[f"{theirs}/{theirs_name}/kernel"] = a(f"{ours}.{ours_name}.weight").T
            out[f"{theirs}/{theirs_name}/bias"] = a(f"{ours}.{ours_name}.bias")
    return out


def test_keras_hub_backbone_drifts_from_the_erf_reference_by_its_tanh_gelu():
    """The difference the issue names, measured: keras-hub's ElectraBackbone holding the fixture's
    weights is the same network with tanh GELU, so its sequence output is near but not equal."""
    keras_hub = pytest.importorskip("keras_hub")
    from keras import ops

    from electra_bridge.runtimes import CheckpointRunner

    ckpt = read(spec.HF_SAFETENSORS / "base", "safetensors")
    c = ckpt.config
    backbone = keras_hub.models.ElectraBackbone(
        vocab_size=c.vocab_size, num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        hidden_dim=c.hidden_size, embedding_dim=c.embedding_size, intermediate_dim=c.intermediate_size,
        max_sequence_length=c.max_position_embeddings, num_segments=c.type_vocab_size, dropout=0.0)
    weights = _keras_hub_weights(ckpt)
    assert {v.path for v in backbone.weights} == set(weights)
    for variable in backbone.weights:
        variable.assign(weights[variable.path])
    for batch_size, seq, _ in SHAPES:
        batch = probe_batch(c, "base", batch=batch_size, seq=seq, seed=batch_size)
        theirs = ops.convert_to_numpy(backbone({"token_ids": batch["input_ids"].astype(np.int32),
                                                "segment_ids": batch["token_type_ids"].astype(np.int32),
                                                "padding_mask": batch["attention_mask"].astype(np.int32)})
                                      ["sequence_output"])
        drift = max_abs(theirs, CheckpointRunner(ckpt).run("base", batch).outputs["last_hidden_state"])
        assert ATOL < drift <= KERAS_HUB_DRIFT, drift
