"""The baselines without a server: llama-cpp-python and sentence-transformers called directly.

A worker process reading one JSON command per line on stdin and answering one JSON line on stdout, so the
models load once and the caller stays light:

- ``{"op": "load_chat", "path", "n_ctx", "n_threads", "n_batch"}``: the GGUF with the server's settings
- ``{"op": "chat", "messages", "max_tokens", "stream"}``: one chat completion at temperature 0
- ``{"op": "load_embed", "path"}``, ``{"op": "embed", "texts", "batch"}``: encode the texts
  ``batch`` at a time (one ``encode`` call per batch), normalised as the server does
- ``{"op": "load_engine", "name"}``, ``{"op": "engine_embed", "texts", "batch"}``: the same with the server's
  own embedder, in this process (what the API adds is then the difference from the API's figures)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from server.engines import llama_backends

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


class Worker:
    def __init__(self) -> None:
        self.llm: Any = None
        self.embedder: Any = None
        self.engine: Any = None

    def load_chat(self, path: str, n_ctx: int, n_threads: int, n_batch: int) -> dict[str, Any]:
        import llama_cpp  # noqa: PLC0415

        llama_backends.load()  # the same CPU variant the server's engine loads
        started = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=n_batch,
            n_gpu_layers=0,
            verbose=False,
        )
        return {"load_s": time.perf_counter() - started}

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stream: bool) -> dict[str, Any]:
        import llama_cpp  # noqa: PLC0415

        generated = 0

        def count(_ids: Any, logits: Any) -> Any:  # called once per sampled token: the exact count
            nonlocal generated
            generated += 1
            return logits

        # The sampling the server uses at temperature 0 (server/engines/llama.py): greedy, no penalties.
        options: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": 40,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "logits_processor": llama_cpp.LogitsProcessorList([count]),
        }
        started = time.perf_counter()
        first: float | None = None
        if stream:
            chunks = 0
            for chunk in self.llm.create_chat_completion(stream=True, **options):
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
            ended = time.perf_counter()
            tokens = generated
        else:
            reply = self.llm.create_chat_completion(stream=False, **options)
            ended = time.perf_counter()
            tokens = int(reply["usage"]["completion_tokens"])
            chunks = 1
        return {
            "ttft_ms": (first - started) * 1000 if first is not None else (ended - started) * 1000,
            "total_ms": (ended - started) * 1000,
            "tokens": tokens,
            "chunks": chunks,
        }

    def load_embed(self, path: str) -> dict[str, Any]:
        import torch  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        started = time.perf_counter()
        self.embedder = SentenceTransformer(path, device="cpu", local_files_only=True)
        self.embedder.max_seq_length = min(self.embedder.max_seq_length or 256, 256)
        self._torch = torch
        return {"load_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads()}

    def load_engine(self, name: str) -> dict[str, Any]:
        """The server's own embedder (``server.engines.embedder``) for the named built-in model, in this process."""
        from server.config import default_models  # noqa: PLC0415
        from server.engines.embedder import SentenceTransformerEmbedder  # noqa: PLC0415

        started = time.perf_counter()
        config = next(c for c in default_models() if c.name == name)
        self.engine = SentenceTransformerEmbedder(config)
        return {
            "load_s": time.perf_counter() - started,
            "traced": self.engine.traced,
            "grouping": self.engine.grouping,
        }

    def engine_embed(self, texts: list[str], batch: int) -> dict[str, Any]:
        started = time.perf_counter()
        for at in range(0, len(texts), batch):
            self.engine.embed(texts[at : at + batch])
        seconds = time.perf_counter() - started
        return {"inputs": len(texts), "seconds": seconds, "per_s": len(texts) / seconds}

    def embed(self, texts: list[str], batch: int) -> dict[str, Any]:
        started = time.perf_counter()
        with self._torch.inference_mode():
            for at in range(0, len(texts), batch):
                self.embedder.encode(
                    texts[at : at + batch],
                    batch_size=32,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        seconds = time.perf_counter() - started
        return {"inputs": len(texts), "seconds": seconds, "per_s": len(texts) / seconds}


def main() -> None:
    worker = Worker()
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        try:
            answer = getattr(worker, op)(**command)
        except Exception as exc:  # reported to the caller, which records it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
