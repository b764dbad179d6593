"""--text: our tokenizers-built ELECTRA WordPiece against transformers' ElectraTokenizerFast (the oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FIXTURES, run_cli

from electra_bridge.converters import text
from electra_bridge.schemas import SchemaError

SRC = FIXTURES / "hf" / "pretraining"
VOCAB = SRC / "vocab.txt"

SENTENCES = [
    "Hello world, the café is naïve!",
    "Résumé über ELECTRA: convert the model.",
    "中国人 好文字",
    "unable tokenizing [MASK] frameworks?",
    "ZZZ qqq électra-model (2024) ; 42",
    "  spaced\tout\n text  ",
]
PAIRS = ["a résumé", "the model's check", "人文", "convert", "über naïve café", "x"]


def ours(sentences, pairs=None, **settings):
    assets = {"vocab.txt": VOCAB.read_bytes()}
    if settings:
        vocab = text.parse_vocab(assets["vocab.txt"])
        return text.encode(text.build_tokenizer(vocab, text.TokenizerSettings(**settings)), sentences, pairs,
                           pad_id=vocab["[PAD]"])
    return text.tokenize(assets, sentences, pairs)


@pytest.mark.oracle
@pytest.mark.parametrize("paired", [False, True], ids=["single", "pair"])
def test_same_ids_as_electra_tokenizer_fast(paired):
    from transformers import ElectraTokenizerFast

    ref = ElectraTokenizerFast(vocab_file=str(VOCAB))
    pairs = PAIRS if paired else None
    got = ours(SENTENCES, pairs)
    want = ref(SENTENCES, pairs, padding=True, return_tensors="np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # the cases the issue names really were exercised: accents folded, CJK split, pair segments
    tokens = ref.convert_ids_to_tokens(got["input_ids"][2])
    assert tokens[:7] == ["[CLS]", "中", "国", "人", "好", "文", "字"]
    assert "cafe" in ref.convert_ids_to_tokens(got["input_ids"][0])
    if paired:
        assert set(np.unique(got["token_type_ids"][0])) == {0, 1}


@pytest.mark.oracle
@pytest.mark.parametrize("settings", [
    {"do_lower_case": False},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": True, "tokenize_chinese_chars": False},
])
def test_settings_follow_the_oracle(settings):
    from transformers import ElectraTokenizerFast

    ref = ElectraTokenizerFast(vocab_file=str(VOCAB), **settings)
    got = ours(SENTENCES, PAIRS, **settings)
    want = ref(SENTENCES, PAIRS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["token_type_ids"], want["token_type_ids"])


def test_settings_read_from_assets():
    vocab = text.parse_vocab(VOCAB.read_bytes())
    cfg = json.dumps({"do_lower_case": False, "strip_accents": False, "tokenize_chinese_chars": True}).encode()
    s = text.settings_from_assets({"vocab.txt": VOCAB.read_bytes(), "tokenizer_config.json": cfg}, vocab)
    assert (s.do_lower_case, s.strip_accents) == (False, False)
    assert text.settings_from_assets({"tokenizer.json": (SRC / "tokenizer.json").read_bytes()}).do_lower_case is True
    # a bare vocab.txt: upper-case word pieces mean a cased vocabulary
    assert text.guess_lowercase(vocab) is True
    assert text.guess_lowercase({**vocab, "Hello": len(vocab)}) is False


def test_vocab_parsing_matches_line_numbers():
    lines = VOCAB.read_text(encoding="utf-8").splitlines()
    vocab = text.parse_vocab(VOCAB.read_bytes())
    assert len(vocab) == len(lines) and all(vocab[t] == i for i, t in enumerate(lines))
    assert text.vocab_from_assets({"tokenizer.json": (SRC / "tokenizer.json").read_bytes()}) == vocab


@pytest.mark.requires("tokenizers")
def test_errors_are_clear():
    with pytest.raises(SchemaError, match="--text-pair is given 1 times but --text 2"):
        ours(["a", "b"], ["c"])
    with pytest.raises(SchemaError, match="no \\[CLS\\] token"):
        text.build_tokenizer({"[UNK]": 0, "[SEP]": 1, "a": 2})
    with pytest.raises(SchemaError, match="no vocabulary"):
        text.tokenize({"config.json": b"{}"}, ["a"])


@pytest.mark.requires("tokenizers")
def test_long_text_is_truncated_to_the_model(caplog):
    vocab = text.parse_vocab(VOCAB.read_bytes())
    tok = text.build_tokenizer(vocab)
    batch = text.encode(tok, ["the model " * 40, "short"], pad_id=0, max_length=40)
    assert batch["input_ids"].shape == (2, 40)
    assert batch["input_ids"][0, -1] == vocab["[SEP]"]
    assert "truncated" in caplog.text
    assert text.encode(tok, ["the model " * 40], pad_id=0)["input_ids"].shape[1] > 40  # truncation was not sticky


@pytest.mark.oracle
def test_verify_text_end_to_end(tmp_path):
    """`verify --text ... --text-pair ...` runs the models on exactly the oracle's ids."""
    from transformers import ElectraTokenizerFast

    args = []
    for a, b in zip(SENTENCES[:3], PAIRS[:3]):
        args += ["--text", a, "--text-pair", b]
    report_path = tmp_path / "r.json"
    proc = run_cli("verify", SRC, FIXTURES / "hf" / "masked-lm", *args, "--report", report_path)
    assert proc.returncode == 1, proc.stderr      # different models: base differs
    report = json.loads(report_path.read_text())
    want = ElectraTokenizerFast(vocab_file=str(VOCAB))(SENTENCES[:3], PAIRS[:3], padding=True)
    assert report["inputs"]["base:input_ids"] == [3, len(want["input_ids"][0])]
    assert report["source"].startswith("text (3 pairs")

    proc = run_cli("verify", SRC, SRC, "--text", "über café 中国人", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_without_tokenizers_text_fails_cleanly_and_conversion_still_works(tmp_path):
    """tokenizers and matplotlib are extras: --text/--plot say which extra to install; convert carries on."""
    from helpers import run_python

    src = tmp_path / "vocab-only"
    src.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (src / name).write_bytes((SRC / name).read_bytes())
    proc = run_python(f"""
        import sys
        from electra_bridge.converters import cli
        code = cli.main(["verify", {str(SRC)!r}, {str(SRC)!r}, "--text", "hello"])
        print("text exit", code)
        code = cli.main(["verify", {str(SRC)!r}, {str(SRC)!r}, "--plot", {str(tmp_path / 'p.png')!r}])
        print("plot exit", code)
        code = cli.main(["convert", {str(src)!r}, {str(tmp_path / 'out')!r}, "--to", "safetensors", "-q"])
        print("convert exit", code)
    """, blocked=("tokenizers", "matplotlib"))
    assert "text exit 2" in proc.stdout and "plot exit 2" in proc.stdout, proc.stdout + proc.stderr
    assert "pip install 'electra-bridge[tokenizers]'" in proc.stderr
    assert "pip install 'electra-bridge[plot]'" in proc.stderr
    assert "convert exit 0" in proc.stdout, proc.stderr
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} <= written
    assert "tokenizer.json" not in written      # needs the library; AutoTokenizer builds it from vocab.txt
    assert not (tmp_path / "p.png").exists()
