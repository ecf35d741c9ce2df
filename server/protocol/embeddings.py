"""``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

if TYPE_CHECKING:  # a local model's vectors are numpy rows; this module never needs numpy itself
    import numpy as np
    from numpy.typing import NDArray

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000
MAX_TOKEN_IDS = 8192

Vector: TypeAlias = "list[float] | NDArray[np.float32]"
"""One embedding: floats from an upstream, or a float32 row that ``wire.dumps`` writes as it is."""


def _check_input(value: Any) -> list[str] | list[list[int]]:
    """A string, strings, token ids, or arrays of token ids, with a clear message for anything else."""
    if isinstance(value, str) or isinstance(value, list) and value and all(type(v) is int for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("input must be a non-empty string, array of strings, or array of token arrays")
    if len(value) > MAX_INPUTS:
        raise ValueError(f"at most {MAX_INPUTS} inputs may be embedded in one request, not {len(value)}")
    if all(isinstance(v, str) for v in value):
        for index, text in enumerate(value):
            if len(text) > MAX_INPUT_CHARS:
                raise ValueError(f"input[{index}] is longer than {MAX_INPUT_CHARS} characters")
        return value
    for index, ids in enumerate(value):
        if not isinstance(ids, list) or not ids or not all(type(t) is int for t in ids):
            raise ValueError(f"input[{index}] must be a string or a non-empty array of integer token ids")
        if len(ids) > MAX_TOKEN_IDS:
            raise ValueError(f"input[{index}] has more than {MAX_TOKEN_IDS} tokens")
        if min(ids) < 0 or max(ids) >= 2**31:
            raise ValueError(f"input[{index}] holds a token id out of range (token ids are non-negative)")
    return value


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: Any
    model: Annotated[str, Field(min_length=1, max_length=256)]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[StrictInt, Field(ge=1, le=65536)] | None = None
    """The number of dimensions the output embeddings should have (OpenAI: only models that support it)."""
    user: Annotated[str, Field(max_length=512)] | None = None
    input_type: Literal["query", "document"] | None = None
    """Not in OpenAI's spec: the widely used extension (sent with the SDKs' ``extra_body``) that says
    whether the inputs are search queries or documents, for models that embed them with different prompts."""

    @field_validator("input")
    @classmethod
    def _input(cls, value: Any) -> list[str] | list[list[int]]:
        return _check_input(value)

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list of strings or a list of token-id arrays."""
        return self.input  # type: ignore[no-any-return]


def encode_vector(vector: Vector, encoding: Literal["float", "base64"]) -> Vector | str:
    """The vector as the client asked for it: as it is (JSON numbers), or base64 of its little-endian
    float32 values."""
    if encoding == "float":
        return vector
    if isinstance(vector, list):
        raw = struct.pack(f"<{len(vector)}f", *vector)
    else:
        raw = vector.astype("<f4", copy=False).tobytes()
    return base64.b64encode(raw).decode("ascii")


def embedding_list(model: str, vectors: Sequence[Vector | str], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
