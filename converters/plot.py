"""Draw a verify Report's per-layer drift as a PNG: where do two models part ways, at a glance.

x: the stages in forward order (embeddings, layer 0..L-1, head); y: max |a - b| on a log
scale, one line per head; a dashed line at atol; points out of tolerance in red; the
first divergence marked with a vertical line. Exact zeros are drawn at a floor below the
smallest non-zero value (log scales cannot show 0) and the axis says so.

The PNG carries what it draws: a ``tEXt`` chunk keyed ``PNG_DATA_KEY`` holds JSON with the
stages (x order), each stage's pixel column in the image, the first divergence, and per line
its label, max-abs values and out-of-tolerance flags -- so a CI job (or a test) can check
the picture shows what the report says without reading pixels by eye.

Needs matplotlib (``pip install 'electra-bridge[plot]'``); uses the Agg backend, so no
display is needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from electra_bridge.schemas import MissingDependencyError, SchemaError

from electra_bridge.runtimes.report import NO_DRIFT
from electra_bridge.runtimes.verify import Diff, Report


#: the PNG text chunk holding the plotted data (see the module docstring)
PNG_DATA_KEY = "electra-bridge drift"


def require_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("--plot needs matplotlib: pip install 'electra-bridge[plot]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_drift(report: Report, path: str | Path, title: str | None = None) -> Path:
    """Write ``path`` (PNG) with the drift of every head of ``report`` that has hidden states."""
    verdict = "EQUAL" if report.ok else "NOT EQUAL"
    title = title or f"drift per layer: {Path(report.a).name} vs {Path(report.b).name} ({verdict})"
    return plot_series([(h.head, h.stages) for h in report.heads], path, atol=report.atol,
                       first=report.first_divergence, title=title)


def plot_series(series: Sequence[tuple[str, Sequence[Diff]]], path: str | Path, *, atol: float,
                first: str | None = None, title: str = "drift per layer", highlight: str | None = None) -> Path:
    """One line per (label, stages) -- e.g. per head of a report, or per hop of a demo; the
    ``highlight`` label is drawn thick and red."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SchemaError(f"plot {path}: the plot is a PNG; name it *.png")
    plt = require_matplotlib()
    series = [(label, list(stages)) for label, stages in series if stages]
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=100)
    data: dict = {"stages": [], "x_pixels": [], "first_divergence": None, "atol": atol,
                  "series": [{"label": label, "max_abs": [d.max_abs for d in stages],
                              "out_of_tolerance": [d.name for d in stages if not d.ok]} for label, stages in series]}
    try:
        if not series:
            ax.text(0.5, 0.5, f"no per-layer drift:\n{NO_DRIFT}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            values = [d.max_abs for _, stages in series for d in stages if 0 < d.max_abs < float("inf")]
            floor = min([*values, atol]) / 10
            names = [d.name for d in max((stages for _, stages in series), key=len)]
            for label, stages in series:
                xs = [names.index(d.name) for d in stages]
                ys = [floor if d.max_abs == 0 else d.max_abs for d in stages]
                style = {"color": "crimson", "linewidth": 2.5, "zorder": 2} if label == highlight else {}
                ax.plot(xs, ys, marker="o", label=label, **style)
                bad = [(x, y) for x, y, d in zip(xs, ys, stages) if not d.ok]
                if bad:
                    ax.scatter(*zip(*bad), color="red", zorder=3, s=60)
            ax.axhline(atol, color="black", linestyle="--", linewidth=1, label=f"atol {atol:g}")
            ax.set_yscale("log")
            if first in names:
                ax.axvline(names.index(first), color="red", linestyle=":", alpha=0.7)
                ax.annotate(f" first divergence: {first}", (names.index(first), 0.93),
                            xycoords=("data", "axes fraction"), color="red")
            ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 8 else 0)
            data.update(stages=names, first_divergence=first if first in names else None)
            ax.set_ylabel(f"max |a - b|  (exact 0 drawn at {floor:.0e})")
            ax.set_xlabel("stage (forward order); red = out of tolerance")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        ax.set_title(title, fontsize="medium")
        fig.tight_layout()
        if data["stages"]:       # display x of each stage; PNG columns count from the left like display x
            data["x_pixels"] = [round(float(ax.transData.transform((i, 1.0))[0]), 1)
                                for i in range(len(data["stages"]))]
        fig.savefig(path, format="png", dpi=fig.dpi, metadata={PNG_DATA_KEY: json.dumps(data)})
    finally:
        plt.close(fig)
    return path
