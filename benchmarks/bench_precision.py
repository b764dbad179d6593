"""Precision vs speed: fp32 / bf16 / fp16 / int8 artifacts of one electra-base model, latency and agreement.

One run on this machine, same inputs, same thread budget for everyone:
  * a random electra-base-size ElectraForSequenceClassification (H=768, L=12, V=30522, 3 labels),
    saved by transformers to benchmarks/out/onnx/hf (shared with bench_onnx.py; no download);
  * ONNX Runtime (CPU provider): ours fp32 (``convert --to onnx``, fused), ours fp16
    (``--dtype float16``: LayerNorm/softmax/Attention in float32), ours int8 (``--quantize int8``);
    each written by ``electra-bridge convert`` and so verified against the float32 original;
  * torch: transformers' eager model in float32, bfloat16 (``model.to(torch.bfloat16)``) and
    float16 (``model.half()``), ``torch.set_num_threads(THREADS)``.
Latency: median ms at batches 1 and 8, sequence 128 (time_blocks of bench_onnx.py). Agreement:
top-1 over a separate evaluation batch (``--eval-rows`` rows, mixed lengths with padding)
against the float32 eager model, plus the max-abs logit deviation. A random model's logits are
nearly tied, so its agreement is a pessimistic figure for a trained one. The script prints
the fastest artifact keeping >= 99.9% agreement.

    .venv/bin/python benchmarks/bench_precision.py [--threads 2] [--repeats 12] [--eval-rows 64]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx import BATCHES, OUT, SEQ, make_batch, make_model, ort_runner, time_blocks  # noqa: E402

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TARGET = 0.999


def export(hf: Path, name: str, **kwargs) -> Path:
    from electra_bridge.converters import convert

    out = OUT / f"precision-{name}"
    if not (out / "model.onnx").exists():
        result = convert(hf, out, "onnx", force=True, **kwargs)
        h = result.report.heads[0]
        print(f"  {name}: verified against the float32 original, max-abs {h.outputs[0].max_abs:.2e}, "
              f"agreement {h.agreement[0].text()}", flush=True)
    return out / "model.onnx"


def torch_runner(hf: Path, threads: int, dtype: str):
    import torch
    from transformers import ElectraForSequenceClassification

    torch.set_num_threads(threads)
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--skip", nargs="*", default=[], help="contestants to leave out (e.g. torch-fp16)")
    args = p.parse_args()
    os.environ["ELECTRA_BRIDGE_ORT_THREADS"] = str(args.threads)
    hf = make_model(OUT)
    print(f"model: {hf}", flush=True)
    paths = {"ort-fp32": export(hf, "fp32"), "ort-fp16": export(hf, "fp16", dtype="float16"),
             "ort-int8": export(hf, "int8", write_options={"quantize": "int8"})}
    runners = {name: ort_runner(path, args.threads) for name, path in paths.items()}
    for dtype, name in (("float32", "torch-fp32"), ("bfloat16", "torch-bf16"), ("float16", "torch-fp16")):
        runners[name] = torch_runner(hf, args.threads, dtype)
    runners = {k: v for k, v in runners.items() if k not in args.skip}

    ev = eval_batch(args.eval_rows)
    reference = runners["torch-fp32"](ev)
    quality = {}
    for name, run in runners.items():
        logits = run(ev)
        quality[name] = (float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
                         float(np.max(np.abs(logits - reference))))
    timings = {b: time_blocks(runners, make_batch(b), args.repeats) for b in BATCHES}

    print(f"\nelectra-base-size sequence classification, seq {SEQ}, {args.threads} threads, median of "
          f"{args.repeats} calls; agreement: top-1 over {args.eval_rows} padded rows vs torch float32")
    print(f"{'artifact':<12}" + "".join(f"{f'batch {b} ms':>13}" for b in BATCHES) + f"{'agreement':>11}{'max_abs':>10}")
    for name in runners:
        agree, err = quality[name]
        print(f"{name:<12}" + "".join(f"{timings[b][name]:>13.1f}" for b in BATCHES) + f"{agree:>11.4f}{err:>10.2e}")
    kept = [n for n in runners if quality[n][0] >= TARGET]
    for b in BATCHES:
        best = min(kept, key=lambda n: timings[b][n])
        print(f"fastest with agreement >= {TARGET:.1%} at batch {b}: {best} ({timings[b][best]:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
