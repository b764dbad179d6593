"""``electra-bridge batch PLAN``: many verified conversions at once, on local processes or Ray.

A plan (YAML or JSON) lists items; ``defaults`` apply to each item, which may override them::

    defaults: {to: safetensors}
    items:
      - {src: ckpts/electra_base, out: out/electra_base}
      - {src: ckpts/small, out: out/small-onnx, to: onnx, head: base, options: {quantize: int8}}

Keys of an item: ``src``, ``out`` (both relative to the plan's folder unless absolute), ``to``,
``head``, ``dtype``, ``verify`` (default true), ``options`` (any ``convert`` option of the source
or target format by its CLI name without dashes: ``net``, ``config``, ``quantize``, ``opset``,
``max_shard_size``, ...), ``tokenizer``.

Each item is one ``api.convert`` (verified, atomic) in a worker: ``--jobs N`` local processes
(spawned, with BLAS threads split so N workers do not oversubscribe the cores), or one Ray task
each (``--ray [ADDRESS]``: an existing cluster, or a local one). A failing item never stops the
others; each ends ``converted``, ``skipped`` (its output's provenance record names the same source
digests and options: engine/provenance.py), ``mismatch`` (exit 1) or ``failed`` (exit 2). A run
that was interrupted resumes: finished outputs are complete folders (written atomically) and
are skipped, a killed item's staging folder is removed when it is redone.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from electra_bridge.schemas import BridgeError, SchemaError

from . import api
from .engine import provenance
from .engine.options import accepted
from .formats import FORMATS, get_format

log = logging.getLogger(__name__)

ITEM_KEYS = {"src", "out", "to", "head", "dtype", "verify", "options", "tokenizer"}
#: thread variables split between local workers (numpy/BLAS, torch, ONNX Runtime read them at start-up)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Item:
    src: str
    out: str
    to: str
    head: str | None = None
    dtype: str | None = None
    verify: bool = True
    options: Mapping[str, object] = field(default_factory=dict)
    tokenizer: str | None = None


@dataclass
class Outcome:
    item: Item
    status: str            # converted | skipped | mismatch | failed
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict:
        return {**asdict(self.item), "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


def load_plan(path: str | Path) -> list[Item]:
    """The plan's items, validated (FormatError/SchemaError naming the plan and the item)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"plan {path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:   # json's JSONDecodeError is a ValueError
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise SchemaError(f"plan {path}: not valid {kind} ({' '.join(str(exc).split())})") from None
    if isinstance(data, list):
        data = {"items": data}
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise SchemaError(f"plan {path}: give a non-empty list under 'items' (and optional 'defaults')")
    defaults = data.get("defaults") or {}
    unknown = set(data) - {"items", "defaults"}
    if unknown or not isinstance(defaults, dict):
        raise SchemaError(f"plan {path}: top-level keys are 'items' and 'defaults' (found {sorted(map(str, data))})")
    items, outs = [], set()
    for i, raw in enumerate(data["items"], 1):
        where = f"plan {path}, item {i}"
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: an item is a mapping with src and out")
        merged = {**defaults, **raw, "options": {**(defaults.get("options") or {}), **(raw.get("options") or {})}}
        bad = set(merged) - ITEM_KEYS
        if bad:
            raise SchemaError(f"{where}: unknown key(s) {', '.join(sorted(map(str, bad)))} (known: {', '.join(sorted(ITEM_KEYS))})")
        for key in ("src", "out", "to"):
            if not isinstance(merged.get(key), str) or not merged[key]:
                raise SchemaError(f"{where}: '{key}' is required" + (" (or set it in defaults)" if key == "to" else ""))
        if merged["to"] not in FORMATS:
            raise SchemaError(f"{where}: unknown format to: {merged['to']} (known: {', '.join(FORMATS)})")
        item = Item(src=_relative_to(path, merged["src"]), out=_relative_to(path, merged["out"]), to=merged["to"],
                    head=merged.get("head"), dtype=merged.get("dtype"), verify=bool(merged.get("verify", True)),
                    options=dict(merged["options"]), tokenizer=_relative_to(path, merged["tokenizer"])
                    if merged.get("tokenizer") else None)
        if Path(item.out).resolve() in outs:
            raise SchemaError(f"{where}: out {item.out} is also another item's output")
        outs.add(Path(item.out).resolve())
        items.append(item)
    return items


def _relative_to(plan: Path, value: str) -> str:
    return str(Path(value) if Path(value).is_absolute() else plan.parent / value)


def _split_options(item: Item) -> tuple[dict, dict]:
    """(read, write) options of ``item``: each by the stage its format declares it at."""
    source = get_format(api.detect_format(item.src))
    read_dests, write_dests = accepted(source.options, "read"), accepted(get_format(item.to).options, "write")
    read, write = {}, {}
    for key, value in item.options.items():
        dest = str(key).replace("-", "_")
        if dest in read_dests:
            read[dest] = value
        elif dest in write_dests:
            write[dest] = value
        else:
            raise SchemaError(f"option {key} applies neither to reading {source.name} nor to writing {item.to}")
    return read, write


def run_item(item: Item) -> Outcome:
    """One item, start to end; every failure becomes an Outcome (a worker never raises)."""
    started = time.perf_counter()
    try:
        read_options, write_options = _split_options(item)
        asked = provenance.asked(item.to, item.head, item.dtype, item.verify, read_options, write_options,
                                 item.tokenizer)
        if Path(item.out).exists() and provenance.same_work(Path(item.out), provenance.source_digests(item.src), asked):
            return Outcome(item, "skipped", time.perf_counter() - started, "output is up to date (same source digests "
                                                                          "and options)")
        result = api.convert(item.src, item.out, item.to, head=item.head, dtype=item.dtype, verify=item.verify,
                             force=True, read_options=read_options, write_options=write_options,
                             tokenizer=item.tokenizer)
        detail = "verified" if result.report is not None else "NOT verified"
        return Outcome(item, "converted", time.perf_counter() - started, detail)
    except api.VerificationError as exc:
        return Outcome(item, "mismatch", time.perf_counter() - started, str(exc).splitlines()[0])
    except BridgeError as exc:
        return Outcome(item, "failed", time.perf_counter() - started, str(exc))
    except Exception as exc:   # a dependency's own failure: still this item's, not the run's
        return Outcome(item, "failed", time.perf_counter() - started, f"{type(exc).__name__}: {exc}")


def run(items: list[Item], *, jobs: int = 1, ray_address: str | None = None, use_ray: bool = False,
        on_done: Callable[[Outcome, int, int], None] | None = None) -> list[Outcome]:
    """Run every item (in plan order in the result); ``on_done(outcome, k, n)`` as each finishes."""
    if jobs < 1:
        raise SchemaError(f"--jobs {jobs}: give at least 1")
    runner = _on_ray(items, ray_address) if use_ray else _locally(items, jobs)
    done: dict[int, Outcome] = {}
    for index, outcome in runner:
        done[index] = outcome
        if on_done is not None:
            on_done(outcome, len(done), len(items))
    return [done[i] for i in range(len(items))]


def _locally(items: list[Item], jobs: int) -> Iterator[tuple[int, Outcome]]:
    if jobs == 1:
        for i, item in enumerate(items):
            yield i, run_item(item)
        return
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: threads for k in THREAD_VARIABLES})   # inherited by the spawned workers
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_item, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    yield i, future.result()
                except Exception as exc:   # the worker process itself died (killed, out of memory)
                    yield i, Outcome(items[i], "failed", 0.0, f"worker died: {type(exc).__name__}: {exc}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _on_ray(items: list[Item], address: str | None) -> Iterator[tuple[int, Outcome]]:
    from .engine import extras

    extras.require("ray", "batch --ray")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        task = ray.remote(num_cpus=1)(run_item)
        pending = {task.remote(item): i for i, item in enumerate(items)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    yield i, ray.get(ref)
                except Exception as exc:   # the task's worker died (RayTaskError, WorkerCrashedError)
                    yield i, Outcome(items[i], "failed", 0.0, f"ray task failed: {type(exc).__name__}: {exc}")
    finally:
        if started_here:
            ray.shutdown()


def exit_code(outcomes: list[Outcome]) -> int:
    """2 when any item was unusable, else 1 when any mismatched, else 0."""
    statuses = {o.status for o in outcomes}
    return 2 if "failed" in statuses else 1 if "mismatch" in statuses else 0


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [f"{'#':<4}{'status':<11}{'seconds':>8}  {'to':<13}{'out':<40}detail"]
    for i, o in enumerate(outcomes, 1):
        lines.append(f"{i:<4}{o.status:<11}{o.seconds:>8.2f}  {o.item.to:<13}{o.item.out:<40}{o.detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("converted", "skipped", "mismatch", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(outcomes)}")
    return lines
