"""Google TF1 checkpoint -> safetensors: electra-bridge vs transformers' own path, in one run.

The checkpoint: an electra-base-size pretraining checkpoint written by TensorFlow's own Saver
with google-research/electra names (fixtures/make_tf1.py at full size): discriminator H=768,
L=12, E=768, I=3072, V=30522, P=512; generator H=256 (I=1024, 12 layers); every variable
with its adam_m / adam_v slots, and global_step -- about 1.4 GB of floats. It is generated once
and cached in benchmarks/out/tf1-base/ (gitignored).

Contestants, each in a fresh subprocess, one after the other, the data file pre-read once so
every contestant starts from the same warm page cache:

  * ours:           ``electra-bridge convert CKPT OUT --to safetensors`` (the default: verified
                    by running source and output on the probe batch)
  * ours no-verify: the same with ``--no-verify``
  * ours (API):     ``electra_bridge.converters.convert(...)`` (verified) from Python: the same
                    work without the CLI's start-up (which imports every registered format)
  * transformers:   ``ElectraForPreTraining(config)`` + ``load_tf_weights_in_electra(...,
                    "discriminator")`` + ``save_pretrained`` (safetensors), i.e. what its
                    conversion script does, with the config written by hand

Measured per child: wall time (perf_counter around the child) and peak RSS (``os.wait4``'s
rusage of that one child). Reported with ratios and PASS/MISS against the targets:
peak RSS of ours (verified) <= 1.3 x the written model.safetensors + 300 MB, and ours at
least 3x faster than transformers' path. Finally the two outputs are compared with
``electra-bridge verify`` (they must be EQUAL).

    .venv/bin/python benchmarks/bench_tf1_convert.py [--repeats 3] [--threads N] [--fresh]

``--threads N`` sets OMP/OpenBLAS/MKL thread counts for every contestant alike (default: unset).

The machine's CPU may be shared with other work: wall times are noisy, ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import byte_compile_ours, measure

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "tf1-base"
CKPT = OUT / "checkpoint-dir"
BIN = Path(sys.executable).parent
MB = 1024 * 1024

DISC = dict(V=30522, E=768, H=768, L=12, I=3072, P=512, T=2)
GEN = dict(H=256, L=12, I=1024)
RSS_FACTOR, RSS_SLACK_MB, SPEEDUP = 1.3, 300, 3.0

OURS_API = """
import sys
from electra_bridge.converters import convert
convert(sys.argv[1], sys.argv[2], "safetensors")
"""

TRANSFORMERS_PATH = """
import contextlib, io, sys
import transformers
from transformers.models.electra.modeling_electra import load_tf_weights_in_electra
prefix, out = sys.argv[1], sys.argv[2]
config = transformers.ElectraConfig(vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                                    num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
model = transformers.ElectraForPreTraining(config)
with contextlib.redirect_stdout(io.StringIO()):
    load_tf_weights_in_electra(model, config, prefix, "discriminator")
model.save_pretrained(out)
"""


def generate(folder: Path) -> None:
    """Write the checkpoint with TensorFlow's Saver (run in its own process: TF stays out of ours)."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    import make_tf1

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    make_tf1.write_checkpoint(tmp, make_tf1.pretraining_shapes(DISC, GEN), step=766000, seed=7)
    make_tf1.write_vocab(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def ensure_checkpoint(fresh: bool) -> Path:
    if fresh or not (CKPT / "checkpoint").exists():
        print(f"generating the electra-base-size checkpoint in {CKPT} (TensorFlow Saver, once) ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(CKPT)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)
    return CKPT


def warm(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            while fh.read(64 * MB):
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each contestant's median is reported")
    parser.add_argument("--fresh", action="store_true", help="regenerate the checkpoint")
    parser.add_argument("--threads", type=int, help="thread count for every contestant (OMP/OpenBLAS/MKL)")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate)
        return

    ckpt = ensure_checkpoint(args.fresh)
    byte_compile_ours()
    prefix = (ckpt / "checkpoint").read_text().split('"')[1]
    data_files = sorted(ckpt.glob("*.data-*"))
    ckpt_bytes = sum(p.stat().st_size for p in data_files)
    runs = OUT / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    cli = str(BIN / "electra-bridge")
    contestants = {
        "ours": lambda out: [cli, "convert", str(ckpt), str(out), "--to", "safetensors", "--quiet"],
        "ours --no-verify": lambda out: [cli, "convert", str(ckpt), str(out), "--to", "safetensors", "--no-verify",
                                         "--quiet"],
        "ours (API)": lambda out: [sys.executable, "-c", OURS_API, str(ckpt), str(out)],
        "transformers": lambda out: [sys.executable, "-c", TRANSFORMERS_PATH, str(ckpt / prefix), str(out)],
    }
    env = dict(os.environ)
    if args.threads:
        env.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    warm(ckpt)
    rounds: dict[str, list[dict]] = {name: [] for name in contestants}
    loads = []
    for i in range(args.repeats):
        for name, make_cmd in contestants.items():  # round-robin, so noise hits everyone alike
            out = runs / f"{''.join(c for c in name if c.isalnum())}-{i}"
            r = measure(make_cmd(out), runs / f"{out.name}.log", env)
            rounds[name].append(r)
            loads.append(os.getloadavg()[0])
            print(f"  {name:<18} run {i + 1}: {r['wall_s']:6.1f} s  {r['peak_rss_mb']:7.0f} MB", flush=True)
    results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rounds.items()}

    written = (runs / "ours-0" / "model.safetensors").stat().st_size
    check = subprocess.run([cli, "verify", str(runs / "ours-0"), str(runs / "transformers-0")],
                           capture_output=True, text=True, check=False)
    rss_target = RSS_FACTOR * written / MB + RSS_SLACK_MB
    ours, theirs = results["ours"], results["transformers"]
    speedup = theirs["wall_s"] / ours["wall_s"]
    rss_ok, speed_ok = ours["peak_rss_mb"] <= rss_target, speedup >= SPEEDUP

    print(f"\nmedian of {args.repeats} rounds; 1-min load average during the run {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} cores; threads: {args.threads or 'library defaults (OMP/OpenBLAS/MKL unset)'}")
    print(f"checkpoint: {ckpt.name} ({ckpt_bytes / MB:.0f} MB of tensors incl. Adam slots); "
          f"written model.safetensors: {written / MB:.0f} MB")
    print(f"{'contestant':<18} {'wall s':>8} {'peak RSS MB':>12} {'wall vs transformers':>21} {'RSS vs transformers':>20}")
    for name, r in results.items():
        print(f"{name:<18} {r['wall_s']:8.1f} {r['peak_rss_mb']:12.0f} {r['wall_s'] / theirs['wall_s']:20.2f}x "
              f"{r['peak_rss_mb'] / theirs['peak_rss_mb']:19.2f}x")
    for name in ("ours", "ours (API)"):
        r = results[name]
        print(f"\nspeed, {name}: transformers / ours = {theirs['wall_s'] / r['wall_s']:.2f}x  (target >= {SPEEDUP:g}x)  "
              f"{'PASS' if theirs['wall_s'] / r['wall_s'] >= SPEEDUP else 'MISS'}")
        print(f"peak RSS, {name}: {r['peak_rss_mb']:.0f} MB <= {RSS_FACTOR:g} x {written / MB:.0f} MB + {RSS_SLACK_MB} MB "
              f"= {rss_target:.0f} MB  {'PASS' if r['peak_rss_mb'] <= rss_target else 'MISS'}")
    verdict = "EQUAL" if check.returncode == 0 else f"NOT EQUAL (exit {check.returncode})"
    print(f"ours vs transformers' output (electra-bridge verify): {verdict}")
    summary = {"rounds": args.repeats, "load_average": [min(loads), max(loads)], "threads": args.threads,
               "checkpoint_mb": ckpt_bytes / MB, "written_safetensors_mb": written / MB, "results": results,
               "speedup_vs_transformers": speedup, "rss_target_mb": rss_target, "speed_pass": speed_ok,
               "rss_pass": rss_ok, "outputs_equal": check.returncode == 0}
    (OUT / "bench_tf1_convert.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
