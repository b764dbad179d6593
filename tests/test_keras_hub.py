"""The ``keras-hub`` format: keras-hub ``ElectraBackbone`` preset folders, read and written (``base``).

A preset we write loads with ``ElectraBackbone.from_preset`` and convert reports its drift from
the erf reference (keras-hub's tanh GELU) under the keras-hub tolerance row; a preset keras-hub
builds itself reads back into a checkpoint whose base outputs match keras-hub's own within that
row (the GELU approximation is the whole difference). (The bit-exact round trip comes from
test_registry.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import max_abs, requires, spec

from electra_bridge.converters import convert, read, verify, write
from electra_bridge.runtimes import CheckpointRunner, probe_batch, tolerance
from electra_bridge.schemas import SchemaError

keras_hub = pytest.importorskip("keras_hub")
pytestmark = requires("keras")

#: (batch, sequence): the probe batch and two shapes it is not
SHAPES = ((3, 11), (1, 7), (4, 19))


def _theirs(backbone, batch) -> dict[str, np.ndarray]:
    from keras import ops

    out = backbone({"token_ids": batch["input_ids"].astype(np.int32),
                    "segment_ids": batch["token_type_ids"].astype(np.int32),
                    "padding_mask": batch["attention_mask"].astype(np.int32)})
    return {k: ops.convert_to_numpy(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    out = tmp_path_factory.mktemp("kh") / "preset"
    result = convert(spec.HF_SAFETENSORS / "base", out, "keras-hub", fmt="safetensors")
    return out, result


def test_convert_writes_a_preset_from_preset_loads_and_reports_the_gelu_drift(ours):
    out, result = ours
    report = result.report
    assert report.ok and (report.atol, report.rtol) == tolerance("keras-hub", "float32") == (1e-3, 1e-3)
    (head,) = report.heads
    drift = head.outputs[0].max_abs
    assert head.outputs[0].name == "last_hidden_state" and 1e-5 < drift <= 1e-3, drift
    backbone = keras_hub.models.ElectraBackbone.from_preset(str(out))
    reference = CheckpointRunner(read(spec.HF_SAFETENSORS / "base", "safetensors"))
    for batch_size, seq in SHAPES[1:]:
        batch = probe_batch(reference.config, "base", batch=batch_size, seq=seq, seed=batch_size)
        theirs = _theirs(backbone, batch)
        assert 1e-5 < max_abs(theirs["sequence_output"], reference.run("base", batch).outputs[
            "last_hidden_state"]) <= 1e-3
        assert not np.any(theirs["pooled_output"])     # the pooler ELECTRA lacks is written as zeros


def test_the_folder_is_keras_hubs_own(ours):
    out, _ = ours
    config = json.loads((out / "config.json").read_text())
    assert config["class_name"] == "ElectraBackbone" and config["config"]["num_layers"] == spec.CONFIG[
        "num_hidden_layers"]
    vocabulary = (out / "assets/tokenizer/vocabulary.txt").read_bytes()
    assert vocabulary == (spec.HF_SAFETENSORS / "base/vocab.txt").read_bytes()
    assert not (out / "vocab.txt").exists()
    tokenizer = keras_hub.tokenizers.ElectraTokenizer.from_preset(str(out))
    ids = [int(i) for i in np.asarray(tokenizer("hello world"))]
    assert ids == [spec.VOCAB.index("hello"), spec.VOCAB.index("world")]


def test_reading_our_preset_gives_the_weights_and_says_what_keras_hub_computes(ours):
    out, _ = ours
    back = read(out, "keras-hub")
    assert back.head == "base" and back.config.hidden_act == "gelu" and "tanh" in back.provenance["activation"]
    assert set(back.assets) == {"vocab.txt"}
    assert verify(out, spec.HF_SAFETENSORS / "base").ok        # the weights, bit for bit: ELECTRA's function


#: a preset keras-hub built and saved itself, random weights (fixtures/make_keras_hub.py)
THEIRS = spec.KERAS_HUB / "random"


def test_a_preset_keras_hub_built_reads_back_to_keras_hubs_outputs(tmp_path):
    """Within the documented keras-hub row; the drift is the tanh GELU alone (the same weights run with
    the tanh form agree to float32 precision)."""
    backbone = keras_hub.models.ElectraBackbone.from_preset(str(THEIRS))
    ckpt = read(THEIRS, "keras-hub")
    assert ckpt.head == "base" and ckpt.config.hidden_act == "gelu"
    atol, rtol = tolerance("keras-hub", "float32")
    runners = {act: CheckpointRunner(ckpt.with_(config=ckpt.config.replace(hidden_act=act)))
               for act in ("gelu", "gelu_new")}
    for batch_size, seq in SHAPES:
        batch = probe_batch(ckpt.config, "base", batch=batch_size, seq=seq, seed=batch_size)
        theirs = _theirs(backbone, batch)["sequence_output"]
        ours = runners["gelu"].run("base", batch).outputs["last_hidden_state"]
        assert np.all(np.abs(ours - theirs) <= atol + rtol * np.abs(theirs)) and max_abs(ours, theirs) > 1e-5
        tanh = runners["gelu_new"].run("base", batch).outputs["last_hidden_state"]
        assert max_abs(tanh, theirs) <= 1e-5                   # the same weights under tanh: keras-hub's function
    # written back by us it is the same preset: keras-hub's outputs, through from_preset
    write(ckpt, tmp_path / "again", "keras-hub")
    again = keras_hub.models.ElectraBackbone.from_preset(str(tmp_path / "again"))
    batch = probe_batch(ckpt.config, "base", batch=2, seq=9, seed=3)
    assert max_abs(_theirs(again, batch)["sequence_output"], _theirs(backbone, batch)["sequence_output"]) == 0.0


def test_the_pooler_is_ignored_on_reading_and_the_vocabulary_travels(tmp_path):
    ckpt = read(THEIRS, "keras-hub")
    assert not [n for n in ckpt.tensors if "pool" in n]
    assert ckpt.assets["vocab.txt"].decode().splitlines() == list(spec.VOCAB)
    write(ckpt, tmp_path / "hf", "safetensors")            # to HF: a vocab.txt, not keras-hub's tokenizer.json
    assert (tmp_path / "hf/vocab.txt").read_bytes() == ckpt.assets["vocab.txt"]
    assert "model" in json.loads((tmp_path / "hf/tokenizer.json").read_text())


def test_an_activation_keras_hub_cannot_compute_is_refused(tmp_path):
    src = read(spec.HF_SAFETENSORS / "base", "safetensors")
    relu = src.with_(config=src.config.replace(hidden_act="relu"))
    with pytest.raises(SchemaError, match="hidden_act relu"):
        write(relu, tmp_path / "out", "keras-hub")


def test_only_the_base_head_is_written(tmp_path):
    with pytest.raises(SchemaError, match="base"):
        write(read(spec.HF_SAFETENSORS / "masked-lm", "safetensors"), tmp_path / "out", "keras-hub")
