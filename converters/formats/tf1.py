"""Google Research ELECTRA checkpoints (google-research/electra, TF1 tensor bundles), read and
written without TensorFlow.

A pretraining checkpoint holds two nets (formats.md section 4): the discriminator
(``electra/...`` body + ``discriminator_predictions/{dense,dense_1}``) -> head
``pretraining``, and the generator (``generator/...`` body sharing ``electra/embeddings``,
+ ``generator_predictions/...``) -> head ``masked-lm``. ``net`` picks one (default: the
discriminator; the log says which was taken and that the other exists). Fine-tuned
checkpoints carry the discriminator body and ``task_specific/<task>/...``: the tagging head
is exactly ``token-classification``; the GLUE and SQuAD heads have no exact transformers
equivalent and are refused with a message that says so (``--head base`` keeps the encoder).

Layout: kernels are [in, out] (transposed to canonical [out, in]); embeddings, biases and
LayerNorm gamma/beta are stored as canonical. Optimizer slots, ``global_step`` and the other
net are IGNORED with reasons and never read. The config comes from the tensor shapes (V, E,
H, I, L, P, T, labels) plus the ELECTRA rule heads = max(1, H // 64), unless ``config``
(an HF config.json or the original hparams JSON) or a matching config.json beside the
checkpoint says otherwise.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from electra_bridge.schemas import (
    ARCHITECTURE_TO_HEAD, Checkpoint, ElectraConfig, FormatError, LazyTensor, SchemaError, google_num_heads,
    materialize,
)
from electra_bridge.schemas.config import GOOGLE_SIZES

from . import assets, tf_bundle
from .options import Option
from .rules import TRANSPOSE, Ignored, Rule, account, bind, ignored_reason

log = logging.getLogger(__name__)

NAME = "tf1"
KIND = "checkpoint"
DESCRIPTION = "Google Research ELECTRA TF1 checkpoint (model.ckpt-N.index + .data-*), no TensorFlow needed"
PREFIX_NAME = "model.ckpt"
NETS = ("discriminator", "generator")

OPTIONS = (
    Option("--net", "read", "which net of a Google pretraining checkpoint to take: discriminator (default, "
           "ElectraForPreTraining), generator (ElectraForMaskedLM), or both (OUT/discriminator + OUT/generator)",
           {"choices": ["discriminator", "generator", "both"]}),
    Option("--config", "read", "model config: an HF config.json, or for a Google TF1 checkpoint also the original "
           "ELECTRA hparams JSON (default: config.json beside the weights; for TF1, inferred from tensor shapes)"),
)

# ---- the RULES tables ---------------------------------------------------------------------------

#: canonical module path -> Google scope, for the dense layers and LayerNorms of one encoder layer
_LAYER_DENSE = (("attention.self.query", "attention/self/query"), ("attention.self.key", "attention/self/key"),
                ("attention.self.value", "attention/self/value"), ("attention.output.dense", "attention/output/dense"),
                ("intermediate.dense", "intermediate/dense"), ("output.dense", "output/dense"))
_LAYER_NORM = (("attention.output.LayerNorm", "attention/output/LayerNorm"), ("output.LayerNorm", "output/LayerNorm"))


def _dense(canonical: str, native: str) -> tuple[Rule, Rule]:
    """tf.layers.dense: kernel [in, out] (transposed), bias as is."""
    return Rule(f"{canonical}.weight", f"{native}/kernel", TRANSPOSE), Rule(f"{canonical}.bias", f"{native}/bias")


def _layer_norm(canonical: str, native: str) -> tuple[Rule, Rule]:
    """contrib layer_norm: gamma -> weight, beta -> bias."""
    return Rule(f"{canonical}.weight", f"{native}/gamma"), Rule(f"{canonical}.bias", f"{native}/beta")


def backbone_rules(body: str, embeddings: str = "electra") -> tuple[Rule, ...]:
    """Embeddings under ``embeddings``/embeddings (shared by both nets by default), the
    projection and the encoder under ``body``."""
    emb, layer = f"{embeddings}/embeddings", f"{body}/encoder/layer_{{layer}}"
    return (
        Rule("embeddings.word_embeddings.weight", f"{emb}/word_embeddings"),
        Rule("embeddings.position_embeddings.weight", f"{emb}/position_embeddings"),
        Rule("embeddings.token_type_embeddings.weight", f"{emb}/token_type_embeddings"),
        *_layer_norm("embeddings.LayerNorm", f"{emb}/LayerNorm"),
        *_dense("embeddings_project", f"{body}/embeddings_project"),
        *(r for c, n in _LAYER_DENSE for r in _dense(f"encoder.layer.{{layer}}.{c}", f"{layer}/{n}")),
        *(r for c, n in _LAYER_NORM for r in _layer_norm(f"encoder.layer.{{layer}}.{c}", f"{layer}/{n}")),
    )


DISCRIMINATOR_HEAD = (*_dense("discriminator_predictions.dense", "discriminator_predictions/dense"),
                      *_dense("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_1"))
#: the MLM decoder is the shared word-embedding table (tied); only its bias is a variable
GENERATOR_HEAD = (*_dense("generator_predictions.dense", "generator_predictions/dense"),
                  *_layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm"),
                  Rule("generator_lm_head.bias", "generator_predictions/output_bias"))


def tagging_head(task: str) -> tuple[Rule, ...]:
    safe = task.replace("{", "{{").replace("}", "}}")  # native templates are str.format'ed for {layer}
    return _dense("classifier", f"task_specific/{safe}/dense")


#: per net (default google-research layout: untied generator, shared embeddings)
RULES: dict[str, tuple[Rule, ...]] = {
    "discriminator": backbone_rules("electra") + DISCRIMINATOR_HEAD,
    "generator": backbone_rules("generator") + GENERATOR_HEAD,
    "tagging": backbone_rules("electra") + tagging_head("chunk"),
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

#: keys only the original ELECTRA hparams JSON has (configure_pretraining / configure_finetuning)
_HPARAM_KEYS = {"model_size", "model_hparam_overrides", "generator_hidden_size", "generator_layers",
                "untied_generator", "untied_generator_embeddings", "task_names", "electra_objective",
                "num_train_steps", "max_seq_length", "do_lower_case", "model_name", "learning_rate"}


# ---- detection ----------------------------------------------------------------------------------

def detect(path: Path) -> bool:
    try:
        prefix = tf_bundle.resolve_prefix(path)
    except (OSError, FormatError):
        return False
    return tf_bundle.is_bundle_index(Path(f"{prefix}.index"))


# ---- what a checkpoint holds --------------------------------------------------------------------

@dataclass
class Survey:
    """The model variables of a bundle (optimizer state removed) and which nets/tasks exist."""

    shapes: dict[str, tuple[int, ...]]
    tasks: list[str] = field(default_factory=list)

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
        return ", ".join(sorted({n.split("/")[0] for n in self.shapes})) or "no model variables"


def survey(shapes: dict[str, tuple[int, ...]]) -> Survey:
    model = {n: s for n, s in shapes.items() if not ignored_reason(n, IGNORED)}
    tasks = sorted({n.split("/")[1] for n in model if n.startswith("task_specific/") and n.count("/") >= 2})
    return Survey(model, tasks)


@dataclass
class Plan:
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


def plan(sv: Survey, *, net: str | None, head: str | None, config_head: str | None, source: str) -> Plan:
    """Choose the net, the head, the RULES and the IGNORED list for this read (and say which)."""
    if net == "both":
        raise SchemaError("--net both converts each net into its own folder (convert OUT/discriminator and "
                          "OUT/generator); reading needs one net: discriminator or generator")
    if net is not None and net not in NETS:
        raise SchemaError(f"unknown net {net!r}; choose discriminator, generator or both")
    if sv.tasks:
        return _plan_finetuned(sv, net=net, head=head, config_head=config_head, source=source)
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
                    _net_class(chosen), other[0], other[0])
    else:
        log.info("%s: took the %s (%s)%s", source, chosen, _net_class(chosen),
                 f"; the {other[0]} is there too (--net {other[0]})" if other else "")
    if chosen == "discriminator":
        own_head = "pretraining" if sv.has("discriminator_predictions/") else "base"
        return Plan(chosen, own_head, backbone_rules("electra") + (DISCRIMINATOR_HEAD if own_head != "base" else ()),
                    IGNORED + OTHER_NET["discriminator"])
    body, emb = sv.generator_body, sv.generator_embeddings
    return Plan(chosen, "masked-lm", backbone_rules(body, emb) + GENERATOR_HEAD, IGNORED + OTHER_NET["generator"],
                body, emb)


def _net_class(net: str) -> str:
    return {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}[net]


def _plan_finetuned(sv: Survey, *, net, head, config_head, source) -> Plan:
    if net == "generator":
        raise SchemaError(f"{source} is a fine-tuned checkpoint (task_specific/{sv.tasks[0]}/...): it has no "
                          "generator, only the fine-tuned discriminator body and its task head")
    if head == "base":
        log.info("%s: fine-tuned task head(s) %s dropped (--head base); reading the encoder", source, ", ".join(sv.tasks))
        return Plan("discriminator", "base", backbone_rules("electra"),
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
        return Plan("discriminator", "token-classification", backbone_rules("electra") + tagging_head(task), IGNORED,
                    task=task)
    if task in QA_TASKS or any(n.startswith(("qa_hidden/", "dense_1/")) for n in names):
        raise _task_error(task, names, "qa")
    if single_dense:
        raise _task_error(task, names, "classification" if task in CLASSIFICATION_TASKS else "ambiguous")
    raise _task_error(task, names, "unknown")


# ---- config -------------------------------------------------------------------------------------

def infer_config(sv: Survey, p: Plan) -> ElectraConfig:
    """Sizes from the tensor shapes; heads = max(1, H // 64) (Google's rule); gelu; eps 1e-12."""
    s = sv.shapes
    emb, layer0 = f"{p.embeddings}/embeddings", f"{p.body}/encoder/layer_0"
    needed = [f"{emb}/word_embeddings", f"{emb}/position_embeddings", f"{emb}/token_type_embeddings",
              f"{layer0}/attention/self/query/kernel", f"{layer0}/intermediate/dense/kernel"]
    absent = [n for n in needed if n not in s]
    if absent:
        raise SchemaError(f"cannot infer the {p.net}'s config: {', '.join(absent)} missing (variables under: "
                          f"{sv.scopes()}); pass --config")
    layers = sorted({int(m.group(1)) for n in s if (m := re.match(rf"{re.escape(p.body)}/encoder/layer_(\d+)/", n))})
    if layers != list(range(len(layers))):
        raise SchemaError(f"the {p.net}'s layers are not numbered 0..L-1: found layer_{layers}")
    vocab, width = s[f"{emb}/word_embeddings"]
    hidden = s[f"{layer0}/attention/self/query/kernel"][1]
    labels: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    if p.head == "token-classification":
        labels = tuple(f"LABEL_{i}" for i in range(s[f"task_specific/{p.task}/dense/kernel"][1]))
    return ElectraConfig(
        vocab_size=vocab, embedding_size=width, hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=google_num_heads(hidden), intermediate_size=s[f"{layer0}/intermediate/dense/kernel"][1],
        max_position_embeddings=s[f"{emb}/position_embeddings"][0], type_vocab_size=s[f"{emb}/token_type_embeddings"][0],
        hidden_act="gelu", layer_norm_eps=1e-12, labels=labels)


def is_hparams(data: dict) -> bool:
    return "model_type" not in data and "architectures" not in data and bool(_HPARAM_KEYS & set(data))


def hparams_config(h: dict, net: str) -> ElectraConfig:
    """The config google-research/electra builds from its hparams (util/training_utils.get_bert_config,
    run_pretraining.get_generator_config, configure_pretraining's embedding_size default)."""
    size = h.get("model_size", "small")
    if size not in GOOGLE_SIZES:
        raise SchemaError(f"hparams model_size {size!r} is not one of {', '.join(GOOGLE_SIZES)}")
    overrides = dict(h.get("model_hparam_overrides") or {})
    args = {"hidden_size": GOOGLE_SIZES[size]["hidden_size"], "num_hidden_layers": GOOGLE_SIZES[size]["num_hidden_layers"],
            "vocab_size": h.get("vocab_size", 30522), **overrides}
    args.update(num_attention_heads=google_num_heads(args["hidden_size"]), intermediate_size=4 * args["hidden_size"])
    args.update(overrides)
    bert = {"hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2, **args}
    embedding = h.get("embedding_size")
    embedding = embedding if embedding is not None else (128 if size == "small" else bert["hidden_size"])
    if net == "generator" and h.get("untied_generator", True):
        hidden = round(bert["hidden_size"] * h.get("generator_hidden_size", 0.25))
        bert.update(hidden_size=hidden, num_hidden_layers=round(bert["num_hidden_layers"] * h.get("generator_layers", 1.0)),
                    intermediate_size=4 * hidden, num_attention_heads=google_num_heads(hidden))
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob",
            "initializer_range")
    return ElectraConfig(embedding_size=embedding, layer_norm_eps=1e-12, **{k: bert[k] for k in keys if k in bert})


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"config {path} is not a JSON object")
    return data


def _config_head(cfg: ElectraConfig) -> str | None:
    return next((ARCHITECTURE_TO_HEAD[a] for a in cfg.architectures if a in ARCHITECTURE_TO_HEAD), None)


def _given_config(config, folder: Path) -> tuple[ElectraConfig | dict | None, str]:
    """(HF config, hparams dict, or None; where it came from)."""
    if isinstance(config, ElectraConfig):
        return config, "the config passed in"
    if config is not None:
        data = _load_json(Path(config))
        return (data if is_hparams(data) else ElectraConfig.from_dict(data)), f"--config {config}"
    beside = folder / "config.json"
    if beside.is_file():
        data = _load_json(beside)
        if not is_hparams(data):
            return ElectraConfig.from_dict(data), f"{beside}"
    return None, "inferred from the tensor shapes"


# ---- reading ------------------------------------------------------------------------------------

def read(path: str | Path, *, head: str | None = None, net: str | None = None,
         config: str | Path | ElectraConfig | None = None) -> Checkpoint:
    """Read one net (or a fine-tuned tagging model) of a TF1 checkpoint into a canonical Checkpoint.

    Only the kept tensors are ever read, each lazily from its byte range with its checksum checked.
    """
    bundle = tf_bundle.BundleReader(path)
    source = str(bundle.prefix)
    sv = survey(bundle.shapes())
    given, origin = _given_config(config, bundle.prefix.parent)
    given_head = _config_head(given) if isinstance(given, ElectraConfig) else None
    if given_head and config is None and origin.endswith("config.json"):
        # a config.json beside describes one net: use it for that net only
        p = plan(sv, net=net, head=head, config_head=None if net else given_head, source=source)
        if given_head != p.head and not (p.head == "masked-lm" and given_head == "causal-lm"):
            log.info("%s describes %s, not the %s read here; inferring the config from the tensors instead",
                     origin, given_head, p.head)
            given, origin = None, "inferred from the tensor shapes"
    else:
        p = plan(sv, net=net, head=head, config_head=given_head, source=source)
        if given_head and HEAD_NET.get(given_head, p.net) != p.net and p.head in HEAD_NET:
            raise SchemaError(f"{origin} describes {given.architectures[0]} (the {HEAD_NET[given_head]}), but the "
                              f"{p.net} is being read; pass --net {HEAD_NET[given_head]} or the {p.net}'s config")

    if isinstance(given, dict):
        cfg = hparams_config(given, p.net)
        if p.head == "token-classification":
            cfg = cfg.replace(labels=infer_config(sv, p).labels)
    elif isinstance(given, ElectraConfig):
        cfg = given
    else:
        cfg = infer_config(sv, p)
    cfg = cfg.for_head(p.head)
    if p.net == "generator" and cfg.hidden_act != "gelu":
        log.warning("the generator's hidden_act is %r: Google's generator head applies it, while transformers' "
                    "ElectraForMaskedLM (and this runtime) hard-code gelu there, so the MLM logits will differ",
                    cfg.hidden_act)
    if p.net == "generator" and not cfg.tie_word_embeddings:
        raise SchemaError("Google's generator always decodes with the shared word embeddings; the config says "
                          "tie_word_embeddings=false")

    bindings = bind(p.rules, cfg, p.head)
    found = bundle.shapes()
    dropped = account(bindings, found, p.ignored, source=source,
                      hint=f"the config ({origin}) must describe the {p.net}'s tensors: fix it or omit --config to "
                           "infer it from the shapes")
    if dropped:
        reasons = Counter(ignored_reason(n, p.ignored) for n in dropped)
        log.info("%s: left out %d tensors, never read: %s", source, len(dropped),
                 "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common()))

    tensors = {}
    for canonical, b in bindings.items():
        entry = bundle.entries[b.native]
        dtype = entry.dtype if entry.dtype is not None else np.dtype(np.float32)
        tensors[canonical] = LazyTensor(b.canonical_shape, np.dtype(dtype),
                                        lambda b=b: b.layout.to_canonical(bundle.read(b.native)))
    provenance = {"format": NAME, "path": str(path), "prefix": source, "net": p.net, "config": origin}
    if p.task:
        provenance["task"] = p.task
    ckpt = Checkpoint(cfg, p.head, tensors, assets.collect(bundle.prefix.parent), provenance)
    ckpt.validate(source)
    return ckpt.as_head(head) if head and head != p.head else ckpt


# ---- writing ------------------------------------------------------------------------------------

WRITABLE_HEADS = ("pretraining", "masked-lm", "base", "token-classification")


def write_rules(ckpt: Checkpoint) -> tuple[Rule, ...]:
    """google-research names for ``ckpt``'s head: pretraining -> discriminator, masked-lm ->
    generator with the shared electra/embeddings, base -> the discriminator body,
    token-classification -> task_specific/<task>/dense (task from the source, else chunk)."""
    head = ckpt.head
    if head == "pretraining":
        return RULES["discriminator"]
    if head == "masked-lm":
        if not ckpt.config.tie_word_embeddings:
            raise SchemaError("an untied MLM decoder (tie_word_embeddings=false) has no place in Google's TF1 format: "
                              "its generator always decodes with the shared word embeddings")
        return RULES["generator"]
    if head == "base":
        return backbone_rules("electra")
    if head == "token-classification":
        task = ckpt.provenance.get("task") if ckpt.provenance.get("format") == NAME else None
        return backbone_rules("electra") + tagging_head(task or TAGGING_TASKS[0])
    hint = {"causal-lm": "Google has no causal LM; write the masked-lm view (--head masked-lm)",
            "sequence-classification": "Google's GLUE head is a single dense layer, not transformers' two-layer head",
            "question-answering": "Google's SQuAD head is a different architecture",
            }.get(head, "Google's code has no such head")
    raise SchemaError(f"head {head} cannot be written as a Google TF1 checkpoint ({hint}). Writable heads: "
                      f"{', '.join(WRITABLE_HEADS)}; --head base writes the encoder alone")


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Write ``out/model.ckpt.{index,data-00000-of-00001}``, ``out/checkpoint``, config.json and assets.

    Tensors stream out one at a time (kernels transposed back to [in, out])."""
    if options:
        raise SchemaError(f"the tf1 writer takes no options ({', '.join(options)} given)")
    out = Path(out)
    bindings = bind(write_rules(ckpt), ckpt.config, ckpt.head)
    natives = {}
    for canonical, b in bindings.items():
        t = ckpt.tensors[canonical]
        natives[b.native] = LazyTensor(b.native_shape, np.dtype(t.dtype),
                                       lambda t=t, b=b: b.layout.to_native(materialize(t)))
    paths = tf_bundle.write_bundle(out / PREFIX_NAME, natives)
    state = tf_bundle.write_checkpoint_state(out, PREFIX_NAME)
    (out / "config.json").write_text(ckpt.config.for_head(ckpt.head).to_json())
    return [*paths, state, out / "config.json", *assets.write(out, ckpt.assets)]
