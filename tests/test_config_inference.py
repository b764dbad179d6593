"""Sources without config.json: the config is inferred from the tensor shapes (one implementation,
converters/engine/config_inference.py, for TF1 and every HF-layout format), logged, and
overridden with --config."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from helpers import HEADS, spec

from electra_bridge.converters import convert, read, verify
from electra_bridge.converters.engine import config_inference
from electra_bridge.schemas import SchemaError

#: the fields the shapes determine; num_attention_heads, hidden_act and layer_norm_eps are assumed
INFERABLE = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "tie_word_embeddings")
SOURCES = {"safetensors": spec.HF_SAFETENSORS, "bin": spec.HF_BIN, "h5": spec.HF_H5, "msgpack": spec.HF_FLAX}


def _params(heads=HEADS):
    return [pytest.param(name, h, id=f"{name}-{h}") for name, root in SOURCES.items() for h in heads
            if (root / h).is_dir()]


def _without_config(root: Path, head: str, tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    shutil.copytree(root / head, folder)
    (folder / "config.json").unlink()
    return folder


@pytest.mark.parametrize(("source", "head"), _params())
def test_inferred_config_has_the_original_sizes(source, head, tmp_path, caplog):
    original = json.loads((SOURCES[source] / head / "config.json").read_text())
    with caplog.at_level(logging.INFO, logger="electra_bridge"):
        ckpt = read(_without_config(SOURCES[source], head, tmp_path))
    for key in INFERABLE:
        assert getattr(ckpt.config, key) == original.get(key, True), key
    assert ckpt.config.num_labels == len(original.get("id2label", {"0": 0, "1": 1}))
    # causal-lm has masked-lm's tensors: the shapes cannot tell them apart (is_decoder is assumed false)
    assert ckpt.head == ("masked-lm" if head == "causal-lm" else head)
    if source != "h5":   # h5's own plan replaces the provenance with its Keras scope (formats/h5.py)
        assert ckpt.provenance["config"] == config_inference.INFERRED
    line = next(r.getMessage() for r in caplog.records if "config.json missing" in r.getMessage())
    assert "inferred vocab_size=108" in line and "assumed num_attention_heads=1" in line
    assert line.endswith("override with --config FILE")


@pytest.mark.parametrize(("source", "head"), _params(("sequence-classification", "masked-lm")))
def test_convert_with_config_override_equals_the_original(source, head, tmp_path):
    folder = _without_config(SOURCES[source], head, tmp_path)
    given = SOURCES[source] / head / "config.json"
    result = convert(folder, tmp_path / "out", "safetensors", read_options={"config": given})
    assert result.report.ok
    assert verify(tmp_path / "out", SOURCES[source] / head).ok


def test_without_override_the_assumed_heads_are_what_differs(tmp_path):
    """The fixtures have 4 attention heads where Google's rule gives 1: the inferred model is a
    different function, which verify shows; with num_attention_heads fixed it is the original."""
    folder = _without_config(spec.HF_SAFETENSORS, "pretraining", tmp_path)
    convert(folder, tmp_path / "guessed", "safetensors")
    assert not verify(tmp_path / "guessed", spec.HF_SAFETENSORS / "pretraining").ok
    cfg = read(folder).config.to_dict() | {"num_attention_heads": 4}
    (tmp_path / "fixed.json").write_text(json.dumps(cfg))
    convert(folder, tmp_path / "fixed", "h5", read_options={"config": tmp_path / "fixed.json"})
    assert verify(tmp_path / "fixed", spec.HF_SAFETENSORS / "pretraining").ok


def test_untied_decoder_is_inferred_untied(tmp_path):
    untied = _without_config(spec.HF_FLAX, "untied-masked-lm", tmp_path / "a")
    assert read(untied).config.tie_word_embeddings is False


def test_a_stored_tied_alias_is_inferred_tied(tmp_path):
    """pytorch_model.bin stores generator_lm_head.weight beside the word table it equals."""
    assert read(_without_config(spec.HF_BIN, "masked-lm", tmp_path)).config.tie_word_embeddings is True


@pytest.mark.requires("test")   # writes its broken files with the safetensors library
def test_missing_tables_and_layer_gaps_are_one_clear_error(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = _without_config(spec.HF_SAFETENSORS, "base", tmp_path)
    tensors = load_file(folder / "model.safetensors")
    save_file({n: a for n, a in tensors.items() if "query" not in n}, folder / "model.safetensors")
    with pytest.raises(SchemaError, match=r"cannot be inferred: encoder\.layer\.0\.attention\.self\.query\.weight "
                                          r"missing; pass --config FILE"):
        read(folder)
    save_file({n: a for n, a in tensors.items() if "layer.0." not in n}, folder / "model.safetensors")
    with pytest.raises(SchemaError, match="missing; pass --config FILE"):
        read(folder)
    save_file({n.replace("layer.1.", "layer.2."): a for n, a in tensors.items()}, folder / "model.safetensors")
    with pytest.raises(SchemaError, match=r"not numbered 0\.\.L-1 \(found layers \[0, 2\]\)"):
        read(folder)


def test_tf1_uses_the_same_inference(caplog):
    with caplog.at_level(logging.INFO, logger="electra_bridge"):
        ckpt = read(spec.HERE / "tf1" / "chunk")
    assert ckpt.head == "token-classification"
    assert any("config.json missing: inferred" in r.getMessage() and "(discriminator)" in r.getMessage()
               for r in caplog.records)
