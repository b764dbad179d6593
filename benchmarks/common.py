"""What the benchmark scripts share: timing a child process, timing a call, an h5/msgpack-style
"convert to safetensors vs transformers' route" comparison. Run the scripts as
``python benchmarks/bench_*.py`` (this folder is then on sys.path)."""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
MB = 1024 * 1024


def byte_compile_ours() -> None:
    """Byte-compile electra_bridge's modules, so our CLI starts as a pip-installed package does.

    pip compiles a package when it installs it, so transformers and torch start from bytecode; an
    editable install compiles on first import, and with PYTHONDONTWRITEBYTECODE set (as on this
    machine) never keeps it: every child would then compile our 70-odd modules again, 0.1 s of a
    one-second conversion that no installed user pays. compileall writes the bytecode regardless."""
    import electra_bridge.converters

    root = Path(electra_bridge.converters.__file__).resolve().parent.parent
    for package in ("converters", "runtimes", "schemas"):
        if not compileall.compile_dir(root / package, quiet=1):
            raise SystemExit(f"byte-compiling {root / package} failed")


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` as one child: its wall time, its own peak RSS and CPU time (user, system), from the
    wait4 rusage of exactly that child."""
    with open(log, "wb") as sink:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{log.read_text(errors='replace')[-4000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,   # ru_maxrss is in KiB on Linux
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime}


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls after one warm-up call (tracing, compilation, first allocation)."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def convert_vs_transformers(src: Path, weights: str, transformers_script: str, runs: Path) -> None:
    """``electra-bridge convert SRC --to safetensors`` (verified) vs ``transformers_script SRC OUT``,
    each in a fresh child; prints wall time, peak RSS, their ratios and whether the outputs are EQUAL."""
    byte_compile_ours()
    cli = str(BIN / "electra-bridge")
    contestants = {
        "ours": [cli, "convert", str(src), str(runs / "ours"), "--to", "safetensors", "--quiet"],
        "transformers": [sys.executable, "-c", transformers_script, str(src), str(runs / "transformers")],
    }
    results = {name: measure(cmd, runs / f"{name}.log") for name, cmd in contestants.items()}
    ours, theirs = results["ours"], results["transformers"]
    check = subprocess.run([cli, "verify", str(runs / "ours"), str(runs / "transformers")], capture_output=True)
    print(f"\n1. {weights} -> safetensors ({(src / weights).stat().st_size / MB:.0f} MB)")
    print(f"{'contestant':<14} {'wall s':>8} {'peak RSS MB':>12}")
    for name, r in results.items():
        print(f"{name:<14} {r['wall_s']:8.1f} {r['peak_rss_mb']:12.0f}")
    print(f"speed: transformers / ours (verified) = {theirs['wall_s'] / ours['wall_s']:.2f}x; "
          f"peak RSS ours / transformers = {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x; "
          f"outputs {'EQUAL' if check.returncode == 0 else 'NOT EQUAL'}")
