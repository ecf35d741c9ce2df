"""The sentence-transformers embedder in a supervised process of its own.

Importing torch and running its kernels hold the interpreter lock for long stretches (up to half a
second at a time while torch initialises); in the window's process that would freeze the window, and
in the server's it would stall every other endpoint. A child process keeps both responsive, and a crash in
torch costs only the request it was running: the supervisor (``supervisor.Supervisor``) restarts it.
Requests go over a pipe tagged with an id; vectors come back as float32 bytes.

Messages to the child: ``("embed", id, inputs, input_type, dimensions)``, and ``None`` to stop. From it:
``("ready", info)`` or ``("load_error", reason)`` first; then ``("ok", id, shape, tokens, bytes)``,
``("invalid", id, message, param, code)`` or ``("failed", id, reason)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from server.config import InputType, ModelConfig
from server.engines.base import Embeddings, EngineFailureError, LoadError
from server.engines.supervisor import Supervisor
from server.errors import InvalidRequest


def _serve(connection: Connection, config: dict[str, Any]) -> None:
    """The child: load the model, then answer embedding requests until told to stop."""
    from server.engines.embedder import (  # noqa: PLC0415  (the child's own import)
        INPUT_TYPES,
        SentenceTransformerEmbedder,
    )

    try:
        embedder = SentenceTransformerEmbedder(ModelConfig(**config))
    except LoadError as exc:
        connection.send(("load_error", str(exc)))
        return
    except Exception as exc:  # a broken installation: the operator reads what is missing, not an exit code
        connection.send(("load_error", f"{type(exc).__name__}: {exc}"))
        return
    info = {
        "dimensions": embedder.dimensions,
        "vocabulary": embedder.vocabulary_size,
        "device": embedder.device,
        "prompts": {kind: embedder.prompt(kind) for kind in (None, *INPUT_TYPES)},
    }
    connection.send(("ready", info))
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        _, request_id, inputs, input_type, dimensions = message
        try:
            result = embedder.embed(inputs, input_type, dimensions)
        except InvalidRequest as exc:
            connection.send(("invalid", request_id, exc.message, exc.param, exc.code))
            continue
        except Exception as exc:  # reported to the request that caused it; the child keeps serving
            connection.send(("failed", request_id, f"{type(exc).__name__}: {exc}"))
            continue
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        # One message: one wake-up of the server.
        connection.send(("ok", request_id, vectors.shape, result.tokens, vectors.tobytes()))


class ProcessEmbedder:
    """An ``EmbeddingBackend`` whose model lives in a child process (only the model's worker calls it)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.name, _serve, (config.model_dump(),))

    @property
    def dimensions(self) -> int:
        return int(self.supervisor.info["dimensions"])

    @property
    def vocabulary_size(self) -> int:
        return int(self.supervisor.info["vocabulary"])

    @property
    def device(self) -> str:
        return str(self.supervisor.info["device"])

    def prompt(self, input_type: InputType | None) -> str:
        return str(self.supervisor.info["prompts"][input_type])

    def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        reply = self.supervisor.call("embed", list(inputs), input_type, dimensions)
        if reply[0] == "invalid":
            raise InvalidRequest(reply[2], param=reply[3], code=reply[4])
        if reply[0] == "failed":
            raise EngineFailureError(reply[2])
        _, _, shape, tokens, payload = reply
        # Kept as float32 rows: the JSON writer takes them as they are, no Python float per value.
        return Embeddings(vectors=np.frombuffer(payload, dtype=np.float32).reshape(shape), tokens=int(tokens))

    def close(self) -> None:
        self.supervisor.close()
