"""HF PyTorch checkpoints: what is specific to safetensors (single and sharded) and pytorch_model.bin.

Reading every fixture, bit-exact round trips and the name table against real files are
tests/test_registry.py's, for every format alike.
"""

import json
import shutil

import numpy as np
import pytest

from helpers import HEADS, assert_same_tensors, golden, max_abs, run_cli, spec

from electra_bridge.converters import VerificationError, convert, read, write
from electra_bridge.converters.engine import pipeline
from electra_bridge.converters.formats import safetensors_file
from electra_bridge.converters.formats.safetensors import FORMAT
from electra_bridge.runtimes import CheckpointRunner
from electra_bridge.schemas import FormatError, SchemaError


def test_written_folder_carries_assets_and_pt_metadata(tmp_path):
    ckpt = read(spec.HF_SAFETENSORS / "masked-lm")
    write(ckpt, tmp_path / "out", "safetensors")
    back = read(tmp_path / "out")
    assert back.assets == ckpt.assets and "vocab.txt" in back.assets
    _, meta, _ = safetensors_file.read_header(tmp_path / "out" / "model.safetensors")
    assert meta == {"format": "pt"}


def test_written_file_matches_what_transformers_saved():
    """Same keys, dtypes, shapes and bytes as save_pretrained's own file."""
    safetensors = pytest.importorskip("safetensors.numpy")
    theirs = safetensors.load_file(spec.HF_SAFETENSORS / "masked-lm" / "model.safetensors")
    ckpt = read(spec.HF_SAFETENSORS / "masked-lm")
    natives = {t.name: t for t in pipeline.native_tensors(FORMAT, ckpt)}
    assert sorted(natives) == sorted(theirs)
    assert "generator_lm_head.weight" not in theirs  # tied: stored once, like save_pretrained
    for name, tensor in natives.items():
        assert np.array_equal(tensor.load(), theirs[name]), name


@pytest.mark.parametrize("head", HEADS)
def test_written_file_is_byte_identical_to_save_pretrained(head, tmp_path):
    """The fixtures are save_pretrained's files (fixtures/make_fixtures.py): ours equal them byte for byte
    (header key order included: ``__metadata__`` first, then the names sorted, as the library writes)."""
    write(read(spec.HF_SAFETENSORS / head), tmp_path / "out", "safetensors")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == \
        (spec.HF_SAFETENSORS / head / "model.safetensors").read_bytes()


def test_sharded_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    src = spec.HF_SAFETENSORS / "pretraining"
    tensors = safetensors.load_file(src / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        safetensors.save_file({k: tensors[k] for k in keys}, tmp_path / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(src / "config.json", tmp_path)
    assert_same_tensors(read(src), read(tmp_path))


def test_sharded_index_naming_a_missing_shard_is_refused(tmp_path):
    shutil.copy(spec.HF_SAFETENSORS / "base" / "config.json", tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "gone.safetensors"}}))
    with pytest.raises(FormatError, match="gone.safetensors"):
        read(tmp_path)


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors"])
def test_shard_index_never_reads_outside_its_folder(tmp_path, shard):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(spec.HF_SAFETENSORS / "base" / "config.json", folder)
    shutil.copy(spec.HF_SAFETENSORS / "base" / "model.safetensors", tmp_path)  # a real file just outside
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    with pytest.raises(FormatError, match="inside"):
        read(folder)


def test_shard_holding_a_tensor_the_index_puts_elsewhere_is_refused(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    tensors = safetensors.load_file(spec.HF_SAFETENSORS / "base" / "model.safetensors")
    names = sorted(tensors)
    safetensors.save_file({k: tensors[k] for k in names}, tmp_path / "a.safetensors")      # holds everything
    safetensors.save_file({names[0]: tensors[names[0]]}, tmp_path / "b.safetensors")
    index = {"weight_map": {**{k: "a.safetensors" for k in names[1:]}, names[0]: "b.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(spec.HF_SAFETENSORS / "base" / "config.json", tmp_path)
    with pytest.raises(FormatError, match=f"holds {names[0]}|{names[0]} is stored in two shards"):
        read(tmp_path)


def test_legacy_bin_with_position_ids_buffer_loads(tmp_path):
    torch = pytest.importorskip("torch")
    state = torch.load(spec.HF_BIN / "pretraining" / "pytorch_model.bin", weights_only=True)
    state["electra.embeddings.position_ids"] = torch.arange(spec.CONFIG["max_position_embeddings"])[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(spec.HF_BIN / "pretraining" / "config.json", tmp_path)
    assert_same_tensors(read(spec.HF_BIN / "pretraining"), read(tmp_path))


class _Payload:
    """Unpickling this would create a marker file: proof of code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bin_with_pickled_object_is_refused_and_never_executed(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    state = torch.load(spec.HF_BIN / "base" / "pytorch_model.bin", weights_only=True)
    state["evil"] = _Payload(marker)
    torch.save(state, tmp_path / "pytorch_model.bin")
    shutil.copy(spec.HF_BIN / "base" / "config.json", tmp_path)
    with pytest.raises(FormatError, match="refusing .*pickled objects other than tensors"):
        read(tmp_path)
    assert not marker.exists()
    proc = run_cli("inspect", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not marker.exists()
    assert proc.stderr.strip().startswith("error: refusing")


def test_bfloat16_safetensors_keeps_its_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    ckpt = read(spec.HF_SAFETENSORS / "base")
    bf16 = {n: torch.from_numpy(np.array(a)).to(torch.bfloat16) for n, a in ckpt.arrays().items()}  # base: no prefix
    save_file(bf16, tmp_path / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(spec.HF_SAFETENSORS / "base" / "config.json", tmp_path)
    back = read(tmp_path)
    for name, tensor in bf16.items():             # kept as stored (issue 12); the values widen exactly
        assert back.array(name).dtype.name == "bfloat16"
        assert np.array_equal(back.array(name).astype(np.float32), tensor.float().numpy())


def test_wrong_config_lists_every_misfit(tmp_path):
    shutil.copy(spec.HF_SAFETENSORS / "base" / "model.safetensors", tmp_path)
    cfg = json.loads((spec.HF_SAFETENSORS / "base" / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SchemaError, match=r"wrong shape \(6\): encoder.layer.0.intermediate.dense.bias: file has \[37\], config needs \[40\];"):
        read(tmp_path)


def test_garbage_safetensors_is_a_format_error(tmp_path):
    shutil.copy(spec.HF_SAFETENSORS / "base" / "config.json", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(FormatError):
        read(tmp_path)


def test_any_head_can_be_read_as_base():
    ckpt = read(spec.HF_SAFETENSORS / "question-answering", head="base")
    inputs, _, hidden = golden("question-answering")
    out = CheckpointRunner(ckpt).run("base", inputs).outputs["last_hidden_state"]
    assert max_abs(out, hidden[-1]) <= 1e-5


def test_convert_mismatch_leaves_nothing(tmp_path, monkeypatch):
    real_write = pipeline.write

    def corrupting_write(fmt, ckpt, out, **options):
        tensors = dict(ckpt.arrays())
        weight = tensors["encoder.layer.1.output.dense.weight"].copy()
        weight[3, 5] += 0.05  # one element: a uniform shift would be cancelled by the LayerNorm that follows
        tensors["encoder.layer.1.output.dense.weight"] = weight
        return real_write(fmt, ckpt.with_(tensors=tensors), out, **options)

    monkeypatch.setattr(pipeline, "write", corrupting_write)
    out = tmp_path / "out"
    with pytest.raises(VerificationError) as err:
        convert(spec.HF_SAFETENSORS / "pretraining", out, "safetensors")
    assert not err.value.report.ok
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_convert_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("convert", spec.HF_SAFETENSORS / "base", out, "--to", "safetensors")
    assert proc.returncode == 2 and "already exists" in proc.stderr


@pytest.mark.oracle
@pytest.mark.parametrize("head", HEADS)
def test_converted_folder_loads_in_transformers_with_equal_outputs(head, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / head
    proc = run_cli("convert", spec.HF_BIN / head, out, "--to", "safetensors", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["outputs"][0]["report"]
    assert report["ok"] and head in report["heads"]
    model, info = getattr(transformers, spec.HF_CLASS[head]).from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    inputs, outputs, _ = golden(head)
    with torch.no_grad():
        theirs = model.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    for name, expected in outputs.items():
        assert max_abs(theirs[name].numpy(), expected) <= 1e-5, name


@pytest.mark.requires("torch")
def test_verify_exit_codes(tmp_path):
    src = spec.HF_SAFETENSORS / "pretraining"
    same = run_cli("verify", src, spec.HF_BIN / "pretraining", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["heads"]["pretraining"]["outputs"]["logits"]["max_abs"] == 0.0

    ckpt = read(src)
    tensors = dict(ckpt.arrays())
    tensors["discriminator_predictions.dense.bias"] = tensors["discriminator_predictions.dense.bias"] + 1e-3
    write(ckpt.with_(tensors=tensors), tmp_path / "edited", "safetensors")
    differ = run_cli("verify", src, tmp_path / "edited", "--json")
    assert differ.returncode == 1
    heads = json.loads(differ.stdout)["heads"]
    assert heads["base"]["outputs"]["last_hidden_state"]["max_abs"] == 0.0  # the backbone is untouched
    assert heads["pretraining"]["outputs"]["logits"]["max_abs"] > 1e-4

    missing = run_cli("verify", src, tmp_path / "nope")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
