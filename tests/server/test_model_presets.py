"""The presets' settings, as the Models page's form takes them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.config import ModelConfig
from server.model_presets import PRESETS, preset


def test_every_preset_makes_a_valid_model() -> None:
    for item in PRESETS:
        model = item.config(source="/models/x")
        assert (model.name, model.source) == (item.name, "/models/x")


def test_embeddinggemma_gets_its_model_cards_prompts_sizes_and_precision() -> None:
    model = preset("embeddinggemma-300m").config(source="/models/embeddinggemma-300m")
    assert (model.kind, model.engine, model.context_length) == ("embedding", "sentence-transformers", 2048)
    # EmbeddingGemma's model card: its retrieval prompts, the sizes its vectors may be cut to, and
    # activations that do not support float16.
    assert model.prompts == {"query": "task: search result | query: ", "document": "title: none | text: "}
    assert model.default_input_type == "document"
    assert model.matryoshka_dimensions == (768, 512, 256, 128)
    assert model.dtype == "float32"
    assert ModelConfig(**{**model.model_dump(), "dtype": "bfloat16"}).dtype == "bfloat16"
    with pytest.raises(ValidationError, match="cannot run in float16"):
        ModelConfig(**{**model.model_dump(), "dtype": "float16"})
    # Served under another name, it is still known by its directory.
    renamed = preset("embeddinggemma-300m").config(source="/models/embeddinggemma-300m", name="retrieval")
    with pytest.raises(ValidationError, match="cannot run in float16"):
        ModelConfig(**{**renamed.model_dump(), "dtype": "float16"})
