"""Embeddings with sentence-transformers, from a model directory on disk (never a hub)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.config import ModelConfig
from server.engines.base import Embeddings, LoadError
from server.errors import InvalidRequest

OPENMP_ENVIRONMENT = {"GOMP_SPINCOUNT": "10000"}
"""How torch's OpenMP threads wait, set before torch loads unless the operator has set it. By default a
thread with nothing to do spins 300,000 times (milliseconds) before it sleeps: after every request it
burns a core the server needs to answer, and when other work (a chat model) holds a core, a thread that
finished its share spins while the other waits for that core, and an embedding takes several times
longer. 10,000 spins still bridge the gaps between a forward pass's kernels: on an idle machine it is
as fast as the default."""


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from its own directory, offline."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        directory = Path(config.source)
        if not config.source or not (directory / "modules.json").is_file():
            raise LoadError(f"no sentence-transformers model directory at {config.source or '(unset)'}")
        # Never reach for a hub: the weights are on disk or the load fails.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        for name, value in OPENMP_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        try:
            import torch  # noqa: PLC0415  (seconds to import: only when an embedding model loads)
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        except ImportError as exc:
            raise LoadError(f"sentence-transformers is not installed: {exc}") from exc
        if config.threads:
            torch.set_num_threads(config.threads)
        device = "cuda" if config.n_gpu_layers != 0 and torch.cuda.is_available() else "cpu"
        try:
            self._model: Any = SentenceTransformer(str(directory), device=device, local_files_only=True)
        except Exception as exc:  # any failure to read the directory is the operator's to see
            raise LoadError(f"cannot load {directory}: {exc}") from exc
        self._model.max_seq_length = min(self._model.max_seq_length or config.context_length, config.context_length)
        self.device = device
        self._torch = torch
        measure = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dims = measure()
        self._dims = int(dims) if dims else len(self._model.encode(["x"])[0])

    @property
    def dimensions(self) -> int:
        return self._dims

    @property
    def vocabulary_size(self) -> int:
        return int(self._model.tokenizer.vocab_size)

    def _texts(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> list[str]:
        if all(isinstance(i, str) for i in inputs):
            return list(inputs)  # type: ignore[arg-type]
        tokenizer = self._model.tokenizer
        return [tokenizer.decode(list(ids), skip_special_tokens=True) for ids in inputs]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Each text's tokens, special ones included, as the model would read them untruncated."""
        encoded = self._model.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        texts = self._texts(inputs)
        counts = self.count_tokens(texts)
        limit = int(self._model.max_seq_length)
        # The model would silently embed only the first tokens of a longer input; OpenAI refuses instead.
        for index, count in enumerate(counts):
            if count > limit:
                raise InvalidRequest(
                    f"This model's maximum context length is {limit} tokens, however input[{index}] has "
                    f"{count} tokens. Please reduce the length of the input.",
                    param="input",
                    code="context_length_exceeded",
                )
        with self._torch.inference_mode():
            vectors = self._model.encode(
                texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        # Kept as a float32 matrix: turning it into Python floats costs more than the JSON writing it.
        return Embeddings(vectors=vectors.astype("float32", copy=False), tokens=sum(counts))

    def close(self) -> None:
        self._model = None
