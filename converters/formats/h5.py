"""HF TensorFlow checkpoints: read and write ``tf_model.h5`` with h5py alone (no TensorFlow).

The file is Keras' legacy ``save_weights`` h5 layout (converters/formats/h5_keras.py) as
``TFElectraFor<Head>.save_pretrained`` writes it. Every variable sits in the group of its
top-level Keras layer (``electra``, ``discriminator_predictions``, ...) under a weight name
``<instance scope>/<variable path>:0``, e.g.
``tf_electra_for_pre_training/electra/encoder/layer_._0/attention/self/query/kernel:0``.
transformers drops the scope when matching (it is ``..._1`` for a process's second model),
and so do we: a native name is the weight name without its scope. The backbone lives under
``electra/`` in every TF class, TFElectraModel included, so there is no head-model prefix.
TFElectraMaskedLMHead tracks the embeddings layer, so the masked-lm file lists the five
embedding variables again in the ``generator_lm_head`` group (ALIASES): they must equal the
originals and are dropped.

Sharded checkpoints (``tf_model.h5.index.json`` + ``tf_model-0000i-of-0000n.h5``, from
``save_pretrained(max_shard_size=...)``) are read and written; the index keys carry the scope,
the shards store each variable once at its native name (``model.weights`` is deduplicated, so
the MLM head's repeated embeddings are not stored again). ``--max-shard-size`` defaults to
5GB, the default of ``TFPreTrainedModel.save_pretrained``'s signature in transformers 4.57 (its
docstring says 10GB); the split is ``tf_shard_checkpoint``'s over ``model.weights`` order
(engine/shards.py), so names and index equal transformers'.

Layout: dense kernels are stored ``[in, out]`` (transposed to canonical ``[out, in]``);
embedding tables ``[rows, width]`` and LayerNorm ``gamma``/``beta`` as they are. dtype:
whatever the datasets hold (float32 from transformers; float16 passes through).

There is no TFElectraForCausalLM, and TF ignores ``tie_word_embeddings``: the writer refuses
both with a SchemaError instead of writing a file TF would load wrongly. transformers' TF
classification head crashes on a non-null ``classifier_dropout``, so the config is written
with null (dropout does nothing at inference).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bridge.schemas import Checkpoint, ElectraConfig, FormatError, SchemaError, get_head

from ..engine import pipeline, shards
from ..engine.format import CheckpointFormat, NativeTensor, Plan, ReadRequest, find_weights
from ..engine.rules import IDENTITY, TRANSPOSE, Ignored, Leaves, Rule, module_rules
from . import h5_keras

log = logging.getLogger(__name__)

WEIGHTS = "tf_model.h5"
SHARD_INDEX = "tf_model.h5.index.json"
#: TFPreTrainedModel.save_pretrained's max_shard_size default (transformers 4.57's signature)
DEFAULT_MAX_SHARD_SIZE = "5GB"

#: head -> (transformers TF class, the Keras instance scope that class gets in a fresh process)
TF_MODELS: dict[str, tuple[str, str]] = {
    "base": ("TFElectraModel", "tf_electra_model"),
    "pretraining": ("TFElectraForPreTraining", "tf_electra_for_pre_training"),
    "masked-lm": ("TFElectraForMaskedLM", "tf_electra_for_masked_lm"),
    "sequence-classification": ("TFElectraForSequenceClassification", "tf_electra_for_sequence_classification"),
    "multiple-choice": ("TFElectraForMultipleChoice", "tf_electra_for_multiple_choice"),
    "token-classification": ("TFElectraForTokenClassification", "tf_electra_for_token_classification"),
    "question-answering": ("TFElectraForQuestionAnswering", "tf_electra_for_question_answering"),
}

#: activations transformers' TF models can build (activations_tf.ACT2FN) among those we run
TF_ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "relu", "silu", "swish", "tanh")

#: Keras variable names by role. TF has no separate decoder: its MLM head always multiplies by
#: the word table, so no module below has a decoder tensor (generator_lm_head is a plain Rule).
LEAVES = Leaves(sep="/", kernel=("kernel:0", TRANSPOSE), bias=("bias:0", IDENTITY), scale=("gamma:0", IDENTITY),
                shift=("beta:0", IDENTITY), embedding=("embeddings:0", IDENTITY), decoder=("kernel:0", TRANSPOSE))

_L, _TL = "encoder.layer.{layer}", "electra/encoder/layer_._{layer}"

#: canonical module -> Keras variable path, in the order Keras creates the variables (a written
#: file lists them as transformers does): token type before position, the generator's LayerNorm
#: before its dense.
MODULES: tuple[tuple[str, str], ...] = (
    ("embeddings.token_type_embeddings", "electra/embeddings/token_type_embeddings"),
    ("embeddings.position_embeddings", "electra/embeddings/position_embeddings"),
    ("embeddings.LayerNorm", "electra/embeddings/LayerNorm"),
    ("embeddings_project", "electra/embeddings_project"),
    *((f"{_L}.{m}", f"{_TL}/{m.replace('.', '/')}")
      for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")),
    ("discriminator_predictions.dense", "discriminator_predictions/dense"),
    ("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_prediction"),
    ("generator_predictions.LayerNorm", "generator_predictions/LayerNorm"),
    ("generator_predictions.dense", "generator_predictions/dense"),
    ("classifier.dense", "classifier/dense"),
    ("classifier.out_proj", "classifier/out_proj"),
    ("sequence_summary.summary", "sequence_summary/summary"),
    ("classifier", "classifier"),  # multiple-choice [1,H] and token-classification [C,H]
    ("qa_outputs", "qa_outputs"),
)

#: canonical <-> native (weight name without the instance scope)
RULES: tuple[Rule, ...] = (
    Rule("embeddings.word_embeddings.weight", "electra/embeddings/word_embeddings/weight:0"),  # not embeddings:0
    *module_rules(MODULES, LEAVES),
    Rule("generator_lm_head.bias", "generator_lm_head/bias:0"),  # no kernel: TF always reuses the word table
)


@dataclass(frozen=True)
class Alias:
    """A Keras layer whose h5 group lists another layer's variables again (same values)."""

    group: str
    prefix: str          # native names of the repeated variables start with this
    reason: str


ALIASES: tuple[Alias, ...] = (
    Alias("generator_lm_head", "electra/embeddings/",
          "TFElectraMaskedLMHead tracks the embeddings layer, so Keras lists the 5 embedding variables again "
          "under generator_lm_head; checked equal to the electra/ copies and dropped"),
)

IGNORED: tuple[Ignored, ...] = tuple(Ignored(f"{a.group}/{a.prefix}*", a.reason) for a in ALIASES)

_LAYER_INDEX = re.compile(r"/layer_\._(\d+)/")


def _check_aliases(path: Path, found: dict[str, NativeTensor]) -> None:
    """Every repeated variable must equal the copy it repeats (else the file is ambiguous)."""
    for alias in ALIASES:
        for native, tensor in found.items():
            if not native.startswith(f"{alias.group}/{alias.prefix}"):
                continue
            primary = native[len(alias.group) + 1:]
            if primary not in found:
                raise SchemaError(f"{path}: {alias.group} repeats {primary}, which the file does not hold")
            if not np.array_equal(tensor.load(), found[primary].load()):
                raise SchemaError(f"{path}: the copy of {primary} under {alias.group} differs from the "
                                  "original; Keras writes the same variable twice, so the file was altered")


def _keras_order(tensors: Sequence[NativeTensor]) -> list[NativeTensor]:
    """Keras' variable order: layer by layer, rules order within a layer (the engine hands tensors
    over in rules order; embeddings and heads, which have no layer index, come first)."""
    def layer(t: NativeTensor) -> int:
        match = _LAYER_INDEX.search(t.name)
        return int(match.group(1)) if match else -1
    return sorted(tensors, key=layer)


class H5Codec:
    def locate(self, path: Path) -> Path | None:
        return find_weights(path, (WEIGHTS, SHARD_INDEX), (".h5", ".h5.index.json"))

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        """A single file or one shard; the repeated variables are checked equal and reported under
        ``<group>/<native name>``, which IGNORED drops."""
        found = h5_keras.scan(weights)
        _check_aliases(weights, found)
        return found

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint,
              max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
        """Groups, attributes, dataset paths and the MLM head's repeated embedding variables as
        save_pretrained writes them, so ``TFElectraFor<Head>.from_pretrained(out)`` reports no
        missing or unexpected weights; above ``max_shard_size``, its shards and index."""
        scope = TF_MODELS[ckpt.head][1]
        weights = shards.model_order(tensors, lambda name: name.startswith("electra/"), _LAYER_INDEX)
        return shards.write_sharded(out, WEIGHTS, SHARD_INDEX, weights, shards.parse_size(max_shard_size),
                                    shards.LEGACY, lambda path, group: _write_file(path, group, scope),
                                    index_key=lambda name: f"{scope}/{name}")


def _write_file(path: Path, tensors: Sequence[NativeTensor], scope: str) -> None:
    """``tf_model.h5`` in save_weights' layout (the whole model), or one shard in the flat layout."""
    if path.name != WEIGHTS:
        h5_keras.write_shard(path, tensors)
        return
    ordered = _keras_order(tensors)
    layers = list(dict.fromkeys(t.name.split("/", 1)[0] for t in ordered))
    members = {layer: [t for t in ordered if t.name.split("/", 1)[0] == layer] for layer in layers}
    for alias in ALIASES:
        if alias.group in members:
            members[alias.group] += [t for t in ordered if t.name.startswith(alias.prefix)]
    h5_keras.write(path, layers, {layer: [(f"{scope}/{t.name}", t) for t in group] for layer, group in members.items()})


def keras_scope(weights: Path) -> str:
    """The one Keras instance scope of a file's weight names (a shard index's keys carry it too)."""
    names = shards.weight_map(weights) if shards.is_index(weights) else h5_keras.weight_names(weights)
    scopes = {name.partition("/")[0] for name in names}
    if len(scopes) > 1:
        raise FormatError(f"{weights} mixes Keras instance scopes {sorted(scopes)}; it is not one model's weights")
    return next(iter(scopes), "")


def plan(request: ReadRequest) -> Plan:
    """The HF plan, with the Keras instance scope recorded in the provenance."""
    scope = keras_scope(request.weights)
    return dataclasses.replace(pipeline.hf_plan(FORMAT, request), provenance={"keras_scope": scope})


def read_as_tied(cfg: ElectraConfig, head: str, source: str) -> ElectraConfig:
    """TF ignores ``tie_word_embeddings=false``: a TF file has no decoder and TF computes tied logits."""
    if "generator" in get_head(head).groups and not cfg.tie_word_embeddings:
        log.warning("%s: config.json says tie_word_embeddings=false, but TF ignores it and a TF file has no "
                    "separate decoder: reading it as tied, which is what TF computes", source)
        return cfg.replace(tie_word_embeddings=True)
    return cfg


def check_writable(ckpt: Checkpoint) -> None:
    cfg, head = ckpt.config, ckpt.head
    bf16 = sorted(n for n, t in ckpt.tensors.items() if np.dtype(t.dtype).name == "bfloat16")
    if bf16:
        raise SchemaError(f"tf_model.h5 cannot hold bfloat16 ({len(bf16)} tensors, e.g. {bf16[0]}): HDF5/h5py has "
                          "no bfloat16 type; convert with --dtype float32 (exact) or --dtype float16")
    if head == "causal-lm":
        raise SchemaError(
            "transformers has no TF class for ElectraForCausalLM (no TFElectraForCausalLM exists), so a causal-lm "
            "cannot be written to tf_model.h5. Write it as masked-lm (--head masked-lm): it has the same tensors; "
            "only the attention mask differs, which is a run-time choice")
    if head == "masked-lm" and not cfg.tie_word_embeddings:
        raise SchemaError(
            "this masked-lm has an untied decoder (tie_word_embeddings=false), but transformers' TF MLM head always "
            "multiplies by the word embeddings and silently drops generator_lm_head.weight (measured logit error "
            "~1.9). Refusing to write a tf_model.h5 that TF would compute differently; keep it as safetensors or "
            "Flax, which honour untied decoders")
    bad = [f"hidden_act {cfg.hidden_act!r}"] if cfg.hidden_act not in TF_ACTIVATIONS else []
    if head == "multiple-choice" and cfg.summary_activation not in (*TF_ACTIVATIONS, None):
        bad.append(f"summary_activation {cfg.summary_activation!r}")
    if bad:
        raise SchemaError(f"transformers' TF ELECTRA cannot build {' and '.join(bad)} (TF knows: "
                          f"{', '.join(TF_ACTIVATIONS)}); gelu_pytorch_tanh computes what gelu_new does")


def null_classifier_dropout(cfg: ElectraConfig) -> ElectraConfig:
    """transformers' TF classification head raises AttributeError on a non-null classifier_dropout."""
    if cfg.classifier_dropout is None:
        return cfg
    log.warning("writing classifier_dropout=null instead of %s: transformers' TF classification head raises "
                "AttributeError on any other value (dropout is inactive at inference)", cfg.classifier_dropout)
    return cfg.replace(classifier_dropout=None)


FORMAT = CheckpointFormat(
    name="h5",
    codec=H5Codec(),
    rules=RULES,
    ignored=IGNORED,
    heads=tuple(TF_MODELS),
    options=(shards.MAX_SHARD_SIZE,),
    index_name=SHARD_INDEX,
    index_key=lambda key: key.partition("/")[2],  # drop the Keras instance scope
    plan=plan,
    read_config=read_as_tied,
    check_writable=check_writable,
    write_config=null_classifier_dropout,
)
