"""Text -> model inputs with the checkpoint's own vocabulary (ELECTRA WordPiece, via ``tokenizers``).

The tokenizer is the one BERT and ELECTRA ship (transformers' ElectraTokenizerFast):
BertNormalizer (clean text, split CJK characters, lowercase and strip accents per
``do_lower_case`` / ``strip_accents``), BertPreTokenizer (whitespace + punctuation),
WordPiece with ``##`` continuations and ``[UNK]``, and the template
``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` with token_type_ids 0 for A (and its
[CLS]/[SEP]) and 1 for B and its [SEP].

Output contract: int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` of shape
[B, S], right-padded to the longest row with the vocabulary's ``[PAD]`` id and mask 0 --
the same contract as ``probe.probe_batch``.

``tokenizers`` is an optional dependency (``pip install 'electra-bridge[tokenizers]'``);
it is imported only when text is tokenized.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from electra_bridge.schemas import FormatError, MissingDependencyError, SchemaError

log = logging.getLogger(__name__)

#: role -> token, as BERT/ELECTRA vocabularies spell them
SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}


@dataclass(frozen=True)
class TokenizerSettings:
    """What decides how text is split, as tokenizer_config.json spells it."""

    do_lower_case: bool = True
    strip_accents: bool | None = None        # None: follow do_lower_case (BERT semantics)
    tokenize_chinese_chars: bool = True
    special: tuple[tuple[str, str], ...] = tuple(SPECIAL_TOKENS.items())

    def token(self, role: str) -> str:
        return dict(self.special)[role]


def parse_vocab(data: bytes | str) -> dict[str, int]:
    """vocab.txt -> token -> id (line number), exactly as transformers' ``load_vocab`` reads it."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, token in enumerate(lines):
        vocab[token] = index     # a repeated token keeps its last line, as load_vocab does
    if not vocab:
        raise FormatError("vocab.txt is empty")
    return vocab


def guess_lowercase(vocab: Mapping[str, int]) -> bool:
    """An uncased vocabulary has no upper-case word pieces (special tokens aside)."""
    specials = set(SPECIAL_TOKENS.values())
    return not any(t not in specials and not t.startswith("[unused") and t != t.lower() for t in vocab)


def settings_from_assets(assets: Mapping[str, bytes], vocab: Mapping[str, int] | None = None) -> TokenizerSettings:
    """Settings from tokenizer_config.json, else tokenizer.json's normalizer, else guessed from the vocab."""
    special = dict(SPECIAL_TOKENS)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):   # tokenizer_config.json wins, as in transformers
        if name in assets:
            for role, tok in _json(assets, name).items():
                if role in special and isinstance(tok, (str, dict)):   # older files store AddedToken dicts
                    special[role] = tok.get("content", special[role]) if isinstance(tok, dict) else tok
    if "tokenizer_config.json" in assets:
        cfg = _json(assets, "tokenizer_config.json")
        return TokenizerSettings(bool(cfg.get("do_lower_case", True)), cfg.get("strip_accents"),
                                 bool(cfg.get("tokenize_chinese_chars", True)), tuple(special.items()))
    if "tokenizer.json" in assets:
        norm = _json(assets, "tokenizer.json").get("normalizer") or {}
        if norm.get("type") == "BertNormalizer":
            return TokenizerSettings(bool(norm.get("lowercase", True)), norm.get("strip_accents"),
                                     bool(norm.get("handle_chinese_chars", True)), tuple(special.items()))
    lower = guess_lowercase(vocab) if vocab is not None else True
    return TokenizerSettings(do_lower_case=lower, special=tuple(special.items()))


def _json(assets: Mapping[str, bytes], name: str) -> dict:
    try:
        data = json.loads(assets[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{name} is not a JSON object")
    return data


def vocab_from_assets(assets: Mapping[str, bytes]) -> dict[str, int]:
    """The WordPiece vocabulary: vocab.txt, else the ``model.vocab`` of a WordPiece tokenizer.json."""
    if "vocab.txt" in assets:
        return parse_vocab(assets["vocab.txt"])
    if "tokenizer.json" in assets:
        model = _json(assets, "tokenizer.json").get("model") or {}
        if model.get("type") == "WordPiece" and isinstance(model.get("vocab"), dict):
            return {str(k): int(v) for k, v in model["vocab"].items()}
    raise SchemaError("no vocabulary: tokenizing text needs a vocab.txt (or a WordPiece tokenizer.json) "
                      "beside the model")


def build_tokenizer(vocab: Mapping[str, int], settings: TokenizerSettings = TokenizerSettings()):
    """A ``tokenizers.Tokenizer`` equal to transformers' ElectraTokenizerFast for this vocabulary."""
    try:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    except ImportError as exc:
        raise MissingDependencyError("tokenizing text needs the tokenizers library: "
                                     "pip install 'electra-bridge[tokenizers]'") from exc
    unk, cls, sep = settings.token("unk_token"), settings.token("cls_token"), settings.token("sep_token")
    for role in ("unk_token", "cls_token", "sep_token"):
        if settings.token(role) not in vocab:
            raise SchemaError(f"the vocabulary has no {settings.token(role)} token ({role}); it cannot be an "
                              "ELECTRA WordPiece vocabulary")
    tok = Tokenizer(models.WordPiece(vocab=dict(vocab), unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=settings.tokenize_chinese_chars,
                                                strip_accents=settings.strip_accents,
                                                lowercase=settings.do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tok.decoder = decoders.WordPiece(prefix="##")
    # special tokens written in the text ("[MASK]") stay one token, as in transformers
    tok.add_special_tokens([t for _, t in settings.special if t in vocab])
    return tok


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *, pad_id: int,
           max_length: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize ``texts`` (paired with ``pairs`` when given) into a padded int64 batch [B, S]."""
    if not texts:
        raise SchemaError("no text given")
    if pairs is not None and len(pairs) != len(texts):
        raise SchemaError(f"--text-pair is given {len(pairs)} times but --text {len(texts)} times; "
                          "pass one pair per text")
    items = list(zip(texts, pairs)) if pairs is not None else list(texts)
    encodings = tokenizer.encode_batch(items)
    longest = max(len(e.ids) for e in encodings)
    if max_length is not None and longest > max_length:
        # both sides see the same truncated batch, so the comparison stays fair; say so
        log.warning("text truncated from %d to %d tokens (the model's max_position_embeddings)", longest, max_length)
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        encodings = tokenizer.encode_batch(items)
        tokenizer.no_truncation()
        longest = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)
    types = np.zeros((len(encodings), longest), dtype=np.int64)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tokenize(assets: Mapping[str, bytes], texts: Sequence[str], pairs: Sequence[str] | None = None, *,
             pad_token_id: int = 0, max_length: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize with the vocabulary and settings found in a checkpoint's ``assets``.

    The pad id is the vocabulary's ``[PAD]`` (``pad_token_id`` from the config when the
    vocabulary has none).
    """
    vocab = vocab_from_assets(assets)
    settings = settings_from_assets(assets, vocab)
    pad_id = vocab.get(settings.token("pad_token"), pad_token_id)
    return encode(build_tokenizer(vocab, settings), texts, pairs, pad_id=pad_id, max_length=max_length)
