"""GGUF metadata: read from a real model file and from files written here; a damaged file (truncated,
nested, mutated, lying about its lengths) is always refused with a GGUFError that says so, quickly, and
the Models page's fit estimate reports it instead of failing."""

from __future__ import annotations

import contextlib
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.config import ModelConfig, default_models
from server.gguf import GGUFError, architecture, read_metadata
from server.gpu import Hardware, estimate

UINT32, STRING, ARRAY, UINT64 = 4, 8, 9, 10
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _entry(key: str, kind: int, value: bytes) -> bytes:
    return _string(key) + struct.pack("<I", kind) + value


def _gguf(*entries: bytes) -> bytes:
    """A GGUF file without tensors: its metadata runs to its last byte."""
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + b"".join(entries)


def _model() -> bytes:
    vocabulary = struct.pack("<IQ", STRING, 300) + b"".join(_string(f"tok{i}") for i in range(300))
    return _gguf(
        _entry("general.architecture", STRING, _string("llama")),
        _entry("llama.block_count", UINT32, struct.pack("<I", 30)),
        _entry("llama.context_length", UINT32, struct.pack("<I", 8192)),
        _entry("llama.embedding_length", UINT32, struct.pack("<I", 576)),
        _entry("llama.attention.head_count", UINT32, struct.pack("<I", 9)),
        _entry(
            "llama.attention.head_count_kv", ARRAY, struct.pack("<IQ", UINT32, 2) + struct.pack("<II", 3, 3)
        ),
        _entry("tokenizer.ggml.tokens", ARRAY, vocabulary),
        _entry("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", 6, 300) + b"\0" * 1200),
    )


MODEL = _model()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


def _refused(path: Path) -> GGUFError:
    started = time.monotonic()
    with pytest.raises(GGUFError) as refused:
        architecture(read_metadata(path))
    assert time.monotonic() - started < 1.0
    assert str(refused.value)
    return refused.value


def test_metadata_and_architecture(tmp_path: Path) -> None:
    metadata = read_metadata(_write(tmp_path, MODEL))
    assert metadata["general.architecture"] == "llama" and metadata["tokenizer.ggml.tokens"] is None
    assert architecture(metadata) == {"layers": 30, "trained_context": 8192, "kv_width": 3 * (64 + 64)}


def test_the_packaged_chat_model() -> None:
    path = Path(default_models()[0].source)
    if not path.is_file():
        pytest.skip("the packaged SmolLM2 GGUF is not installed")
    assert architecture(read_metadata(path)) == {"layers": 30, "trained_context": 8192, "kv_width": 384}


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(MODEL) - 1))
def test_every_truncation_is_refused(tmp_path: Path, cut: int) -> None:
    _refused(_write(tmp_path, MODEL[:cut]))


@FUZZ
@given(depth=st.integers(min_value=1, max_value=20_000))
def test_nested_arrays_are_refused(tmp_path: Path, depth: int) -> None:
    nested = struct.pack("<IQ", ARRAY, 1) * depth + struct.pack("<IQ", UINT32, 1) + struct.pack("<I", 7)
    refused = _refused(_write(tmp_path, _gguf(_entry("a", ARRAY, nested))))
    assert "array of arrays" in str(refused)


@pytest.mark.parametrize(
    "value",
    [
        struct.pack("<IQ", 0, 1 << 40),  # bytes the file does not have
        struct.pack("<IQ", STRING, 1 << 40),
        struct.pack("<IQ", STRING, 1000) + _string("x"),
        struct.pack("<IQ", 99, 1),
    ],
    ids=["scalars", "strings", "some-strings", "unknown-type"],
)
def test_arrays_that_lie_about_their_length_are_refused(tmp_path: Path, value: bytes) -> None:
    _refused(_write(tmp_path, _gguf(_entry("a", ARRAY, value))))


def test_damaged_values_are_refused(tmp_path: Path) -> None:
    for entries in (
        [
            _entry("llama.block_count", STRING, _string("thirty")),
            _entry("general.architecture", STRING, _string("llama")),
        ],
        [_entry("general.architecture", UINT32, struct.pack("<I", 1))],
        [_entry("k", UINT32, struct.pack("<I", 1)), _entry("k", UINT32, struct.pack("<I", 2))],
        [_entry("k", STRING, struct.pack("<Q", 1 << 60))],
    ):
        _refused(_write(tmp_path, _gguf(*entries)))
    _refused(_write(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 50)))
    _refused(_write(tmp_path, b"GGML" + MODEL[4:]))


@FUZZ
@given(
    changes=st.lists(st.tuples(st.integers(0, len(MODEL) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
def test_mutated_files_are_read_or_refused(tmp_path: Path, changes: list[tuple[int, int]]) -> None:
    data = bytearray(MODEL)
    for position, byte in changes:
        data[position] = byte
    path = _write(tmp_path, bytes(data))
    started = time.monotonic()
    with contextlib.suppress(GGUFError):
        architecture(read_metadata(path))
    assert time.monotonic() - started < 1.0


@FUZZ
@given(tail=st.binary(max_size=512))
def test_arbitrary_bytes_are_read_or_refused(tmp_path: Path, tail: bytes) -> None:
    path = _write(tmp_path, b"GGUF" + tail)
    with contextlib.suppress(GGUFError):
        architecture(read_metadata(path))


def test_the_fit_estimate_reports_a_damaged_file(tmp_path: Path) -> None:
    """What the Models page shows for a damaged file: the reason, never an exception."""
    nested = struct.pack("<IQ", ARRAY, 1) * 5000 + struct.pack("<IQ", UINT32, 0)
    path = _write(tmp_path, _gguf(_entry("a", ARRAY, nested)))
    config = ModelConfig(name="broken", kind="chat", engine="llama.cpp", source=str(path))
    hardware = Hardware(False, False, (), None, None, ())
    fit = estimate(config, hardware)
    assert fit.fits is False and "cannot read the model's metadata" in fit.message
    assert "array of arrays" in fit.message
