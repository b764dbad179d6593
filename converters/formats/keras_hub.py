"""keras-hub ``ElectraBackbone`` presets: the folder ``ElectraBackbone.from_preset`` loads (``base`` only).

A preset folder holds keras-hub's own ``config.json`` (``{"class_name": "ElectraBackbone",
"config": {vocab_size, num_layers, num_heads, hidden_dim, embedding_dim, intermediate_dim,
max_sequence_length, num_segments, dropout}}``), ``metadata.json``, ``model.weights.h5`` and,
when the checkpoint carries a ``vocab.txt``, keras-hub's tokenizer files (``tokenizer.json``, a
Keras config, and ``assets/tokenizer/vocabulary.txt``). The engine writes no HF config.json or
tokenizer files here (``writes_hf_files=False``): keras-hub's would be overwritten.

The h5 stores each variable as ``layers/<group>/.../vars/<i>``, the groups named by Keras
after the layer classes in construction order (``reversible_embedding`` = token table,
``embedding`` = segment table, ``dense`` = embeddings projection, then the pooler, one
``transformer_encoder[_i]`` per layer). The codec names each dataset by the variable's path
in the backbone (``transformer_layer_0/self_attention_layer/query/kernel``). Attention kernels
are keras ``EinsumDense`` ``[hidden, heads, head_dim]`` (output ``[heads, head_dim, hidden]``).

The activation. keras-hub's backbone hard-codes the tanh-approximate GELU; ELECTRA (Google's
and HF's) uses the exact erf form, the function every released ELECTRA was trained with (keras-hub's
own presets are converted from them). A preset is read as what it holds, ELECTRA's weights: the
config gets ``hidden_act="gelu"`` (erf) and the provenance says keras-hub computes the tanh form, so
a checkpoint read from a preset runs 2.2e-4..2.6e-4 (fixtures) from keras-hub's own outputs, the
approximation and nothing else. Writing, ``convert --to keras-hub`` verifies the folder by running
keras-hub's own ``from_preset`` backbone (``KerasHubRunner``, runtime ``keras-hub``) against the
source, so the report shows that drift, gated by the keras-hub tolerance row (1e-3), not by
float32's; it logs why. (Reading the folder back through our runtime instead would measure 0.)
A checkpoint whose activation keras-hub cannot compute (relu, ...) is refused.

The pooler. keras-hub adds ``pooled_dense`` (tanh dense on [CLS]) that ELECTRA lacks. Written as
zeros (``pooled_output`` is then exactly 0: visibly no trained pooler); on reading it is ignored,
as it feeds no ELECTRA output.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from electra_bridge.schemas import (
    BridgeError, Checkpoint, ElectraConfig, FormatError, MissingDependencyError, SchemaError,
)

from ..engine import files
from ..engine.format import CheckpointFormat, NativeTensor, Plan, ReadRequest, find_weights
from ..engine.rules import IDENTITY, TRANSPOSE, Ignored, Layout, Rule

WEIGHTS, CONFIG = "model.weights.h5", "config.json"
VOCABULARY = "assets/tokenizer/vocabulary.txt"
CLASS_NAME = "ElectraBackbone"
#: the activations keras-hub's backbone computes (tanh GELU); an erf "gelu" is written with the drift stated
WRITABLE_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
READ_ACT = "gelu"
ACTIVATION_NOTE = ("keras-hub's ElectraBackbone computes the tanh-approximate GELU; read as ELECTRA's exact erf "
                   "gelu, the function its weights were trained with")
#: keras-hub config key -> ElectraConfig field
CONFIG_KEYS = {"vocab_size": "vocab_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
               "hidden_dim": "hidden_size", "embedding_dim": "embedding_size", "intermediate_dim": "intermediate_size",
               "max_sequence_length": "max_position_embeddings", "num_segments": "type_vocab_size"}
POOLER = "pooled_dense"
IGNORED = (Ignored(f"{POOLER}/*", "keras-hub's pooler (tanh dense on [CLS]); ELECTRA has none and no ELECTRA "
                                  "output uses it"),)

log = logging.getLogger("electra_bridge")
_LAYER = re.compile(r"^layers/transformer_encoder(?:_(\d+))?/(.+)$")
_IN_LAYER = {"_self_attention_layer/query_dense": "self_attention_layer/query",
             "_self_attention_layer/key_dense": "self_attention_layer/key",
             "_self_attention_layer/value_dense": "self_attention_layer/value",
             "_self_attention_layer/output_dense": "self_attention_layer/attention_output",
             "_self_attention_layer_norm": "self_attention_layer_norm",
             "_feedforward_layer_norm": "feedforward_layer_norm",
             "_feedforward_intermediate_dense": "feedforward_intermediate_dense",
             "_feedforward_output_dense": "feedforward_output_dense"}
_VARS = {"dense": ("kernel", "bias"), "norm": ("gamma", "beta"), "embedding": ("embeddings",)}


def _groups(cfg: ElectraConfig) -> dict[str, tuple[str, str]]:
    """Top-level h5 group -> (variable path prefix, variable kind), for keras-hub 0.32's construction order."""
    dense = (["embeddings_projection"] if cfg.has_embeddings_project else []) + [POOLER]
    out = {"reversible_embedding": ("token_embedding", "embedding"),
           "position_embedding": ("position_embedding", "embedding"),
           "embedding": ("segment_embedding", "embedding"),
           "layer_normalization": ("embeddings_layer_norm", "norm")}
    out.update({("dense" if i == 0 else f"dense_{i}"): (name, "dense") for i, name in enumerate(dense)})
    return out


def variable_path(dataset: str, cfg: ElectraConfig) -> str:
    """The backbone variable path of one h5 dataset (the dataset path itself when it is not one)."""
    group, _, rest = dataset.partition("/vars/")
    if not rest.isdigit():
        return dataset
    index = int(rest)
    match = _LAYER.match(group)
    if match:
        sub = _IN_LAYER.get(match.group(2))
        kind = "norm" if sub and sub.endswith("norm") else "dense"
        if sub is None or index >= len(_VARS[kind]):
            return dataset
        return f"transformer_layer_{int(match.group(1) or 0)}/{sub}/{_VARS[kind][index]}"
    name, kind = _groups(cfg).get(group.removeprefix("layers/"), (None, None))
    if name is None or index >= len(_VARS[kind]):
        return dataset
    return f"{name}/{_VARS[kind][index]}"


def _heads_layout(n: int, d: int, kind: str) -> Layout:
    """Canonical ``[out, in]`` <-> EinsumDense: q/k/v ``[in, n, d]``, biases ``[n, d]``, output ``[n, d, out]``."""
    if kind == "qkv":
        return Layout("einsum-qkv", lambda a: np.ascontiguousarray(a.reshape(a.shape[0], n * d).T),
                      lambda a: np.ascontiguousarray(a.T).reshape(a.shape[1], n, d), lambda s: (s[1], n, d))
    if kind == "qkv-bias":
        return Layout("einsum-bias", lambda a: a.reshape(n * d), lambda a: a.reshape(n, d), lambda s: (n, d))
    return Layout("einsum-out", lambda a: np.ascontiguousarray(a.reshape(n * d, a.shape[-1]).T),
                  lambda a: np.ascontiguousarray(a.T).reshape(n, d, a.shape[0]), lambda s: (n, d, s[0]))


def rules_for(cfg: ElectraConfig) -> tuple[Rule, ...]:
    """canonical <-> backbone variable path, for one config (the attention layouts need heads and head_dim)."""
    n, d = cfg.num_attention_heads, cfg.head_dim
    rules = [Rule("embeddings.word_embeddings.weight", "token_embedding/embeddings"),
             Rule("embeddings.position_embeddings.weight", "position_embedding/embeddings"),
             Rule("embeddings.token_type_embeddings.weight", "segment_embedding/embeddings"),
             Rule("embeddings.LayerNorm.weight", "embeddings_layer_norm/gamma"),
             Rule("embeddings.LayerNorm.bias", "embeddings_layer_norm/beta"),
             Rule("embeddings_project.weight", "embeddings_projection/kernel", TRANSPOSE),
             Rule("embeddings_project.bias", "embeddings_projection/bias")]
    ours, theirs = "encoder.layer.{layer}", "transformer_layer_{layer}"
    for p in ("query", "key", "value"):
        rules += [Rule(f"{ours}.attention.self.{p}.weight", f"{theirs}/self_attention_layer/{p}/kernel",
                       _heads_layout(n, d, "qkv")),
                  Rule(f"{ours}.attention.self.{p}.bias", f"{theirs}/self_attention_layer/{p}/bias",
                       _heads_layout(n, d, "qkv-bias"))]
    rules += [Rule(f"{ours}.attention.output.dense.weight", f"{theirs}/self_attention_layer/attention_output/kernel",
                   _heads_layout(n, d, "out")),
              Rule(f"{ours}.attention.output.dense.bias", f"{theirs}/self_attention_layer/attention_output/bias")]
    for canonical, native in (("attention.output.LayerNorm", "self_attention_layer_norm"),
                              ("output.LayerNorm", "feedforward_layer_norm")):
        rules += [Rule(f"{ours}.{canonical}.weight", f"{theirs}/{native}/gamma", IDENTITY),
                  Rule(f"{ours}.{canonical}.bias", f"{theirs}/{native}/beta", IDENTITY)]
    for canonical, native in (("intermediate.dense", "feedforward_intermediate_dense"),
                              ("output.dense", "feedforward_output_dense")):
        rules += [Rule(f"{ours}.{canonical}.weight", f"{theirs}/{native}/kernel", TRANSPOSE),
                  Rule(f"{ours}.{canonical}.bias", f"{theirs}/{native}/bias", IDENTITY)]
    return tuple(rules)


def read_preset_config(folder: Path) -> ElectraConfig:
    """keras-hub's config.json as an ElectraConfig (hidden_act: ELECTRA's erf gelu, see the module doc)."""
    path = folder / CONFIG
    if not path.is_file():
        raise SchemaError(f"no {CONFIG} in {folder}: a keras-hub preset carries its backbone's config")
    try:
        entry = json.loads(files.read_small(files.confined(path, folder.resolve(), CONFIG)))
        if entry.get("class_name") != CLASS_NAME:
            raise SchemaError(f"{path} describes a {entry.get('class_name')!r}, not a keras-hub {CLASS_NAME}")
        raw = entry["config"]
        values = {ours: int(raw[theirs]) for theirs, ours in CONFIG_KEYS.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SchemaError(f"{path} is not a keras-hub {CLASS_NAME} config ({exc!r})") from None
    return ElectraConfig(**values, hidden_act=READ_ACT, layer_norm_eps=1e-12, hidden_dropout_prob=float(
        raw.get("dropout", 0.1)), attention_probs_dropout_prob=float(raw.get("dropout", 0.1)),
        architectures=("ElectraModel",))


def plan(request: ReadRequest) -> Plan:
    if request.config is not None:
        raise SchemaError("a keras-hub preset carries its own config.json; --config does not apply")
    cfg = read_preset_config(request.weights.parent)
    return Plan("base", cfg, rules_for(cfg), IGNORED, {"activation": ACTIVATION_NOTE}, config_origin=CONFIG)


def read_assets(folder: Path) -> dict[str, bytes]:
    """The preset's vocabulary as ``vocab.txt`` (keras-hub's tokenizer.json is a Keras config, not HF's)."""
    path = folder / VOCABULARY
    if not path.is_file():
        return {}
    return {"vocab.txt": files.read_small(files.confined(path, folder.resolve(), "vocabulary"))}


def _load(path: Path, dataset: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f[dataset][()]


class KerasHubCodec:
    def locate(self, path: Path) -> Path | None:
        found = find_weights(path, (WEIGHTS,), (WEIGHTS,))
        return found if found is not None and (found.parent / CONFIG).is_file() and _is_preset(found.parent) else None

    def list(self, weights: Path) -> dict[str, NativeTensor]:
        import h5py

        cfg = read_preset_config(weights.parent)
        datasets = []
        try:
            with h5py.File(weights, "r") as f:
                f.visititems(lambda p, obj: datasets.append((p, obj.shape, obj.dtype))
                             if isinstance(obj, h5py.Dataset) else None)
        except OSError as exc:
            raise FormatError(f"{weights} is not an HDF5 file: {exc}") from None
        found = {}
        for path, shape, dtype in datasets:
            name = variable_path(path, cfg)
            found[name] = NativeTensor(name, tuple(shape), dtype, lambda p=path: _load(weights, p))
        return found

    def write(self, out: Path, tensors: Sequence[NativeTensor], ckpt: Checkpoint) -> list[Path]:
        backbone = build_backbone(ckpt.config)
        variables = {v.path: v for v in backbone.weights}
        assigned = set()
        for tensor in tensors:
            variables[tensor.name].assign(np.asarray(tensor.load(), dtype=np.float32))
            assigned.add(tensor.name)
        for name in (f"{POOLER}/kernel", f"{POOLER}/bias"):    # the pooler ELECTRA lacks: zeros
            variables[name].assign(np.zeros(tuple(variables[name].shape), np.float32))
            assigned.add(name)
        left = sorted(set(variables) - assigned)
        if left:
            raise SchemaError(f"no checkpoint tensor for keras-hub variables {', '.join(left)}")
        backbone.save_to_preset(str(out))
        written = [out / CONFIG, out / "metadata.json", out / WEIGHTS]
        if "vocab.txt" in ckpt.assets:
            written += _write_tokenizer(out, ckpt)
        return written


def _is_preset(folder: Path) -> bool:
    try:
        return json.loads(files.read_small(folder / CONFIG)).get("class_name") == CLASS_NAME
    except (OSError, ValueError, AttributeError, BridgeError):
        return False


def _write_tokenizer(out: Path, ckpt: Checkpoint) -> list[Path]:
    keras_hub = _keras_hub()

    vocab = ckpt.assets["vocab.txt"].decode("utf-8").splitlines()
    settings = json.loads(ckpt.assets.get("tokenizer_config.json", b"{}") or b"{}")
    lowercase = bool(settings.get("do_lower_case", True))        # HF's and Google's ELECTRA default: uncased
    tokenizer = keras_hub.tokenizers.ElectraTokenizer(vocabulary=vocab, lowercase=lowercase)
    tokenizer.save_to_preset(str(out))
    return [out / "tokenizer.json", out / VOCABULARY]


def _keras_hub():
    try:
        import keras_hub
    except ImportError as exc:
        raise MissingDependencyError(f"keras-hub presets need keras-hub ({exc}): pip install keras-hub") from exc
    return keras_hub


def build_backbone(cfg: ElectraConfig):
    keras_hub = _keras_hub()
    return keras_hub.models.ElectraBackbone(
        vocab_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        hidden_dim=cfg.hidden_size, embedding_dim=cfg.embedding_size, intermediate_dim=cfg.intermediate_size,
        max_sequence_length=cfg.max_position_embeddings, num_segments=cfg.type_vocab_size, dropout=0.0)


def check_writable(ckpt: Checkpoint) -> None:
    cfg = ckpt.config
    wrong = [f"hidden_act {cfg.hidden_act}" for _ in [0] if cfg.hidden_act not in WRITABLE_ACTS]
    wrong += [f"layer_norm_eps {cfg.layer_norm_eps:g}" for _ in [0] if cfg.layer_norm_eps != 1e-12]
    wrong += [f"position_embedding_type {cfg.position_embedding_type}" for _ in [0]
              if cfg.position_embedding_type != "absolute"]
    if wrong:
        raise SchemaError(f"keras-hub's ElectraBackbone cannot compute this checkpoint ({', '.join(wrong)}): it "
                          "hard-codes tanh GELU, LayerNorm epsilon 1e-12 and absolute positions")


class KerasHubRunner:
    """keras-hub's own backbone loaded with ``ElectraBackbone.from_preset``: ``last_hidden_state`` is its
    ``sequence_output`` (tanh GELU). Exposes no hidden states."""

    runtime, dtype, heads = "keras-hub", "float32", ("base",)

    def __init__(self, folder: Path):
        self.folder, self.name = Path(folder), str(folder)
        self.config = read_preset_config(self.folder)
        self._backbone = None
        log.warning("the keras-hub preset is verified by running keras-hub's own ElectraBackbone (from_preset), "
                    "which computes the tanh-approximate GELU where ELECTRA uses erf: the difference reported is "
                    "that approximation, judged by the keras-hub tolerance row (not float32's)")

    def run(self, head: str, batch: dict[str, np.ndarray]):
        import keras

        from electra_bridge.runtimes.forward import Result

        if head != "base":
            raise SchemaError(f"a keras-hub preset computes the base head only, not {head!r}")
        if self._backbone is None:
            self._backbone = _keras_hub().models.ElectraBackbone.from_preset(str(self.folder))
        ids = batch["input_ids"]
        inputs = {"token_ids": ids.astype(np.int32),
                  "segment_ids": batch.get("token_type_ids", np.zeros_like(ids)).astype(np.int32),
                  "padding_mask": batch.get("attention_mask", np.ones_like(ids)).astype(np.int32)}
        out = self._backbone(inputs, training=False)
        return Result({"last_hidden_state": np.asarray(keras.ops.convert_to_numpy(out["sequence_output"]),
                                                       np.float32)}, ())

    def release(self) -> None:
        self._backbone = None


FORMAT = CheckpointFormat(name="keras-hub", codec=KerasHubCodec(), rules=rules_for(ElectraConfig()),
                          ignored=IGNORED, extra="keras", heads=("base",), plan=plan, check_writable=check_writable,
                          write_rules=lambda ckpt: rules_for(ckpt.config), writes_hf_files=False,
                          read_assets=read_assets, verify_runner=KerasHubRunner)
