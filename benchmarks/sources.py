"""The electra-base / electra-large sources of bench_convert.py, written once by the real libraries.

Everything is random-initialised from a Google-size config (nothing is downloaded) and written by
the library that owns the format, each in its own child process:

  * ``tf1``:         a pretraining checkpoint with every variable's ``adam_m`` / ``adam_v`` slots and
                     ``global_step``, written by TensorFlow's own Saver (fixtures/make_tf1.py at full size;
                     discriminator and generator, google-research/electra names)
  * ``safetensors``: ``ElectraForPreTraining(config)`` (torch seed 0, N(0, 0.02) added to every
                     weight so LayerNorm and biases are not trivial) + ``save_pretrained`` -> model.safetensors
  * ``bin``:         the same model + ``save_pretrained(safe_serialization=False)`` -> pytorch_model.bin
  * ``h5``:          ``TFElectraForPreTraining.from_pretrained(<safetensors>, from_pt=True).save_pretrained``
                     -> tf_model.h5 (Keras legacy h5)
  * ``msgpack``:     ``FlaxElectraForPreTraining.from_pretrained(<safetensors>, from_pt=True).save_pretrained``
                     -> flax_model.msgpack

Each HF folder carries the TF1 checkpoint's vocab.txt, as a hub folder carries its tokenizer files.
Cached in benchmarks/out/sources-<size>/ (gitignored).

    .venv/bin/python benchmarks/sources.py [--size base|large] [--fresh] [--only tf1 h5 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Google's discriminator and generator sizes (V=30522, P=512, T=2 for both)
SIZES = {
    "base": dict(disc=dict(H=768, E=768, L=12, I=3072, N=12), gen=dict(H=256, L=12, I=1024)),
    "large": dict(disc=dict(H=1024, E=1024, L=24, I=4096, N=16), gen=dict(H=256, L=24, I=1024)),
}
VOCAB, POSITIONS, TYPES = 30522, 512, 2
KINDS = ("tf1", "safetensors", "bin", "h5", "msgpack")
#: the weights file of each source (tf1: the folder holding ``checkpoint``)
WEIGHTS = {"tf1": "checkpoint", "safetensors": "model.safetensors", "bin": "pytorch_model.bin",
           "h5": "tf_model.h5", "msgpack": "flax_model.msgpack"}


def folder(size: str) -> Path:
    return ROOT / "benchmarks" / "out" / f"sources-{size}"


def hf_config_kwargs(size: str) -> dict:
    d = SIZES[size]["disc"]
    return dict(vocab_size=VOCAB, embedding_size=d["E"], hidden_size=d["H"], num_hidden_layers=d["L"],
                num_attention_heads=d["N"], intermediate_size=d["I"], max_position_embeddings=POSITIONS,
                type_vocab_size=TYPES)


PT = """
import sys, torch, transformers
kwargs, out, safe = eval(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
torch.manual_seed(0)
model = transformers.ElectraForPreTraining(transformers.ElectraConfig(**kwargs)).eval()
gen = torch.Generator().manual_seed(1)
with torch.no_grad():
    for p in model.parameters():   # non-trivial LayerNorm and biases
        p.add_(torch.randn(p.shape, generator=gen) * 0.02)
model.save_pretrained(out, safe_serialization=safe)
"""

FROM_PT = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import transformers
cls, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
getattr(transformers, cls).from_pretrained(src, from_pt=True).save_pretrained(out)
"""


def _tf1(size: str, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "fixtures"))
    import make_tf1

    d, g = SIZES[size]["disc"], SIZES[size]["gen"]
    disc = dict(V=VOCAB, E=d["E"], H=d["H"], L=d["L"], I=d["I"], P=POSITIONS, T=TYPES)
    make_tf1.write_checkpoint(out, make_tf1.pretraining_shapes(disc, g), step=766000, seed=7)
    make_tf1.write_vocab(out)


def build(size: str, kind: str, fresh: bool = False) -> Path:
    """The folder of source ``kind`` at ``size``, generated first if missing (or ``fresh``)."""
    base = folder(size)
    dest = base / kind
    if (dest / WEIGHTS[kind]).exists() and not fresh:
        return dest
    if kind in ("h5", "msgpack", "bin"):
        build(size, "safetensors")
    if kind != "tf1":
        build(size, "tf1")   # its vocab.txt travels into every HF folder
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"generating {kind} ({size}) in {dest} ...", flush=True)
    t0 = time.perf_counter()
    quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind == "tf1":
        subprocess.run([sys.executable, __file__, "--tf1-child", size, str(tmp)], **quiet)
    elif kind in ("safetensors", "bin"):
        subprocess.run([sys.executable, "-c", PT, repr(hf_config_kwargs(size)), str(tmp),
                        "1" if kind == "safetensors" else "0"], **quiet)
    else:
        cls = "TFElectraForPreTraining" if kind == "h5" else "FlaxElectraForPreTraining"
        subprocess.run([sys.executable, "-c", FROM_PT, cls, str(base / "safetensors"), str(tmp)], **quiet)
    if kind != "tf1":
        shutil.copy(base / "tf1" / "vocab.txt", tmp / "vocab.txt")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="base")
    parser.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--fresh", action="store_true", help="regenerate")
    parser.add_argument("--tf1-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tf1_child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _tf1(args.tf1_child[0], Path(args.tf1_child[1]))
        return
    for kind in args.only:
        build(args.size, kind, args.fresh)


if __name__ == "__main__":
    main()
