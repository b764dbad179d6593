"""``electra-bridge batch``: a plan of 8 tiny checkpoints (every source format, several targets)
and one corrupt item, run as the user types it with --jobs 2 and on a local Ray (2 CPUs): all
verified, the corrupt one reported without stopping the rest; a second run does no work; a
changed source is redone; bad plans are one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES, run_cli

from electra_bridge.converters import batch
from electra_bridge.schemas import SchemaError

GOOD = [  # (fixture folder, target, extra item keys)
    ("hf/base", "msgpack", {}),
    ("hf/pretraining", "h5", {}),
    ("hf/masked-lm", "tf1", {}),
    ("hf/sequence-classification", "tf1", {"head": "base"}),
    ("hf-flax/question-answering", "safetensors", {}),
    ("hf-h5/token-classification", "msgpack", {}),
    ("tf1/pretraining", "safetensors", {"options": {"net": "generator"}}),
    ("hf/multiple-choice", "safetensors", {"dtype": "bfloat16"}),
]


def make_plan(tmp: Path, suffix: str = ".yaml") -> Path:
    """Sources copied under tmp/src (so a test may change one), outputs under tmp/out."""
    items = []
    for i, (fixture, to, extra) in enumerate(GOOD):
        shutil.copytree(FIXTURES / fixture, tmp / "src" / f"{i}")
        items.append({"src": f"src/{i}", "out": f"out/{i}-{to}", "to": to, **extra})
    corrupt = tmp / "src" / "corrupt"
    shutil.copytree(FIXTURES / "hf" / "base", corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    items.insert(4, {"src": "src/corrupt", "out": "out/corrupt"})
    (tmp / "out").mkdir()
    plan = tmp / f"plan{suffix}"
    doc = {"defaults": {"to": "safetensors"}, "items": items}
    plan.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc))
    return plan


def run_batch(plan: Path, *args: str) -> tuple[int, dict]:
    proc = run_cli("batch", plan, *args, "--json")
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode and doc["command"] == "batch", proc.stderr
    return proc.returncode, doc


def statuses(doc: dict) -> list[str]:
    return [item["status"] for item in doc["items"]]


def check_first_run(tmp: Path, code: int, doc: dict) -> None:
    assert code == 2 and doc["converted"] == 8 and doc["failed"] == 1, doc
    corrupt = doc["items"][4]
    assert corrupt["status"] == "failed" and "model.safetensors" in corrupt["detail"] and not (tmp / "out" / "corrupt").exists()
    for item in doc["items"]:
        if item["status"] == "converted":
            assert item["detail"] == "verified"
            assert run_cli("verify", item["out"], "--provenance").returncode == 0, item["out"]
            record = json.loads((Path(item["out"]) / "electra-bridge.json").read_text())
            assert record["verification"]["ok"] is True and record["format"] == item["to"]


def test_jobs_2_runs_every_item_skips_done_work_and_redoes_a_changed_source(tmp_path):
    plan = make_plan(tmp_path)
    code, doc = run_batch(plan, "--jobs", "2")
    check_first_run(tmp_path, code, doc)
    code, again = run_batch(plan, "--jobs", "2")
    assert code == 2 and statuses(again) == ["skipped"] * 4 + ["failed"] + ["skipped"] * 4, again
    vocab = tmp_path / "src" / "1" / "vocab.txt"
    vocab.write_text(vocab.read_text() + "[NEW]\n")
    code, third = run_batch(plan)
    assert statuses(third) == ["skipped", "converted"] + ["skipped"] * 2 + ["failed"] + ["skipped"] * 4, third
    assert (tmp_path / "out" / "1-h5" / "vocab.txt").read_text().endswith("[NEW]\n")


@pytest.mark.requires("ray")
def test_ray_runs_every_item_as_a_task(tmp_path):
    plan = make_plan(tmp_path, ".json")
    code, doc = run_batch(plan, "--ray")
    check_first_run(tmp_path, code, doc)


@pytest.mark.parametrize("plan, message", [
    ("items: []", "non-empty list under 'items'"),
    ("items: [{out: o}]", "item 1: 'src' is required"),
    ("items: [{src: s, out: o}]", "item 1: 'to' is required (or set it in defaults)"),
    ("items: [{src: s, out: o, to: pdf}]", "unknown format to: pdf"),
    ("items: [{src: s, out: o, to: h5, colour: red}]", "unknown key(s) colour"),
    ("defaults: {to: h5}\nitems: [{src: a, out: o}, {src: b, out: o}]", "item 2: out"),
    ("items: [{src: s, out: o", "not valid YAML"),
    ("stuff: 1\nitems: [{src: s, out: o, to: h5}]", "top-level keys are 'items' and 'defaults'"),
])
def test_bad_plans_are_one_clear_error(tmp_path, plan, message):
    path = tmp_path / "plan.yaml"
    path.write_text(plan)
    with pytest.raises(SchemaError, match=None) as err:
        batch.load_plan(path)
    assert message in str(err.value)
    proc = run_cli("batch", path)
    assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1]


def test_an_option_no_format_takes_fails_only_its_item(tmp_path):
    shutil.copytree(FIXTURES / "hf" / "base", tmp_path / "a")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"items": [{"src": "a", "out": "x", "to": "h5", "options": {"opset": 17}},
                                          {"src": "a", "out": "y", "to": "h5"}]}))
    code, doc = run_batch(plan)
    assert code == 2 and statuses(doc) == ["failed", "converted"]
    assert "option opset applies neither to reading safetensors nor to writing h5" in doc["items"][0]["detail"]
