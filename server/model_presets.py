"""Presets for the production models: sensible settings for ``qwen3-30b-a3b`` (chat and responses, a GGUF
offloaded to the GPU) and ``embeddinggemma-300m`` (embeddings, a sentence-transformers directory), and the
Hugging Face repository each comes from. A preset never names a file: the app does not pretend a small
model is a large one, so the operator picks the weights, on disk or downloaded from the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from server.config import ModelConfig

SourceKind = Literal["file", "directory"]


@dataclass(frozen=True)
class Preset:
    """Settings for one well-known model, everything but where its weights are."""

    name: str
    """The served name clients use (the model's own name)."""
    label: str
    description: str
    source_kind: SourceKind
    """What the operator picks: a GGUF ``file`` or a model ``directory``."""
    settings: dict[str, Any]
    """``ModelConfig`` fields other than ``name`` and ``source``."""
    repository: str | None = None
    """The Hugging Face repository the weights are downloaded from: GGUF files in several quantisations,
    or a sentence-transformers model directory."""

    def config(self, source: str, name: str | None = None) -> ModelConfig:
        """The model these settings describe, served from ``source`` (raises pydantic's ValidationError)."""
        return ModelConfig(name=name or self.name, source=source, **self.settings)


PRESETS: tuple[Preset, ...] = (
    Preset(
        name="qwen3-30b-a3b",
        label="qwen3-30b-a3b (chat and responses)",
        description=(
            "Qwen3-30B-A3B as a GGUF file (e.g. Q4_K_M, about 18 GB) run by llama.cpp, every layer on the "
            "GPU, a 32K context; its thinking is returned as reasoning_content."
        ),
        source_kind="file",
        settings={
            "kind": "chat",
            "engine": "llama.cpp",
            "n_gpu_layers": -1,
            "context_length": 32768,
            "threads": None,
            "reasoning": True,
            # Qwen3's model card: thinking 0.6 / 0.95 / top-k 20, without thinking 0.7 / 0.8 / top-k 20.
            "sampling_thinking": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0},
            "sampling_direct": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0},
            "price_input_per_million": 0.0,
            "price_output_per_million": 0.0,
        },
        repository="Qwen/Qwen3-30B-A3B-GGUF",
    ),
    Preset(
        name="embeddinggemma-300m",
        label="embeddinggemma-300m (embeddings)",
        description=(
            "EmbeddingGemma-300M as a sentence-transformers model directory, on the GPU when torch sees "
            "one, in float32, 2048 tokens per input, up to 256 inputs per request. Queries (input_type "
            "query) and documents (the default) get the model's own task prompts; vectors of 768 "
            "dimensions, or 512, 256 or 128 (dimensions)."
        ),
        source_kind="directory",
        settings={
            "kind": "embedding",
            "engine": "sentence-transformers",
            "n_gpu_layers": -1,
            "context_length": 2048,
            "threads": None,
            "max_batch": 256,
            # From EmbeddingGemma's model card: its prompts for retrieval, the sizes it was trained to be
            # cut to (Matryoshka), and activations that do not support float16 (float32 or bfloat16).
            "prompts": {"query": "task: search result | query: ", "document": "title: none | text: "},
            "default_input_type": "document",
            "matryoshka_dimensions": (768, 512, 256, 128),
            "dtype": "float32",
            "price_input_per_million": 0.0,
            "price_output_per_million": 0.0,
        },
        # Gated: Google's licence must be accepted on the model's page, and an access token given.
        repository="google/embeddinggemma-300m",
    ),
)


def preset_for_repository(repository: str) -> Preset | None:
    """The preset whose weights come from ``repository`` (Hugging Face ids ignore case), if any."""
    wanted = repository.strip().lower()
    return next((p for p in PRESETS if p.repository is not None and p.repository.lower() == wanted), None)


def preset(name: str) -> Preset:
    """The preset named ``name``; ``KeyError`` if there is none."""
    for found in PRESETS:
        if found.name == name:
            return found
    raise KeyError(name)
