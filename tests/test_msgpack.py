"""HF Flax flax_model.msgpack: read and write without JAX/Flax, checked against transformers' Flax classes.

Fixtures: fixtures/hf-flax/<head>/ were written by FlaxElectraFor<Head>.from_pretrained(hf/<head>,
from_pt=True).save_pretrained (fixtures/make_flax.py), so they hold exactly the PyTorch fixture's
weights; untied-masked-lm(-pt) is an untied generator (Flax stores generator_lm_head/kernel).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest
from helpers import FIXTURES, HEADS, assert_same_tensors, golden, max_abs, run_cli, run_python

from electra_bridge.converters import convert, detect_format, inspect, read, write
from electra_bridge.converters.formats import msgpack as flax_format
from electra_bridge.converters.formats import msgpack_flax
from electra_bridge.schemas import FormatError, SchemaError

FLAX = FIXTURES / "hf-flax"
HF = FIXTURES / "hf"
UNTIED, UNTIED_PT = FLAX / "untied-masked-lm", FLAX / "untied-masked-lm-pt"
#: (flax fixture, its PyTorch source) for every head plus the untied generator
PAIRS = {**{h: (FLAX / h, HF / h) for h in HEADS}, "untied-masked-lm": (UNTIED, UNTIED_PT)}
BLOCKED = ("tensorflow", "keras", "tf_keras", "jax", "jaxlib", "flax")
FLAX_CLASS = {h: "Flax" + c for h, c in {
    "base": "ElectraModel", "pretraining": "ElectraForPreTraining", "masked-lm": "ElectraForMaskedLM",
    "causal-lm": "ElectraForCausalLM", "sequence-classification": "ElectraForSequenceClassification",
    "multiple-choice": "ElectraForMultipleChoice", "token-classification": "ElectraForTokenClassification",
    "question-answering": "ElectraForQuestionAnswering"}.items()}


def tree(path: Path) -> dict[str, np.ndarray]:
    return msgpack_flax.decode((path / flax_format.WEIGHTS).read_bytes())


# ---- reading transformers' files ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PAIRS))
def test_reader_gives_the_pytorch_tensors_bit_for_bit(name):
    flax_dir, pt_dir = PAIRS[name]
    ckpt, source = read(flax_dir), read(pt_dir)
    assert ckpt.provenance["format"] == "msgpack" and ckpt.head == source.head
    assert_same_tensors(ckpt, source, same_config=False)
    assert ckpt.config == source.config


@pytest.mark.parametrize("name", list(PAIRS))
def test_writer_reproduces_transformers_bytes(name, tmp_path):
    """Our encoder, fed the canonical tensors, writes exactly the bytes flax.serialization wrote."""
    flax_dir, _ = PAIRS[name]
    original = (flax_dir / flax_format.WEIGHTS).read_bytes()
    assert msgpack_flax.encode(msgpack_flax.decode(original)) == original
    out = write(read(flax_dir), tmp_path / "out", "msgpack")
    assert (out / flax_format.WEIGHTS).read_bytes() == original


def test_detect_and_head_subset(tmp_path):
    assert detect_format(FLAX / "pretraining") == "msgpack"
    assert detect_format(FLAX / "pretraining" / flax_format.WEIGHTS) == "msgpack"
    assert not flax_format.FORMAT.detect(HF / "pretraining")
    base = read(FLAX / "masked-lm", head="base")
    assert base.head == "base" and "generator_lm_head.bias" not in base.tensors


@pytest.mark.parametrize("head", HEADS)
def test_head_is_detected_from_paths_when_architectures_is_silent(head, tmp_path):
    folder = _with_tree(tmp_path, FLAX / head, lambda t: t)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("architectures")
    (folder / "config.json").write_text(json.dumps(cfg))
    assert read(folder).head == head


def test_config_can_come_from_elsewhere(tmp_path):
    shutil.copy(FLAX / "question-answering" / flax_format.WEIGHTS, tmp_path / "qa.msgpack")
    inferred = read(tmp_path / "qa.msgpack")    # no config.json beside it: inferred from the shapes
    assert inferred.provenance["config"] == "inferred from the tensor shapes"
    ckpt = read(tmp_path / "qa.msgpack", config=FLAX / "question-answering" / "config.json")
    assert "config" not in ckpt.provenance
    assert_same_tensors(ckpt, read(HF / "question-answering"), same_config=False)
    assert_same_tensors(inferred, ckpt, same_config=False)


def test_base_written_from_a_head_model_has_no_prefix(tmp_path):
    convert(HF / "masked-lm", tmp_path / "base", "msgpack", head="base")
    written = tree(tmp_path / "base")
    assert "embeddings/word_embeddings/embedding" in written and not any(n.startswith("electra/") for n in written)
    assert json.loads((tmp_path / "base" / "config.json").read_text())["architectures"] == ["ElectraModel"]
    assert_same_tensors(read(tmp_path / "base"), read(HF / "masked-lm", head="base"), same_config=False)


def test_tied_generator_has_no_kernel_and_untied_has_one():
    assert "generator_lm_head/kernel" not in tree(FLAX / "masked-lm")
    kernel = tree(UNTIED)["generator_lm_head/kernel"]
    source = read(UNTIED_PT)
    assert kernel.shape == (source.config.embedding_size, source.config.vocab_size)  # [E, V]
    assert np.array_equal(kernel.T, source.array("generator_lm_head.weight"))


# ---- round trips ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PAIRS))
def test_round_trips_are_bit_exact(name, tmp_path):
    flax_dir, pt_dir = PAIRS[name]
    source = read(pt_dir)
    convert(pt_dir, tmp_path / "flax", "msgpack")                      # verified on the probe batch
    back = convert(tmp_path / "flax", tmp_path / "pt", "safetensors")
    assert_same_tensors(read(tmp_path / "flax"), source, same_config=False)
    assert_same_tensors(read(tmp_path / "pt"), source, same_config=False)
    assert back.report.ok
    assert (tmp_path / "flax" / flax_format.WEIGHTS).read_bytes() == (flax_dir / flax_format.WEIGHTS).read_bytes()


def test_read_and_write_with_tensorflow_and_jax_unimportable():
    code = f"""
        import sys, numpy as np
        from pathlib import Path
        import tempfile
        from electra_bridge.converters import read, write
        for head in {list(HEADS)!r} + ["untied-masked-lm"]:
            src = Path({str(FLAX)!r}) / head
            ckpt = read(src)
            with tempfile.TemporaryDirectory() as tmp:
                out = write(ckpt, Path(tmp) / "out", "msgpack")
                again = read(out)
                assert (out / "flax_model.msgpack").read_bytes() == (src / "flax_model.msgpack").read_bytes(), head
                assert all(np.array_equal(ckpt.array(n), again.array(n)) for n in ckpt.tensors), head
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print("ok", loaded)
    """
    proc = run_python(code, blocked=BLOCKED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok []"


# ---- flax.serialization details (chunks, dtypes, shards) ---------------------------------------

def test_chunked_arrays_match_flax_serialization(monkeypatch):
    serialization = pytest.importorskip("flax.serialization")
    rng = np.random.default_rng(0)
    params = {"a": {"big": rng.standard_normal((7, 9)).astype(np.float32)},
              "b": rng.standard_normal(5).astype(np.float16)}
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)
    monkeypatch.setattr(msgpack_flax, "MAX_CHUNK_SIZE", 64)
    theirs = serialization.msgpack_serialize(params)
    assert b"__msgpack_chunked_array__" in theirs
    assert msgpack_flax.encode({"a/big": params["a"]["big"], "b": params["b"]}) == theirs
    decoded = msgpack_flax.decode(theirs)
    assert np.array_equal(decoded["a/big"], params["a"]["big"]) and decoded["b"].dtype == np.float16


def test_bfloat16_is_kept_and_scalars_are_refused(tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    import jax.numpy as jnp
    import ml_dtypes

    values = np.array([1.5, -2.25, 3.0e-3, 65504.0], np.float32)
    data = serialization.msgpack_serialize({"w": np.asarray(jnp.asarray(values, jnp.bfloat16))})
    stored = msgpack_flax.decode(data)["w"]                           # the stored bits, as ml_dtypes.bfloat16
    assert stored.dtype == ml_dtypes.bfloat16
    assert np.array_equal(stored.astype(np.float32), np.asarray(jnp.asarray(values, jnp.bfloat16).astype(jnp.float32)))
    bf16 = _with_tree(tmp_path, FLAX / "base", lambda t: {n: a.astype(ml_dtypes.bfloat16) for n, a in t.items()})
    ckpt, source = read(bf16), read(FLAX / "base")                    # the engine keeps bfloat16 (issue 12)
    for name in source.tensors:
        kept = ckpt.array(name)
        assert kept.dtype == ml_dtypes.bfloat16
        assert np.array_equal(kept.astype(np.float32),
                              source.array(name).astype(ml_dtypes.bfloat16).astype(np.float32)), name
    with pytest.raises(FormatError, match="'step' is a"):
        msgpack_flax.decode(serialization.msgpack_serialize({"step": np.int32(3)}))


@pytest.mark.oracle
def test_sharded_save_is_read(tmp_path):
    import transformers

    model = transformers.FlaxElectraForPreTraining.from_pretrained(FLAX / "pretraining")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / flax_format.INDEX).exists() and not (tmp_path / flax_format.WEIGHTS).exists()
    assert_same_tensors(read(tmp_path), read(HF / "pretraining"), same_config=False)


def test_a_flax_train_state_is_read_inside_params(tmp_path, caplog):
    folder = _with_tree(tmp_path, FLAX / "pretraining", lambda t: {f"params/{n}": a for n, a in t.items()})
    with caplog.at_level(logging.WARNING, logger="electra_bridge"):
        ckpt = read(folder)
    assert "flax train state" in caplog.text
    assert_same_tensors(ckpt, read(FLAX / "pretraining"))

# ---- malformed input: one clear error ------------------------------------------------------------

def _with_tree(tmp_path: Path, src: Path, edit) -> Path:
    out = tmp_path / "edited"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    (out / flax_format.WEIGHTS).write_bytes(msgpack_flax.encode(edit(tree(src))))
    return out


def test_missing_unexpected_and_misshaped_are_listed(tmp_path):
    def edit(t):
        del t["electra/encoder/layer/1/output/dense/kernel"]
        t["electra/encoder/layer/0/extra/kernel"] = np.zeros((2, 2), np.float32)
        t["discriminator_predictions/dense/bias"] = np.zeros(3, np.float32)
        return t

    with pytest.raises(SchemaError) as err:
        read(_with_tree(tmp_path, FLAX / "pretraining", edit))
    text = str(err.value)
    assert "missing (1): encoder/layer/1/output/dense/kernel" in text
    assert "unexpected (1): encoder/layer/0/extra/kernel" in text
    assert "discriminator_predictions/dense/bias: file has [3]" in text


def test_a_stored_tied_kernel_must_equal_the_embeddings(tmp_path):
    table = tree(FLAX / "masked-lm")["electra/embeddings/word_embeddings/embedding"]
    same = _with_tree(tmp_path, FLAX / "masked-lm", lambda t: {**t, "generator_lm_head/kernel": table.T.copy()})
    assert_same_tensors(read(same), read(FLAX / "masked-lm"), same_config=False)
    shutil.rmtree(same)
    other = _with_tree(tmp_path, FLAX / "masked-lm", lambda t: {**t, "generator_lm_head/kernel": table.T + 1})
    with pytest.raises(SchemaError, match="should be tied"):
        read(other)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"version https://git-lfs.github.com/spec/v1\n", "git-lfs pointer"),
    (b"\xc1\xc1\xc1", "not a msgpack file"),
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb({"a": {"b": 1}}), "'a/b' is a int"),
    (msgpack.packb({"w": msgpack.ExtType(1, b"\x93\x91\x02\xa7float32\xc4\x09" + bytes(9))}), "not flax's"),
    (msgpack.packb({"w": msgpack.ExtType(1, b"\x92\x91\x02\xa7float32")}), "not flax's"),
    (msgpack.packb({"a": 1}) + b"\x00", "extra data"),
])
def test_corrupt_files_raise_format_error(tmp_path, content, message):
    shutil.copy(FLAX / "base" / "config.json", tmp_path / "config.json")
    (tmp_path / flax_format.WEIGHTS).write_bytes(content)
    with pytest.raises(FormatError, match=message):
        read(tmp_path)


def test_truncated_file_raises_format_error(tmp_path):
    shutil.copy(FLAX / "base" / "config.json", tmp_path / "config.json")
    (tmp_path / flax_format.WEIGHTS).write_bytes((FLAX / "base" / flax_format.WEIGHTS).read_bytes()[:-100])
    with pytest.raises(FormatError):
        read(tmp_path)


# ---- Flax-only semantics: refused on write, warned on read ----------------------------------------

@pytest.mark.parametrize("head, change, message", [
    ("masked-lm", {"hidden_act": "relu"}, "generator head applies hidden_act"),
    ("causal-lm", {"hidden_act": "gelu_new"}, "generator head applies hidden_act"),
    ("multiple-choice", {"summary_type": "last"}, "always pools the first token"),
    ("pretraining", {"hidden_act": "gelu_fast"}, "Flax ACT2FN has no such activation"),
    ("multiple-choice", {"summary_activation": "linear"}, "Flax ACT2FN has no such activation"),
])
def test_flax_divergent_configs_are_refused_on_write_and_warned_on_read(tmp_path, caplog, head, change, message):
    ckpt = read(HF / head)
    odd = ckpt.with_(config=ckpt.config.replace(**change))
    with pytest.raises(SchemaError, match=message):
        write(odd, tmp_path / "out", "msgpack")
    assert not (tmp_path / "out").exists()
    folder = _with_tree(tmp_path, FLAX / head, lambda t: t)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **change}))
    with caplog.at_level(logging.WARNING, logger="electra_bridge"):
        read(folder)
    assert message in caplog.text
    write(ckpt, tmp_path / "plain", "msgpack")  # the same head with PT-compatible settings is fine


# ---- transformers' Flax classes load what we write -------------------------------------------------

@functools.lru_cache(maxsize=None)
def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_warning()
    return transformers


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _flax_outputs(model, head, inputs):
    out = model(**inputs)  # explicit token_type_ids: FlaxElectra defaults to ONES, PyTorch to zeros
    names = ("last_hidden_state",) if head == "base" else (
        ("start_logits", "end_logits") if head == "question-answering" else ("logits",))
    return {n: np.asarray(getattr(out, n)) for n in names}


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(PAIRS))
def test_transformers_flax_loads_our_files_exactly(name, tmp_path):
    transformers = _quiet_transformers()
    _, pt_dir = PAIRS[name]
    head = read(pt_dir).head
    out = tmp_path / "ours"
    convert(pt_dir, out, "msgpack")
    capture = _Capture()
    logger = transformers.utils.logging.get_logger("transformers.modeling_flax_utils")
    logger.addHandler(capture)
    try:
        model = getattr(transformers, FLAX_CLASS[head]).from_pretrained(out)
    finally:
        logger.removeHandler(capture)
    assert not [m for m in capture.messages if "were not used" in m or "not initialized" in m], capture.messages
    from flax.traverse_util import flatten_dict

    loaded = {"/".join(k): np.asarray(v) for k, v in flatten_dict(model.params).items()}
    ours = tree(out)
    assert set(loaded) == set(ours)                                   # no missing, no unexpected
    assert all(np.array_equal(loaded[k], ours[k]) for k in ours)      # every weight is ours, bit for bit

    if name in HEADS:
        inputs, expected, _ = golden(head)
    else:  # untied: the reference is our numpy runtime on the PyTorch source
        from electra_bridge.runtimes import CheckpointRunner, probe_batch

        source = read(pt_dir)
        inputs = probe_batch(source.config, head)
        expected = {k: np.asarray(v) for k, v in CheckpointRunner(source).run(head, inputs).outputs.items()}
    got = _flax_outputs(model, head, inputs)
    errors = {k: max_abs(got[k], expected[k]) for k in expected}
    print(f"{name}: FlaxElectra on our msgpack vs source, max-abs {errors}")
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.oracle
@pytest.mark.parametrize("head", ["pretraining", "masked-lm"])
def test_flax_default_token_type_ids_are_ones(head):
    """FlaxElectra without token_type_ids uses ONES (PyTorch: zeros); with explicit ids it equals PyTorch."""
    transformers = _quiet_transformers()
    from electra_bridge.runtimes import CheckpointRunner

    model = getattr(transformers, FLAX_CLASS[head]).from_pretrained(FLAX / head)
    inputs, expected, _ = golden(head)
    explicit = max_abs(_flax_outputs(model, head, inputs)["logits"], expected["logits"])
    implicit_inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    implicit = _flax_outputs(model, head, implicit_inputs)["logits"]
    print(f"{head}: explicit ids {explicit:.2e}, default ids {max_abs(implicit, expected['logits']):.2e}")
    assert explicit <= 1e-5
    assert max_abs(implicit, expected["logits"]) > 1e-2
    ones = {**implicit_inputs, "token_type_ids": np.ones_like(inputs["input_ids"])}
    ours_with_ones = CheckpointRunner(read(FLAX / head)).run(head, ones).outputs["logits"]
    assert max_abs(implicit, ours_with_ones) <= 1e-5                 # it really is "all ones"


# ---- CLI ---------------------------------------------------------------------------------------------

@pytest.mark.requires("jax")
def test_cli_safetensors_msgpack_safetensors(tmp_path):
    src = HF / "masked-lm"
    flax_dir, back = tmp_path / "flax", tmp_path / "back"
    for args in (("convert", src, flax_dir, "--to", "msgpack"), ("convert", flax_dir, back, "--to", "safetensors"),
                 ("verify", back, flax_dir, "--runtime", "jax")):
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert_same_tensors(read(back), read(src), same_config=False)
    info = inspect(flax_dir)
    assert info["format"] == "msgpack" and info["head"] == "masked-lm" and len(info["tensors"]) == 44


def test_cli_refuses_flax_divergent_config(tmp_path):
    src = tmp_path / "relu"
    shutil.copytree(HF / "masked-lm", src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    proc = run_cli("convert", src, tmp_path / "out", "--to", "msgpack")
    assert proc.returncode == 2 and "generator head applies hidden_act" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_h5_to_msgpack_to_safetensors(tmp_path):
    src = FIXTURES / "hf-h5" / "pretraining"
    steps = (("convert", src, tmp_path / "flax", "--to", "msgpack"),
             ("convert", tmp_path / "flax", tmp_path / "pt", "--to", "safetensors"),
             ("verify", tmp_path / "pt", src))
    for args in steps:
        proc = run_cli(*args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert_same_tensors(read(tmp_path / "pt"), read(HF / "pretraining"), same_config=False)


@pytest.mark.parametrize("head", ["pretraining", "masked-lm", "multiple-choice"])
def test_msgpack_to_h5_and_back_is_byte_identical(head, tmp_path):
    convert(FLAX / head, tmp_path / "h5", "h5")                                  # verified hop
    convert(tmp_path / "h5", tmp_path / "flax", "msgpack")                       # verified hop
    assert (tmp_path / "flax" / flax_format.WEIGHTS).read_bytes() == (FLAX / head / flax_format.WEIGHTS).read_bytes()
