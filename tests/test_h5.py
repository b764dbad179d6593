"""HF TensorFlow tf_model.h5: read and write with h5py alone, against files transformers' TF classes wrote.

Fixtures: fixtures/hf-h5/<head>/ (fixtures/make_h5.py: TFElectraFor<Head>.from_pretrained(hf/<head>,
from_pt=True).save_pretrained), for the seven heads transformers has in TF.
"""

import json
import logging
import shutil

import h5py
import numpy as np
import pytest

from helpers import HEADS, assert_same_tensors, golden, max_abs, run_cli, run_python, spec

from electra_bridge.converters import convert, detect_format, get_format, read, write
from electra_bridge.converters.engine import pipeline
from electra_bridge.converters.engine.rules import ignored_reason
from electra_bridge.converters.formats import h5, h5_keras
from electra_bridge.runtimes import CheckpointRunner, compare
from electra_bridge.schemas import FormatError, SchemaError

H5 = spec.HERE / "hf-h5"
H5_SHARDED = spec.HERE / "hf-h5-sharded"  # masked-lm saved with a tiny max_shard_size
TF_HEADS = tuple(h for h in HEADS if h != "causal-lm")  # there is no TFElectraForCausalLM
BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "flax")
TOL = 1e-5


def write_h5(ckpt, out, **options):
    return pipeline.write(h5.FORMAT, ckpt, out, **options)


def h5_layout(path) -> dict:
    """Everything TF's loader looks at, with the (unstable) instance scope cut off the names."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {"layer_names": h5_keras.load_attribute(f, "layer_names"), "backend": f.attrs["backend"]}
        for layer in f:
            names = h5_keras.load_attribute(f[layer], "weight_names")
            out[layer] = [n.split("/", 1)[1] for n in names]
            datasets = []
            f[layer].visititems(lambda n, o: datasets.append((n.split("/", 1)[1], o.shape, o.dtype))
                                if isinstance(o, h5py.Dataset) else None)
            out[f"{layer} datasets"] = sorted(datasets)
    return out


# ---- reading transformers' files ---------------------------------------------------------------

@pytest.mark.parametrize("head", TF_HEADS)
def test_read_transformers_h5_is_bit_equal_to_the_pytorch_original(head):
    ours = read(H5 / head)
    assert detect_format(H5 / head) == "h5" and ours.provenance["format"] == "h5"
    assert ours.provenance["keras_scope"] == h5.TF_MODELS[head][1]
    assert_same_tensors(ours, read(spec.HF_SAFETENSORS / head))
    assert "vocab.txt" in ours.assets


def test_the_loads_of_one_scan_share_a_file_handle_closed_once_its_tensors_are_dropped(tmp_path, monkeypatch):
    import gc

    src = tmp_path / "tf_model.h5"
    shutil.copy(H5 / "masked-lm" / "tf_model.h5", src)
    opened = []
    real_open = h5_keras.open_file
    monkeypatch.setattr(h5_keras, "open_file", lambda path: opened.append(path) or real_open(path))
    tensors = h5_keras.scan(src)
    opened.clear()
    with h5py.File(H5 / "masked-lm" / "tf_model.h5", "r") as f:
        expect = {name: ds[()] for name, ds in _datasets(f)}
    loaded = [t.load() for t in tensors.values()]
    assert opened == [src] and len(loaded) == len(expect) > 10        # one open for every load
    assert sorted(a.tobytes() for a in loaded) == sorted(a.tobytes() for a in expect.values())
    del tensors, loaded
    gc.collect()
    with h5py.File(src, "w") as f:      # HDF5 refuses to truncate a file this process still has open
        f["x"] = np.zeros(1)


def _datasets(f):
    found = []
    f.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_masked_lm_file_stores_the_embeddings_twice_and_we_drop_the_declared_alias():
    with h5py.File(H5 / "masked-lm" / "tf_model.h5") as f:
        listed = h5_keras.load_attribute(f["generator_lm_head"], "weight_names")
    repeated = [n.split("/", 1)[1] for n in listed if "/electra/embeddings/" in n]
    assert len(repeated) == 5  # word, token-type, position tables and the embedding LayerNorm
    for native in repeated:  # each repeat is dropped by the declared IGNORED entry, with its reason
        assert "generator_lm_head" in ignored_reason(f"generator_lm_head/{native}", h5.IGNORED)
    assert ignored_reason("electra/embeddings/word_embeddings/weight:0", h5.IGNORED) is None


def test_altered_alias_copy_is_refused(tmp_path):
    shutil.copytree(H5 / "masked-lm", tmp_path / "m")
    with h5py.File(tmp_path / "m" / "tf_model.h5", "r+") as f:
        f["generator_lm_head/tf_electra_for_masked_lm/electra/embeddings/word_embeddings/weight:0"][0, 0] += 1.0
    with pytest.raises(SchemaError, match="differs from the original"):
        read(tmp_path / "m")


def test_unlisted_dataset_and_missing_variable_are_listed(tmp_path):
    shutil.copytree(H5 / "pretraining", tmp_path / "p")
    weights = tmp_path / "p" / "tf_model.h5"
    with h5py.File(weights, "r+") as f:
        f["electra"].create_dataset("stray/thing:0", data=np.zeros(3, np.float32))
        group = f["discriminator_predictions"]
        names = h5_keras.load_attribute(group, "weight_names")
        h5_keras.save_attribute(group, "weight_names", [n for n in names if not n.endswith("dense_prediction/bias:0")])
    with pytest.raises(SchemaError) as err:
        read(tmp_path / "p")
    message = str(err.value)
    assert "missing (1): discriminator_predictions/dense_prediction/bias:0" in message
    # a dataset no weight_names list names is reported under its full path (the de-listed one too)
    assert ("unexpected (2): /discriminator_predictions/tf_electra_for_pre_training/discriminator_predictions/"
            "dense_prediction/bias:0, /electra/stray/thing:0") in message


def test_wrong_config_is_a_misshape(tmp_path):
    shutil.copytree(H5 / "token-classification", tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    cfg["id2label"] = {"0": "A", "1": "B"}
    cfg.pop("label2id")
    (tmp_path / "t" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SchemaError, match=r"wrong shape \(2\).*classifier/bias:0"):
        read(tmp_path / "t")


def test_not_a_keras_file_is_a_format_error(tmp_path):
    with h5py.File(tmp_path / "tf_model.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(2))
    shutil.copy(H5 / "base" / "config.json", tmp_path)
    with pytest.raises(FormatError, match="layer_names"):
        read(tmp_path)
    (tmp_path / "tf_model.h5").write_bytes(b"not hdf5")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        read(tmp_path)


def test_sharded_h5_written_by_transformers_is_bit_equal():
    sharded = read(H5_SHARDED / "masked-lm")
    assert sharded.provenance["file"] == "tf_model.h5.index.json" and len(list((H5_SHARDED / "masked-lm").glob("*.h5"))) > 1
    assert_same_tensors(sharded, read(spec.HF_SAFETENSORS / "masked-lm"))


def test_sharded_h5_with_a_missing_or_moved_variable_is_refused(tmp_path):
    shutil.copytree(H5_SHARDED / "masked-lm", tmp_path / "s")
    index = json.loads((tmp_path / "s" / "tf_model.h5.index.json").read_text())
    moved = dict(index["weight_map"])
    name = "tf_electra_for_masked_lm/generator_lm_head/bias:0"
    moved[name] = next(s for s in sorted(set(moved.values())) if s != moved[name])
    (tmp_path / "s" / "tf_model.h5.index.json").write_text(json.dumps({**index, "weight_map": moved}))
    with pytest.raises(FormatError, match="holds generator_lm_head/bias:0, which tf_model.h5.index.json assigns to"):
        read(tmp_path / "s")
    (tmp_path / "s" / "tf_model.h5.index.json").write_text(json.dumps(index))
    next((tmp_path / "s").glob("tf_model-00002-*.h5")).unlink()
    with pytest.raises(FormatError, match="tf_model-00002-of-00003.h5, which is missing"):
        read(tmp_path / "s")


def test_untied_config_on_a_tf_file_is_read_as_tied_with_a_warning(tmp_path, caplog):
    """TF ignores tie_word_embeddings=false: such a file has no decoder and TF computes tied logits."""
    shutil.copytree(H5 / "masked-lm", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
    with caplog.at_level(logging.WARNING):
        ckpt = read(tmp_path / "m")
    assert ckpt.config.tie_word_embeddings and "TF ignores it" in caplog.text
    assert_same_tensors(ckpt, read(H5 / "masked-lm"))


def test_masked_lm_file_can_be_read_as_causal_lm_and_base():
    assert read(H5 / "masked-lm", head="causal-lm").config.is_decoder
    assert sorted(read(H5 / "masked-lm", head="base").tensors) == sorted(read(H5 / "base").tensors)


# ---- writing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", TF_HEADS)
def test_write_reproduces_transformers_layout_and_round_trips_bit_exact(head, tmp_path):
    src = read(spec.HF_SAFETENSORS / head)
    write_h5(src, tmp_path)
    ours, theirs = h5_layout(tmp_path / "tf_model.h5"), h5_layout(H5 / head / "tf_model.h5")
    if head == "token-classification":
        # Keras lists a weightless auto-named Dropout layer (dropout_<n>, a process counter); transformers
        # ignores missing "dropout" layers, and naming one with another counter would be "unexpected".
        dropout = [k for k in theirs["/"]["layer_names"] if k.startswith("dropout_")]
        assert len(dropout) == 1 and theirs.pop(dropout[0]) == [] and theirs.pop(f"{dropout[0]} datasets") == []
        theirs["/"]["layer_names"].remove(dropout[0])
    assert ours == theirs
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [spec.HF_CLASS[head]]
    back = read(tmp_path)
    assert_same_tensors(back, src)
    (tmp_path / "pt").mkdir()
    pipeline.write(get_format("safetensors"), back, tmp_path / "pt")
    assert_same_tensors(read(tmp_path / "pt"), src)  # safetensors -> h5 -> safetensors


def test_long_weight_lists_are_chunked_like_keras(tmp_path):
    """Keras splits an attribute beyond 64512 bytes into weight_names0, weight_names1, ..."""
    cfg = read(spec.HF_SAFETENSORS / "base").config.replace(num_hidden_layers=60, vocab_size=8,
                                                             max_position_embeddings=8)
    rng = np.random.default_rng(0)
    from electra_bridge.schemas import Checkpoint, head_shapes
    tensors = {n: rng.standard_normal(s).astype(np.float32) for n, s in head_shapes(cfg, "base").items()}
    ckpt = Checkpoint(cfg, "base", tensors)
    write_h5(ckpt, tmp_path)
    with h5py.File(tmp_path / "tf_model.h5") as f:
        assert "weight_names" not in f["electra"].attrs and "weight_names1" in f["electra"].attrs
        assert len(h5_keras.load_attribute(f["electra"], "weight_names")) == 7 + 16 * 60
    back = read(tmp_path)
    assert all(np.array_equal(back.array(n), t) for n, t in tensors.items())


def test_causal_lm_to_h5_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(SchemaError, match=r"no TFElectraForCausalLM.*--head masked-lm"):
        write_h5(read(spec.HF_SAFETENSORS / "causal-lm"), tmp_path)
    out = convert(spec.HF_SAFETENSORS / "causal-lm", tmp_path / "mlm", to="h5", head="masked-lm").out
    assert read(out).head == "masked-lm"


def test_untied_masked_lm_to_h5_is_refused(tmp_path):
    src = read(spec.HF_SAFETENSORS / "masked-lm")
    untied = src.with_(config=src.config.replace(tie_word_embeddings=False),
                       tensors={**src.tensors, "generator_lm_head.weight": src.array("embeddings.word_embeddings.weight") + 1})
    with pytest.raises(SchemaError, match=r"untied decoder.*silently drops generator_lm_head.weight"):
        write_h5(untied, tmp_path)
    assert not any(tmp_path.iterdir())


def test_activation_tf_cannot_build_is_refused(tmp_path):
    src = read(spec.HF_SAFETENSORS / "pretraining")
    with pytest.raises(SchemaError, match="gelu_pytorch_tanh"):
        write_h5(src.with_(config=src.config.replace(hidden_act="gelu_pytorch_tanh")), tmp_path)


def test_classifier_dropout_is_written_as_null(tmp_path, caplog):
    src = read(spec.HF_SAFETENSORS / "sequence-classification")
    with caplog.at_level(logging.WARNING):
        write_h5(src.with_(config=src.config.replace(classifier_dropout=0.2)), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_dropout"] is None
    assert "classifier_dropout" in caplog.text


def test_write_options_are_refused(tmp_path):
    with pytest.raises(SchemaError, match="takes no option --shards"):
        write_h5(read(H5 / "base"), tmp_path, shards=2)


# ---- without TensorFlow or JAX ------------------------------------------------------------------

def test_read_write_convert_with_tensorflow_and_jax_blocked(tmp_path):
    proc = run_python(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from electra_bridge.converters import convert, read
        tmp = Path({str(tmp_path)!r})
        for head in {TF_HEADS!r}:
            theirs = read(Path({str(H5)!r}) / head)                     # transformers-written h5
            src = read(Path({str(spec.HF_SAFETENSORS)!r}) / head)
            out = convert(src.provenance["path"], tmp / head, to="h5").out  # write + verify (numpy runtime)
            back = convert(out, tmp / (head + "-pt"), to="safetensors").out
            for ckpt in (theirs, read(out), read(back)):
                assert all(np.array_equal(ckpt.array(n), src.array(n)) for n in src.tensors), head
        assert not {{"tensorflow", "keras", "tf_keras", "jax", "flax"}} & set(sys.modules)
        print("ok")
    """, blocked=BLOCKED)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# ---- the oracle: transformers' TF classes load what we write ----------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("head", TF_HEADS)
def test_transformers_tf_loads_our_h5_with_no_missing_weights_and_equal_outputs(head, tmp_path):
    tf = pytest.importorskip("tensorflow")
    transformers = pytest.importorskip("transformers")
    out = convert(spec.HF_SAFETENSORS / head, tmp_path / head, to="h5").out
    cls = getattr(transformers, h5.TF_MODELS[head][0])
    model, info = cls.from_pretrained(out, output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == ([], [], [])
    inputs, outputs, hidden = golden(head)  # PT golden: padded rows, both segment ids, explicit token_type_ids
    theirs = model({k: tf.constant(v) for k, v in inputs.items()}, output_hidden_states=True, training=False)
    worst = max(max_abs(theirs[name].numpy(), expected) for name, expected in outputs.items())
    assert worst <= TOL, worst
    for x, y in zip(theirs.hidden_states, hidden, strict=True):
        assert max_abs(x.numpy(), y) <= TOL


# ---- the CLI ----------------------------------------------------------------------------------------

@pytest.mark.requires("tf")
def test_cli_safetensors_to_h5_to_safetensors(tmp_path):
    """Each hop is verified by convert; verify then compares across formats, once through the TF runtime
    (masked-lm: the file with the aliased embeddings)."""
    head = "masked-lm"
    src, h5_out, pt_out = spec.HF_SAFETENSORS / head, tmp_path / "h5", tmp_path / "pt"
    for args in (("convert", src, h5_out, "--to", "h5"), ("convert", h5_out, pt_out, "--to", "safetensors"),
                 ("verify", h5_out, src, "--runtime", "tf"), ("verify", pt_out, H5 / head)):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr[-2000:])
    assert (h5_out / "tf_model.h5").exists() and (pt_out / "model.safetensors").exists()
    assert_same_tensors(read(pt_out), read(src))


def test_cli_refuses_causal_lm_to_h5_with_exit_2(tmp_path):
    proc = run_cli("convert", spec.HF_SAFETENSORS / "causal-lm", tmp_path / "x", "--to", "h5")
    assert proc.returncode == 2 and "TFElectraForCausalLM" in proc.stderr and not (tmp_path / "x").exists()


def test_h5_to_msgpack_to_safetensors_verified_at_each_step(tmp_path):
    steps = [convert(H5 / "pretraining", tmp_path / "flax", to="msgpack"),
             convert(tmp_path / "flax", tmp_path / "pt", to="safetensors")]
    assert all(s.report.ok for s in steps)
    assert compare(CheckpointRunner(read(tmp_path / "pt")), CheckpointRunner(read(H5 / "pretraining"))).ok
    assert_same_tensors(read(tmp_path / "pt"), read(spec.HF_SAFETENSORS / "pretraining"))
    write(read(tmp_path / "pt"), tmp_path / "h5-again", to="h5")
    assert_same_tensors(read(tmp_path / "h5-again"), read(H5 / "pretraining"))
