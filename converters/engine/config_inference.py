"""The config of a checkpoint without config.json, from its tensor shapes: one implementation for
Google TF1 bundles and every HF-layout format (safetensors, pytorch_model.bin, tf_model.h5,
flax_model.msgpack). A format's RULES table maps its native names to canonical ones, so the
inference reads canonical tensors only ([out, in] kernels, schemas/tensors.py).

Determined by the shapes:
  vocab_size, embedding_size   embeddings.word_embeddings.weight [V, E]
  max_position_embeddings      embeddings.position_embeddings.weight [P, E]
  type_vocab_size              embeddings.token_type_embeddings.weight [T, E]
  hidden_size                  encoder.layer.0.attention.self.query.weight [H, H]
  intermediate_size            encoder.layer.0.intermediate.dense.weight [I, H]
  num_hidden_layers            the layer indices present (they must be 0..L-1)
  num_labels                   the task head's output rows (LABELS below)
  tie_word_embeddings          false only when a decoder is stored and differs from the word table
  the head                     not here: the engine's marker rule (schemas.heads.detect_head)
Not determined, so assumed, and named in the log line:
  num_attention_heads  Google's rule max(1, hidden_size // 64), which every released ELECTRA follows
                       (the TF1 reader has always used it); a model trained otherwise needs --config
  hidden_act gelu, layer_norm_eps 1e-12: Google's and transformers' values
  is_decoder false: a causal LM has the masked LM's tensors (--head causal-lm reads it as one)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from electra_bridge.schemas import ElectraConfig, SchemaError, google_num_heads

from .format import NativeTensor
from .rules import Rule

log = logging.getLogger("electra_bridge")

#: provenance "config" value of an inferred config
INFERRED = "inferred from the tensor shapes"

#: canonical tensor -> the config fields its shape gives, one per axis (None: an axis already given)
SIZES: dict[str, tuple[str | None, ...]] = {
    "embeddings.word_embeddings.weight": ("vocab_size", "embedding_size"),
    "embeddings.position_embeddings.weight": ("max_position_embeddings", None),
    "embeddings.token_type_embeddings.weight": ("type_vocab_size", None),
    "encoder.layer.0.attention.self.query.weight": ("hidden_size", None),
    "encoder.layer.0.intermediate.dense.weight": ("intermediate_size", None),
}
#: task-head output layers [C, H] whose rows are the labels, in the order they are looked for
#: (multiple-choice's ``classifier.weight`` is [1, H]: it scores a choice, C stays the default 2)
LABELS = ("classifier.out_proj.weight", "qa_outputs.weight", "classifier.weight")
MULTIPLE_CHOICE_MARKER = "sequence_summary.summary.weight"
#: the order the log line names the sizes in (transformers' ElectraConfig order)
ORDER = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "intermediate_size",
         "max_position_embeddings", "type_vocab_size")


@dataclass(frozen=True)
class Found:
    """One canonical tensor present in a file: its canonical shape, and its values in canonical layout."""

    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


def _canonical_shape(rule: Rule, native_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The canonical shape the rule's layout stores as ``native_shape`` (identity or transposed);
    None for a layout that reshapes (keras-hub's einsum kernels), which inference does not read."""
    for candidate in (tuple(native_shape), tuple(reversed(native_shape))):
        if tuple(rule.layout.native_shape(candidate)) == tuple(native_shape):
            return candidate
    return None


def canonical_view(rules: Iterable[Rule], natives: Mapping[str, NativeTensor]) -> dict[str, Found]:
    """Canonical name -> Found for every native tensor a rule maps, every ``{layer}`` index the file
    holds included (a rule's native template is matched, not expanded over a config's layers)."""
    out: dict[str, Found] = {}
    for rule in rules:
        if "{layer}" in rule.native:
            pattern = re.compile(r"(\d+)".join(map(re.escape, rule.native.split("{layer}"))))
            hits = [(rule.canonical.format(layer=int(m.group(1))), t) for n, t in natives.items()
                    if (m := pattern.fullmatch(n))]
        else:
            hits = [(rule.canonical, natives[rule.native])] if rule.native in natives else []
        for canonical, tensor in hits:
            shape = _canonical_shape(rule, tensor.shape)
            if shape is not None and canonical not in out:
                out[canonical] = Found(shape, lambda t=tensor, r=rule: r.layout.to_canonical(t.load()))
    return out


def _native_names(rules: Iterable[Rule], canonical: Iterable[str]) -> list[str]:
    by_canonical = {r.canonical.format(layer=0): r.native.format(layer=0) for r in rules}
    return [by_canonical.get(c, c) for c in canonical]


def layer_count(found: Mapping[str, Found], what: str) -> int:
    """L, from the encoder layer indices present; a gap in 0..L-1 is an error."""
    layers = sorted({int(m.group(1)) for n in found if (m := re.match(r"encoder\.layer\.(\d+)\.", n))})
    if layers != list(range(len(layers))):
        raise SchemaError(f"{what}: the encoder layers are not numbered 0..L-1 (found layers {layers}); pass --config")
    return len(layers)


def _tied(found: Mapping[str, Found]) -> bool:
    """A stored decoder equal to the word table is a tied alias (pytorch_model.bin stores both)."""
    decoder = found.get("generator_lm_head.weight")
    if decoder is None:
        return True
    word = found["embeddings.word_embeddings.weight"]
    return decoder.shape == word.shape and bool(np.array_equal(decoder.load(), word.load()))


def infer_config(found: Mapping[str, Found], *, what: str, rules: Iterable[Rule] = ()) -> ElectraConfig:
    """The config ``found``'s shapes determine, with the module's assumed values for the rest; logs one line saying
    which values were inferred and which assumed. ``what`` names the source (and the net) in
    messages; ``rules`` translate missing canonical names to the format's own for the error."""
    rules = tuple(rules)
    absent = [name for name in SIZES if name not in found]
    if absent:
        raise SchemaError(f"{what}: no config.json, and its config cannot be inferred: "
                          f"{', '.join(_native_names(rules, absent))} missing; pass --config FILE")
    sizes: dict[str, int] = {}
    for name, fields in SIZES.items():
        for field, size in zip(fields, found[name].shape):
            if field is not None:
                sizes[field] = int(size)
    sizes["num_hidden_layers"] = layer_count(found, what)
    labels_from = next((n for n in LABELS if n in found and not (n == "classifier.weight" and
                                                                 MULTIPLE_CHOICE_MARKER in found)), None)
    num_labels = found[labels_from].shape[0] if labels_from else 2
    tied = _tied(found)
    cfg = ElectraConfig(**sizes, num_attention_heads=google_num_heads(sizes["hidden_size"]), hidden_act="gelu",
                        layer_norm_eps=1e-12, tie_word_embeddings=tied,
                        labels=tuple(f"LABEL_{i}" for i in range(num_labels)))
    inferred = [f"{k}={sizes[k]}" for k in ORDER]
    inferred += [f"num_labels={num_labels}"] if labels_from else []
    inferred += [] if tied else ["tie_word_embeddings=false"]
    log.info("%s: config.json missing: inferred %s; assumed num_attention_heads=%d (Google's rule max(1, "
             "hidden_size // 64)), hidden_act=%s, layer_norm_eps=%g, is_decoder=false; override with --config FILE",
             what, ", ".join(inferred), cfg.num_attention_heads, cfg.hidden_act, cfg.layer_norm_eps)
    return cfg


def infer_from_natives(rules: Iterable[Rule], natives: Mapping[str, NativeTensor], *, what: str) -> ElectraConfig:
    """infer_config over the native tensors a format's ``rules`` map (the HF-layout formats' entry)."""
    rules = tuple(rules)
    return infer_config(canonical_view(rules, natives), what=what, rules=rules)
