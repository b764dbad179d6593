"""HF TensorFlow checkpoints: read and write ``tf_model.h5`` with h5py alone (no TensorFlow).

The file is Keras' legacy ``save_weights`` h5 layout, as ``TFElectraFor<Head>.save_pretrained``
writes it (formats.md section 6.2):

* root attrs ``layer_names`` (the model's top-level Keras layers, e.g. ``electra``,
  ``discriminator_predictions``), ``backend``, ``keras_version``;
* one group per layer with attr ``weight_names``; each variable is the dataset
  ``<layer>/<weight name>``, and a weight name is ``<instance scope>/<variable path>:0``,
  e.g. ``tf_electra_for_pre_training/electra/encoder/layer_._0/attention/self/query/kernel:0``.
  The instance scope is not stable (``..._1`` for the second model of a process), so
  transformers drops it when matching and so do we: a **native name** here is the weight
  name without its scope. A variable listed in another layer's group (the MLM head lists
  the embeddings again) is named ``<group>/<name>``.

Sharded checkpoints (``tf_model.h5.index.json`` + ``tf_model-0000i-of-0000n.h5``, from
``save_pretrained(max_shard_size=...)``) are read too; they store each variable once at its
native name. The writer always writes one file, as transformers does below its 5 GB default.

Layout: dense kernels are stored ``[in, out]`` (TRANSPOSE to canonical ``[out, in]``);
embedding tables ``[rows, width]`` and LayerNorm ``gamma``/``beta`` as they are. dtype:
whatever the datasets hold (float32 from transformers; float16 passes through).

There is no TFElectraForCausalLM, and TF ignores ``tie_word_embeddings``: the writer refuses
both with a SchemaError instead of writing a file TF would load wrongly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bridge.schemas import (
    ARCHITECTURE_TO_HEAD, Checkpoint, ElectraConfig, FormatError, LazyTensor, SchemaError, detect_head, get_head,
)

from . import assets
from .rules import IDENTITY, TRANSPOSE, Binding, Ignored, Rule, account, bind

log = logging.getLogger(__name__)

NAME = "h5"
KIND = "checkpoint"
DESCRIPTION = "HF TensorFlow: tf_model.h5 (Keras h5 weights) with config.json; read and written without TensorFlow"

WEIGHTS = "tf_model.h5"
SHARD_INDEX = "tf_model.h5.index.json"
#: the tf-keras version whose save_weights layout this writer reproduces (the fixtures' writer)
KERAS_VERSION = "2.21.0"
#: Keras splits an attribute larger than this into ``name0``, ``name1``, ... (tf_keras hdf5_format.py)
HDF5_OBJECT_HEADER_LIMIT = 64512
TOP_LEVEL_GROUP = "top_level_model_weights"

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


def _dense(canonical: str, native: str) -> tuple[Rule, Rule]:
    return Rule(f"{canonical}.weight", f"{native}/kernel:0", TRANSPOSE), Rule(f"{canonical}.bias", f"{native}/bias:0")


def _layer_norm(canonical: str, native: str) -> tuple[Rule, Rule]:
    return Rule(f"{canonical}.weight", f"{native}/gamma:0"), Rule(f"{canonical}.bias", f"{native}/beta:0")


_L, _TL = "encoder.layer.{layer}", "electra/encoder/layer_._{layer}"

#: canonical <-> native (weight name without the instance scope). The order is the order in
#: which Keras creates the variables, so a written file lists them as transformers does.
RULES: tuple[Rule, ...] = (
    Rule("embeddings.word_embeddings.weight", "electra/embeddings/word_embeddings/weight:0", IDENTITY),
    Rule("embeddings.token_type_embeddings.weight", "electra/embeddings/token_type_embeddings/embeddings:0"),
    Rule("embeddings.position_embeddings.weight", "electra/embeddings/position_embeddings/embeddings:0"),
    *_layer_norm("embeddings.LayerNorm", "electra/embeddings/LayerNorm"),
    *_dense("embeddings_project", "electra/embeddings_project"),
    *_dense(f"{_L}.attention.self.query", f"{_TL}/attention/self/query"),
    *_dense(f"{_L}.attention.self.key", f"{_TL}/attention/self/key"),
    *_dense(f"{_L}.attention.self.value", f"{_TL}/attention/self/value"),
    *_dense(f"{_L}.attention.output.dense", f"{_TL}/attention/output/dense"),
    *_layer_norm(f"{_L}.attention.output.LayerNorm", f"{_TL}/attention/output/LayerNorm"),
    *_dense(f"{_L}.intermediate.dense", f"{_TL}/intermediate/dense"),
    *_dense(f"{_L}.output.dense", f"{_TL}/output/dense"),
    *_layer_norm(f"{_L}.output.LayerNorm", f"{_TL}/output/LayerNorm"),
    *_dense("discriminator_predictions.dense", "discriminator_predictions/dense"),
    *_dense("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_prediction"),
    *_layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm"),  # Keras builds LN first
    *_dense("generator_predictions.dense", "generator_predictions/dense"),
    Rule("generator_lm_head.bias", "generator_lm_head/bias:0"),  # no kernel: TF always reuses the word table
    *_dense("classifier.dense", "classifier/dense"),
    *_dense("classifier.out_proj", "classifier/out_proj"),
    *_dense("sequence_summary.summary", "sequence_summary/summary"),
    *_dense("classifier", "classifier"),  # multiple-choice [1,H] and token-classification [C,H]
    *_dense("qa_outputs", "qa_outputs"),
)


@dataclass(frozen=True)
class Alias:
    """A Keras layer whose h5 group lists another layer's variables again (same values)."""

    group: str
    prefix: str          # native names of the repeated variables start with this
    heads: tuple[str, ...]
    reason: str


ALIASES: tuple[Alias, ...] = (
    Alias("generator_lm_head", "electra/embeddings/", ("masked-lm", "causal-lm"),
          "TFElectraMaskedLMHead tracks the embeddings layer, so Keras lists the 5 embedding variables again "
          "under generator_lm_head; checked equal to the electra/ copies and dropped"),
)

IGNORED: tuple[Ignored, ...] = tuple(Ignored(f"{a.group}/{a.prefix}*", a.reason) for a in ALIASES)


# ---- detection ----------------------------------------------------------------------------------

def _weights_file(path: Path) -> Path | None:
    if path.is_dir():
        return next((path / f for f in (WEIGHTS, SHARD_INDEX) if (path / f).exists()), None)
    return path if path.name.endswith((".h5", ".h5.index.json")) else None


def detect(path: Path) -> bool:
    return _weights_file(Path(path)) is not None


# ---- h5 attribute helpers (Keras' chunked string attributes) --------------------------------------

def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def load_attribute(obj, name: str) -> list[str] | None:
    """A Keras string-list attribute, joining ``name0``, ``name1``, ... chunks; None if absent."""
    if name in obj.attrs:
        return _strings(obj.attrs[name])
    chunks = []
    while f"{name}{len(chunks)}" in obj.attrs:
        chunks.append(_strings(obj.attrs[f"{name}{len(chunks)}"]))
    return [v for chunk in chunks for v in chunk] if chunks else None


def save_attribute(obj, name: str, values: list[str]) -> None:
    """Store a string list as Keras does: variable-length strings, chunked above the header limit."""
    import h5py

    if not values:  # Keras writes np.asarray([]): an empty float64 array
        obj.attrs[name] = np.asarray([])
        return
    data = np.asarray([v.encode("utf8") for v in values], dtype=object)
    # Keras sizes a chunk as its fixed-width numpy array (count x longest), so we chunk where it would
    chunks = 1
    while any(len(part) * max(map(len, part)) > HDF5_OBJECT_HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    parts = np.array_split(data, chunks)
    for i, part in enumerate(parts):
        obj.attrs.create(name if chunks == 1 else f"{name}{i}", part, dtype=h5py.string_dtype("utf-8"))


# ---- reading ------------------------------------------------------------------------------------

def _open(path: Path):
    try:
        import h5py
    except ImportError as exc:  # h5py is a core dependency; this only guards broken installs
        raise FormatError("reading tf_model.h5 needs h5py: pip install h5py") from exc
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file: {exc}") from exc


@dataclass(frozen=True)
class Variable:
    """Where one variable of a TF checkpoint lives: file, dataset path, shape, dtype."""

    file: Path
    dataset: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def load(self) -> np.ndarray:
        with _open(self.file) as f:
            return f[self.dataset][()]


def _unlisted(f, path: Path, listed: set[str], found: dict[str, Variable], key: str = "{}") -> None:
    """Report every dataset no name list mentions under its full path: accounting calls it unexpected."""
    import h5py

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset) and obj.name not in listed:
            found[key.format(obj.name)] = Variable(path, obj.name, tuple(obj.shape), obj.dtype)

    f.visititems(visit)


def scan(path: Path) -> tuple[dict[str, Variable], str]:
    """Native name -> Variable for every variable of a single ``tf_model.h5``, and the instance scope.

    Variables are enumerated through ``layer_names`` and each group's ``weight_names`` (what
    Keras and transformers load); a dataset no list names is reported under its full path,
    so strict accounting flags it as unexpected.
    """
    import h5py

    with _open(path) as f:
        layers = load_attribute(f, "layer_names")
        if layers is None:
            raise FormatError(f"{path} has no 'layer_names' attribute: not a Keras h5 weights file "
                              "(save it with TFElectraFor<Head>.save_pretrained)")
        found: dict[str, Variable] = {}
        scopes: set[str] = set()
        groups = [*layers, *([TOP_LEVEL_GROUP] if TOP_LEVEL_GROUP in f else [])]
        for layer in groups:
            if layer not in f:
                raise FormatError(f"{path}: layer_names lists {layer!r} but the file has no such group")
            group = f[layer]
            for weight in load_attribute(group, "weight_names") or []:
                ds = group.get(weight)
                if not isinstance(ds, h5py.Dataset):
                    raise FormatError(f"{path}: group {layer!r} lists weight {weight!r}, which is not in the file")
                scope, _, rest = weight.partition("/")
                scopes.add(scope)
                native = rest if rest.split("/", 1)[0] == layer else f"{layer}/{rest}"
                if native in found:
                    raise FormatError(f"{path}: weight {native!r} is listed twice")
                found[native] = Variable(path, ds.name, tuple(ds.shape), ds.dtype)
        _unlisted(f, path, {v.dataset for v in found.values()}, found)
    if len(scopes) > 1:
        raise FormatError(f"{path} mixes Keras instance scopes {sorted(scopes)}; it is not one model's weights")
    return found, next(iter(scopes), "")


def scan_sharded(index: Path) -> tuple[dict[str, Variable], str]:
    """The same for ``tf_model.h5.index.json`` + shards (``save_pretrained(max_shard_size=...)``).

    A shard stores each variable once, at its native name (no instance scope, no group
    level), and lists them in the root attr ``layer_names``; the index maps the scoped
    weight names to shard files. Both must agree.
    """
    import h5py

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{index} is not a valid shard index ({exc})") from exc
    scopes = {name.partition("/")[0] for name in weight_map}
    promised = {name.partition("/")[2]: shard for name, shard in weight_map.items()}
    found: dict[str, Variable] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.exists():
            raise FormatError(f"{index.name} names shard {shard}, which is missing")
        with _open(path) as f:
            for native in load_attribute(f, "layer_names") or []:
                ds = f.get(native)
                if not isinstance(ds, h5py.Dataset) or promised.get(native) != shard or native in found:
                    raise FormatError(f"{path}: variable {native!r} is missing, repeated or not where "
                                      f"{index.name} says it is")
                found[native] = Variable(path, ds.name, tuple(ds.shape), ds.dtype)
            _unlisted(f, path, {v.dataset for v in found.values() if v.file == path}, found, f"{shard}:{{}}")
    absent = sorted(set(promised) - set(found))
    if absent:
        raise FormatError(f"{index.name} lists variables no shard holds: {', '.join(absent[:8])}")
    if len(scopes) > 1:
        raise FormatError(f"{index} mixes Keras instance scopes {sorted(scopes)}; it is not one model's weights")
    return found, next(iter(scopes), "")


def _head_of(cfg: ElectraConfig, natives: set[str]) -> str:
    for arch in cfg.architectures:  # TF save_pretrained strips the "TF" prefix; accept it anyway
        head = ARCHITECTURE_TO_HEAD.get(arch.removeprefix("TF"))
        if head:
            return head
    canonical = {r.canonical.format(layer=i) for r in RULES for i in range(cfg.num_hidden_layers)
                 if r.native.format(layer=i) in natives}
    return detect_head(canonical, cfg)


def _check_aliases(path: Path, found: dict[str, Variable]) -> None:
    """Every repeated variable must equal the copy it repeats (else the file is ambiguous)."""
    for alias in ALIASES:
        marker = f"{alias.group}/{alias.prefix}"
        for native, var in found.items():
            if not native.startswith(marker):
                continue
            primary = native[len(alias.group) + 1:]
            if primary not in found:
                raise SchemaError(f"{path}: {alias.group} repeats {primary}, which the file does not hold")
            if not np.array_equal(var.load(), found[primary].load()):
                raise SchemaError(f"{path}: the copy of {primary} under {alias.group} differs from the "
                                  "original; Keras writes the same variable twice, so the file was altered")


def read(path: str | Path, *, head: str | None = None, config: str | Path | ElectraConfig | None = None) -> Checkpoint:
    """Read ``tf_model.h5`` (a folder or the file) into a canonical Checkpoint, without TensorFlow.

    The head comes from config.json ``architectures`` (else from the variables present);
    ``head`` may narrow it (e.g. ``base``; ``causal-lm`` from a masked-lm file).
    """
    path = Path(path)
    weights = _weights_file(path)
    if weights is None or not weights.exists():
        raise FormatError(f"{path}: no {WEIGHTS} found")
    cfg = assets.config_for(weights, config)
    found, scope = scan_sharded(weights) if weights.name.endswith(".index.json") else scan(weights)
    own_head = _head_of(cfg, set(found))
    if own_head in ("masked-lm", "causal-lm") and not cfg.tie_word_embeddings:
        log.warning("%s: config.json says tie_word_embeddings=false, but TF ignores it and a TF file has no "
                    "separate decoder: reading it as tied, which is what TF computes", weights)
        cfg = cfg.replace(tie_word_embeddings=True)
    cfg = cfg.for_head(own_head)
    bindings = bind(RULES, cfg, own_head)
    account(bindings, {n: v.shape for n, v in found.items()}, IGNORED, source=str(weights),
            hint="check that config.json describes this file (sizes, num_labels, architectures)")
    _check_aliases(weights, found)
    tensors = {}
    for canonical, b in bindings.items():
        var = found[b.native]
        if var.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise FormatError(f"{weights}: {b.native} has dtype {var.dtype}; only float32 and float16 are supported")
        tensors[canonical] = LazyTensor(b.canonical_shape, var.dtype,
                                        lambda var=var, layout=b.layout: layout.to_canonical(var.load()))
    ckpt = Checkpoint(cfg, own_head, tensors, assets.collect(weights.parent),
                      {"format": NAME, "path": str(path), "file": weights.name, "keras_scope": scope})
    ckpt.validate(str(weights))
    return ckpt.as_head(head) if head and head != own_head else ckpt


# ---- writing ------------------------------------------------------------------------------------

def _check_writable(ckpt: Checkpoint) -> None:
    cfg, head = ckpt.config, ckpt.head
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


def _tf_order(bindings: dict[str, Binding], cfg: ElectraConfig) -> list[Binding]:
    """Bindings in Keras' variable order: layer by layer, RULES order within a layer (embeddings
    and heads, which have no layer index, first; they live in their own groups anyway)."""
    key: dict[str, tuple[int, int]] = {}
    for rank, rule in enumerate(RULES):
        layered = "{layer}" in rule.canonical
        for i in range(cfg.num_hidden_layers if layered else 1):
            key.setdefault(rule.canonical.format(layer=i), (i if layered else -1, rank))
    return sorted(bindings.values(), key=lambda b: key[b.canonical])


def write(ckpt: Checkpoint, out: Path, **options) -> list[Path]:
    """Write ``out/tf_model.h5`` + ``out/config.json`` (+ assets) the way TF ``save_pretrained`` does.

    Groups, attributes, dataset paths and the MLM head's repeated embedding variables are
    reproduced, so ``TFElectraFor<Head>.from_pretrained(out)`` reports no missing or
    unexpected weights. ``classifier_dropout`` is written as null: transformers' TF
    classification head crashes on any other value (formats.md section 7, trap 8), and
    dropout does nothing at inference.
    """
    import h5py

    if options:
        raise SchemaError(f"the h5 writer takes no options ({', '.join(options)} given)")
    get_head(ckpt.head)
    _check_writable(ckpt)
    cfg = ckpt.config.for_head(ckpt.head)
    if cfg.classifier_dropout is not None:
        log.warning("writing classifier_dropout=null instead of %s: transformers' TF classification head raises "
                    "AttributeError on any other value (dropout is inactive at inference)", cfg.classifier_dropout)
        cfg = cfg.replace(classifier_dropout=None)
    _, scope = TF_MODELS[ckpt.head]
    ordered = _tf_order(bind(RULES, cfg, ckpt.head), cfg)
    layers = list(dict.fromkeys(b.native.split("/", 1)[0] for b in ordered))
    members: dict[str, list[Binding]] = {layer: [b for b in ordered if b.native.split("/", 1)[0] == layer]
                                         for layer in layers}
    for alias in ALIASES:
        if ckpt.head in alias.heads and alias.group in members:
            members[alias.group] += [b for b in ordered if b.native.startswith(alias.prefix)]

    with h5py.File(out / WEIGHTS, "w") as f:
        save_attribute(f, "layer_names", layers)
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        for layer in sorted(layers):  # Keras creates the groups sorted by name
            group = f.create_group(layer)
            names = [f"{scope}/{b.native}" for b in members[layer]]
            save_attribute(group, "weight_names", names)
            for name, b in zip(names, members[layer]):
                arr = b.layout.to_native(np.asarray(ckpt.tensors[b.canonical]))
                group.create_dataset(name, data=arr)
        save_attribute(f.create_group(TOP_LEVEL_GROUP), "weight_names", [])
    (out / "config.json").write_text(cfg.to_json())
    return [out / WEIGHTS, out / "config.json", *assets.write(out, ckpt.assets)]
