"""Tokenizer files travel with every conversion: output folders load with transformers' AutoTokenizer
and tokenize exactly like ElectraTokenizerFast on the source vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import FIXTURES

from electra_bridge.converters import FORMATS, convert, get_format
from electra_bridge.converters.tokenizer_assets import TOKENIZER_FILES, complete
from electra_bridge.schemas import ElectraConfig

SRC = FIXTURES / "hf" / "pretraining"
SENTENCES = ["Hello world, the café is naïve!", "Résumé über ELECTRA 中国人", "unable [MASK] tokenizing"]
PAIRS = ["a résumé", "好文字", "convert the model"]
#: checkpoint formats whose folders carry HF tokenizer files (a keras-hub preset carries keras-hub's own)
CHECKPOINT_FORMATS = [n for n in FORMATS if get_format(n).kind == "checkpoint" and get_format(n).writes_hf_files]


def vocab_only(tmp: Path, vocab: list[str] | None = None) -> Path:
    """The fixture as a Google release ships it: weights, config and a bare vocab.txt."""
    out = tmp / "vocab-only"
    shutil.copytree(SRC, out)
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    if vocab is not None:
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    else:
        shutil.copy(SRC / "vocab.txt", out / "vocab.txt")
    return out


def assert_same_tokens(folder: Path, **reference_settings) -> None:
    from transformers import AutoTokenizer, ElectraTokenizerFast

    ref = ElectraTokenizerFast(vocab_file=str(folder / "vocab.txt"), **reference_settings)
    want = ref(SENTENCES, PAIRS)
    for use_fast in (True, False):
        tok = AutoTokenizer.from_pretrained(str(folder), use_fast=use_fast)
        assert type(tok).__name__ == ("ElectraTokenizerFast" if use_fast else "ElectraTokenizer")
        got = tok(SENTENCES, PAIRS)
        assert got["input_ids"] == want["input_ids"], (use_fast, folder)
        assert got["token_type_ids"] == want["token_type_ids"]


@pytest.mark.oracle
def test_hf_folder_assets_copied_byte_for_byte(tmp_path):
    out = convert(SRC, tmp_path / "out", "safetensors").out
    for name in TOKENIZER_FILES:
        assert (out / name).read_bytes() == (SRC / name).read_bytes(), name
    assert_same_tokens(out)


@pytest.mark.oracle
@pytest.mark.parametrize("fmt", CHECKPOINT_FORMATS)
def test_vocab_only_source_gains_tokenizer_files(tmp_path, fmt):
    src = vocab_only(tmp_path)
    try:
        out = convert(src, tmp_path / fmt, fmt).out
    except Exception as exc:  # a format that needs a missing framework is not this test's concern
        if type(exc).__name__ == "MissingDependencyError":
            pytest.skip(str(exc))
        raise
    for name in TOKENIZER_FILES:
        assert (out / name).is_file(), f"{fmt}: {name} missing"
    assert (out / "vocab.txt").read_bytes() == (SRC / "vocab.txt").read_bytes()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["tokenizer_class"] == "ElectraTokenizer"
    assert config["model_max_length"] == 40
    assert json.loads((out / "special_tokens_map.json").read_text())["mask_token"] == "[MASK]"
    assert_same_tokens(out)


@pytest.mark.oracle
def test_cased_vocabulary_stays_cased(tmp_path):
    vocab = (SRC / "vocab.txt").read_text(encoding="utf-8").splitlines() + ["Hello", "World", "Café"]
    src = vocab_only(tmp_path, vocab)
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = len(vocab)
    (src / "config.json").write_text(json.dumps(cfg))
    files = complete({"vocab.txt": (src / "vocab.txt").read_bytes()}, ElectraConfig.from_dict(cfg))
    out = tmp_path / "cased"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data)
    assert json.loads(files["tokenizer_config.json"])["do_lower_case"] is False
    assert_same_tokens(out, do_lower_case=False)


def test_complete_keeps_what_exists_and_derives_vocab():
    present = {name: (SRC / name).read_bytes() for name in TOKENIZER_FILES}
    assert complete(present) == present                         # nothing present is rewritten
    from_json = complete({"tokenizer.json": present["tokenizer.json"]})
    assert from_json["vocab.txt"] == present["vocab.txt"]         # a tokenizer.json-only source gains vocab.txt
    assert json.loads(from_json["tokenizer_config.json"])["do_lower_case"] is True
    assert complete({"config.json": b"{}"}) == {"config.json": b"{}"}   # no vocabulary: nothing to derive
    no_mask = complete({"vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n"})
    assert "mask_token" not in json.loads(no_mask["tokenizer_config.json"])   # never invent a token
    assert "mask_token" not in json.loads(no_mask["special_tokens_map.json"])
    bpe = json.dumps({"model": {"type": "BPE", "vocab": {}}}).encode()
    assert complete({"tokenizer.json": bpe}) == {"tokenizer.json": bpe}  # not WordPiece: left alone
