"""converters/model_card.py: the README.md of every output folder.

The front matter is read back three ways: PyYAML (when installed), a minimal parser of the subset the
card writes (tested against PyYAML), and huggingface_hub's ``ModelCard`` (what the hub itself runs).
The verification tables come from real reports: ``verify`` of two fixtures of every head.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from helpers import FIXTURES, HEADS

from electra_bridge.converters import model_card, read, verify

CONFIG = json.loads((FIXTURES / "hf" / "sequence-classification" / "config.json").read_text())
FORMATS = ("safetensors", "h5", "msgpack", "onnx", "torchscript", "torch-export", "keras", "keras-hub", "tf1")
LIBRARY = {"safetensors": "transformers", "h5": "transformers", "msgpack": "transformers", "onnx": "onnx",
           "torchscript": "pytorch", "torch-export": "pytorch", "keras": "keras", "keras-hub": "keras-hub", "tf1": None}
PIPELINE = {"base": "feature-extraction", "pretraining": None, "masked-lm": "fill-mask", "causal-lm": "text-generation",
            "sequence-classification": "text-classification", "token-classification": "token-classification",
            "question-answering": "question-answering", "multiple-choice": "multiple-choice"}


def card(report=None, *, head="sequence-classification", fmt="safetensors", source="google-ckpt/", cfg=CONFIG,
         dtype="float32") -> str:
    return model_card.render(cfg, head=head, fmt=fmt, dtype=dtype, source=source, source_format="tf1",
                             report=report, tool_version="9.8.7")


def minimal_front_matter(text: str) -> dict:
    """The YAML subset the card writes: ``key: "json string"`` and ``key:`` followed by ``- "json string"``."""
    lines = text.split("\n")
    assert lines[0] == "---", lines[0]
    end = lines.index("---", 1)
    data: dict = {}
    key = None
    for line in lines[1:end]:
        if line.startswith("- "):
            data[key].append(json.loads(line[2:]))
            continue
        key, _, value = line.partition(":")
        data[key] = json.loads(value) if value.strip() else []
    return data


def front_matter(text: str) -> dict:
    try:
        import yaml
    except ImportError:
        return minimal_front_matter(text)
    return yaml.safe_load(text.split("---\n")[1])


def test_minimal_parser_agrees_with_yaml():
    yaml = pytest.importorskip("yaml")
    for source in ("google/electra-small-discriminator", 'odd "quoted": path #1 / é', "/abs/models--a--b/snapshots/x"):
        text = card(source=source, fmt="tf1")
        assert minimal_front_matter(text) == yaml.safe_load(text.split("---\n")[1])
    with pytest.raises(ValueError):   # a line that is not a JSON string is an error, not a silent guess
        minimal_front_matter('---\nkey: bare words\n---\n')


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("head", HEADS)
def test_front_matter_per_format_and_head(fmt, head):
    hub = pytest.importorskip("huggingface_hub")
    text = card(head=head, fmt=fmt, source="google/electra-small-discriminator")
    data = front_matter(text)
    assert data.get("library_name") == LIBRARY[fmt]
    assert data["tags"][:3] == ["electra", "electra-bridge", fmt]
    assert data.get("pipeline_tag") == PIPELINE[head]
    assert data["base_model"] == "google/electra-small-discriminator"
    parsed = hub.ModelCard(text).data
    assert parsed.library_name == LIBRARY[fmt] and parsed.tags == data["tags"]
    assert parsed.pipeline_tag == PIPELINE[head] and parsed.base_model == "google/electra-small-discriminator"
    assert f"ELECTRA {head} ({fmt})" in text and "electra-bridge 9.8.7" in text


@pytest.mark.parametrize("source, repo", [
    ("google/electra-base-generator", "google/electra-base-generator"),
    ("/opt/hf-cache/hub/models--google--electra-small-discriminator/snapshots/" + "a" * 40,
     "google/electra-small-discriminator"),
    ("cache/models--bert-tiny", "bert-tiny"),
    ("/data/electra_base", None), ("./org/name", None), ("electra_base", None), ("a/b/c", None),
    ("org/../name", None), ("org/na--me", None), ("C:\\models\\electra", None),
])
def test_base_model_only_for_hub_repo_ids(source, repo):
    assert model_card.base_model(source) == repo
    data = front_matter(card(source=source))
    assert data.get("base_model") == repo
    assert f"`{source}`" in card(source=source)   # the source is always named in the body


def test_unverified_card_says_so_loudly():
    text = card(None)
    assert "**NOT verified.**" in text and "| head | output |" not in text


def test_body_names_format_head_dtype_source_and_labels():
    text = card(None, dtype="bfloat16")
    for fragment in ("| format | `safetensors`", "| head | `sequence-classification` (ElectraForSequenceClassification)",
                     "| dtype | bfloat16 |", "| source | `google-ckpt/` |", "| source format | `tf1` |",
                     "| labels | negative, neutral, positive |", "hidden 32, layers 2", "ElectraForSequenceClassification.from_pretrained"):
        assert fragment in text, fragment
    assert text.endswith("```\n") and not text.endswith("\n\n")


def rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(head, output) -> the other cells of the card's verification table."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 7 and cells[0] in HEADS:
            found[(cells[0], cells[1])] = cells[2:]
    return found


@pytest.mark.parametrize("head", HEADS)
def test_real_report_renders_every_output(head):
    report = verify(FIXTURES / "hf" / head, FIXTURES / "hf-bin" / head).to_dict()
    text = card(report, head=head)
    table = rows(text)
    expected = {(h, name): d for h, hr in report["heads"].items() for name, d in hr["outputs"].items()}
    assert set(table) == set(expected) and head in {h for h, _ in table}
    for (h, name), d in expected.items():
        max_abs, max_rel, agreement, tolerance, ok = table[(h, name)]
        assert max_abs == f"{d['max_abs']:.3g}" and max_rel == f"{d['max_rel']:.3g}"
        assert tolerance == f"atol {report['atol']:g}, rtol {report['rtol']:g}" and ok == "yes"
        line = report["heads"][h]["agreement"].get(name)
        assert agreement == ("n/a" if line is None else f"{line['fraction']:.4f} ({line['agree']}/{line['total']} {line['kind']})")
    assert "**passed**" in text and "NOT verified" not in text
    assert "hidden states compared" in text


def test_failing_report_is_marked(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "hf" / "pretraining", bad)
    tensors = st.load_file(bad / "model.safetensors")
    name = "electra.encoder.layer.1.output.dense.weight"
    weight = tensors[name].copy()
    weight.flat[7] += np.float32(0.5)   # one element: a shift of every element would cancel in the LayerNorm
    tensors[name] = weight
    st.save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    report = verify(bad, FIXTURES / "hf" / "pretraining").to_dict()
    assert not report["ok"]
    text = card(report, head="pretraining")
    assert "**FAILED**" in text and "**no**" in text
    assert re.search(r"first divergence: layer 1", text), text


def test_files_adapter_reads_the_checkpoint():
    ckpt = read(FIXTURES / "hf" / "token-classification")
    report = verify(FIXTURES / "hf" / "token-classification", FIXTURES / "hf-flax" / "token-classification")
    (name, data), = model_card.files(ckpt, "h5", report, tool_version="1.2.3").items()
    text = data.decode("utf-8")
    assert name == "README.md"
    assert front_matter(text)["pipeline_tag"] == "token-classification"
    assert "| dtype | float32 |" in text and "TFElectraForTokenClassification" in text
    assert "`this folder` (a) ran against the reference" in text   # never the staging folder's name
    unverified = model_card.files(ckpt, "onnx", dtype="int8")["README.md"].decode()
    assert unverified.count("NOT verified") == 1 and "| dtype | int8 |" in unverified


def test_card_dtype_is_the_stored_dtype():
    import ml_dtypes

    ckpt = read(FIXTURES / "hf" / "base")
    half = ckpt.with_(tensors={n: ckpt.array(n).astype(ml_dtypes.bfloat16) for n in ckpt.tensors})
    assert model_card.stored_dtype(ckpt) == "float32" and model_card.stored_dtype(half) == "bfloat16"
    assert "| dtype | bfloat16 |" in model_card.files(half, "safetensors")["README.md"].decode()
