"""The canonical schema: config round trip and validation, tensor table, heads."""

import json

import numpy as np
import pytest

from helpers import spec

from electra_bridge.schemas import (
    HEADS, Checkpoint, ElectraConfig, LazyTensor, SchemaError, detect_head, google_config, head_shapes, output_shape,
)

TINY = ElectraConfig(**spec.CONFIG)


def test_config_roundtrips_through_hf_config_json():
    raw = json.loads((spec.HF_SAFETENSORS / "sequence-classification" / "config.json").read_text())
    cfg = ElectraConfig.from_dict(raw)
    assert cfg.labels == ("negative", "neutral", "positive")
    assert cfg.architectures == ("ElectraForSequenceClassification",)
    again = cfg.to_dict()
    for key in ("vocab_size", "embedding_size", "hidden_size", "id2label", "label2id", "transformers_version"):
        assert again[key] == raw[key], key
    assert ElectraConfig.from_dict(again) == cfg


def test_config_num_labels_without_id2label():
    assert ElectraConfig.from_dict({"num_labels": 5}).num_labels == 5


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 30, "num_attention_heads": 4}, "not divisible"),
    ({"hidden_act": "mish"}, "hidden_act"),
    ({"position_embedding_type": "relative_key"}, "relative"),
])
def test_config_validation_names_the_problem(changes, message):
    with pytest.raises(SchemaError, match=message):
        TINY.replace(**changes).validate()


def test_question_answering_needs_two_labels():
    with pytest.raises(SchemaError, match="exactly 2 labels"):
        TINY.replace(labels=("a", "b", "c")).validate("question-answering")


def test_not_electra_is_refused():
    with pytest.raises(SchemaError, match="model_type"):
        ElectraConfig.from_dict({"model_type": "bert"})


@pytest.mark.parametrize("head, count", [("base", 39), ("pretraining", 43), ("masked-lm", 44), ("causal-lm", 44),
                                         ("sequence-classification", 43), ("multiple-choice", 43),
                                         ("token-classification", 41), ("question-answering", 41)])
def test_tensor_counts_match_transformers(head, count):
    # state-dict sizes transformers gives a 2-layer model with E != H (tied decoder not stored)
    assert len(head_shapes(TINY, head)) == count


def test_embeddings_project_only_when_widths_differ():
    assert "embeddings_project.weight" in head_shapes(TINY, "base")
    same = TINY.replace(embedding_size=TINY.hidden_size)
    assert not any(n.startswith("embeddings_project") for n in head_shapes(same, "base"))


def test_untied_decoder_is_a_real_tensor():
    assert "generator_lm_head.weight" not in head_shapes(TINY, "masked-lm")
    untied = head_shapes(TINY.replace(tie_word_embeddings=False), "masked-lm")
    assert untied["generator_lm_head.weight"] == (TINY.vocab_size, TINY.embedding_size)


def test_shapes_follow_the_torch_layout():
    shapes = head_shapes(TINY, "masked-lm")
    assert shapes["encoder.layer.1.intermediate.dense.weight"] == (37, 32)  # [out, in]
    assert shapes["generator_predictions.dense.weight"] == (16, 32)


def test_detect_head_from_tensor_names():
    for head in HEADS:
        if head == "causal-lm":
            continue
        assert detect_head(set(head_shapes(TINY, head)), TINY) == head
    assert detect_head(set(head_shapes(TINY, "causal-lm")), TINY.replace(is_decoder=True)) == "causal-lm"


def test_output_shapes():
    assert output_shape(TINY, "multiple-choice", "logits", 2, 7, choices=3) == (2, 3)
    assert output_shape(TINY, "masked-lm", "logits", 2, 7) == (2, 7, TINY.vocab_size)


def test_google_sizes_follow_the_size_rule():
    base = google_config("base")
    assert (base.hidden_size, base.num_attention_heads, base.intermediate_size) == (768, 12, 3072)
    gen = google_config("base", generator_hidden_size=1 / 3)
    assert (gen.hidden_size, gen.num_attention_heads) == (256, 4)


def test_checkpoint_validate_reports_every_problem_sorted():
    shapes = head_shapes(TINY, "pretraining")
    tensors = {n: np.zeros(s, np.float32) for n, s in shapes.items()}
    del tensors["encoder.layer.0.attention.self.key.bias"]
    tensors["embeddings.LayerNorm.weight"] = np.zeros(3, np.float32)
    tensors["bogus"] = np.zeros(1, np.float32)
    with pytest.raises(SchemaError) as err:
        Checkpoint(TINY, "pretraining", tensors).validate()
    text = str(err.value)
    assert "missing (1): encoder.layer.0.attention.self.key.bias" in text
    assert "unexpected (1): bogus" in text
    assert "embeddings.LayerNorm.weight: file has [3], config needs [16]" in text


def test_checkpoint_is_immutable_and_lazy():
    calls = []
    lazy = LazyTensor((2,), np.dtype(np.float32), lambda: calls.append(1) or np.ones(2, np.float32))
    ckpt = Checkpoint(TINY, "base", {"x": lazy})
    assert not calls
    with pytest.raises(TypeError):
        ckpt.tensors["y"] = np.zeros(1)
    assert ckpt.array("x").tolist() == [1.0, 1.0] and calls == [1]
