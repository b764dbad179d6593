"""HF Flax flax_model.msgpack and the JAX runtime: electra-bridge vs transformers' own Flax path, in one run.

The checkpoint: a random FlaxElectraForPreTraining of Google size ``--size`` (small: H=256, L=12,
E=128, I=1024; base: H=768, L=12, E=768, I=3072; V=30522, P=512), saved by transformers'
``save_pretrained`` as flax_model.msgpack; generated once into benchmarks/out/msgpack-<size>/ (gitignored).

1. msgpack -> safetensors, each contestant a fresh subprocess (wall time, peak RSS of that child):
   * ours:         ``electra-bridge convert SRC OUT --to safetensors`` (verified; no JAX/Flax import)
   * transformers: ``ElectraForPreTraining(config)`` + ``load_flax_checkpoint_in_pytorch_model`` +
                   ``save_pretrained`` (its working msgpack -> PT route in 4.57.6; from_flax=True
                   leaves the weights on the meta device)
   The two outputs are then compared with ``electra-bridge verify`` (must be EQUAL).
2. Forward pass on a [batch, seq] probe batch, in this process: our JAX runtime (forward.py over
   jax.numpy ops, jax.jit) vs transformers' FlaxElectraForPreTraining wrapped in jax.jit, median
   of ``--runs`` calls after a warm-up; plus the max-abs difference of their logits (explicit
   token_type_ids on both sides).

    .venv/bin/python benchmarks/bench_msgpack_jax.py [--size small|base] [--batch 8 --seq 128 --runs 20]

The machine's CPU may be shared with other work: wall times are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from common import convert_vs_transformers, median_seconds

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"small": dict(hidden_size=256, embedding_size=128, intermediate_size=1024, num_attention_heads=4),
         "base": dict(hidden_size=768, embedding_size=768, intermediate_size=3072, num_attention_heads=12)}

GENERATE = """
import sys, jax, numpy as np, transformers
size, out = sys.argv[1], sys.argv[2]
cfg = transformers.ElectraConfig(vocab_size=30522, num_hidden_layers=12, max_position_embeddings=512, **eval(size))
model = transformers.FlaxElectraForPreTraining(cfg, seed=0)
rng = np.random.default_rng(0)  # non-trivial LayerNorm and biases
model.params = jax.tree_util.tree_map(lambda w: np.asarray(w) + rng.normal(0, 0.02, w.shape).astype(np.float32),
                                      model.params)
model.save_pretrained(out)
"""

TRANSFORMERS_PATH = """
import sys, transformers
from transformers.modeling_flax_pytorch_utils import load_flax_checkpoint_in_pytorch_model
src, out = sys.argv[1], sys.argv[2]
model = transformers.ElectraForPreTraining(transformers.ElectraConfig.from_pretrained(src))
load_flax_checkpoint_in_pytorch_model(model, src + "/flax_model.msgpack")
model.save_pretrained(out)
"""


def forward_bench(src: Path, batch: int, seq: int, runs: int) -> None:
    import jax
    import numpy as np
    import transformers

    from electra_bridge.converters import read
    from electra_bridge.runtimes import CheckpointRunner, probe_batch

    ckpt = read(src)
    inputs = probe_batch(ckpt.config, "pretraining", batch=batch, seq=seq)
    ours = CheckpointRunner(ckpt, "jax")
    model, params = transformers.FlaxElectraForPreTraining.from_pretrained(src, _do_init=False)
    theirs = jax.jit(lambda p, x: model(**x, params=p).logits)
    jax_inputs = {k: jax.numpy.asarray(v, dtype=jax.numpy.int32) for k, v in inputs.items()}


    t_ours = median_seconds(lambda: ours.run("pretraining", inputs), runs)
    t_theirs = median_seconds(lambda: np.asarray(theirs(params, jax_inputs)), runs)
    diff = float(np.max(np.abs(ours.run("pretraining", inputs).outputs["logits"] - np.asarray(theirs(params, jax_inputs)))))
    print(f"\n2. forward pass, batch {batch} x seq {seq}, median of {runs}")
    print(f"ours (JAX runtime, jax.jit; returns all hidden states too): {t_ours * 1e3:8.1f} ms")
    print(f"transformers FlaxElectraForPreTraining in jax.jit:          {t_theirs * 1e3:8.1f} ms")
    print(f"time ours / transformers = {t_ours / t_theirs:.2f}x; max-abs logit difference {diff:.2e} "
          "(padded rows, both segment ids)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--fresh", action="store_true", help="regenerate the checkpoint")
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "out" / f"msgpack-{args.size}"
    src = out / "checkpoint"
    if args.fresh or not (src / "flax_model.msgpack").exists():
        print(f"generating a {args.size}-size flax_model.msgpack with transformers' Flax class in {src} ...", flush=True)
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run([sys.executable, "-c", GENERATE, repr(SIZES[args.size]), str(src)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    convert_vs_transformers(src, "flax_model.msgpack", TRANSFORMERS_PATH, runs)
    forward_bench(src, args.batch, args.seq, args.runs)


if __name__ == "__main__":
    main()
