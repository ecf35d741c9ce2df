"""Read a GGUF file's metadata (not its weights): enough to tell what a model needs before loading it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
# GGUF value types: uint8, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64, float64
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
MAX_STRING = 1 << 24
MAX_ARRAY_KEPT = 64
"""Arrays longer than this (the vocabulary) are skipped, not read."""


class GGUFError(ValueError):
    """Not a GGUF file, or a damaged one."""


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise GGUFError("the file ends inside its header")
    return struct.unpack(fmt, data)[0]


def _string(handle: BinaryIO) -> str:
    length = _read(handle, "<Q")
    if length > MAX_STRING:
        raise GGUFError("a metadata string is implausibly long")
    return handle.read(length).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item_kind, count = _read(handle, "<I"), _read(handle, "<Q")
        if count > MAX_ARRAY_KEPT and item_kind in _SCALARS:
            handle.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
            return None
        items = [_value(handle, item_kind) for _ in range(count)]
        return items if count <= MAX_ARRAY_KEPT else None
    raise GGUFError(f"unknown metadata type {kind}")


def read_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (long arrays such as the vocabulary are left out)."""
    with path.open("rb") as handle:
        if handle.read(4) != _MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file")
        version = _read(handle, "<I")
        if version < 2:
            raise GGUFError(f"{path.name} uses GGUF version {version}, which is too old")
        _read(handle, "<Q")  # tensor count
        count = _read(handle, "<Q")
        if count > 100_000:
            raise GGUFError("implausible metadata count")
        metadata: dict[str, Any] = {"gguf.version": version}
        for _ in range(count):
            key = _string(handle)
            metadata[key] = _value(handle, _read(handle, "<I"))
        return metadata


def architecture(metadata: dict[str, Any]) -> dict[str, int]:
    """Layers, context the model was trained for, and the KV-cache width, where the metadata says."""
    arch = metadata.get("general.architecture", "")

    def get(name: str) -> Any:
        return metadata.get(f"{arch}.{name}")

    heads = get("attention.head_count") or 0
    heads = heads[0] if isinstance(heads, list) else heads
    kv_heads = get("attention.head_count_kv") or heads
    kv_heads = kv_heads[0] if isinstance(kv_heads, list) else kv_heads
    embedding = get("embedding_length") or 0
    key_length = get("attention.key_length") or (embedding // heads if heads else 0)
    value_length = get("attention.value_length") or key_length
    return {
        "layers": int(get("block_count") or 0),
        "trained_context": int(get("context_length") or 0),
        "kv_width": int(kv_heads) * (int(key_length) + int(value_length)),
    }
