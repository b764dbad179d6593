"""The hostile-input corpus (tests/bad_inputs/generate.py): every case is refused cleanly.

Each case asserts: the documented exit code (2); exactly one stderr line, ``error: ...``,
naming the file (and the tensor where one is to blame) and coming from the toolkit's own
errors (never the catch-all "rerun with --debug"); no traceback; nothing at OUT and no staging
folder beside it; every source file byte-identical (sha256 before and after); no sentinel file;
and bounded time and memory. Cases with special files or huge claims run in a child process
under RLIMIT_AS and a timeout; the rest run in-process (``cli.main``) with tracemalloc.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from helpers import missing_for

from bad_inputs.generate import CASES, Work

from electra_bridge.converters import cli
from electra_bridge.schemas import MissingDependencyError

#: bounds every case must finish within
TIME_LIMIT_S = 60
CHILD_AS_LIMIT = 3 << 30          # RLIMIT_AS of an isolated child (bytes of address space)
INPROCESS_PEAK_LIMIT = 256 << 20  # tracemalloc peak of an in-process case
CHILD_RSS_LIMIT = 1 << 30         # peak RSS (VmHWM) of an isolated child
STATS: dict[str, tuple[float, int, str]] = {}

CHILD = """
import json, os, resource, sys
limit = int(os.environ["EB_AS_LIMIT"])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from electra_bridge.converters.cli import main
code = main(json.loads(sys.argv[1]))
# VmHWM: this process's own peak RSS (ru_maxrss would include the forking parent's, kept across exec)
with open("/proc/self/status") as status:
    hwm = next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), 0)
with open(os.environ["EB_RUSAGE"], "w") as fh:
    fh.write(str(hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
sys.exit(code)
"""


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` (symlinks by target, FIFOs by kind: never opened)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder, name)
            mode = os.lstat(p).st_mode
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(mode):
                with open(p, "rb") as fh:
                    out[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
            elif not stat.S_ISDIR(mode):
                out[rel] = f"special:{stat.S_IFMT(mode)}"
    return out


@pytest.fixture(scope="session")
def artifact_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


def run_child(argv, cwd, tmp_path):
    rusage = tmp_path / "rusage"
    env = {**os.environ, "EB_AS_LIMIT": str(CHILD_AS_LIMIT), "EB_RUSAGE": str(rusage)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=TIME_LIMIT_S)
    peak = int(rusage.read_text()) if rusage.exists() else 0
    return proc.returncode, proc.stderr, peak


def run_inprocess(argv, cwd, capsys, monkeypatch):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    tracemalloc.start()
    try:
        code = cli.main(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return code, capsys.readouterr().err, peak


def _param(name):
    return pytest.param(name, id=name)


@pytest.mark.parametrize("name", [_param(n) for n in CASES])
def test_bad_input_is_refused_cleanly(name, tmp_path, artifact_cache, capsys, monkeypatch):
    root = tmp_path / "case"
    root.mkdir()
    work = Work(root, artifact_cache)
    try:
        c = CASES[name](work)
    except ImportError as exc:  # onnx/torch missing in a light install
        pytest.skip(f"building the case needs {exc.name}")
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    if c.extra and missing_for(c.extra):
        pytest.skip(f"needs the {c.extra} extra")
    before = snapshot(root)
    argv = [*c.argv, "-q"]
    start = time.monotonic()
    if c.isolate:
        code, err, peak = run_child(argv, c.cwd or root, tmp_path)
    else:
        code, err, peak = run_inprocess(argv, c.cwd, capsys, monkeypatch)
    elapsed = time.monotonic() - start
    STATS[name] = (elapsed, peak, "child peak RSS" if c.isolate else "tracemalloc peak")

    lines = err.strip().splitlines()
    assert code == c.code, (code, err)
    # one error: line; a schema report may continue it on indented lines (what is wrong, the fix)
    assert lines and lines[0].startswith("error: "), err
    assert sum(line.startswith("error") for line in lines) == 1, err
    assert all(line.startswith((" ", "fix:")) for line in lines[1:]), err
    assert "Traceback" not in err and "rerun with --debug" not in err, err
    for mention in c.mentions:
        assert mention in err, (mention, err)
    assert snapshot(root) == before, "a source file changed"
    assert not work.sentinel.exists(), "the payload ran"
    if c.out is not None:
        assert not c.out.exists(), "OUT left behind"
    leftovers = [p.name for p in root.rglob(".*partial-*")] + [p.name for p in root.rglob(".*.replaced-*")]
    assert not leftovers, leftovers
    assert elapsed < TIME_LIMIT_S
    assert peak < (CHILD_RSS_LIMIT if c.isolate else INPROCESS_PEAK_LIMIT), peak


def test_corpus_size_and_bounds():
    """At least 100 distinct cases; the slowest and the largest are reported (pytest -s shows them)."""
    assert len(CASES) >= 100
    if STATS:
        slow = max(STATS.items(), key=lambda kv: kv[1][0])
        big = max((kv for kv in STATS.items() if not kv[1][2].startswith("child")), key=lambda kv: kv[1][1],
                  default=("none", (0.0, 0, "")))
        child = max((kv for kv in STATS.items() if kv[1][2].startswith("child")), key=lambda kv: kv[1][1],
                    default=None)
        print(f"\n{len(STATS)} corpus cases run; slowest {slow[0]} {slow[1][0]:.2f} s; largest in-process "
              f"{big[0]} {big[1][1] / 2**20:.1f} MiB; largest child "
              + (f"{child[0]} {child[1][1] / 2**20:.1f} MiB peak RSS" if child else "none"))
