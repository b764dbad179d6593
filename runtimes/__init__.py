"""Forward passes (one definition of the math, ops per framework), artifact runners, verify."""

from .forward import ACTIVATIONS, Result, forward
from .probe import probe_batch
from .runner import RUNTIMES, CheckpointRunner, Runner, load_ops
from .verify import TOLERANCES, Diff, HeadReport, Report, compare, diff, tolerance

__all__ = [
    "ACTIVATIONS", "CheckpointRunner", "Diff", "HeadReport", "RUNTIMES", "Report", "Result", "Runner",
    "TOLERANCES", "compare", "diff", "forward", "load_ops", "probe_batch", "tolerance",
]
