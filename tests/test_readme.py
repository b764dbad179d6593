"""The README's tables that restate code (tolerances, formats, heads) say what the code says."""

from __future__ import annotations

import re

from helpers import ROOT

from electra_bridge.converters import FORMATS, get_format
from electra_bridge.converters.engine.format import CheckpointFormat
from electra_bridge.runtimes import TOLERANCES
from electra_bridge.schemas import HEADS

README = (ROOT / "README.md").read_text(encoding="utf-8")


def table(heading: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule excluded) of the first table under ``## heading``."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    first = section[section.index("\n|"):].split("\n\n", 1)[0]     # the table ends at the first blank line
    lines = [line for line in first.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def names(cell: str) -> list[str]:
    """The `code` spans of a cell, or its comma-separated words when it has none."""
    spans = re.findall(r"`([^`]+)`", cell)
    return spans or [part.strip() for part in cell.split(",")]


def test_tolerance_table_is_the_code_table():
    rows = {}
    for runtime, dtype, atol, rtol in table("Tolerances"):
        for name in names(runtime):
            rows[(name, dtype)] = (float(atol), float(rtol))
    assert rows == TOLERANCES


def test_formats_table_lists_every_format_with_its_extra_and_kind():
    rows = {names(r[0])[0]: r for r in table("Formats")}
    assert sorted(rows) == sorted(FORMATS)
    for name, (_, _, read, write, needs) in rows.items():
        fmt = get_format(name)
        assert (read == "yes") == isinstance(fmt, CheckpointFormat), name
        assert write.startswith("yes"), name
        assert needs.startswith("core" if fmt.extra is None else f"`[{fmt.extra}]`"), (name, needs)


def test_heads_table_lists_every_head_with_its_class_and_outputs():
    rows = {names(r[0])[0]: r for r in table("Heads")}
    assert list(rows) == list(HEADS)
    for name, (_, cls, outputs) in rows.items():
        head = HEADS[name]
        assert f"`{head.hf_class}`" in cls, name
        assert set(re.findall(r"`([a-z_]+)`", outputs)) == set(head.output_names), name
