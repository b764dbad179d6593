"""Google Research ELECTRA TF1 checkpoints: read and write without TensorFlow, against files
TensorFlow's own Saver wrote with google-research/electra's variable names.

Fixtures: fixtures/tf1/{pretraining,chunk,mnli}/ (fixtures/make_tf1.py). Oracles: TensorFlow's
checkpoint reader (bytes) and transformers' load_tf_weights_in_electra (outputs).
"""

import contextlib
import io
import json
import shutil
import struct
import sys

import numpy as np
import pytest

from helpers import FIXTURES, assert_same_tensors, max_abs, run_cli, run_python

from electra_bridge.converters import convert, detect_format, read, write
from electra_bridge.converters.engine.rules import bind, ignored_reason
from electra_bridge.converters.formats import tf1, tf1_bundle, tf1_config, tf1_table
from electra_bridge.runtimes import CheckpointRunner, probe_batch
from electra_bridge.schemas import ElectraConfig, FormatError, SchemaError

sys.path.insert(0, str(FIXTURES))
import make_tf1  # noqa: E402

PRE, CHUNK, MNLI = make_tf1.PRETRAINING, make_tf1.CHUNK, make_tf1.MNLI
NET_HEAD = {"discriminator": "pretraining", "generator": "masked-lm"}
NET_CLASS = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
TOL = 1e-5


def tf_reader(path):
    tf = pytest.importorskip("tensorflow")
    return tf.train.load_checkpoint(str(tf1_bundle.resolve_prefix(path)))


def prefix(path) -> str:
    return str(tf1_bundle.resolve_prefix(path))


def transformers_model(ckpt, cls_name: str, net: str):
    """transformers' own path: a model built from our (equal) config + load_tf_weights_in_electra."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tensorflow")
    from transformers.models.electra.modeling_electra import load_tf_weights_in_electra

    cfg = transformers.ElectraConfig(**ckpt.config.to_dict())
    model = getattr(transformers, cls_name)(cfg).eval()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every tensor it places or skips
        load_tf_weights_in_electra(model, cfg, ckpt.provenance["prefix"], net)
    return model


def torch_run(model, batch):
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)


# ---- locating and detecting ------------------------------------------------------------------------

def test_every_way_of_naming_a_checkpoint_resolves_to_its_prefix(tmp_path):
    expected = PRE / "model.ckpt-1000"
    for path in (PRE, expected, PRE / "model.ckpt-1000.index", PRE / "model.ckpt-1000.data-00000-of-00001",
                 PRE / "checkpoint"):
        assert tf1_bundle.resolve_prefix(path) == expected, path
        assert detect_format(path) == "tf1", path
    # a 'checkpoint' file written on the training machine (absolute or gs:// path) -> same name beside it
    copy = tmp_path / "ckpt"
    shutil.copytree(PRE, copy)
    (copy / "checkpoint").write_text('model_checkpoint_path: "gs://bucket/models/electra/model.ckpt-1000"\n')
    assert tf1_bundle.resolve_prefix(copy) == copy / "model.ckpt-1000"
    # no 'checkpoint' file: the one .index there
    (copy / "checkpoint").unlink()
    assert tf1_bundle.resolve_prefix(copy) == copy / "model.ckpt-1000"
    assert not tf1.FORMAT.detect(FIXTURES / "hf" / "pretraining")
    assert not tf1.FORMAT.detect(tmp_path / "missing")


def test_index_header_and_entries_are_read_by_hand():
    bundle = tf1_bundle.BundleReader(PRE)
    assert bundle.num_shards == 1 and bundle.header["endianness"] == tf1_bundle.LITTLE_ENDIAN
    assert bundle.header["producer"] == tf1_bundle.BUNDLE_VERSION
    n_model = len(make_tf1.pretraining_shapes(make_tf1.DISC, make_tf1.GEN))
    assert len(bundle.entries) == 3 * n_model + 1  # variables, adam_m, adam_v, global_step
    e = bundle.entries["global_step"]
    assert e.dtype == np.int64 and e.shape == () and e.size == 8
    assert bundle.read("global_step") == make_tf1.STEPS["pretraining"]
    word = bundle.entries["electra/embeddings/word_embeddings"]
    assert word.shape == (make_tf1.DISC["V"], make_tf1.DISC["E"]) and word.dtype == np.float32


# ---- our reader against TensorFlow's --------------------------------------------------------------

@pytest.mark.parametrize("fixture", [PRE, CHUNK, MNLI], ids=lambda p: p.name)
def test_reader_is_bit_exact_with_tensorflows_reader_for_every_tensor(fixture):
    theirs = tf_reader(fixture)
    ours = tf1_bundle.BundleReader(fixture)
    assert {n: list(s) for n, s in ours.shapes().items()} == theirs.get_variable_to_shape_map()
    for name in ours.entries:
        a, b = ours.read(name), theirs.get_tensor(name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
        assert not a.flags.writeable or not a.size   # a read-only mapping of the file (engine/files.py)


def test_read_and_convert_run_with_tensorflow_unimportable(tmp_path):
    """The whole path -- detect, read both nets, convert (verified) -- in a process that cannot import TF."""
    code = f"""
    import json, sys
    import numpy as np
    from electra_bridge.converters import convert, detect_format, read
    src = {str(PRE)!r}
    assert detect_format(src) == "tf1"
    for net in ("discriminator", "generator"):
        ckpt = read(src, net=net)
        np.savez({str(tmp_path)!r} + "/" + net + ".npz", **ckpt.arrays())
        result = convert(src, {str(tmp_path)!r} + "/out-" + net, "safetensors", read_options={{"net": net}})
        assert result.report.ok
    assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules), "tensorflow was imported"
    print("ok")
    """
    proc = run_python(code, blocked=("tensorflow", "tf_keras", "keras"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
    # what the TF-less process read equals TensorFlow's bytes, mapped through the RULES table
    theirs = tf_reader(PRE)
    for net in ("discriminator", "generator"):
        ckpt = read(PRE, net=net)
        saved = np.load(tmp_path / f"{net}.npz")
        assert sorted(saved.files) == sorted(ckpt.tensors)
        for canonical, b in bind(tf1.RULES[net], ckpt.config, ckpt.head).items():
            assert np.array_equal(saved[canonical], b.layout.to_canonical(theirs.get_tensor(b.native))), canonical


def test_optimizer_slots_and_the_other_net_are_never_read(tmp_path, monkeypatch):
    read_names = []
    original = tf1_bundle.BundleReader.read
    monkeypatch.setattr(tf1_bundle.BundleReader, "read", lambda self, name: read_names.append(name) or original(self, name))
    convert(PRE, tmp_path / "out", "safetensors")  # verified: reads the source twice (write + check)
    kept = {b.native for b in bind(tf1.RULES["discriminator"], read(PRE).config, "pretraining").values()}
    assert set(read_names) == kept
    assert not [n for n in read_names if "adam" in n or n == "global_step" or n.startswith("generator")]


def test_a_corrupt_kept_tensor_fails_its_checksum_but_a_corrupt_slot_is_never_looked_at(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(PRE, copy)
    bundle = tf1_bundle.BundleReader(copy)
    data = bytearray(bundle.shard_path(0).read_bytes())
    slot = bundle.entries["electra/encoder/layer_0/attention/self/query/kernel/adam_m"]
    data[slot.offset + 3] ^= 0xFF
    bundle.shard_path(0).write_bytes(bytes(data))
    read(copy).arrays()  # the damaged slot is ignored, so never read
    kept = bundle.entries["electra/encoder/layer_0/attention/self/query/kernel"]
    data[kept.offset + 5] ^= 0x01
    bundle.shard_path(0).write_bytes(bytes(data))
    with pytest.raises(FormatError, match="fails its checksum"):
        read(copy).arrays()


def test_a_corrupt_or_foreign_index_is_refused(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(PRE, copy)
    index = copy / "model.ckpt-1000.index"
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="checksum"):
        tf1_bundle.BundleReader(copy)
    index.write_bytes(b"not an sstable" * 8)
    with pytest.raises(FormatError, match="magic"):
        tf1_table.read_table(index)
    assert not tf1_table.has_table_magic(index)
    (copy / "model.ckpt-1000.data-00000-of-00001").unlink()
    index.write_bytes((PRE / "model.ckpt-1000.index").read_bytes())
    with pytest.raises(FormatError, match="shard"):
        tf1_bundle.BundleReader(copy)


def _one_block_table(payload: bytes, kind: int, last_key: bytes) -> bytes:
    """An SSTable whose single data block is ``payload`` stored with compression ``kind``."""
    def framed(k: int, contents: bytes) -> bytes:
        crc = tf1_table.mask(tf1_table.crc32c(bytes([k]), tf1_table.crc32c(contents)))
        return contents + bytes([k]) + struct.pack("<I", crc)

    varint = tf1_table.encode_varint
    data = framed(kind, payload)
    meta = framed(0, tf1_table.BlockBuilder(16).finish())
    index = tf1_table.BlockBuilder(1)
    index.add(last_key, varint(0) + varint(len(payload)))
    index_block = framed(0, index.finish())
    handles = (varint(len(data)) + varint(len(meta) - 5) + varint(len(data) + len(meta)) + varint(len(index_block) - 5))
    footer = handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", tf1_table.TABLE_MAGIC)
    return data + meta + index_block + footer


def test_block_compression_types_are_checked(tmp_path):
    items = [(b"", tf1_bundle.encode_header(1)), (b"a", b"x" * 40), (b"ab", b"y")]
    block = tf1_table.BlockBuilder(tf1_table.RESTART_INTERVAL)
    for k, v in items:
        block.add(k, v)
    contents = block.finish()
    path = tmp_path / "t.index"
    path.write_bytes(_one_block_table(contents, 0, b"ab"))
    assert tf1_table.read_table(path) == items
    path.write_bytes(_one_block_table(contents, 7, b"ab"))
    with pytest.raises(FormatError, match="compression type 7"):
        tf1_table.read_table(path)
    # the same block snappy-compressed (as literals) reads back the same
    snappy = tf1_table.encode_varint(len(contents))
    for i in range(0, len(contents), 60):
        chunk = contents[i:i + 60]
        snappy += bytes([(len(chunk) - 1) << 2]) + chunk
    path.write_bytes(_one_block_table(snappy, tf1_table.SNAPPY_COMPRESSION, b"ab"))
    assert tf1_table.read_table(path) == items


def test_snappy_decoder_handles_overlapping_copies():
    # "abcd" literal, then copy len 8 offset 4 (1-byte-offset form) and copy len 5 offset 1 (2-byte form)
    raw = tf1_table.encode_varint(17) + bytes([3 << 2]) + b"abcd" + bytes([1 | ((8 - 4) << 2), 4]) \
        + bytes([2 | ((5 - 1) << 2)]) + struct.pack("<H", 1)
    assert tf1_table.snappy_decompress(raw) == b"abcdabcdabcdddddd"
    with pytest.raises(FormatError):
        tf1_table.snappy_decompress(tf1_table.encode_varint(4) + bytes([1 | (0 << 2), 9]))


def test_multi_block_index_built_here_is_read_by_both_readers(tmp_path):
    tensors = {f"scope_{i:04d}/some/long/variable/name/kernel": np.full((2,), i, np.float32) for i in range(6000)}
    tf1_bundle.write_bundle(tmp_path / "model.ckpt", tensors)
    items = tf1_table.read_table(tmp_path / "model.ckpt.index")
    assert len(items) == len(tensors) + 1
    ours, theirs = tf1_bundle.BundleReader(tmp_path / "model.ckpt"), tf_reader(tmp_path / "model.ckpt")
    for name in list(tensors)[::497] + [max(tensors)]:
        assert np.array_equal(ours.read(name), tensors[name]) and np.array_equal(theirs.get_tensor(name), tensors[name])


# ---- mapping: both nets against transformers' own loader ------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("net", ["discriminator", "generator"])
def test_each_net_equals_transformers_load_tf_weights_in_electra(net):
    ckpt = read(PRE, net=net)
    head = NET_HEAD[net]
    assert ckpt.head == head and ckpt.provenance["net"] == net
    model = transformers_model(ckpt, NET_CLASS[net], net)
    batch = probe_batch(ckpt.config, head)
    theirs, ours = torch_run(model, batch), CheckpointRunner(ckpt).run(head, batch)
    assert max_abs(ours.outputs["logits"], theirs.logits.numpy()) <= TOL
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert max_abs(a, b.numpy()) <= TOL


def test_config_is_inferred_per_net_from_the_shapes():
    d, g = make_tf1.DISC, make_tf1.GEN
    disc, gen = read(PRE).config, read(PRE, net="generator").config
    assert (disc.vocab_size, disc.embedding_size, disc.hidden_size, disc.num_hidden_layers, disc.intermediate_size,
            disc.max_position_embeddings, disc.type_vocab_size) == (d["V"], d["E"], d["H"], d["L"], d["I"], d["P"], d["T"])
    assert (gen.vocab_size, gen.embedding_size, gen.hidden_size, gen.num_hidden_layers, gen.intermediate_size) == \
        (d["V"], d["E"], g["H"], g["L"], g["I"])
    assert disc.num_attention_heads == max(1, d["H"] // 64) and gen.num_attention_heads == max(1, g["H"] // 64)
    assert disc.has_embeddings_project and gen.has_embeddings_project
    assert disc.architectures == ("ElectraForPreTraining",) and gen.architectures == ("ElectraForMaskedLM",)
    assert read(PRE).assets["vocab.txt"] == (PRE / "vocab.txt").read_bytes()


def test_head_implies_the_net_and_a_missing_net_is_named(tmp_path):
    assert read(PRE, head="masked-lm").provenance["net"] == "generator"
    causal = read(PRE, head="causal-lm")
    assert causal.head == "causal-lm" and causal.config.is_decoder
    with pytest.raises(SchemaError, match="no generator"):
        read(CHUNK, net="generator")
    out = tmp_path / "gen"
    convert(PRE, out, "tf1", read_options={"net": "generator"})
    with pytest.raises(SchemaError, match="no discriminator"):
        read(out, net="discriminator")
    with pytest.raises(SchemaError, match="--net both"):
        read(PRE, net="both")


def test_table_versus_reality_every_rule_matches_a_fixture_tensor():
    model_names = set(tf1.survey(tf1_bundle.BundleReader(PRE).shapes()).shapes)
    used = set()
    for net in ("discriminator", "generator"):
        ckpt = read(PRE, net=net)
        natives = {b.native for b in bind(tf1.RULES[net], ckpt.config, ckpt.head).values()}
        assert natives <= model_names
        used |= natives
    assert used == model_names  # the two nets together account for every model variable
    names = tf1_bundle.BundleReader(PRE).shapes()
    assert all(ignored_reason(n, tf1.IGNORED) for n in set(names) - model_names)


# ---- the CLI ------------------------------------------------------------------------------------

@pytest.mark.oracle
def test_cli_converts_the_generator_into_a_folder_transformers_loads(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "gen"
    proc = run_cli("convert", PRE, out, "--to", "safetensors", "--net", "generator")
    assert proc.returncode == 0, proc.stderr
    assert "took the generator" in proc.stderr
    model = transformers.ElectraForMaskedLM.from_pretrained(out).eval()
    ckpt = read(PRE, net="generator")
    batch = probe_batch(ckpt.config, "masked-lm")
    loaded = torch_run(model, batch).logits.numpy()
    assert max_abs(loaded, CheckpointRunner(ckpt).run("masked-lm", batch).outputs["logits"]) <= TOL
    oracle = torch_run(transformers_model(ckpt, "ElectraForMaskedLM", "generator"), batch).logits.numpy()
    assert max_abs(loaded, oracle) <= TOL
    assert (out / "vocab.txt").read_bytes() == (PRE / "vocab.txt").read_bytes()


def test_cli_without_net_takes_the_discriminator_and_says_the_generator_exists(tmp_path):
    out = tmp_path / "disc"
    proc = run_cli("convert", PRE, out, "--to", "safetensors")
    assert proc.returncode == 0, proc.stderr
    assert "took the discriminator" in proc.stderr and "--net generator" in proc.stderr
    assert json.loads((out / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]


def test_cli_net_both_writes_one_folder_per_net(tmp_path):
    out = tmp_path / "both"
    proc = run_cli("convert", PRE, out, "--to", "safetensors", "--net", "both")
    assert proc.returncode == 0, proc.stderr
    for net, cls in NET_CLASS.items():
        assert json.loads((out / net / "config.json").read_text())["architectures"] == [cls]
        assert f"wrote {out / net} (safetensors" in proc.stdout  # both folders are reported
    doc = json.loads(run_cli("convert", PRE, out, "--to", "safetensors", "--net", "both", "--force", "--json").stdout)
    docs = doc["outputs"]   # one JSON shape: the envelope, then one entry per folder written
    assert doc["ok"] and doc["out"] == str(out) and [d["out"] for d in docs] == [str(out / n) for n in NET_CLASS]
    assert [d["head"] for d in docs] == ["pretraining", "masked-lm"] and all(d["report"]["ok"] for d in docs)


# ---- fine-tuned checkpoints ---------------------------------------------------------------------

@pytest.mark.oracle
def test_tagging_checkpoint_is_token_classification_exactly(tmp_path):
    transformers = pytest.importorskip("transformers")
    ckpt = read(CHUNK)
    assert ckpt.head == "token-classification" and ckpt.config.num_labels == make_tf1.CHUNK_LABELS
    assert ckpt.provenance["task"] == "chunk"
    batch = probe_batch(ckpt.config, "token-classification")
    ours = CheckpointRunner(ckpt).run("token-classification", batch).outputs["logits"]
    # independent oracle: transformers' encoder + Google's tagging layer (dense on every token) from TF's reader
    # (ElectraModel has no .electra attribute, so load_tf_weights_in_electra would silently skip everything
    # there; a head model's .electra is the body it fills)
    body = transformers_model(ckpt, "ElectraForTokenClassification", "discriminator").electra
    hidden = torch_run(body, batch).last_hidden_state.numpy()
    theirs = tf_reader(CHUNK)
    expected = hidden @ theirs.get_tensor("task_specific/chunk/dense/kernel") + theirs.get_tensor("task_specific/chunk/dense/bias")
    assert max_abs(ours, expected) <= TOL
    out = tmp_path / "tok"
    convert(CHUNK, out, "safetensors")
    model = transformers.ElectraForTokenClassification.from_pretrained(out).eval()
    assert max_abs(torch_run(model, batch).logits.numpy(), expected) <= TOL


def test_glue_checkpoint_is_refused_with_the_reason_and_the_way_out(tmp_path):
    with pytest.raises(SchemaError) as err:
        read(MNLI)
    message = str(err.value)
    assert "task_specific/mnli" in message and "ONE dense layer" in message
    assert "ElectraForSequenceClassification" in message and "--head base" in message
    proc = run_cli("convert", MNLI, tmp_path / "x", "--to", "safetensors")
    assert proc.returncode == 2 and "GLUE" in proc.stderr and not (tmp_path / "x").exists()
    proc = run_cli("convert", MNLI, tmp_path / "enc", "--to", "safetensors", "--head", "base")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["architectures"] == ["ElectraModel"]


def _bundle_with_task(folder, task: str, heads: dict) -> None:
    body = tf1_bundle.BundleReader(CHUNK)
    tensors = {n: body.read(n) for n in body.entries if not n.startswith("task_specific/") and "adam" not in n}
    rng = np.random.default_rng(0)
    tensors.update({n: rng.standard_normal(s).astype(np.float32) for n, s in heads.items()})
    folder.mkdir()
    tf1_bundle.write_bundle(folder / "model.ckpt", tensors)


def test_squad_and_unknown_task_heads_are_refused_with_the_reason(tmp_path):
    H = make_tf1.DISC["H"]
    _bundle_with_task(tmp_path / "squad", "squad", {
        "task_specific/squad/dense/kernel": (H, 1), "task_specific/squad/dense/bias": (1,),
        "task_specific/squad/qa_hidden/kernel": (2 * H, 512), "task_specific/squad/qa_hidden/bias": (512,),
        "task_specific/squad/dense_1/kernel": (512, 1), "task_specific/squad/dense_1/bias": (1,)})
    with pytest.raises(SchemaError, match="ElectraForQuestionAnswering"):
        read(tmp_path / "squad")
    assert read(tmp_path / "squad", head="base").head == "base"
    _bundle_with_task(tmp_path / "ner", "ner", {"task_specific/ner/dense/kernel": (H, 5), "task_specific/ner/dense/bias": (5,)})
    with pytest.raises(SchemaError, match="--head token-classification"):
        read(tmp_path / "ner")
    tagged = read(tmp_path / "ner", head="token-classification")
    assert tagged.config.num_labels == 5 and tagged.provenance["task"] == "ner"
    # written back under its own task name, with config.json saying what it is: reads without --head
    convert(tmp_path / "ner", tmp_path / "ner-out", "tf1", head="token-classification")
    assert "task_specific/ner/dense/kernel" in tf1_bundle.BundleReader(tmp_path / "ner-out").entries
    assert read(tmp_path / "ner-out").head == "token-classification"


# ---- --config ---------------------------------------------------------------------------------

def test_config_override_hf_json_and_original_hparams(tmp_path):
    disc = read(PRE).config
    hf = tmp_path / "config.json"
    hf.write_text(disc.replace(num_attention_heads=4).to_json())
    assert read(PRE, config=hf).config.num_attention_heads == 4
    d, g = make_tf1.DISC, make_tf1.GEN
    hparams = {"model_size": "small", "vocab_size": d["V"], "embedding_size": d["E"],
               "generator_hidden_size": g["H"] / d["H"], "generator_layers": g["L"] / d["L"],
               "model_hparam_overrides": {"hidden_size": d["H"], "num_hidden_layers": d["L"], "intermediate_size": d["I"],
                                          "max_position_embeddings": d["P"], "num_attention_heads": 2}}
    hp = tmp_path / "hparams.json"
    hp.write_text(json.dumps(hparams))
    assert read(PRE, config=hp).config.num_attention_heads == 2
    gen = read(PRE, config=hp, net="generator").config
    assert (gen.hidden_size, gen.num_hidden_layers, gen.intermediate_size, gen.num_attention_heads) == (24, 1, 96, 1)
    # the generator/discriminator switch users get wrong: a generator config for the discriminator
    gen_cfg = tmp_path / "gen.json"
    gen_cfg.write_text(read(PRE, net="generator").config.to_json())
    with pytest.raises(SchemaError, match="--net generator"):
        read(PRE, config=gen_cfg, net="discriminator")
    assert read(PRE, config=gen_cfg).provenance["net"] == "generator"  # no --net: the config decides
    wrong = tmp_path / "wrong.json"
    wrong.write_text(disc.replace(intermediate_size=64).to_json())
    with pytest.raises(SchemaError, match="wrong shape"):
        read(PRE, config=wrong)
    proc = run_cli("convert", PRE, tmp_path / "o", "--to", "safetensors", "--config", hp)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "config.json").read_text())["num_attention_heads"] == 2


# ---- writing TF1 bundles ----------------------------------------------------------------------

WRITE_SOURCES = {
    "tf1-discriminator": (PRE, {"net": "discriminator"}),
    "tf1-generator": (PRE, {"net": "generator"}),
    "tf1-chunk": (CHUNK, {}),
    **{f"hf-{h}": (FIXTURES / "hf" / h, {}) for h in ("pretraining", "masked-lm", "base", "token-classification")},
}


@pytest.mark.parametrize("name", list(WRITE_SOURCES))
def test_written_bundle_is_read_bit_exact_by_tensorflow_and_by_us(name, tmp_path):
    src, options = WRITE_SOURCES[name]
    out = tmp_path / "out"
    result = convert(src, out, "tf1", read_options=options)  # verified by reading it back
    assert result.report.ok
    assert {p.name for p in out.iterdir()} >= {"checkpoint", "config.json", "model.ckpt.data-00000-of-00001",
                                               "model.ckpt.index"}
    theirs, ours = tf_reader(out), tf1_bundle.BundleReader(out)
    assert theirs.get_variable_to_shape_map() == {n: list(s) for n, s in ours.shapes().items()}
    for n in ours.entries:
        a, b = ours.read(n), theirs.get_tensor(n)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), n
    assert_same_tensors(read(out), read(src, **options))


def test_written_names_are_google_research_names(tmp_path):
    convert(PRE, tmp_path / "d", "tf1")
    convert(PRE, tmp_path / "g", "tf1", read_options={"net": "generator"})
    source = set(tf1.survey(tf1_bundle.BundleReader(PRE).shapes()).shapes)
    disc, gen = (set(tf1_bundle.BundleReader(tmp_path / x).entries) for x in "dg")
    assert disc | gen == source  # together: every variable of the original, under its original name
    assert "discriminator_predictions/dense_1/kernel" in disc and "generator/embeddings_project/kernel" in gen
    assert "electra/embeddings/word_embeddings" in gen  # the shared embeddings
    assert (tmp_path / "d" / "checkpoint").read_text().startswith('model_checkpoint_path: "model.ckpt"')


@pytest.mark.parametrize("head", ["sequence-classification", "multiple-choice", "question-answering", "causal-lm"])
def test_heads_google_has_not_are_refused_by_the_writer(head, tmp_path):
    ckpt = read(FIXTURES / "hf" / head)
    with pytest.raises(SchemaError, match="cannot be written as a Google TF1 checkpoint"):
        write(ckpt, tmp_path / "x", "tf1")
    assert not (tmp_path / "x").exists()


# ---- --task-name: the task_specific/<NAME>/ scope of a fine-tuned head ----------------------------

@pytest.mark.parametrize("task", ["ner", "pos-tags.v2", "CoNLL_2003"])
@pytest.mark.parametrize("src", [CHUNK, FIXTURES / "hf" / "token-classification"], ids=["tf1-chunk", "hf"])
def test_task_name_names_the_tagging_scope_and_reads_back(src, task, tmp_path):
    out = tmp_path / "out"
    assert convert(src, out, "tf1", write_options={"task_name": task}).report.ok   # verified by reading it back
    names = set(tf1_bundle.BundleReader(out).entries)
    assert {f"task_specific/{task}/dense/kernel", f"task_specific/{task}/dense/bias"} <= names
    assert all(n.startswith(f"task_specific/{task}/") for n in names if n.startswith("task_specific/"))
    back = read(out)
    assert back.head == "token-classification" and back.provenance["task"] == task
    assert_same_tensors(back, read(src))


def test_task_name_default_and_tensorflow_sees_the_scope(tmp_path):
    convert(FIXTURES / "hf" / "token-classification", tmp_path / "default", "tf1")
    assert read(tmp_path / "default").provenance["task"] == "chunk"   # as before: Google's tagging task
    proc = run_cli("convert", CHUNK, tmp_path / "cli", "--to", "tf1", "--task-name", "ner", "--quiet")
    assert proc.returncode == 0, proc.stderr
    shapes = tf_reader(tmp_path / "cli").get_variable_to_shape_map()
    assert shapes["task_specific/ner/dense/kernel"] == [make_tf1.DISC["H"], make_tf1.CHUNK_LABELS]
    assert not any(n.startswith("task_specific/chunk/") for n in shapes)


@pytest.mark.parametrize("bad", ["", "a/b", "-x", "_x", "a b", "ner{0}", "..", ".", "tâche", 5])
def test_bad_task_names_are_refused(bad, tmp_path):
    with pytest.raises(SchemaError, match="--task-name .*one TF variable scope"):
        write(read(CHUNK), tmp_path / "x", "tf1", task_name=bad)
    assert not (tmp_path / "x").exists()


def test_task_name_needs_a_fine_tuned_head(tmp_path):
    with pytest.raises(SchemaError, match="fine-tuned head .* a pretraining checkpoint has none"):
        write(read(PRE), tmp_path / "x", "tf1", task_name="ner")
    with pytest.raises(SchemaError, match="cannot be written as a Google TF1 checkpoint"):
        write(read(FIXTURES / "hf" / "sequence-classification"), tmp_path / "y", "tf1", task_name="mnli")
    proc = run_cli("convert", CHUNK, tmp_path / "z", "--to", "tf1", "--task-name", "a/b", "--quiet")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --task-name 'a/b'"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "z").exists()


def test_untied_generator_cannot_be_written(tmp_path):
    ckpt = read(FIXTURES / "hf" / "masked-lm")
    untied = ckpt.with_(config=ckpt.config.replace(tie_word_embeddings=False),
                        tensors={**ckpt.tensors, "generator_lm_head.weight": ckpt.array("embeddings.word_embeddings.weight")})
    with pytest.raises(SchemaError, match="untied"):
        write(untied, tmp_path / "x", "tf1")


def test_hparams_detection_and_sizes():
    assert tf1_config.is_hparams({"model_size": "base"}) and not tf1_config.is_hparams({"model_type": "electra"})
    base = tf1_config.hparams_config({"model_size": "base", "generator_hidden_size": 0.33333}, "generator")
    assert (base.hidden_size, base.num_attention_heads, base.intermediate_size, base.embedding_size) == (256, 4, 1024, 768)
    small = tf1_config.hparams_config({"model_size": "small"}, "discriminator")
    assert (small.hidden_size, small.num_attention_heads, small.embedding_size, small.vocab_size) == (256, 4, 128, 30522)
    assert isinstance(small, ElectraConfig)


# ---- google-research variants: untied generator embeddings, a fully tied generator ------------------

def _model_variables(path) -> dict:
    bundle = tf1_bundle.BundleReader(path)
    return {n: bundle.read(n) for n in tf1.survey(bundle.shapes()).shapes}


@pytest.mark.oracle
def test_generator_with_untied_embeddings_uses_its_own_table(tmp_path):
    """untied_generator_embeddings=True: the generator's embeddings live in generator/embeddings/*."""
    tensors = _model_variables(PRE)
    own = {n.replace("electra/embeddings/", "generator/embeddings/"): v + np.float32(0.5)
           for n, v in tensors.items() if n.startswith("electra/embeddings/")}
    (tmp_path / "u").mkdir()
    tf1_bundle.write_bundle(tmp_path / "u" / "model.ckpt", {**tensors, **own})
    gen = read(tmp_path / "u", net="generator")
    assert np.array_equal(gen.array("embeddings.word_embeddings.weight"), own["generator/embeddings/word_embeddings"])
    disc = read(tmp_path / "u")
    assert np.array_equal(disc.array("embeddings.word_embeddings.weight"), tensors["electra/embeddings/word_embeddings"])
    # transformers' loader renames both tables onto the same module; the generator's (sorted last) wins there too
    batch = probe_batch(gen.config, "masked-lm")
    theirs = torch_run(transformers_model(gen, "ElectraForMaskedLM", "generator"), batch).logits.numpy()
    assert max_abs(CheckpointRunner(gen).run("masked-lm", batch).outputs["logits"], theirs) <= TOL


def test_fully_tied_generator_shares_the_discriminator_body(tmp_path):
    """untied_generator=False: one electra/ body under both heads; generator_predictions/dense is [H, E]."""
    tensors = {n: v for n, v in _model_variables(PRE).items() if not n.startswith(("generator/", "generator_predictions/"))}
    d, rng = make_tf1.DISC, np.random.default_rng(1)
    head = {"generator_predictions/dense/kernel": (d["H"], d["E"]), "generator_predictions/dense/bias": (d["E"],),
            "generator_predictions/LayerNorm/gamma": (d["E"],), "generator_predictions/LayerNorm/beta": (d["E"],),
            "generator_predictions/output_bias": (d["V"],)}
    tensors.update({n: rng.standard_normal(s).astype(np.float32) for n, s in head.items()})
    (tmp_path / "t").mkdir()
    tf1_bundle.write_bundle(tmp_path / "t" / "model.ckpt", tensors)
    gen, disc = read(tmp_path / "t", net="generator"), read(tmp_path / "t", net="discriminator")
    assert gen.head == "masked-lm" and gen.config.hidden_size == disc.config.hidden_size == d["H"]
    for name in disc.as_head("base").tensors:
        assert np.array_equal(gen.array(name), disc.array(name)), name
    assert np.array_equal(gen.array("generator_predictions.dense.weight"), tensors["generator_predictions/dense/kernel"].T)


def test_a_folder_of_several_bundles_says_which_to_pass(tmp_path):
    for step in ("1000", "2000"):
        for f in PRE.glob("model.ckpt-1000.*"):
            shutil.copy(f, tmp_path / f.name.replace("1000", step))
    with pytest.raises(FormatError, match="several TF1 checkpoints"):
        read(tmp_path)
    proc = run_cli("inspect", tmp_path)
    assert proc.returncode == 2 and "several TF1 checkpoints" in proc.stderr
