"""Tokenizer and vocabulary files that travel beside every converted model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from electra_bridge.schemas import ElectraConfig, SchemaError

from .files import confined, read_small

#: files copied from a source folder to every output folder, byte for byte
ASSET_NAMES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def collect(folder: Path) -> dict[str, bytes]:
    """The asset files present in ``folder`` (a missing folder gives none). An asset that is a
    symlink out of the folder is refused (its bytes would travel into every output); a FIFO or
    device is not a file and is skipped; each is read with a size limit."""
    folder = Path(folder)
    present = [name for name in ASSET_NAMES if (folder / name).is_file()]
    root = folder.resolve()
    return {name: read_small(confined(folder / name, root, "tokenizer file")) for name in present}


def write_assets(out: Path, assets: Mapping[str, bytes]) -> list[Path]:
    written = []
    for name, data in sorted(assets.items()):
        if Path(name).name != name:
            raise ValueError(f"asset name {name!r} must be a plain file name")
        (out / name).write_bytes(data)
        written.append(out / name)
    return written


def config_for(weights: Path, config: str | Path | ElectraConfig | None) -> ElectraConfig:
    """The model config: ``config`` if given (a config or a path), else config.json beside ``weights``."""
    if isinstance(config, ElectraConfig):
        return config
    path = Path(config) if config else Path(weights).parent / "config.json"
    if not path.exists():
        raise SchemaError(f"no config.json beside {weights}; pass --config with the model's HF config.json")
    return ElectraConfig.from_json_file(path)
