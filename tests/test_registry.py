"""Tests generated from the registries: every runtime x head, every checkpoint fixture, every
writable format x head, every artifact format x head. A new format, runtime, head or fixture
gets all of these without a line here; format test files keep only what is format-specific.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from helpers import HEADS, assert_same_tensors, golden, max_abs, requires, spec

from electra_bridge.converters import FORMATS, convert, get_format, open_runner, read, write
from electra_bridge.converters.engine import extras, pipeline
from electra_bridge.converters.engine.format import ArtifactFormat, CheckpointFormat
from electra_bridge.runtimes import RUNTIMES, CheckpointRunner, probe_batch, tolerance
from electra_bridge.runtimes.runner import RUNTIME_EXTRAS
from electra_bridge.schemas import SchemaError, runnable_heads

CHECKPOINT_FORMATS = [name for name in FORMATS if isinstance(get_format(name), CheckpointFormat)]
ARTIFACT_FORMATS = [name for name in FORMATS if isinstance(get_format(name), ArtifactFormat)]


def _extra_marks(*extras: str | None) -> list:
    return [requires(e) for e in extras if e]


@cache
def hf(head: str):
    """The reference checkpoint of ``head``: transformers' own model.safetensors."""
    return read(spec.HF_SAFETENSORS / head, "safetensors")


def _source_params():
    for fmt, head, folder, same in spec.checkpoint_fixtures():
        yield pytest.param(fmt, head, folder, same, id=f"{fmt}:{folder.parent.name}/{folder.name}",
                           marks=_extra_marks(get_format(fmt).extra))


SOURCES = list(_source_params())


# ---- runtimes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", [pytest.param(r, marks=_extra_marks(RUNTIME_EXTRAS.get(r))) for r in RUNTIMES])
@pytest.mark.parametrize("head", HEADS)
def test_runtime_matches_transformers_golden(runtime, head):
    """Every runtime computes what transformers' PyTorch class computed (outputs and hidden states)."""
    inputs, outputs, hidden = golden(head)
    result = CheckpointRunner(hf(head), runtime).run(head, inputs)
    atol, _ = tolerance(runtime, "float32")
    assert set(result.outputs) == set(outputs)
    for name, expected in outputs.items():
        assert result.outputs[name].shape == expected.shape and result.outputs[name].dtype == np.float32, name
        assert max_abs(result.outputs[name], expected) <= atol, name
    assert len(result.hidden_states) == len(hidden) == spec.CONFIG["num_hidden_layers"] + 1
    for i, (ours, theirs) in enumerate(zip(result.hidden_states, hidden)):
        assert max_abs(ours, theirs) <= atol, f"hidden state {i}"


# ---- checkpoint fixtures: the tables against real files ------------------------------------------

@pytest.mark.parametrize("fmt, head, folder, same", SOURCES)
def test_fixture_reads_strictly_to_the_reference_weights(fmt, head, folder, same):
    """Strict accounting passes on the real file, and a file holding hf/<head>'s weights reads back
    bit-equal to them (so every rule names the right native tensor with the right layout)."""
    ckpt = read(folder, fmt)
    assert ckpt.head == head and ckpt.provenance["format"] == fmt
    if same:
        assert_same_tensors(ckpt, hf(head), same_config=False)


def _plan_of(fmt: CheckpointFormat, request):
    return fmt.plan(request) if fmt.plan is not None else pipeline.hf_plan(fmt, request)


@pytest.mark.parametrize("fmt, head, folder, same", SOURCES)
def test_a_wrong_native_name_is_caught(fmt, head, folder, same):
    """Misspell one native name of the rules a read binds: strict accounting must name it as missing."""
    spec_ = get_format(fmt)
    typo = {}

    def plan(request):
        p = _plan_of(spec_, request)
        layer0 = next(r for r in p.rules if "{layer}" in r.canonical)
        typo["name"] = layer0.native.format(layer=0) + "_typo"
        rules = tuple(dataclasses.replace(r, native=r.native + "_typo") if r is layer0 else r for r in p.rules)
        return dataclasses.replace(p, rules=rules)

    with pytest.raises(SchemaError) as err:
        pipeline.read(dataclasses.replace(spec_, plan=plan), folder)
    assert typo["name"] in str(err.value) and "missing" in str(err.value)


@pytest.mark.parametrize("fmt", [f for f in CHECKPOINT_FORMATS if get_format(f).plan is None])
def test_every_rule_is_used_by_some_fixture(fmt):
    """No dead or misspelled row hides in a table: each rule binds a tensor of at least one fixture."""
    spec_ = get_format(fmt)
    if extras.missing_modules(spec_.extra):    # reading keras needs its extra, as the format declares
        pytest.skip(f"reading {fmt} needs the {spec_.extra} extra")
    folders = [folder for f, _, folder, _ in spec.checkpoint_fixtures() if f == fmt]
    used = set()
    for folder in folders:
        ckpt = read(folder, fmt)
        layers = range(ckpt.config.num_hidden_layers)
        names = set(ckpt.tensors)
        used |= {r for r in spec_.rules if {r.canonical.format(layer=i) for i in layers} & names}
    unused = [r.canonical for r in spec_.rules if r not in used]
    assert not unused, unused


# ---- writable formats: round trips ----------------------------------------------------------------

def format_heads(formats: list[str]) -> list:
    """(format, head) for every head each format can hold, skipped where its extra is missing."""
    return [pytest.param(fmt, head, id=f"{fmt}:{head}", marks=_extra_marks(get_format(fmt).extra))
            for fmt in formats for head in HEADS if head in get_format(fmt).heads]


@pytest.mark.parametrize("fmt, head", format_heads(CHECKPOINT_FORMATS))
def test_round_trip_is_bit_exact(fmt, head, tmp_path):
    """hf/<head> -> fmt -> read: the same tensors bit for bit, hence the same outputs."""
    src = hf(head)
    write(src, tmp_path / "out", fmt)
    back = read(tmp_path / "out", fmt)
    assert back.head == head
    assert_same_tensors(back, src, same_config=False)
    for h in runnable_heads(head):
        batch = probe_batch(src.config, h)
        a, b = CheckpointRunner(back).run(h, batch), CheckpointRunner(src).run(h, batch)
        for name in b.outputs:
            assert np.array_equal(a.outputs[name], b.outputs[name]), (h, name)


@pytest.mark.parametrize("fmt, head, folder, same",
                         [p for p in SOURCES if p.values[1] in get_format(p.values[0]).heads])
def test_each_fixture_writes_back_to_its_own_format(fmt, head, folder, same, tmp_path):
    """Every fixture read and written back in its own format reads as the same checkpoint."""
    src = read(folder, fmt)
    write(src, tmp_path / "out", fmt)
    assert_same_tensors(read(tmp_path / "out", fmt), src, same_config=False)


# ---- artifact formats: export, run, verify -----------------------------------------------------------

@pytest.mark.parametrize("fmt, head", format_heads(ARTIFACT_FORMATS))
def test_artifact_export_verifies_and_runs_at_unseen_shapes(fmt, head, tmp_path):
    """convert verifies the export on the probe batch; the artifact then agrees with the reference
    at shapes the export never saw (dynamic batch and sequence)."""
    result = convert(spec.HF_SAFETENSORS / head, tmp_path / "out", fmt, fmt="safetensors")
    assert result.report is not None and result.report.ok
    runner, reference = open_runner(tmp_path / "out", fmt), CheckpointRunner(hf(head))
    atol, rtol = tolerance(runner.runtime, runner.dtype)
    for batch, seq in ((1, 5), (4, 17)):
        inputs = probe_batch(hf(head).config, head, batch=batch, seq=seq, seed=batch)
        ours, theirs = runner.run(head, inputs), reference.run(head, inputs)
        for name, expected in theirs.outputs.items():
            assert ours.outputs[name].shape == expected.shape, name
            assert np.all(np.abs(ours.outputs[name] - expected) <= atol + rtol * np.abs(expected)), (name, batch, seq)
