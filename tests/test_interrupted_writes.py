"""Interrupted writes (issue 11): a conversion killed mid-write leaves no OUT, the next run removes
the stale staging folder it left (only folders of dead electra-bridge runs), and a full disk
(RLIMIT_FSIZE) is a clean exit-2 error with nothing partial left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from helpers import spec

from electra_bridge.converters import cli

SRC = spec.HF_SAFETENSORS / "masked-lm"

#: a child that converts but stops (sleeping) right after the weights are in the staging folder
SLOW_CHILD = """
import sys, time
from electra_bridge.converters.engine import output
real = output.write_marker
def stall(folder, info):
    real(folder, info)
    open(sys.argv[2], "w").close()
    time.sleep(120)
output.write_marker = stall
from electra_bridge.converters.cli import main
main(["convert", sys.argv[1], sys.argv[3], "--to", "msgpack", "-q"])
"""

FSIZE_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
from electra_bridge.converters.cli import main
sys.exit(main(["convert", sys.argv[1], sys.argv[2], "--to", "msgpack", "-q"]))
"""


def test_sigkill_mid_write_leaves_no_out_and_the_next_run_cleans_up(tmp_path, capsys):
    out, ready = tmp_path / "out", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, str(SRC), str(ready), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and child.poll() is None, "the child never reached the write"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    stale = tmp_path / f".out.partial-{child.pid}"
    assert not out.exists() and stale.is_dir() and (stale / "flax_model.msgpack").is_file()
    alive = tmp_path / ".out.partial-1"          # pid 1 is alive: another run's folder, not ours to remove
    alive.mkdir()
    unrelated = tmp_path / ".out.partial-notes"  # not a pid: not a staging folder
    unrelated.mkdir()
    assert cli.main(["convert", str(SRC), str(out), "--to", "msgpack", "-q"]) == 0
    assert out.is_dir() and not stale.exists() and alive.is_dir() and unrelated.is_dir()


def test_a_full_disk_is_a_clean_error_with_nothing_left(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(SRC), str(out)], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "writing failed" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
