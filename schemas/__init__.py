"""The canonical ELECTRA schema: config, tensor table, heads, ties and the Checkpoint value."""

from .checkpoint import Checkpoint, LazyTensor, TensorLike, materialize
from .config import ARCHITECTURE_TO_HEAD, ElectraConfig, google_config, google_num_heads
from .errors import BridgeError, FormatError, MissingDependencyError, SchemaError
from .heads import HEAD_BY_CLASS, HEADS, Head, detect_head, get_head, head_shapes, output_shape, runnable_heads
from .tensors import ROWS, TIES, Row, check_tensors, expected_shapes

__all__ = [
    "ARCHITECTURE_TO_HEAD", "BridgeError", "Checkpoint", "ElectraConfig", "FormatError", "HEADS", "HEAD_BY_CLASS",
    "Head", "LazyTensor", "MissingDependencyError", "ROWS", "Row", "SchemaError", "TIES", "TensorLike",
    "check_tensors", "detect_head", "expected_shapes", "get_head", "google_config", "google_num_heads",
    "head_shapes", "materialize", "output_shape", "runnable_heads",
]
