"""Complete a model's tokenizer files so every output folder loads with transformers' AutoTokenizer.

A Google checkpoint ships only ``vocab.txt``; an HF folder ships vocab.txt,
tokenizer.json, tokenizer_config.json and special_tokens_map.json. ``complete`` keeps
every file the source had, byte for byte, and derives the missing ones from what is
there (the vocabulary, and casing from tokenizer_config.json, tokenizer.json's
normalizer, or -- for a bare vocab.txt -- the vocabulary itself: no upper-case word
piece means uncased, which is how Google's ELECTRA vocabularies are built).

tokenizer.json needs the ``tokenizers`` library; without it the slow-tokenizer files
(vocab.txt, tokenizer_config.json, special_tokens_map.json) are still written, and
AutoTokenizer builds the fast tokenizer from vocab.txt itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from electra_bridge.schemas import BridgeError, ElectraConfig, MissingDependencyError, SchemaError

from . import text
from .engine import assets as engine_assets

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def tokenizer_config(settings: text.TokenizerSettings, config: ElectraConfig | None,
                     specials: dict[str, str]) -> dict:
    """tokenizer_config.json as transformers writes it for ElectraTokenizer(Fast); only special
    tokens the vocabulary has are named (a named but absent one would be added as a new id)."""
    out = {
        "tokenizer_class": "ElectraTokenizer",
        "do_lower_case": settings.do_lower_case,
        "strip_accents": settings.strip_accents,
        "tokenize_chinese_chars": settings.tokenize_chinese_chars,
        "do_basic_tokenize": True,
        "never_split": None,
        "clean_up_tokenization_spaces": True,
        **specials,
    }
    if config is not None:
        out["model_max_length"] = config.max_position_embeddings
    return out


def from_folder(folder: str | Path) -> dict[str, bytes]:
    """The tokenizer files of ``folder`` (``convert --tokenizer DIR``); SchemaError when it has no vocabulary."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SchemaError(f"--tokenizer {folder}: not a folder (give the folder holding vocab.txt or tokenizer.json)")
    found = engine_assets.collect(folder)
    if not ({"vocab.txt", "tokenizer.json"} & set(found)):
        raise SchemaError(f"--tokenizer {folder}: it holds neither vocab.txt nor tokenizer.json")
    return found


def complete(assets: Mapping[str, bytes], config: ElectraConfig | None = None) -> dict[str, bytes]:
    """``assets`` plus whichever of vocab.txt / tokenizer.json / tokenizer_config.json /
    special_tokens_map.json can be derived and is missing. Nothing present is rewritten;
    assets without any vocabulary come back unchanged."""
    out = dict(assets)
    if "vocab.txt" not in out and "tokenizer.json" not in out:
        return out
    try:
        vocab = text.vocab_from_assets(out)
    except BridgeError as exc:          # e.g. a BPE tokenizer.json: not ours to complete
        log.info("tokenizer files left as they are: %s", exc)
        return out
    settings = text.settings_from_assets(out, vocab)
    specials = {role: tok for role, tok in settings.special if tok in vocab}
    if "vocab.txt" not in out:
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            log.info("tokenizer.json vocabulary ids are not 0..n-1; vocab.txt not derived")
        else:
            out["vocab.txt"] = ("\n".join(t for t, _ in by_id) + "\n").encode("utf-8")
    if "special_tokens_map.json" not in out:
        out["special_tokens_map.json"] = _dump(specials)
    if "tokenizer_config.json" not in out:
        out["tokenizer_config.json"] = _dump(tokenizer_config(settings, config, specials))
    if "tokenizer.json" not in out:
        try:
            out["tokenizer.json"] = text.build_tokenizer(vocab, settings).to_str(pretty=True).encode("utf-8")
        except MissingDependencyError:
            log.info("tokenizers is not installed: tokenizer.json not written (AutoTokenizer builds it from vocab.txt)")
    return out
