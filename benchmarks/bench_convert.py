"""Verified conversions of every source format vs transformers' own routes, side by side in one run.

Sources (benchmarks/sources.py, random-initialised Google-size models written by TensorFlow's Saver
and transformers' own savers, cached in benchmarks/out/sources-<size>/): the Google TF1 pretraining
checkpoint with Adam slots, pytorch_model.bin, model.safetensors, tf_model.h5, flax_model.msgpack.

Cases: each source -> safetensors, and TF1 also -> h5 and -> msgpack. Contestants, each a fresh
child process (wall time around it; peak RSS from ``os.wait4``'s rusage of that child):

  * ours:          ``electra-bridge convert SRC OUT --to FMT --quiet`` -- verified (the default: source
                   and output run on the probe batch, every output of the head and of base compared)
  * ours (no verify): the same with ``--no-verify``: what the verification costs
  * transformers:  its own route, unverified --
      TF1:         ``ElectraForPreTraining(config)`` + ``load_tf_weights_in_electra`` (its conversion
                   script), then ``save_pretrained`` (-> safetensors); -> h5: a ``TFElectraForPreTraining``
                   filled by ``load_pytorch_model_in_tf2_model`` + ``save_pretrained``; -> msgpack: a
                   ``FlaxElectraForPreTraining`` given ``convert_pytorch_state_dict_to_flax`` + ``save_pretrained``
      bin / safetensors: ``ElectraForPreTraining.from_pretrained(SRC).save_pretrained(OUT)``
      h5:          ``load_tf2_checkpoint_in_pytorch_model`` + ``save_pretrained`` (``from_tf=True`` leaves
                   the weights on the meta device in 4.57)
      msgpack:     ``load_flax_checkpoint_in_pytorch_model`` + ``save_pretrained``
  * cp floor:      ``cp`` of the weights file ours wrote (warm page cache): the bytes' own cost

electra_bridge's modules are byte-compiled first (common.byte_compile_ours), as pip compiles an
installed package: an editable install under PYTHONDONTWRITEBYTECODE would otherwise compile them
again in every child of ours, while transformers' bytecode came with its install.

Rounds are round-robin, each starting with the next contestant (noise hits every contestant alike,
and none always runs right after another; the JSON keeps every round with the contestant that ran
just before it, which on a VM changes what a child pays for fresh memory); medians of ``--repeats``
rounds are reported with the ratio transformers / ours (target >= 10x) and peak RSS against 1.1 x the
written weights + 200 MB. Ours and transformers' outputs of round 1 are then compared with
``electra-bridge verify`` (they must be EQUAL). Thread settings: ``--threads N`` sets
OMP/OpenBLAS/MKL thread counts (and TF's, via TF_NUM_INTRAOP_THREADS) for every contestant alike;
unset, each library takes its default (all cores). The 1-minute load average is printed: the
machine may be shared, so wall times are noisy; ratios less so.

    .venv/bin/python benchmarks/bench_convert.py [--size base|large] [--repeats 3] [--threads N]
                                                 [--cases tf1:safetensors h5:safetensors ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import sources
from common import BIN, MB, byte_compile_ours, measure

CASES = ("tf1:safetensors", "tf1:h5", "tf1:msgpack", "bin:safetensors", "safetensors:safetensors",
         "h5:safetensors", "msgpack:safetensors")
WEIGHTS_OUT = {"safetensors": "model.safetensors", "h5": "tf_model.h5", "msgpack": "flax_model.msgpack"}
SPEEDUP, RSS_FACTOR, RSS_SLACK_MB = 10.0, 1.1, 200

_QUIET = """
import contextlib, io, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import transformers
src, out, to = sys.argv[1], sys.argv[2], sys.argv[3]
"""
_TF1_TO_PT = """
config = transformers.ElectraConfig(**eval(sys.argv[4]))
model = transformers.ElectraForPreTraining(config)
from transformers.models.electra.modeling_electra import load_tf_weights_in_electra
with contextlib.redirect_stdout(io.StringIO()):
    load_tf_weights_in_electra(model, config, src, "discriminator")
"""
_SAVE = """
if to == "safetensors":
    model.save_pretrained(out)
elif to == "h5":
    from transformers.modeling_tf_pytorch_utils import load_pytorch_model_in_tf2_model
    tf_model = transformers.TFElectraForPreTraining(model.config)
    tf_model(tf_model.dummy_inputs)
    load_pytorch_model_in_tf2_model(tf_model, model)
    tf_model.save_pretrained(out)
else:
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax
    flax_model = transformers.FlaxElectraForPreTraining(model.config)
    flax_model.params = convert_pytorch_state_dict_to_flax(model.state_dict(), flax_model)
    flax_model.save_pretrained(out)
"""
TRANSFORMERS = {
    "tf1": _QUIET + _TF1_TO_PT + _SAVE,
    "bin": _QUIET + "model = transformers.ElectraForPreTraining.from_pretrained(src)\n" + _SAVE,
    "safetensors": _QUIET + "model = transformers.ElectraForPreTraining.from_pretrained(src)\n" + _SAVE,
    "h5": _QUIET + """
from transformers.modeling_tf_pytorch_utils import load_tf2_checkpoint_in_pytorch_model
model = transformers.ElectraForPreTraining(transformers.ElectraConfig.from_pretrained(src))
load_tf2_checkpoint_in_pytorch_model(model, src + "/tf_model.h5")
""" + _SAVE,
    "msgpack": _QUIET + """
from transformers.modeling_flax_pytorch_utils import load_flax_checkpoint_in_pytorch_model
model = transformers.ElectraForPreTraining(transformers.ElectraConfig.from_pretrained(src))
load_flax_checkpoint_in_pytorch_model(model, src + "/flax_model.msgpack")
""" + _SAVE,
}


def tf1_prefix(folder: Path) -> Path:
    return folder / (folder / "checkpoint").read_text().split('"')[1]


def warm(folder: Path) -> None:
    """Read every file once so each contestant starts from the same warm page cache."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(64 * MB):
                    pass


def contestants(kind: str, src: Path, to: str, size: str) -> dict:
    cli = str(BIN / "electra-bridge")
    theirs_src = str(tf1_prefix(src)) if kind == "tf1" else str(src)
    extra = [repr(sources.hf_config_kwargs(size))] if kind == "tf1" else []
    return {
        "ours": lambda out: [cli, "convert", str(src), str(out), "--to", to, "--quiet"],
        "ours (no verify)": lambda out: [cli, "convert", str(src), str(out), "--to", to, "--no-verify", "--quiet"],
        "transformers": lambda out: [sys.executable, "-c", TRANSFORMERS[kind], theirs_src, str(out), to, *extra],
    }


def run_case(case: str, size: str, repeats: int, env: dict, runs: Path) -> dict:
    kind, to = case.split(":")
    src = sources.build(size, kind)
    warm(src)
    rounds: dict[str, list[dict]] = {}
    loads = []
    previous = "the page-cache warm-up"
    for i in range(repeats):
        order = list(contestants(kind, src, to, size).items())
        # each round starts with the next contestant, so every one runs in every position: on a VM what a
        # child costs depends on what ran just before (fresh memory is slow to back), and with a fixed
        # order ours ran fastest in round 1, right after the page-cache warm-up, and slower after transformers'
        for name, make in order[i % len(order):] + order[:i % len(order)]:
            out = runs / f"{case.replace(':', '-')}-{''.join(c for c in name if c.isalnum())}-{i}"
            r = measure(make(out), runs / f"{out.name}.log", env)
            rounds.setdefault(name, []).append({**r, "after": previous})
            previous = name
            loads.append(os.getloadavg()[0])
            print(f"  {case:<24} {name:<17} round {i + 1}: {r['wall_s']:6.2f} s (user {r['user_s']:5.2f}, system "
                  f"{r['sys_s']:5.2f}) {r['peak_rss_mb']:7.0f} MB", flush=True)
        written = runs / f"{case.replace(':', '-')}-ours-{i}" / WEIGHTS_OUT[to]
        r = measure(["cp", str(written), str(runs / "cp-floor.tmp")], runs / "cp.log", env)
        rounds.setdefault("cp floor", []).append({**r, "after": previous})
        previous = "cp floor"
        (runs / "cp-floor.tmp").unlink()
    result = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "peak_rss_mb", "user_s", "sys_s")}
              for name, rs in rounds.items()}
    ours0, theirs0 = (runs / f"{case.replace(':', '-')}-{n}-0" for n in ("ours", "transformers"))
    check = subprocess.run([str(BIN / "electra-bridge"), "verify", str(ours0), str(theirs0), "--quiet"],
                           capture_output=True, text=True, env=env)
    written_mb = (ours0 / WEIGHTS_OUT[to]).stat().st_size / MB
    for path in runs.glob(f"{case.replace(':', '-')}-*"):
        if path.is_dir():
            shutil.rmtree(path)
    # every round too, with the contestant that ran just before it: on this VM a child right after
    # transformers' (1.4-11 GB freed) pays more for fresh memory, and rotation cannot give every
    # contestant that predecessor equally often in 3 rounds
    return {"results": result, "rounds": rounds, "written_mb": written_mb, "equal": check.returncode == 0,
            "load": [min(loads), max(loads)]}


def report(summary: dict) -> None:
    print(f"\n{'case':<24} {'ours s':>7} {'no-verify s':>11} {'transformers s':>14} {'cp s':>6} {'speedup':>8} "
          f"{'ours MB':>8} {'target MB':>9} {'transformers MB':>15}  equal")
    for case, c in summary["cases"].items():
        r = c["results"]
        ours, theirs = r["ours"], r["transformers"]
        speed = theirs["wall_s"] / ours["wall_s"]
        target = RSS_FACTOR * c["written_mb"] + RSS_SLACK_MB
        c.update(speedup=speed, rss_target_mb=target, speed_pass=speed >= SPEEDUP,
                 rss_pass=ours["peak_rss_mb"] <= target)
        print(f"{case:<24} {ours['wall_s']:7.2f} {r['ours (no verify)']['wall_s']:11.2f} {theirs['wall_s']:14.2f} "
              f"{r['cp floor']['wall_s']:6.2f} {speed:7.1f}x {ours['peak_rss_mb']:8.0f} {target:9.0f} "
              f"{theirs['peak_rss_mb']:15.0f}  {'EQUAL' if c['equal'] else 'NOT EQUAL'}"
              f"  speed {'PASS' if c['speed_pass'] else 'MISS'}, RSS {'PASS' if c['rss_pass'] else 'MISS'}")
    loads = [x for c in summary["cases"].values() for x in c["load"]]
    print(f"\nmedian of {summary['repeats']} rounds; size {summary['size']}; 1-min load average {min(loads):.1f}-"
          f"{max(loads):.1f} on {os.cpu_count()} cores; threads: {summary['threads'] or 'library defaults (unset)'}; "
          f"targets: speedup >= {SPEEDUP:g}x, peak RSS <= {RSS_FACTOR:g} x written + {RSS_SLACK_MB} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(sources.SIZES), default="base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="thread count for every contestant (OMP/OpenBLAS/MKL/TF)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if args.threads:
        env.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "TF_NUM_INTRAOP_THREADS")})
    byte_compile_ours()   # as pip leaves an installed package: transformers' bytecode came with its install
    runs = sources.folder(args.size) / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    summary = {"size": args.size, "repeats": args.repeats, "threads": args.threads, "cases": {}}
    for case in args.cases:
        summary["cases"][case] = run_case(case, args.size, args.repeats, env, runs)
    report(summary)
    out = sources.folder(args.size).parent / f"bench_convert-{args.size}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; summary: {out}")


if __name__ == "__main__":
    main()
