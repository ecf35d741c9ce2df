"""Read a GGUF file's metadata (not its weights): enough to tell what a model needs before loading it.

Written here rather than taken from the ``gguf`` package (maintained with llama.cpp), whose reader was
measured on this machine: it walks every element of the vocabulary through numpy (1.6 s for SmolLM2's
metadata, 0.05 s here, and several seconds for a 150,000-token vocabulary, while the Models page waits),
it raises RecursionError on a damaged file with nested arrays, never returns on a truncated file whose
array claims 2**40 elements, and it would bring requests, PyYAML and tqdm into the bundle.

This reader keeps llama.cpp's own rules (``gguf.cpp``: no arrays of arrays, no key twice) and checks
every length against what is left of the file before reading or skipping it, so that whatever a file
holds, the answer is its metadata or a :class:`GGUFError` saying what is wrong, in time proportional
to the metadata's size.
"""

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
MAX_KEYS = 100_000
MAX_STRINGS = 1 << 22
"""Strings in one array: vocabularies and merge lists hold up to a few hundred thousand."""


class GGUFError(ValueError):
    """Not a GGUF file, or a damaged one."""


class _Reader:
    """The file from its current position on, never read past its end."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size - handle.tell()

    def _take(self, length: int) -> None:
        if length > self._left:
            raise GGUFError("the file ends inside its metadata: it is truncated or damaged")
        self._left -= length

    def read(self, length: int) -> bytes:
        self._take(length)
        data = self._handle.read(length)
        if len(data) != length:
            raise GGUFError("the file ends inside its metadata: it is truncated or damaged")
        return data

    def skip(self, length: int) -> None:
        self._take(length)
        self._handle.seek(length, 1)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string_length(self) -> int:
        length: int = self.scalar("<Q")
        if length > MAX_STRING:
            raise GGUFError(f"a metadata string claims {length} bytes: the file is damaged")
        return length

    def string(self) -> str:
        return self.read(self.string_length()).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise GGUFError(f"unknown metadata type {kind}: the file is damaged or from a newer GGUF")
        item_kind: int = self.scalar("<I")
        count: int = self.scalar("<Q")
        if item_kind == _ARRAY:
            raise GGUFError("an array of arrays, which llama.cpp does not read either: the file is damaged")
        if item_kind in _SCALARS:
            size = struct.calcsize(_SCALARS[item_kind])
            if count > MAX_ARRAY_KEPT:
                self.skip(count * size)
                return None
            return [self.scalar(_SCALARS[item_kind]) for _ in range(count)]
        if item_kind != _STRING:
            raise GGUFError(f"unknown array type {item_kind}: the file is damaged or from a newer GGUF")
        if count > MAX_STRINGS or count * 8 > self._left:  # each string takes at least its 8-byte length
            raise GGUFError(f"an array claims {count} strings: the file is damaged")
        if count > MAX_ARRAY_KEPT:
            for _ in range(count):
                self.skip(self.string_length())
            return None
        return [self.string() for _ in range(count)]


def read_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (long arrays such as the vocabulary are left out)."""
    with path.open("rb") as handle:
        if handle.read(4) != _MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file")
        reader = _Reader(handle, path.stat().st_size)
        version: int = reader.scalar("<I")
        if version < 2:
            raise GGUFError(f"{path.name} uses GGUF version {version}, which is too old")
        reader.scalar("<Q")  # tensor count
        count: int = reader.scalar("<Q")
        if count > MAX_KEYS:
            raise GGUFError(f"{path.name} claims {count} metadata entries: the file is damaged")
        metadata: dict[str, Any] = {"gguf.version": version}
        for _ in range(count):
            key = reader.string()
            if key in metadata:
                raise GGUFError(f"the metadata key {key[:100]!r} appears twice: the file is damaged")
            metadata[key] = reader.value(reader.scalar("<I"))
        return metadata


def _whole(metadata: dict[str, Any], key: str) -> int:
    """A count from the metadata (the first one, for a per-layer list); 0 where it is missing."""
    value = metadata.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GGUFError(f"the metadata's {key} is {str(value)[:40]!r}, not a count: the file is damaged")
    return value


def architecture(metadata: dict[str, Any]) -> dict[str, int]:
    """Layers, context the model was trained for, and the KV-cache width, where the metadata says."""
    arch = metadata.get("general.architecture", "")
    if not isinstance(arch, str):
        raise GGUFError("the metadata's general.architecture is not a name: the file is damaged")

    def get(name: str) -> int:
        return _whole(metadata, f"{arch}.{name}")

    heads = get("attention.head_count")
    kv_heads = get("attention.head_count_kv") or heads
    embedding = get("embedding_length")
    key_length = get("attention.key_length") or (embedding // heads if heads else 0)
    value_length = get("attention.value_length") or key_length
    return {
        "layers": get("block_count"),
        "trained_context": get("context_length"),
        "kv_width": kv_heads * (key_length + value_length),
    }
