"""The sentence-transformers embedder in a process of its own.

Importing torch and running its kernels hold the interpreter lock for long stretches (up to half a
second at a time while torch initialises); in the window's process that would freeze the window, and
in the server's it would stall every other endpoint. A child process keeps both responsive: requests go
over a pipe, vectors come back as float32 bytes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from server.config import ModelConfig
from server.engines.base import Embeddings, EngineFailureError, LoadError
from server.errors import InvalidRequest

START_TIMEOUT_S = 300.0


def _serve(connection: Connection, config: dict[str, Any]) -> None:
    """The child: load the model, then answer embedding requests until told to stop."""
    from server.engines.embedder import SentenceTransformerEmbedder  # noqa: PLC0415  (the child's own import)

    try:
        embedder = SentenceTransformerEmbedder(ModelConfig(**config))
    except LoadError as exc:
        connection.send(("load_error", str(exc)))
        return
    except (
        Exception
    ) as exc:  # a broken installation: the operator reads what is missing, not just an exit code
        connection.send(("load_error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", embedder.dimensions, embedder.vocabulary_size, embedder.device))
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            result = embedder.embed(request)
        except InvalidRequest as exc:
            connection.send(("invalid", exc.message, exc.param, exc.code))
            continue
        except Exception as exc:  # reported to the request that caused it; the child keeps serving
            connection.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        vectors = np.ascontiguousarray(result.vectors, dtype=np.float32)
        connection.send(("ok", vectors.shape, result.tokens, vectors.tobytes()))  # one message: one wake-up


class ProcessEmbedder:
    """An ``EmbeddingBackend`` whose model lives in a child process (only the model's worker calls it)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, config.model_dump()), name=f"embedder:{config.name}", daemon=True
        )
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        if not self._connection.poll(START_TIMEOUT_S):
            self.close()
            raise LoadError(f"the embedding model did not load within {START_TIMEOUT_S:.0f} s")
        try:
            message = self._connection.recv()
        except EOFError as exc:
            self.close()
            raise LoadError(
                f"the embedding process exited while loading (exit code {self._process.exitcode})"
            ) from exc
        if message[0] == "load_error":
            self.close()
            raise LoadError(message[1])
        _, self._dims, self._vocabulary, self.device = message

    @property
    def dimensions(self) -> int:
        return int(self._dims)

    @property
    def vocabulary_size(self) -> int:
        return int(self._vocabulary)

    def embed(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        with self._lock:
            try:
                self._connection.send(list(inputs))
                reply = self._connection.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                raise EngineFailureError(
                    f"the embedding process stopped (exit code {self._process.exitcode})"
                ) from exc
        if reply[0] == "invalid":
            raise InvalidRequest(reply[1], param=reply[2], code=reply[3])
        if reply[0] == "error":
            raise EngineFailureError(reply[1])
        _, shape, tokens, payload = reply
        # Kept as float32 rows: the JSON writer takes them as they are, no Python float per value.
        return Embeddings(vectors=np.frombuffer(payload, dtype=np.float32).reshape(shape), tokens=int(tokens))

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._connection.send(None)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._connection.close()
