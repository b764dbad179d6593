"""Precision vs speed: fp32 / bf16 / fp16 / int8 artifacts of electra-base-size models, latency and agreement.

One run on this machine, same inputs, same thread budget for everyone. Two parts:

1. Latency (``--part speed``): a random electra-base-size ElectraForSequenceClassification
   (H=768, L=12, V=30522, 3 labels), saved by transformers to benchmarks/out/onnx/hf (shared
   with bench_onnx.py; no download), then every artifact written by ``electra-bridge convert``
   (part 2 verifies the same kinds of artifact against the float32 original):
     * ONNX Runtime (CPU provider): ours fp32 (fused), fp16 (``--dtype float16``: LayerNorm,
       softmax, Attention in float32), int8 (``--quantize int8``);
     * torch: our TorchScript artifacts fp32, bf16 and fp16 (``--to torchscript --dtype``:
       half matmuls and embeddings, LayerNorm/softmax/mask in float32), ``--torch-export`` adds
       the torch.export ones; transformers' eager model in float32, bfloat16
       (``model.to(torch.bfloat16)``) and float16 (``model.half()``) beside them.
   Latency: median ms at batches 1 and 8, sequence 128, over ``--rounds`` rounds of blocks
   (bench_onnx.time_blocks). Agreement: top-1 over an evaluation batch (``--eval-rows`` rows of
   128, mixed lengths with padding) against transformers' float32 model, with the max-abs logit
   deviation. It prints the fastest artifact keeping >= 99.9% agreement.
2. Agreement per head (``--part heads``): for every head a random electra-base-size model
   (transformers, seeded), its fp16 / bf16 TorchScript, fp16 ONNX and int8 ONNX artifacts, each
   compared with the float32 original (our torch runtime, computed once per head) on the
   verification inputs, runtimes/probe.precision_batch: the 3 probe rows padded to 512 plus a
   512-token row and a 512-token repeated-token row. Per head and artifact: max-abs over the
   outputs and the hidden states the artifact exposes, and agreement per output.

A random model's logits are nearly tied, so its agreement is a pessimistic figure for a trained one.

    .venv/bin/python benchmarks/bench_precision.py [--threads 2] [--repeats 12] [--rounds 4] [--part speed heads]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx import BATCHES, OUT, SEQ, make_batch, make_model, ort_runner, time_blocks  # noqa: E402

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGET = 0.999
HEADS_OUT = OUT.parent / "precision"
#: part 2's artifacts: name -> (format, convert keyword arguments)
HEAD_ARTIFACTS = {"ts-fp16": ("torchscript", {"dtype": "float16"}), "ts-bf16": ("torchscript", {"dtype": "bfloat16"}),
                  "ort-fp16": ("onnx", {"dtype": "float16"}), "ort-int8": ("onnx", {"write_options": {"quantize": "int8"}})}


def export(hf: Path, name: str, to: str, **kwargs) -> Path:
    """``convert`` unless already there (unverified: part 2 compares the same artifacts); returns the folder."""
    from electra_bridge.converters import convert

    out = OUT / f"precision-{name}"
    if not (out / "config.json").exists():
        t0 = time.perf_counter()
        convert(hf, out, to, force=True, verify=False, **kwargs)
        print(f"  {name}: written in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def artifact_runner(folder: Path, fmt: str):
    """Our torch artifact loaded with torch alone and called as a user would: positional int64 tensors."""
    import torch

    from electra_bridge.runtimes.torch_artifacts import LOADERS

    module = LOADERS[fmt](folder / {"torchscript": "model.pt", "torch-export": "model.pt2"}[fmt])[0]

    def run(batch):
        with torch.inference_mode():
            out = module(*(torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
        return out["logits"].numpy()
    return run


def hf_runner(hf: Path, dtype: str):
    import torch
    from transformers import ElectraForSequenceClassification

    model = ElectraForSequenceClassification.from_pretrained(hf).eval().to(getattr(torch, dtype))

    def run(batch):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.float().numpy()
    return run


def eval_batch(rows: int, seed: int = 1) -> dict[str, np.ndarray]:
    batch = make_batch(rows, seed)
    rng = np.random.default_rng(seed)
    for r in range(rows):
        length = int(rng.integers(SEQ // 4, SEQ + 1))
        batch["input_ids"][r, length:] = 0
        batch["attention_mask"][r, length:] = 0
    return batch


def speed(args) -> None:
    hf = make_model(OUT)
    print(f"model: {hf}", flush=True)
    folders = {"ort-fp32": export(hf, "fp32", "onnx"), "ort-fp16": export(hf, "fp16", "onnx", dtype="float16"),
               "ort-int8": export(hf, "int8", "onnx", write_options={"quantize": "int8"})}
    formats = ("torchscript", "torch-export") if args.torch_export else ("torchscript",)
    for fmt in formats:
        short = {"torchscript": "ts", "torch-export": "pt2"}[fmt]
        for dtype, tag in (("float32", "fp32"), ("bfloat16", "bf16"), ("float16", "fp16")):
            folders[f"{short}-{tag}"] = export(hf, f"{short}-{tag}", fmt, dtype=dtype)
    runners = {name: (ort_runner(path / "model.onnx", args.threads) if name.startswith("ort") else
                      artifact_runner(path, "torchscript" if name.startswith("ts") else "torch-export"))
               for name, path in folders.items()}
    for dtype, tag in (("float32", "fp32"), ("bfloat16", "bf16"), ("float16", "fp16")):
        runners[f"hf-{tag}"] = hf_runner(hf, dtype)
    runners = {k: v for k, v in runners.items() if k not in args.skip}

    ev = eval_batch(args.eval_rows)
    reference = runners["hf-fp32"](ev)
    quality = {}
    for name, run in runners.items():
        logits = run(ev)
        quality[name] = (float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
                         float(np.max(np.abs(logits - reference))))
    timings = {b: time_blocks(runners, make_batch(b), args.repeats, rounds=args.rounds) for b in BATCHES}

    print(f"\n1. electra-base-size sequence classification, seq {SEQ}, {args.threads} threads, median of "
          f"{args.repeats} calls in {args.rounds} rounds; agreement: top-1 over {args.eval_rows} padded rows "
          "vs transformers float32")
    print(f"{'artifact':<10}" + "".join(f"{f'batch {b} ms':>13}" for b in BATCHES) +
          "".join(f"{f'x fp32 b{b}':>11}" for b in BATCHES) + f"{'agreement':>11}{'max_abs':>10}")
    for name in runners:
        agree, err = quality[name]
        base = {"ort": "ort-fp32", "ts": "ts-fp32", "pt2": "pt2-fp32", "hf": "hf-fp32"}[name.split("-")[0]]
        ratios = "".join(f"{timings[b][name] / timings[b][base]:>11.2f}" if base in runners else f"{'':>11}"
                         for b in BATCHES)
        print(f"{name:<10}" + "".join(f"{timings[b][name]:>13.1f}" for b in BATCHES) + ratios +
              f"{agree:>11.4f}{err:>10.2e}")
    kept = [n for n in runners if quality[n][0] >= TARGET]
    for b in BATCHES:
        best = min(kept, key=lambda n: timings[b][n])
        print(f"fastest with agreement >= {TARGET:.1%} at batch {b}: {best} ({timings[b][best]:.1f} ms; "
              f"fp32 ONNX {timings[b].get('ort-fp32', float('nan')):.1f} ms)")


class Cached:
    """A Runner that computes each head once (the float32 original, shared by every artifact's comparison)."""

    def __init__(self, inner):
        self.inner, self.results = inner, {}
        self.name, self.runtime, self.dtype = inner.name, inner.runtime, inner.dtype
        self.config, self.heads = inner.config, inner.heads

    def run(self, head, batch):
        key = (head, batch["input_ids"].shape)
        if key not in self.results:
            self.results[key] = self.inner.run(head, batch)
        return self.results[key]

    def release(self) -> None:
        self.inner.release()


def head_model(head: str) -> Path:
    """A random electra-base-size model of ``head``, written by transformers (seeded; no download)."""
    hf = HEADS_OUT / head / "hf"
    if (hf / "config.json").exists():
        return hf
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
    import spec

    torch.manual_seed(0)
    cfg = transformers.ElectraConfig(vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                                     num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                     num_labels=2 if head == "question-answering" else 3, is_decoder=head == "causal-lm")
    getattr(transformers, spec.HF_CLASS[head])(cfg).eval().save_pretrained(hf)
    return hf


def heads(args) -> None:
    from electra_bridge.converters import convert, open_runner, read
    from electra_bridge.runtimes import CheckpointRunner, compare

    rows = []
    for head in args.heads:
        hf = head_model(head)
        reference = Cached(CheckpointRunner(read(hf), "torch"))
        for name in args.artifacts:
            to, kwargs = HEAD_ARTIFACTS[name]
            out = HEADS_OUT / head / name
            if not (out / "config.json").exists():
                convert(hf, out, to, force=True, verify=False, **kwargs)
            t0 = time.perf_counter()
            report = compare(open_runner(out), reference, heads=[head])
            h = report.heads[0]
            worst = max(h.outputs + h.drift, key=lambda d: d.max_abs)
            rows.append((head, name, report.inputs[f"{head}:input_ids"], max(d.max_abs for d in h.outputs),
                         worst.max_abs, report.ok, [g.text() for g in h.agreement], time.perf_counter() - t0))
            print(f"  {head} {name}: {rows[-1][3]:.2e} {'; '.join(rows[-1][6])} ({rows[-1][7]:.0f}s)", flush=True)
        del reference
    print(f"\n2. every head at electra-base size vs the float32 original (our torch runtime), on the verification "
          f"inputs (probe rows padded to 512 + a 512-token row + a repeated-token row), {args.threads} threads")
    print(f"{'head':<24}{'artifact':<10}{'max_abs out':>12}{'incl hidden':>12}{'  within row':>13}  agreement")
    for head, name, shape, out_err, worst, ok, agree, _ in rows:
        print(f"{head:<24}{name:<10}{out_err:>12.2e}{worst:>12.2e}{'yes' if ok else 'NO':>13}  "
              f"{'; '.join(agree) or '(base: no prediction)'}")


def main() -> int:
    from electra_bridge.schemas import HEADS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--part", nargs="*", default=["speed", "heads"], choices=["speed", "heads"])
    p.add_argument("--heads", nargs="*", default=list(HEADS), help="part 2's heads")
    p.add_argument("--artifacts", nargs="*", default=list(HEAD_ARTIFACTS), choices=list(HEAD_ARTIFACTS),
                   help="part 2's artifacts (ts-fp16 is the slowest here: this CPU has no float16 GEMM)")
    p.add_argument("--torch-export", action="store_true", help="also time the torch.export artifacts")
    p.add_argument("--skip", nargs="*", default=[], help="contestants to leave out (e.g. hf-fp16)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ["ELECTRA_BRIDGE_ORT_THREADS"] = str(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, ONNX Runtime intra-op {args.threads}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    if "speed" in args.part:
        speed(args)
    if "heads" in args.part:
        heads(args)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
