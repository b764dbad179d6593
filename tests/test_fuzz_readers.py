"""hypothesis property tests of every reader on generated and mutated files (issue 11).

Each property: a mutated or generated input either reads or raises the toolkit's own
BridgeError subclass -- never another exception, never a hang (hypothesis ``deadline``), and
never a claim allocated before it is checked (the corpus in tests/test_bad_inputs.py bounds
memory under RLIMIT_AS; here every example is small). Example counts are in ``EXAMPLES``.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import spec

from electra_bridge.converters.engine import shards
from electra_bridge.converters.formats import msgpack_flax, tf1_bundle, tf1_table, torch_zip
from electra_bridge.schemas import BridgeError, ElectraConfig

EXAMPLES = {"tf1-index": 300, "tf1-records": 400, "msgpack": 300, "h5": 120, "bin": 200, "bin-pickle": 300,
            "shard-index": 200, "config": 400, "config-file": 200}
SETTINGS = dict(deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

TF1_INDEX = next((spec.TF1 / "pretraining").glob("*.index"))
FLAX = spec.HF_FLAX / "masked-lm" / "flax_model.msgpack"
H5 = spec.HF_H5 / "masked-lm" / "tf_model.h5"
BIN = spec.HF_BIN / "masked-lm" / "pytorch_model.bin"
with zipfile.ZipFile(BIN) as _zf:
    BIN_RECORDS = {info.filename: _zf.read(info) for info in _zf.infolist()}
BIN_PICKLE = next(name for name in BIN_RECORDS if name.endswith("/data.pkl"))


def mutations(size: int):
    """Byte flips, a truncation and an insertion of a file of ``size`` bytes."""
    flip = st.tuples(st.integers(0, size - 1), st.integers(1, 255))
    return st.fixed_dictionaries({
        "flips": st.lists(flip, max_size=6),
        "cut": st.one_of(st.none(), st.integers(0, size)),
        "insert": st.one_of(st.none(), st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=16))),
    })


def mutate(data: bytes, m: dict) -> bytes:
    out = bytearray(data)
    for pos, mask in m["flips"]:
        out[pos % len(out)] ^= mask
    if m["insert"] is not None:
        pos, blob = m["insert"]
        out[pos:pos] = blob
    if m["cut"] is not None:
        del out[m["cut"]:]
    return bytes(out)


@pytest.fixture
def tf1_copy(tmp_path):
    folder = tmp_path / "tf1"
    shutil.copytree(spec.TF1 / "pretraining", folder)
    return folder


@settings(max_examples=EXAMPLES["tf1-index"], **SETTINGS)
@given(m=mutations(TF1_INDEX.stat().st_size))
def test_tf1_index_table_reads_or_refuses(tf1_copy, m):
    index = tf1_copy / TF1_INDEX.name
    index.write_bytes(mutate(TF1_INDEX.read_bytes(), m))
    try:
        reader = tf1_bundle.BundleReader(index)
        for name in list(reader.entries)[:4]:
            reader.read(name)
    except BridgeError:
        pass


@settings(max_examples=EXAMPLES["tf1-records"], **SETTINGS)
@given(buf=st.binary(max_size=64), name=st.text(max_size=8))
def test_tf1_protobuf_records_parse_or_refuse(buf, name):
    for parse in (lambda: tf1_bundle.parse_entry(name, buf), lambda: tf1_bundle.parse_header(buf),
                  lambda: tf1_table.snappy_decompress(buf)):
        try:
            parse()
        except BridgeError:
            pass


@settings(max_examples=EXAMPLES["msgpack"], **SETTINGS)
@given(m=mutations(FLAX.stat().st_size))
def test_msgpack_reads_or_refuses(m):
    try:
        arrays = msgpack_flax.decode(mutate(FLAX.read_bytes(), m))
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
    except BridgeError:
        pass


@settings(max_examples=EXAMPLES["h5"], **SETTINGS)
@given(m=mutations(H5.stat().st_size))
def test_h5_datasets_read_or_refuse(tmp_path, m):
    from electra_bridge.converters.formats import h5_keras

    path = tmp_path / "tf_model.h5"
    path.write_bytes(mutate(H5.read_bytes(), m))
    try:
        for tensor in h5_keras.scan(path).values():
            tensor.load()
    except BridgeError:
        pass


def _read_bin(path):
    for tensor in torch_zip.read(path).values():
        if isinstance(tensor, torch_zip.ZipTensor):   # anything else is refused by the format (_load_bin)
            tensor.load()


@settings(max_examples=EXAMPLES["bin"], **SETTINGS)
@given(m=mutations(BIN.stat().st_size))
def test_bin_archive_reads_or_refuses(tmp_path, m):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(mutate(BIN.read_bytes(), m))
    try:
        _read_bin(path)
    except BridgeError:
        pass


@settings(max_examples=EXAMPLES["bin-pickle"], **SETTINGS)
@given(m=mutations(len(BIN_RECORDS[BIN_PICKLE])))
def test_bin_pickle_reads_or_refuses(tmp_path, m):
    """The pickle record mutated inside a valid archive: the restricted unpickler's own ground."""
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in BIN_RECORDS.items():
            zf.writestr(name, mutate(data, m) if name == BIN_PICKLE else data)
    try:
        _read_bin(path)
    except BridgeError:
        pass


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)
shard_names = st.one_of(st.sampled_from(["model-00001-of-00002.safetensors", "../x.safetensors", "/etc/passwd",
                                         "a/b.safetensors", "", ".", ".."]), st.text(max_size=12))


@settings(max_examples=EXAMPLES["shard-index"], **SETTINGS)
@given(doc=st.one_of(json_values, st.fixed_dictionaries(
    {"weight_map": st.dictionaries(st.text(max_size=10), st.one_of(shard_names, json_scalars), max_size=6)})))
def test_shard_index_parses_or_refuses(tmp_path, doc):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps(doc))
    try:
        for key, shard in shards.weight_map(index).items():
            assert shard.parent.resolve() == tmp_path.resolve()
    except BridgeError:
        pass


CONFIG_KEYS = ["vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels", "id2label",
               "layer_norm_eps", "hidden_act", "architectures", "model_type", "tie_word_embeddings", "pad_token_id",
               "classifier_dropout", "summary_activation"]
config_values = st.one_of(json_values, st.integers(-5, 2**40), st.dictionaries(
    st.one_of(st.text(max_size=3), st.integers(0, 4).map(str)), st.text(max_size=4), max_size=4))


@settings(max_examples=EXAMPLES["config"], **SETTINGS)
@given(base=st.just(json.loads((spec.HF_SAFETENSORS / "masked-lm" / "config.json").read_text())),
       changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), config_values, max_size=4))
def test_config_dict_validates_or_refuses(base, changes):
    try:
        cfg = ElectraConfig.from_dict({**base, **changes}).validate()
        assert 1 <= cfg.num_labels <= 1 << 16 and cfg.num_hidden_layers <= 512
    except BridgeError:
        pass


@settings(max_examples=EXAMPLES["config-file"], **SETTINGS)
@given(m=mutations((spec.HF_SAFETENSORS / "masked-lm" / "config.json").stat().st_size))
def test_config_file_reads_or_refuses(tmp_path, m):
    path = tmp_path / "config.json"
    path.write_bytes(mutate((spec.HF_SAFETENSORS / "masked-lm" / "config.json").read_bytes(), m))
    try:
        ElectraConfig.from_json_file(path)
    except BridgeError:
        pass


def test_example_counts():
    assert sum(EXAMPLES.values()) >= 1500
