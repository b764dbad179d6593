"""Latency of our torch runtime and artifacts vs transformers' eager PyTorch, side by side.

An electra-base-size ElectraForSequenceClassification (V=30522, E=H=768, L=12, 12 heads,
I=3072) is built in memory with random weights (nothing is downloaded), saved as an HF
folder in a temporary directory, read by electra-bridge and turned into a TorchScript and
a torch.export artifact. Each contender runs the same int64 batch; the runs are
interleaved round-robin (so load from other processes on a shared CPU hits all of them
alike) and the median of the timed repeats is reported, after warm-up.

    .venv/bin/python benchmarks/bench_torch.py [--repeats 7] [--threads 2] [--no-export]

Target: ours / transformers eager <= 1.0 (PASS) at batch 1 and 8, sequence 128.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BASE = dict(vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", num_labels=2)
HEAD = "sequence-classification"


def build(folder: Path, with_export: bool):
    """(transformers model, our torch runner, TorchScript module, torch.export module or None)."""
    os.environ.setdefault("USE_TF", "0")     # transformers' PyTorch classes only: no TF/Flax import noise
    os.environ.setdefault("USE_FLAX", "0")
    import transformers

    from electra_bridge.converters import read, write
    from electra_bridge.runtimes import CheckpointRunner
    from electra_bridge.runtimes.torch_artifacts import load_torch_export, load_torchscript

    torch.manual_seed(0)
    model = transformers.ElectraForSequenceClassification(transformers.ElectraConfig(**BASE)).eval()
    model.save_pretrained(folder / "hf")
    ckpt = read(folder / "hf")
    ours = CheckpointRunner(ckpt, "torch")
    write(ckpt, folder / "ts", "torchscript")
    scripted = load_torchscript(folder / "ts" / "model.pt")[0]
    exported = None
    if with_export:
        write(ckpt, folder / "export", "torch-export")
        exported = load_torch_export(folder / "export" / "model.pt2")[0]
    return model, ours, scripted, exported


def batch_of(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    ids = rng.integers(1, BASE["vocab_size"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1:, seq * 3 // 4:] = 0                      # some padding, as in real batches
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def contenders(model, ours, scripted, exported, arrays):
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    args = (tensors["input_ids"], tensors["attention_mask"], tensors["token_type_ids"])
    calls = {
        "transformers eager": lambda: model(**tensors).logits,
        "ours: torch runtime": lambda: ours.run(HEAD, arrays).outputs["logits"],
        "ours: TorchScript": lambda: scripted(*args)["logits"],
    }
    if exported is not None:
        calls["ours: torch.export"] = lambda: exported(*args)["logits"]
    return calls


def measure(calls, warmup: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                calls[name]()
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order each round
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--no-export", action="store_true", help="skip the torch.export artifact")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, electra-base-size {HEAD}, seq {args.seq}, "
          f"median of {args.repeats} after {args.warmup} warm-up rounds (interleaved)")
    with tempfile.TemporaryDirectory() as tmp:
        model, ours, scripted, exported = build(Path(tmp), not args.no_export)
        verdicts = []
        for batch in args.batches:
            arrays = batch_of(batch, args.seq)
            calls = contenders(model, ours, scripted, exported, arrays)
            with torch.inference_mode():  # same answer first: a fast wrong model is no result
                ref = calls["transformers eager"]().numpy()
                gaps = {n: float(np.abs(np.asarray(f()) - ref).max()) for n, f in calls.items()}
            times = measure(calls, args.warmup, args.repeats)
            eager = statistics.median(times["transformers eager"])
            print(f"\nbatch {batch} x seq {args.seq}")
            print(f"  {'contender':<22} {'median ms':>10} {'min ms':>9} {'ours/eager':>11} {'max-abs vs eager':>17}")
            for name, ts in times.items():
                med = statistics.median(ts)
                ratio = med / eager
                verdict = "" if name.startswith("transformers") else ("PASS" if ratio <= 1.0 else "MISS")
                if verdict:
                    verdicts.append(verdict == "PASS")
                print(f"  {name:<22} {med * 1e3:>10.1f} {min(ts) * 1e3:>9.1f} {ratio:>11.3f} {gaps[name]:>17.2e}  {verdict}")
    print(f"\ntarget ours/eager <= 1.0: {sum(verdicts)}/{len(verdicts)} PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
