"""The canonical ELECTRA schema: config, tensor table, heads, ties and the Checkpoint value.

This package imports nothing else of electra-bridge (an import-linter contract checks it).
"""

from .checkpoint import Checkpoint, LazyTensor, TensorLike, materialize
from .config import ElectraConfig, google_config, google_num_heads
from .errors import BridgeError, FormatError, MissingDependencyError, SchemaError
from .heads import (
    HEADS, Head, config_for_head, detect_head, get_head, head_for_architecture, head_shapes, output_shape,
    runnable_heads,
)
from .tensors import ROWS, TIES, Row, check_tensors, expected_shapes

__all__ = [
    "BridgeError", "Checkpoint", "ElectraConfig", "FormatError", "HEADS", "Head", "LazyTensor",
    "MissingDependencyError", "ROWS", "Row", "SchemaError", "TIES", "TensorLike", "check_tensors",
    "config_for_head", "detect_head", "expected_shapes", "get_head", "google_config", "google_num_heads",
    "head_for_architecture", "head_shapes", "materialize", "output_shape", "runnable_heads",
]
