"""The error types every module raises; the CLI maps them to exit code 2 (unusable input)."""


class BridgeError(Exception):
    """Base class: an input electra-bridge cannot use. The message is one clear paragraph."""


class SchemaError(BridgeError):
    """A config or tensor set that does not fit the canonical schema."""


class FormatError(BridgeError):
    """A file that is not what its format promises (corrupt, unsafe, unknown layout)."""


class MissingDependencyError(BridgeError):
    """An optional framework is needed for this step and is not installed."""
