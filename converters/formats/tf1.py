"""Google Research ELECTRA checkpoints (google-research/electra, TF1 tensor bundles), read and
written without TensorFlow.

A pretraining checkpoint holds two nets: the discriminator (``electra/...`` body +
``discriminator_predictions/{dense,dense_1}``) -> head ``pretraining``, and the generator
(``generator/...`` body sharing ``electra/embeddings``, + ``generator_predictions/...``) ->
head ``masked-lm``; ``--net`` picks one (default: the discriminator; the log says which was
taken and that the other exists). Two google-research variants are read too: untied
generator embeddings (``generator/embeddings/...``) and a fully tied generator (no
``generator/`` body: both heads sit on ``electra/``). Google's generator always decodes with
the shared word-embedding table: only the output bias is a variable. Fine-tuned checkpoints
carry the discriminator body and ``task_specific/<task>/...``: the tagging head (one dense
layer on every token) is exactly ``token-classification``; the GLUE and SQuAD heads have no
exact transformers equivalent and are refused with a message that says so (``--head base``
keeps the encoder).

Layout: kernels are [in, out] (transposed to canonical [out, in]); embeddings, biases and
LayerNorm gamma/beta are stored as canonical. Optimizer slots, ``global_step`` and the other
net are IGNORED with reasons and never read. The config (tf1_config.py) comes from the
tensor shapes plus the ELECTRA rule heads = max(1, H // 64), unless ``--config`` (an HF
config.json or the original hparams JSON) or a matching config.json beside the checkpoint
says otherwise. Written: ``model.ckpt.{index,data-00000-of-00001}`` and a ``checkpoint``
file, under google-research's names for the head (``--task-name`` names a fine-tuned head's task scope).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from electra_bridge.schemas import (
    Checkpoint, ElectraConfig, FormatError, LazyTensor, SchemaError, config_for_head, head_for_architecture,
)

from ..engine.format import CheckpointFormat, NativeTensor, Plan, ReadRequest
from ..engine.options import Option
from ..engine.rules import IDENTITY, TRANSPOSE, Ignored, Leaves, Rule, ignored_reason, module_rules
from . import tf1_bundle, tf1_config
from .tf1_table import has_table_magic

log = logging.getLogger(__name__)

PREFIX_NAME = "model.ckpt"
NETS = ("discriminator", "generator")
WRITABLE_HEADS = ("pretraining", "masked-lm", "base", "token-classification")
#: the writable heads Google keeps under task_specific/<task>/ (its GLUE and SQuAD heads have no exact HF class)
FINETUNED_HEADS = ("token-classification",)

OPTIONS = (
    Option("--net", "read", "which net of a Google pretraining checkpoint to take: discriminator (default, "
           "ElectraForPreTraining), generator (ElectraForMaskedLM), or both (OUT/discriminator + OUT/generator)",
           {"choices": ["discriminator", "generator", "both"]}),
    Option("--config", "read", "model config: an HF config.json, or for a Google TF1 checkpoint also the original "
           "ELECTRA hparams JSON (default: config.json beside the weights; for TF1, inferred from tensor shapes)"),
    Option("--task-name", "write", "tf1: the task_specific/NAME/ scope a fine-tuned head (token-classification) is "
           "written under (default: the TF1 source's task, else chunk); letters, digits, _ - and .", {"metavar": "NAME"}),
)

# ---- the RULES tables ---------------------------------------------------------------------------

#: tf.layers.dense kernel [in, out] (transposed) and bias; contrib layer_norm gamma and beta; the
#: embedding tables are the variables themselves. (The decoder is never a variable: always tied.)
LEAVES = Leaves("/", kernel=("kernel", TRANSPOSE), bias=("bias", IDENTITY), scale=("gamma", IDENTITY),
                shift=("beta", IDENTITY), embedding=("", IDENTITY), decoder=("kernel", TRANSPOSE))

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
#: one encoder layer's modules; Google's scope is the same path with "/" (under ``layer_N``)
_LAYER = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
          "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")


def backbone_rules(body: str, embeddings: str = "electra") -> tuple[Rule, ...]:
    """Embeddings under ``embeddings``/embeddings (shared by both nets by default), the
    projection and the encoder under ``body``."""
    return module_rules((*((f"embeddings.{m}", f"{embeddings}/embeddings/{m}") for m in _EMBEDDINGS),
                         ("embeddings_project", f"{body}/embeddings_project"),
                         *((f"encoder.layer.{{layer}}.{m}", f"{body}/encoder/layer_{{layer}}/{m.replace('.', '/')}")
                           for m in _LAYER)), LEAVES)


DISCRIMINATOR_HEAD = module_rules((("discriminator_predictions.dense", "discriminator_predictions/dense"),
                                   ("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_1")),
                                  LEAVES)
#: the MLM decoder is the shared word-embedding table (tied); only its bias is a variable
GENERATOR_HEAD = (*module_rules((("generator_predictions.dense", "generator_predictions/dense"),
                                 ("generator_predictions.LayerNorm", "generator_predictions/LayerNorm")), LEAVES),
                  Rule("generator_lm_head.bias", "generator_predictions/output_bias"))


def tagging_head(task: str) -> tuple[Rule, ...]:
    safe = task.replace("{", "{{").replace("}", "}}")  # native templates are str.format'ed for {layer}
    return module_rules((("classifier", f"task_specific/{safe}/dense"),), LEAVES)


#: per net (default google-research layout: untied generator, shared embeddings)
RULES: dict[str, tuple[Rule, ...]] = {
    "discriminator": backbone_rules("electra") + DISCRIMINATOR_HEAD,
    "generator": backbone_rules("generator") + GENERATOR_HEAD,
}

IGNORED = (
    Ignored("*/adam_m", "AdamWeightDecayOptimizer first-moment slot (training state, not a weight)"),
    Ignored("*/adam_v", "AdamWeightDecayOptimizer second-moment slot (training state, not a weight)"),
    Ignored("*/Adam", "tf.train.AdamOptimizer slot (training state, not a weight)"),
    Ignored("*/Adam_1", "tf.train.AdamOptimizer slot (training state, not a weight)"),
    Ignored("beta1_power", "tf.train.AdamOptimizer accumulator (training state)"),
    Ignored("beta2_power", "tf.train.AdamOptimizer accumulator (training state)"),
    Ignored("global_step", "the training step counter"),
    Ignored("_CHECKPOINTABLE_OBJECT_GRAPH", "object-graph metadata of a TF2 object-based checkpoint"),
)

#: the other net's variables, dropped on purpose when one net is read
OTHER_NET = {
    "discriminator": (
        Ignored("generator/*", "the generator's body (read it with --net generator)"),
        Ignored("generator_predictions/*", "the generator's MLM head (read it with --net generator)"),
    ),
    "generator": (
        Ignored("electra/encoder/*", "the discriminator's body (read it with --net discriminator)"),
        Ignored("electra/embeddings_project/*", "the discriminator's embedding projection (--net discriminator)"),
        Ignored("electra/embeddings/*", "the discriminator's own embeddings (this generator has untied embeddings)"),
        Ignored("discriminator_predictions/*", "the discriminator's head (read it with --net discriminator)"),
    ),
}

#: google-research/electra finetune/task_builder.py task names, by head type
CLASSIFICATION_TASKS = ("cola", "mrpc", "mnli", "sst", "rte", "qnli", "qqp", "sts")
QA_TASKS = ("squad", "squadv1", "newsqa", "naturalqs", "triviaqa", "searchqa")
TAGGING_TASKS = ("chunk",)

HEAD_NET = {"pretraining": "discriminator", "masked-lm": "generator", "causal-lm": "generator"}
NET_CLASS = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


# ---- what a checkpoint holds --------------------------------------------------------------------

@dataclass
class Survey:
    """The model variables of a bundle (optimizer state removed) and which nets/tasks exist."""

    shapes: dict[str, tuple[int, ...]]
    tasks: list[str]

    def has(self, prefix: str) -> bool:
        return any(n.startswith(prefix) for n in self.shapes)

    @property
    def generator_body(self) -> str:
        """``generator`` (untied_generator, the default) or ``electra`` (a fully tied generator)."""
        return "generator" if self.has("generator/encoder/") else "electra"

    @property
    def generator_embeddings(self) -> str:
        return "generator" if "generator/embeddings/word_embeddings" in self.shapes else "electra"

    @property
    def nets(self) -> list[str]:
        # electra/encoder is the discriminator's body unless a fully tied generator (no generator/encoder) owns it
        shared = self.generator_body == "electra" and self.has("generator_predictions/")
        disc = self.has("discriminator_predictions/") or (self.has("electra/encoder/") and not shared)
        return [n for n, present in (("discriminator", disc), ("generator", self.has("generator_predictions/"))) if present]

    def scopes(self) -> str:
        return tf1_config.scopes(self.shapes)


def survey(shapes: Mapping[str, tuple[int, ...]]) -> Survey:
    model = {n: s for n, s in shapes.items() if not ignored_reason(n, IGNORED)}
    tasks = sorted({n.split("/")[1] for n in model if n.startswith("task_specific/") and n.count("/") >= 2})
    return Survey(model, tasks)


@dataclass(frozen=True)
class Choice:
    """The net (or fine-tuned task) one read takes, with its head, rules, ignores and scopes."""

    net: str
    head: str
    rules: tuple[Rule, ...]
    ignored: tuple[Ignored, ...]
    body: str = "electra"
    embeddings: str = "electra"
    task: str | None = None


def _task_error(task: str, names: list[str], kind: str) -> SchemaError:
    base = "convert the fine-tuned encoder alone with --head base"
    if kind == "classification":
        return SchemaError(
            f"task_specific/{task} is Google's GLUE classification head: ONE dense layer [H, C] on the [CLS] vector. "
            "transformers' ElectraForSequenceClassification computes dense(H->H) + gelu + out_proj(H->C) instead, "
            "which cannot represent a single linear layer exactly, so electra-bridge will not map it (no transformers "
            f"head gives this model's logits). To keep the fine-tuned weights, {base}.")
    if kind == "qa":
        return SchemaError(
            f"task_specific/{task} is Google's SQuAD/MRQA question-answering head ({', '.join(sorted(names))}): "
            "start logits from one dense layer, end logits from a gelu MLP over [start features; token], an "
            "answerability classifier and a -1000 answer-mask penalty. transformers' ElectraForQuestionAnswering "
            "(one qa_outputs layer [2, H]) cannot represent it exactly, so electra-bridge will not map it. "
            f"To keep the fine-tuned weights, {base}.")
    if kind == "ambiguous":
        return SchemaError(
            f"task_specific/{task} is not one of Google's task names and holds one dense layer [H, C]: that is a "
            "tagging head (maps exactly to token-classification) if it was applied per token, or a GLUE-style "
            "classifier on [CLS] (no exact transformers head) if not. Pass --head token-classification if it is a "
            f"tagging task; otherwise {base}.")
    return SchemaError(f"task_specific/{task} has a head electra-bridge does not know ({', '.join(sorted(names))}); "
                       f"{base}.")


def choose(sv: Survey, *, net: str | None, head: str | None, config_head: str | None, source: str) -> Choice:
    """Choose the net, the head, the RULES and the IGNORED list for this read (and say which)."""
    if net == "both":
        raise SchemaError("--net both converts each net into its own folder (convert OUT/discriminator and "
                          "OUT/generator); reading needs one net: discriminator or generator")
    if net is not None and net not in NETS:
        raise SchemaError(f"unknown net {net!r}; choose discriminator, generator or both")
    if sv.tasks:
        return _choose_finetuned(sv, net=net, head=head, config_head=config_head, source=source)
    available = sv.nets
    if not available:
        raise SchemaError(f"{source} holds no ELECTRA body or head (variables under: {sv.scopes()}); expected "
                          "google-research/electra names such as electra/encoder/layer_0/...")
    wanted = net or HEAD_NET.get(head or "") or HEAD_NET.get(config_head or "")
    if wanted and wanted not in available:
        raise SchemaError(f"{source} has no {wanted} (it holds: {', '.join(available)}; variables under "
                          f"{sv.scopes()})")
    chosen = wanted or ("discriminator" if "discriminator" in available else "generator")
    other = [n for n in available if n != chosen]
    if other and net is None:
        log.warning("%s holds both nets of an ELECTRA pretraining checkpoint; took the %s (%s). The %s is there too: "
                    "pass --net %s for it, or --net both for one folder each.", source, chosen,
                    NET_CLASS[chosen], other[0], other[0])
    else:
        log.info("%s: took the %s (%s)%s", source, chosen, NET_CLASS[chosen],
                 f"; the {other[0]} is there too (--net {other[0]})" if other else "")
    if chosen == "discriminator":
        own_head = "pretraining" if sv.has("discriminator_predictions/") else "base"
        return Choice(chosen, own_head, backbone_rules("electra") + (DISCRIMINATOR_HEAD if own_head != "base" else ()),
                      IGNORED + OTHER_NET["discriminator"])
    body, emb = sv.generator_body, sv.generator_embeddings
    return Choice(chosen, "masked-lm", backbone_rules(body, emb) + GENERATOR_HEAD, IGNORED + OTHER_NET["generator"],
                  body, emb)


def _choose_finetuned(sv: Survey, *, net, head, config_head, source) -> Choice:
    if net == "generator":
        raise SchemaError(f"{source} is a fine-tuned checkpoint (task_specific/{sv.tasks[0]}/...): it has no "
                          "generator, only the fine-tuned discriminator body and its task head")
    if head == "base":
        log.info("%s: fine-tuned task head(s) %s dropped (--head base); reading the encoder", source, ", ".join(sv.tasks))
        return Choice("discriminator", "base", backbone_rules("electra"),
                      IGNORED + (Ignored("task_specific/*", "the fine-tuned task head (dropped: --head base)"),))
    if len(sv.tasks) > 1:
        raise SchemaError(f"{source} holds several task heads ({', '.join(sv.tasks)}, multi-task fine-tuning); "
                          "electra-bridge maps one task head per model: convert the shared encoder with --head base")
    task = sv.tasks[0]
    names = [n[len(f"task_specific/{task}/"):] for n in sv.shapes if n.startswith(f"task_specific/{task}/")]
    single_dense = sorted(names) == ["dense/bias", "dense/kernel"]
    tagging = head == "token-classification" or config_head == "token-classification"
    if single_dense and (task in TAGGING_TASKS or tagging):
        log.info("%s: fine-tuned tagging task %r -> token-classification", source, task)
        return Choice("discriminator", "token-classification", backbone_rules("electra") + tagging_head(task), IGNORED,
                      task=task)
    if task in QA_TASKS or any(n.startswith(("qa_hidden/", "dense_1/")) for n in names):
        raise _task_error(task, names, "qa")
    if single_dense:
        raise _task_error(task, names, "classification" if task in CLASSIFICATION_TASKS else "ambiguous")
    raise _task_error(task, names, "unknown")


# ---- the read plan: net, task and config --------------------------------------------------------

def plan(request: ReadRequest) -> Plan:
    """The engine's Plan of one read: the net or task chosen from the file, its config (given,
    beside, hparams or inferred) and the provenance saying which."""
    prefix = tf1_bundle.resolve_prefix(request.weights)
    source, net, head = str(prefix), request.options.get("net"), request.head
    sv = survey({n: t.shape for n, t in request.natives.items()})
    given, origin = tf1_config.given_config(request.config, prefix.parent)
    given_head = head_for_architecture(given.architectures) if isinstance(given, ElectraConfig) else None
    if given_head and request.config is None:
        # a config.json beside describes one net: use it for that net only
        choice = choose(sv, net=net, head=head, config_head=None if net else given_head, source=source)
        if given_head != choice.head and not (choice.head == "masked-lm" and given_head == "causal-lm"):
            log.info("%s describes %s, not the %s read here; inferring the config from the tensors instead",
                     origin, given_head, choice.head)
            given, origin = None, tf1_config.INFERRED
    else:
        choice = choose(sv, net=net, head=head, config_head=given_head, source=source)
        if given_head and HEAD_NET.get(given_head, choice.net) != choice.net and choice.head in HEAD_NET:
            raise SchemaError(f"{origin} describes {given.architectures[0]} (the {HEAD_NET[given_head]}), but the "
                              f"{choice.net} is being read; pass --net {HEAD_NET[given_head]} or the {choice.net}'s config")

    if isinstance(given, dict):
        cfg = tf1_config.hparams_config(given, choice.net)
        if choice.task:
            cfg = cfg.replace(labels=tf1_config.task_labels(sv.shapes, choice.task))
    elif isinstance(given, ElectraConfig):
        cfg = given
    else:
        cfg = tf1_config.infer_config(request.natives, choice.rules, net=choice.net, source=source)
    if choice.net == "generator" and cfg.hidden_act != "gelu":
        log.warning("the generator's hidden_act is %r: Google's generator head applies it, while transformers' "
                    "ElectraForMaskedLM (and this runtime) hard-code gelu there, so the MLM logits will differ",
                    cfg.hidden_act)
    if choice.net == "generator" and not cfg.tie_word_embeddings:
        raise SchemaError("Google's generator always decodes with the shared word embeddings; the config says "
                          "tie_word_embeddings=false")
    provenance = {"prefix": source, "net": choice.net, "config": origin, **({"task": choice.task} if choice.task else {})}
    return Plan(choice.head, config_for_head(cfg, choice.head), choice.rules, choice.ignored, provenance, origin)


# ---- the write side -----------------------------------------------------------------------------

def check_writable(ckpt: Checkpoint) -> None:
    """Google's code has four of the heads, and its generator always ties its decoder."""
    if ckpt.head == "masked-lm" and not ckpt.config.tie_word_embeddings:
        raise SchemaError("an untied MLM decoder (tie_word_embeddings=false) has no place in Google's TF1 format: "
                          "its generator always decodes with the shared word embeddings")
    if ckpt.head not in WRITABLE_HEADS:
        hint = {"causal-lm": "Google has no causal LM; write the masked-lm view (--head masked-lm)",
                "sequence-classification": "Google's GLUE head is a single dense layer, not transformers' two-layer head",
                "question-answering": "Google's SQuAD head is a different architecture",
                }.get(ckpt.head, "Google's code has no such head")
        raise SchemaError(f"head {ckpt.head} cannot be written as a Google TF1 checkpoint ({hint}). Writable heads: "
                          f"{', '.join(WRITABLE_HEADS)}; --head base writes the encoder alone")


def write_rules(ckpt: Checkpoint) -> tuple[Rule, ...]:
    """google-research names for ``ckpt``'s head: pretraining -> discriminator, masked-lm ->
    generator with the shared electra/embeddings, base -> the discriminator body,
    token-classification -> task_specific/<task>/dense (task from a TF1 source, else chunk; the
    codec's ``task_name`` -- ``--task-name`` -- renames it)."""
    if ckpt.head == "token-classification":
        task = ckpt.provenance.get("task") if ckpt.provenance.get("format") == FORMAT.name else None
        return backbone_rules("electra") + tagging_head(task or TAGGING_TASKS[0])
    return {"pretraining": RULES["discriminator"], "masked-lm": RULES["generator"],
            "base": backbone_rules("electra")}[ckpt.head]


# ---- the container ------------------------------------------------------------------------------

class Tf1Codec:
    """A bundle is named by its prefix's ``.index`` (located from a folder, its ``checkpoint``
    file, the prefix or any of its files); tensors are read lazily, written one at a time."""

    def locate(self, path: Path) -> Path | None:
        """The bundle's .index, or None where nothing TF1-like is; a folder that does hold TF1 files
        but no single bundle (several and no ``checkpoint`` file, a ``checkpoint`` file naming a
        missing prefix) raises FormatError saying which to pass."""
        try:
            index = tf1_bundle.index_path(tf1_bundle.resolve_prefix(path))
        except FormatError:
            if path.is_dir() and ((path / "checkpoint").is_file() or any(path.glob("*.index"))):
                raise
            return None
        except OSError:
            return None
        return index if has_table_magic(index) else None

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        bundle = tf1_bundle.BundleReader(weights)
        return {name: NativeTensor(name, e.shape, e.dtype, lambda name=name: bundle.read(name))
                for name, e in bundle.entries.items()}

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint, task_name: str | None = None) -> list[Path]:
        """``out/model.ckpt.{index,data-00000-of-00001}`` (kernels back in [in, out]) and ``out/checkpoint``;
        ``task_name`` renames the fine-tuned head's ``task_specific/<task>/`` scope (tf1_config.rename_task)."""
        if task_name is not None:
            tensors = tf1_config.rename_task(tensors, ckpt.head, task_name, FINETUNED_HEADS)
        paths = tf1_bundle.write_bundle(out / PREFIX_NAME, {t.name: LazyTensor(t.shape, t.dtype, t.load) for t in tensors})
        return [*paths, tf1_bundle.write_checkpoint_state(out, PREFIX_NAME)]


FORMAT = CheckpointFormat(
    name="tf1",
    codec=Tf1Codec(),
    rules=RULES["discriminator"],   # the default read's; ``plan`` and ``write_rules`` choose per file and head
    ignored=IGNORED,
    heads=WRITABLE_HEADS,
    options=OPTIONS,
    plan=plan,
    check_writable=check_writable,
    write_rules=write_rules,
)
