"""Every output folder is a publishable artifact: tokenizer files (or a loud warning, and
--tokenizer DIR to add them), a model card Hugging Face parses, electra-bridge.json with the
verification, and convert --report/--plot written also when the check fails."""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES, run_cli

SRC = FIXTURES / "hf" / "masked-lm"
NO_TOKENIZER = FIXTURES / "hf-flax" / "masked-lm"
TF1 = FIXTURES / "tf1" / "pretraining"


def test_a_source_without_tokenizer_files_is_said_loudly_and_tokenizer_adds_them(tmp_path):
    assert not (NO_TOKENIZER / "vocab.txt").exists()
    bare = run_cli("convert", NO_TOKENIZER, tmp_path / "bare", "--to", "safetensors")
    assert bare.returncode == 0, bare.stderr
    assert "has no tokenizer files" in bare.stderr and "--tokenizer DIR" in bare.stderr
    assert not (tmp_path / "bare" / "vocab.txt").exists()
    given = run_cli("convert", NO_TOKENIZER, tmp_path / "given", "--to", "safetensors", "--tokenizer", SRC)
    assert given.returncode == 0 and "has no tokenizer files" not in given.stderr, given.stderr
    assert (tmp_path / "given" / "vocab.txt").read_bytes() == (SRC / "vocab.txt").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_cli("convert", NO_TOKENIZER, tmp_path / "x", "--to", "safetensors", "--tokenizer", empty)
    assert refused.returncode == 2 and "holds neither vocab.txt nor tokenizer.json" in refused.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.requires("test")
def test_tokenizer_added_loads_with_autotokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    assert run_cli("convert", NO_TOKENIZER, tmp_path / "out", "--to", "safetensors", "--tokenizer", SRC).returncode == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    reference = transformers.AutoTokenizer.from_pretrained(SRC)
    assert tok("the model")["input_ids"] == reference("the model")["input_ids"]


@pytest.mark.requires("test")
@pytest.mark.parametrize("to", ["safetensors", "onnx", "tf1"])
def test_model_card_and_record_describe_the_folder(tmp_path, to):
    from huggingface_hub import ModelCard

    src = TF1 if to == "tf1" else SRC
    out = tmp_path / "out"
    proc = run_cli("convert", src, out, "--to", to)
    assert proc.returncode == 0, proc.stderr
    card = ModelCard((out / "README.md").read_text())
    assert "electra-bridge" in card.data.tags and to in card.data.tags
    record = json.loads((out / "electra-bridge.json").read_text())
    assert record["format"] == to and record["verification"]["ok"] is True
    head = record["head"]
    assert head in record["verification"]["heads"] and f"| {head} |" in card.text
    unverified = run_cli("convert", src, tmp_path / "unverified", "--to", to, "--no-verify")
    assert unverified.returncode == 0
    assert json.loads((tmp_path / "unverified" / "electra-bridge.json").read_text())["verification"] is None
    assert "NOT verified" in (tmp_path / "unverified" / "README.md").read_text()


@pytest.mark.requires("plot")
def test_convert_writes_report_and_plot_also_when_the_check_fails(tmp_path):
    ok = run_cli("convert", SRC, tmp_path / "ok", "--to", "safetensors", "--report", tmp_path / "ok.md",
                 "--plot", tmp_path / "ok.png")
    assert ok.returncode == 0 and "EQUAL" in (tmp_path / "ok.md").read_text()
    assert (tmp_path / "ok.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # bfloat16 weights judged at a float32-strict tolerance: a real mismatch, nothing written, report kept
    failed = run_cli("convert", SRC, tmp_path / "bf16", "--to", "safetensors", "--dtype", "bfloat16",
                     "--atol", "0", "--rtol", "0", "--report", tmp_path / "bf16.json", "--json")
    doc = json.loads(failed.stdout)
    assert failed.returncode == 1 and not (tmp_path / "bf16").exists()
    assert doc["exit_code"] == 1 and doc["outputs"] == [] and doc["report"]["ok"] is False
    assert json.loads((tmp_path / "bf16.json").read_text())["heads"] == doc["report"]["heads"]
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and not line.endswith(":") and ".partial-" not in failed.stderr


def test_report_of_net_both_is_one_file_per_net(tmp_path):
    proc = run_cli("convert", TF1, tmp_path / "both", "--to", "safetensors", "--net", "both",
                   "--report", tmp_path / "r.md")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.discriminator.md").is_file() and (tmp_path / "r.generator.md").is_file()


def test_report_needs_the_verification(tmp_path):
    proc = run_cli("convert", SRC, tmp_path / "x", "--to", "safetensors", "--no-verify", "--report", tmp_path / "r.md")
    assert proc.returncode == 2 and "drop --no-verify" in proc.stderr and not (tmp_path / "x").exists()
