"""Prompts, input types, Matryoshka sizes and precision in the sentence-transformers embedder, on the real
MiniLM: what it computes is what ``SentenceTransformer.encode`` computes with the same prompt and
``truncate_dim``, on every path (one forward pass, groups, the recorded single input, ``encode`` itself).

MiniLM was not trained for Matryoshka truncation (its shortened vectors are just worse ones), but cutting a
vector to its first n numbers and normalising it again is the same arithmetic as for EmbeddingGemma's 512,
256 and 128; the test model table declares sizes for it to exercise that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.config import ModelConfig
from server.engines.base import LoadError
from server.engines.embedder import BATCH, GROUP, SentenceTransformerEmbedder
from server.errors import InvalidRequest
from tests.models.test_embedder import TEXTS, embedding_config

QUERY = "query: "
DOCUMENT = "passage: "
SIZES = (384, 256, 128, 64)
BATCHES = [
    [TEXTS[0]],  # one input: the recorded forward pass
    TEXTS,  # one forward pass
    [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(GROUP + 5)],  # in groups of similar length
    [f"sentence {i} " + "word " * (i % 7) for i in range(BATCH + 3)],  # more than a batch: encode
]


def prompted_config(**settings: Any) -> ModelConfig:
    """The built-in MiniLM with a query and a document prompt (documents by default) and Matryoshka sizes."""
    values = {
        "prompts": {"query": QUERY, "document": DOCUMENT},
        "default_input_type": "document",
        "matryoshka_dimensions": SIZES,
        **settings,
    }
    return ModelConfig(**{**embedding_config().model_dump(), **values})


@pytest.fixture(scope="module")
def prompted() -> Iterator[SentenceTransformerEmbedder]:
    loaded = SentenceTransformerEmbedder(prompted_config())
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference() -> Any:
    """sentence-transformers itself, given the same prompts by name."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415  (seconds to import)

    return SentenceTransformer(
        embedding_config().source,
        device="cpu",
        local_files_only=True,
        prompts={"query": QUERY, "document": DOCUMENT},
    )


def expected(reference: Any, texts: list[str], prompt_name: str, size: int | None = None) -> Any:
    return reference.encode(
        texts, prompt_name=prompt_name, truncate_dim=size, normalize_embeddings=True, convert_to_numpy=True
    )


def test_each_input_type_is_read_after_its_prompt_as_encode_reads_it(
    prompted: SentenceTransformerEmbedder, reference: Any
) -> None:
    # The fast paths were checked with both prompts at load, and kept.
    assert prompted.direct and prompted.traced and prompted.grouping
    assert (prompted.prompt("query"), prompted.prompt("document"), prompted.prompt(None)) == (
        QUERY,
        DOCUMENT,
        DOCUMENT,
    )
    for texts in BATCHES:
        query = prompted.embed(texts, "query").vectors
        document = prompted.embed(texts, "document").vectors
        np.testing.assert_allclose(query, expected(reference, texts, "query"), rtol=0, atol=1e-6)
        np.testing.assert_allclose(document, expected(reference, texts, "document"), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(prompted.embed(texts).vectors, document)  # the default type
        assert not np.allclose(query, document, atol=1e-3)


class _Spy:
    def __init__(self, graph: Any) -> None:
        self.graph, self.calls = graph, 0

    def __call__(self, *tensors: Any) -> Any:
        self.calls += 1
        return self.graph(*tensors)


def test_one_input_runs_through_the_recording_of_its_prompt(
    prompted: SentenceTransformerEmbedder, reference: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(prompted._single) == {QUERY, DOCUMENT}
    spy = _Spy(prompted._single[QUERY]._graph)
    monkeypatch.setattr(prompted._single[QUERY], "_graph", spy)
    for text in TEXTS:
        vectors = prompted.embed([text], "query").vectors
        np.testing.assert_allclose(vectors, expected(reference, [text], "query"), rtol=0, atol=1e-6)
        cut = prompted.embed([text], "query", 128).vectors
        np.testing.assert_allclose(cut, expected(reference, [text], "query", 128), rtol=0, atol=1e-6)
    assert spy.calls == 2 * len(TEXTS)


def test_dimensions_cut_each_vector_and_normalise_it_again_as_encode_does(
    prompted: SentenceTransformerEmbedder, reference: Any
) -> None:
    for texts in BATCHES:
        full = np.asarray(prompted.embed(texts, "query").vectors)
        np.testing.assert_array_equal(prompted.embed(texts, "query", SIZES[0]).vectors, full)
        for size in SIZES[1:]:
            cut = np.asarray(prompted.embed(texts, "query", size).vectors)
            assert cut.dtype == np.float32 and cut.shape == (len(texts), size)
            np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-5)
            np.testing.assert_allclose(cut, expected(reference, texts, "query", size), rtol=0, atol=1e-6)
            by_hand = full[:, :size] / np.linalg.norm(full[:, :size], axis=1, keepdims=True)
            np.testing.assert_allclose(cut, by_hand, rtol=0, atol=1e-6)


def test_tokens_are_counted_as_the_model_reads_them_prompt_included(
    prompted: SentenceTransformerEmbedder,
) -> None:
    tokenizer = prompted._model.tokenizer
    prompt_tokens = len(tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    assert prompt_tokens == 2  # "query", ":"
    plain = sum(len(tokenizer(text)["input_ids"]) for text in TEXTS)
    for texts in (TEXTS, TEXTS * 10):  # the batch's mask, and encode's path
        assert prompted.embed(texts, "query").tokens == (plain + prompt_tokens * len(TEXTS)) * len(texts) // 4
    limit = int(prompted._model.max_seq_length)
    fits_alone = "word " * (limit - 2)  # [CLS] + words + [SEP]: the whole window, without a prompt
    with pytest.raises(InvalidRequest) as refused:
        prompted.embed(["short", fits_alone], "query")
    assert refused.value.code == "context_length_exceeded"
    assert f"input[1] has {limit + prompt_tokens} tokens (its prompt included)" in refused.value.message


def _copy_with_prompts(source: str, target: Path, declared: dict[str, Any]) -> Path:
    """The model directory with its own ``config_sentence_transformers.json`` declaring prompts."""
    target.mkdir()
    for item in Path(source).iterdir():
        if item.name != "config_sentence_transformers.json":
            (target / item.name).symlink_to(item)
    (target / "config_sentence_transformers.json").write_text(json.dumps(declared), encoding="utf-8")
    return target


def test_the_prompts_a_model_declares_are_used_unless_the_model_table_sets_them(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    declared = {"prompts": {"query": "search_query: ", "document": "search_document: "}}
    directory = _copy_with_prompts(embedding_config().source, tmp_path / "declared", declared)
    config = ModelConfig(**{**embedding_config().model_dump(), "source": str(directory)})
    own = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    loaded = SentenceTransformerEmbedder(config)
    try:
        assert loaded.direct and loaded.traced
        assert (loaded.prompt("query"), loaded.prompt("document")) == ("search_query: ", "search_document: ")
        assert loaded.prompt(None) == ""  # the model names no default prompt
        np.testing.assert_allclose(
            loaded.embed(TEXTS, "query").vectors, own.encode_query(TEXTS), rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(
            loaded.embed(TEXTS, "document").vectors, own.encode_document(TEXTS), rtol=0, atol=1e-6
        )
        np.testing.assert_allclose(loaded.embed(TEXTS).vectors, own.encode(TEXTS), rtol=0, atol=1e-6)
    finally:
        loaded.close()
    # The model table's prompt for a name wins ("" for none), the other stays the model's own.
    table = ModelConfig(**{**config.model_dump(), "prompts": {"document": ""}, "default_input_type": "query"})
    loaded = SentenceTransformerEmbedder(table)
    try:
        assert (loaded.prompt("query"), loaded.prompt("document")) == ("search_query: ", "")
        assert loaded.prompt(None) == "search_query: "
        np.testing.assert_allclose(
            loaded.embed(TEXTS, "document").vectors, own.encode(TEXTS, prompt=""), rtol=0, atol=1e-6
        )
    finally:
        loaded.close()


def test_a_default_prompt_the_model_declares_applies_to_requests_without_a_type(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    declared = {
        "prompts": {"query": "query: ", "retrieval": "represent: "},
        "default_prompt_name": "retrieval",
    }
    directory = _copy_with_prompts(embedding_config().source, tmp_path / "declared", declared)
    loaded = SentenceTransformerEmbedder(
        ModelConfig(**{**embedding_config().model_dump(), "source": str(directory)})
    )
    try:
        assert (loaded.prompt(None), loaded.prompt("query"), loaded.prompt("document")) == (
            "represent: ",
            "query: ",
            "",
        )
        own = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        np.testing.assert_allclose(loaded.embed(TEXTS).vectors, own.encode(TEXTS), rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            loaded.embed(TEXTS, "document").vectors, own.encode(TEXTS, prompt=""), rtol=0, atol=1e-6
        )
    finally:
        loaded.close()


def test_sizes_the_model_cannot_make_are_refused_at_load() -> None:
    with pytest.raises(LoadError, match="384-dimensional embeddings: they cannot be cut to 512"):
        SentenceTransformerEmbedder(prompted_config(matryoshka_dimensions=(512, 256)))


def test_float16_is_refused_for_gemma3_models_before_their_weights_load(tmp_path: Path) -> None:
    """EmbeddingGemma's model card: its activations do not support float16. Known here by its
    architecture, whatever the model is called (no weights in this directory: the refusal comes first)."""
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}])
    )
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["Gemma3TextModel"], "model_type": "gemma3_text"})
    )
    config = ModelConfig(
        name="retrieval",
        kind="embedding",
        engine="sentence-transformers",
        source=str(tmp_path),
        dtype="float16",
    )
    with pytest.raises(LoadError, match="cannot run in float16") as refused:
        SentenceTransformerEmbedder(config)
    assert "gemma3_text" in str(refused.value) and "float32 or bfloat16" in str(refused.value)


def test_bfloat16_runs_the_fast_paths_and_returns_float32_vectors(
    prompted: SentenceTransformerEmbedder,
) -> None:
    import torch  # noqa: PLC0415

    loaded = SentenceTransformerEmbedder(prompted_config(dtype="bfloat16"))
    try:
        assert loaded._model.dtype == torch.bfloat16
        assert loaded.direct
        for texts in BATCHES:
            vectors = np.asarray(loaded.embed(texts, "query", 128).vectors)
            assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 128)
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
            exact = np.asarray(prompted.embed(texts, "query", 128).vectors)
            assert (
                np.min(np.sum(vectors * exact, axis=1)) > 0.99
            )  # float32's vectors, to bfloat16's precision
    finally:
        loaded.close()
