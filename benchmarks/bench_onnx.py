"""ONNX latency: our default (fused) export vs Optimum's export after -O2 vs transformers eager PyTorch.

One run on this machine, same inputs, same thread budget for everyone:
  * a random electra-base-size ElectraForSequenceClassification (H=768, L=12, E=768,
    V=30522, 3 labels), saved by transformers to benchmarks/out/ (no download);
  * ours:      ``electra-bridge convert ... --to onnx`` (default optimized graph, verified);
  * ours int8: the same with ``--quantize int8``;
  * Optimum:   ``optimum-cli export onnx --task text-classification`` then
               ``optimum-cli onnxruntime optimize -O2``;
  * eager:     transformers' PyTorch model, ``torch.set_num_threads(THREADS)``.
ONNX Runtime sessions: CPU provider, ``intra_op_num_threads=THREADS``, one inter-op thread,
default graph optimization level. Batches 1 and 8 at sequence 128. Each contestant is
warmed up, then timed in blocks over alternating rounds (time_blocks: CPU noise from other
users is spread over all of them) and the median per contestant is reported, with ratios and PASS/MISS against
the target (ours <= 1.0x Optimum-O2 at both shapes). Max-abs logit deviations from the
float32 numpy reference are printed for int8, ours and Optimum-O2.

Needs the ``bench`` extra (optimum-onnx[onnxruntime]) besides torch and transformers:

    .venv/bin/python benchmarks/bench_onnx.py [--threads 2] [--repeats 30] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("USE_TF", "0")             # transformers: PyTorch classes only, no TensorFlow import
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OUT = Path(__file__).resolve().parent / "out" / "onnx"
SEQ, BATCHES = 128, (1, 8)


def make_model(root: Path) -> Path:
    """A random electra-base-size sequence classifier written by transformers (seeded)."""
    hf = root / "hf"
    if (hf / "model.safetensors").exists():
        return hf
    import torch
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(0)
    cfg = ElectraConfig(vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                        num_labels=3)
    ElectraForSequenceClassification(cfg).eval().save_pretrained(hf)
    return hf


def export_ours(hf: Path, root: Path) -> tuple[Path, Path, str]:
    from electra_bridge.converters import convert

    ours, int8 = root / "ours", root / "ours-int8"
    t0 = time.perf_counter()
    convert(hf, ours, "onnx", force=True)
    t_ours = time.perf_counter() - t0
    result = convert(hf, int8, "onnx", force=True, write_options={"quantize": "int8"})
    return ours / "model.onnx", int8 / "model.onnx", f"export {t_ours:.1f}s; int8 verify:\n{result.report.table()}"


def export_optimum(hf: Path, root: Path) -> Path:
    cli = Path(sys.executable).parent / "optimum-cli"
    plain, o2 = root / "optimum", root / "optimum-O2"
    if not (plain / "model.onnx").exists():
        subprocess.run([str(cli), "export", "onnx", "--model", str(hf), "--task", "text-classification", str(plain)],
                       check=True, capture_output=True)
    if not (o2 / "model_optimized.onnx").exists() and not (o2 / "model.onnx").exists():
        subprocess.run([str(cli), "onnxruntime", "optimize", "--onnx_model", str(plain), "-O2", "-o", str(o2)],
                       check=True, capture_output=True)
    return next(p for p in (o2 / "model_optimized.onnx", o2 / "model.onnx") if p.exists())


def ort_runner(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return lambda batch: sess.run(["logits"], {k: v for k, v in batch.items() if k in names})[0]


def torch_runner(hf: Path, threads: int):
    import torch
    from transformers import ElectraForSequenceClassification

    torch.set_num_threads(threads)
    model = ElectraForSequenceClassification.from_pretrained(hf).eval()

    def run(batch):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    return run


def make_batch(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(batch, SEQ), dtype=np.int64)
    types = np.zeros_like(ids)
    types[:, SEQ // 2:] = 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}


def time_blocks(runners: dict, batch: dict, repeats: int, rounds: int = 4) -> dict[str, float]:
    """Median latency (ms) per contestant: ``rounds`` rounds, each running every contestant in a block of
    ``repeats // rounds`` timed calls after one untimed call, in forward then reverse order. Blocks (not
    call-by-call interleaving) keep one runtime's spinning worker threads off another's timings; the
    rounds spread slow drifts of the shared CPU over everyone."""
    for run in runners.values():
        for _ in range(2):
            run(batch)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_block = max(1, repeats // rounds)
    for r in range(rounds):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            runners[name](batch)
            for _ in range(per_block):
                t0 = time.perf_counter()
                runners[name](batch)
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--fresh", action="store_true", help="re-export everything")
    args = p.parse_args()
    if args.fresh and OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True, exist_ok=True)
    hf = make_model(OUT)
    ours, ours_int8, export_note = export_ours(hf, OUT)
    optimum = export_optimum(hf, OUT)
    runners = {"ours": ort_runner(ours, args.threads), "optimum-O2": ort_runner(optimum, args.threads),
               "ours-int8": ort_runner(ours_int8, args.threads), "torch-eager": torch_runner(hf, args.threads)}

    from electra_bridge.converters import read
    from electra_bridge.runtimes import CheckpointRunner

    reference = CheckpointRunner(read(hf))
    import onnxruntime
    import optimum.version
    import torch

    print(f"electra-base-size sequence classification, seq {SEQ}, {args.threads} threads, median of {args.repeats} "
          f"runs in 4 alternating rounds; onnxruntime {onnxruntime.__version__}, "
          f"optimum {optimum.version.__version__}, "
          f"torch {torch.__version__}")
    print(f"ours: {export_note}")
    print(f"{'batch':>5} {'ours ms':>9} {'O2 ms':>9} {'eager ms':>9} {'int8 ms':>9} {'ours/O2':>8} {'ours/eager':>10} "
          f"{'int8/O2':>8} {'int8 maxabs':>11} {'ours maxabs':>11} {'O2 maxabs':>10}  target")
    misses = 0
    for b in BATCHES:
        batch = make_batch(b, seed=b)
        ms = time_blocks(runners, batch, args.repeats)
        ref = reference.run("sequence-classification", batch).outputs["logits"]
        dev8 = float(np.abs(runners["ours-int8"](batch) - ref).max())
        dev32 = float(np.abs(runners["ours"](batch) - ref).max())
        dev_o2 = float(np.abs(runners["optimum-O2"](batch) - ref).max())
        ratio = ms["ours"] / ms["optimum-O2"]
        verdict = "PASS" if ratio <= 1.0 else "MISS"
        misses += verdict == "MISS"
        print(f"{b:>5} {ms['ours']:>9.2f} {ms['optimum-O2']:>9.2f} {ms['torch-eager']:>9.2f} {ms['ours-int8']:>9.2f} "
              f"{ratio:>8.3f} {ms['ours'] / ms['torch-eager']:>10.3f} {ms['ours-int8'] / ms['optimum-O2']:>8.3f} "
              f"{dev8:>11.2e} {dev32:>11.2e} {dev_o2:>10.2e}  {verdict} (ours <= 1.0x O2)")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
