"""--max-shard-size: sharded safetensors, h5 and msgpack outputs, checked against transformers' own sharded saves.

For each format the same model is saved by transformers (``save_pretrained(max_shard_size=...)``)
and written by us at the same size: shard file names, the index JSON and every shard's bytes
must be equal. transformers' classes then load our shards, our readers read them back bit for
bit (every head), and a sharded write stays atomic.
"""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pytest
from helpers import FIXTURES, HEADS, assert_same_tensors, golden, max_abs, run_cli, spec

from electra_bridge.converters import convert, read, write
from electra_bridge.converters.engine import shards
from electra_bridge.converters.engine.format import NativeTensor
from electra_bridge.schemas import LazyTensor, SchemaError

TF_HEADS = tuple(h for h in HEADS if h != "causal-lm")
#: 3000 B is below the word-embedding table (108 x 16 x 4 B): HUB gives it a shard of its own, LEGACY
#: leaves an empty shard before it; 20KB packs several tensors per shard
SIZES = (3000, "20KB")
#: format -> (its weights name, index name, fixture folder holding that format)
FORMATS = {"safetensors": ("model.safetensors", "model.safetensors.index.json", FIXTURES / "hf"),
           "h5": ("tf_model.h5", "tf_model.h5.index.json", FIXTURES / "hf-h5"),
           "msgpack": ("flax_model.msgpack", "flax_model.msgpack.index.json", FIXTURES / "hf-flax")}


def _nt(name: str, nbytes: int) -> NativeTensor:
    return NativeTensor(name, (nbytes // 4,), np.dtype(np.float32), lambda: np.zeros(nbytes // 4, np.float32))


def _weight_files(folder, weights: str) -> list[str]:
    stem = weights.partition(".")[0]
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(stem))


# ---- sizes and the split rules --------------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("text", ["5GB", "200MB", "10KB", "1GiB", "3MiB", "7KiB", "5Gb", "12kb", "40mb", " 8KB"])
def test_sizes_parse_as_transformers_parses_them(text):
    from transformers.utils.hub import convert_file_size_to_int

    assert shards.parse_size(text) == convert_file_size_to_int(text.strip())


def test_plain_bytes_and_bad_sizes():
    assert shards.parse_size("1000") == shards.parse_size(1000) == 1000
    for bad in ("5TB", "1.5GB", "GB", "", "-5", "five", "0", 0, None, True):
        with pytest.raises(SchemaError, match="--max-shard-size"):
            shards.parse_size(bad)


CASES = ([40, 160, 40, 40], [160, 160, 40], [40, 40, 40, 40, 100], [100, 1, 99], [4, 8])


@pytest.mark.requires("test")   # huggingface_hub comes with transformers
@pytest.mark.parametrize("sizes", CASES)
def test_hub_rule_is_huggingface_hubs_split(sizes):
    """An oversized tensor gets a shard of its own at once (the open one stays open)."""
    from huggingface_hub.serialization import split_state_dict_into_shards_factory

    tensors = [_nt(f"t{i}", n) for i, n in enumerate(sizes)]
    theirs = split_state_dict_into_shards_factory({t.name: t for t in tensors}, get_storage_size=shards.nbytes,
                                                  filename_pattern="model{suffix}.safetensors", max_shard_size=100)
    ours = shards.split(tensors, 100, shards.HUB)
    assert list(theirs.filename_to_tensors.values()) == [[t.name for t in s] for s in ours]
    assert [[t.name for t in s] for s in shards.split([_nt("a", 40), _nt("b", 160), _nt("c", 40)],
                                                      100, shards.HUB)] == [["b"], ["a", "c"]]


@pytest.mark.oracle
@pytest.mark.parametrize("sizes", CASES)
def test_legacy_rule_is_flax_and_tf_shard_checkpoint(sizes):
    """A tensor that would tip the open shard over closes it, even an empty one (then no key names it)."""
    from transformers.modeling_flax_utils import flax_shard_checkpoint

    tensors = [_nt(f"t{i}", n) for i, n in enumerate(sizes)]
    files, index = flax_shard_checkpoint({t.name: t.load() for t in tensors}, max_shard_size=100)
    ours = shards.split(tensors, 100, shards.LEGACY)
    assert [list(block) for block in files.values()] == [[t.name for t in s] for s in ours]
    names = [shards.shard_name("flax_model.msgpack", i, len(ours)) for i in range(len(ours))]
    assert list(files) == (names if len(ours) > 1 else ["flax_model.msgpack"])
    assert shards.split([_nt("a", 160), _nt("b", 60), _nt("c", 60)], 100, shards.LEGACY)[0] == []


# ---- equal to transformers' own sharded saves -----------------------------------------------------

def _transformers_model(fmt: str, head: str):
    import transformers

    prefix = {"safetensors": "", "h5": "TF", "msgpack": "Flax"}[fmt]
    return getattr(transformers, prefix + spec.HF_CLASS[head]).from_pretrained(FORMATS[fmt][2] / head)


def _h5_layout(path) -> dict:
    import h5py

    out = {}
    with h5py.File(path) as f:
        out["/"] = {k: [str(x) for x in np.asarray(v).ravel()] for k, v in f.attrs.items()}
        def visit(name, obj):
            datasets = hasattr(obj, "shape")
            out[name] = (dict(obj.attrs), obj.shape, str(obj.dtype), obj[()].tobytes()) if datasets else dict(obj.attrs)
        f.visititems(visit)
    return out


def _assert_same_save(fmt: str, head: str, tmp_path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    weights, index, fixtures = FORMATS[fmt]
    model = _transformers_model(fmt, head)
    ckpt = read(fixtures / head)
    for size in SIZES:
        theirs, ours = tmp_path / f"theirs-{size}", tmp_path / f"ours-{size}"
        model.save_pretrained(theirs, max_shard_size=size)
        write(ckpt, ours, fmt, max_shard_size=size)
        names = _weight_files(theirs, weights)
        assert len(names) > 2 and names == _weight_files(ours, weights), (size, names)
        expected = (theirs / index).read_text()
        if fmt == "h5":   # the Keras instance scope counts models per process (tf_electra_model_1 for the
            # second), which transformers ignores on loading; ours is a fresh process's
            from electra_bridge.converters.formats.h5 import TF_MODELS

            scope = next(iter(json.loads(expected)["weight_map"])).partition("/")[0]
            expected = expected.replace(f'"{scope}/', f'"{TF_MODELS[head][1]}/')
        assert (ours / index).read_text() == expected, size
        if fmt == "h5":   # the same datasets, attributes and values, then the same bytes
            assert all(_h5_layout(theirs / n) == _h5_layout(ours / n) for n in names if n.endswith(".h5"))
        assert [n for n in names if n != index and not filecmp.cmp(theirs / n, ours / n, shallow=False)] == [], size
        assert_same_tensors(read(ours), ckpt)
        if size == 3000 and fmt == "h5":   # the word table comes first: transformers leaves an empty first shard
            assert shards.shard_name(weights, 0, len(names) - 1) not in json.loads((ours / index).read_text())[
                "weight_map"].values()


@pytest.mark.oracle
@pytest.mark.requires("torch")
@pytest.mark.parametrize("head", HEADS)
def test_safetensors_shards_equal_pytorch_save_pretrained(head, tmp_path):
    _assert_same_save("safetensors", head, tmp_path)


@pytest.mark.oracle
@pytest.mark.requires("tf")
@pytest.mark.parametrize("head", TF_HEADS)
def test_h5_shards_equal_tf_save_pretrained(head, tmp_path):
    _assert_same_save("h5", head, tmp_path)


@pytest.mark.oracle
@pytest.mark.requires("jax")
@pytest.mark.parametrize("head", HEADS)
def test_msgpack_shards_equal_flax_save_pretrained(head, tmp_path):
    _assert_same_save("msgpack", head, tmp_path)


# ---- transformers loads our shards; convert verifies them --------------------------------------

def _outputs(fmt: str, model, inputs: dict) -> dict:
    if fmt == "safetensors":
        import torch

        with torch.no_grad():
            out = model.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items() if k != "hidden_states"}
    if fmt == "h5":
        import tensorflow as tf

        return {k: v.numpy() for k, v in model({k: tf.constant(v) for k, v in inputs.items()}, training=False).items()}
    return {k: np.asarray(v) for k, v in model(**inputs).items()}


@pytest.mark.oracle
@pytest.mark.parametrize("fmt", [pytest.param("safetensors", marks=pytest.mark.requires("torch")),
                                 pytest.param("h5", marks=pytest.mark.requires("tf")),
                                 pytest.param("msgpack", marks=pytest.mark.requires("jax"))])
@pytest.mark.parametrize("head", HEADS)
def test_transformers_loads_our_verified_shards_with_equal_outputs(fmt, head, tmp_path):
    if fmt == "h5" and head == "causal-lm":
        pytest.skip("TF has no ElectraForCausalLM")
    import transformers

    out = tmp_path / "out"
    result = convert(spec.HF_SAFETENSORS / head, out, fmt, write_options={"max_shard_size": "20KB"})
    assert result.report.ok and (out / FORMATS[fmt][1]).exists() and not (out / FORMATS[fmt][0]).exists()
    prefix = {"safetensors": "", "h5": "TF", "msgpack": "Flax"}[fmt]
    cls = getattr(transformers, prefix + spec.HF_CLASS[head])
    if fmt == "msgpack":   # Flax reports no loading info: a missing weight would be random and fail below
        model = cls.from_pretrained(out)
    else:
        model, info = cls.from_pretrained(out, output_loading_info=True)
        assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    inputs, expected, _ = golden(head)
    got = _outputs(fmt, model, inputs)
    errors = {k: max_abs(got[k], v) for k, v in expected.items()}
    rel = {k: float(np.max(np.abs(got[k] - v) / np.maximum(np.abs(v), 1e-6))) for k, v in expected.items()}
    print(f"{fmt} {head}: transformers on our shards vs golden, max-abs {errors} max-rel {rel}")
    assert max(errors.values()) <= 1e-5, errors


# ---- our readers, the CLI, atomic writes --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["safetensors", "h5", "msgpack"])
@pytest.mark.parametrize("head", HEADS)
def test_sharded_round_trip_is_bit_exact(fmt, head, tmp_path):
    src = read(spec.HF_SAFETENSORS / head, head="masked-lm" if fmt == "h5" and head == "causal-lm" else None)
    write(src, tmp_path / "out", fmt, max_shard_size=4096)
    index = json.loads((tmp_path / "out" / FORMATS[fmt][1]).read_text())
    assert len(set(index["weight_map"].values())) > 3
    back = read(tmp_path / "out")
    assert back.provenance["file"] == FORMATS[fmt][1]
    assert_same_tensors(back, src)


def test_below_the_limit_one_file_and_no_index(tmp_path):
    for fmt, (weights, index, _) in FORMATS.items():
        out = write(read(spec.HF_SAFETENSORS / "pretraining"), tmp_path / fmt, fmt, max_shard_size="1MB")
        assert (out / weights).is_file() and not (out / index).exists()


def test_cli_max_shard_size(tmp_path):
    proc = run_cli("convert", spec.HF_SAFETENSORS / "pretraining", tmp_path / "out", "--to", "msgpack",
                   "--max-shard-size", "20KB")
    assert proc.returncode == 0, proc.stderr   # 0: written and verified equal
    assert len(list((tmp_path / "out").glob("flax_model-*-of-*.msgpack"))) > 1
    bad = run_cli("convert", spec.HF_SAFETENSORS / "pretraining", tmp_path / "bad", "--to", "h5",
                  "--max-shard-size", "20 parsecs")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "--max-shard-size" in bad.stderr
    assert not (tmp_path / "bad").exists()
    other = run_cli("convert", spec.HF_SAFETENSORS / "pretraining", tmp_path / "tf1", "--to", "tf1",
                    "--max-shard-size", "20KB")
    assert other.returncode == 2 and other.stderr.startswith("error:") and "--max-shard-size" in other.stderr


@pytest.mark.parametrize("fmt", ["safetensors", "h5", "msgpack"])
def test_a_failing_shard_leaves_nothing_at_out(fmt, tmp_path):
    """The third shard's tensor fails to load: no OUT, no staging folder, nothing half-written."""
    src = read(spec.HF_SAFETENSORS / "pretraining")
    doomed = "encoder.layer.1.output.dense.weight"

    def fail():
        raise RuntimeError("disk gone")
    tensors = {**src.tensors, doomed: LazyTensor(src.tensors[doomed].shape, src.tensors[doomed].dtype, fail)}
    with pytest.raises(RuntimeError, match="disk gone"):
        write(src.with_(tensors=tensors), tmp_path / "out", fmt, max_shard_size=4096)
    assert list(tmp_path.iterdir()) == []


def test_a_sharded_output_that_fails_verification_leaves_nothing(tmp_path, monkeypatch):
    """convert verifies the shards it wrote (read back through the index) and removes them on a mismatch."""
    from electra_bridge.converters import VerificationError
    from electra_bridge.converters.engine import pipeline

    real_write = pipeline.write

    def corrupting_write(fmt, ckpt, out, **options):
        tensors = dict(ckpt.arrays())
        weight = tensors["encoder.layer.1.output.dense.weight"].copy()
        weight[3, 5] += 0.05   # one element: the LayerNorm after it cannot cancel it
        return real_write(fmt, ckpt.with_(tensors={**tensors, "encoder.layer.1.output.dense.weight": weight}), out,
                          **options)

    monkeypatch.setattr(pipeline, "write", corrupting_write)
    with pytest.raises(VerificationError) as err:
        convert(spec.HF_SAFETENSORS / "pretraining", tmp_path / "out", "msgpack",
                write_options={"max_shard_size": 4096})
    assert not err.value.report.ok
    assert list(tmp_path.iterdir()) == []
