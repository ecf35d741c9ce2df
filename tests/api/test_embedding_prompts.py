"""``input_type`` and ``dimensions`` through the official SDK, against a live server running the real MiniLM
with a query and a document prompt (documents by default) and declared Matryoshka sizes, as the
``embeddinggemma-300m`` preset declares its own.

MiniLM was not trained for Matryoshka truncation (its shortened vectors are just worse ones), but cutting a
vector to its first n numbers and normalising it again is the same arithmetic whatever the model; the
vectors are compared with what sentence-transformers' own ``encode`` gives for the same prompt name and
``truncate_dim``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from server.config import ModelConfig, default_models, load_settings
from server.runner import ServerThread
from server.services import Services
from tests.api.conftest import EMBED, assert_error, http, sdk
from tests.conftest import FAKE_EMBED, Live

PROMPTED = "minilm-with-prompts"
QUERY = "query: "
DOCUMENT = "passage: "
SIZES = (384, 256, 128, 64)
TEXTS = [
    "A man is playing a guitar on stage.",
    "The quarterly tax report is due next Tuesday.",
    "x",
]


def prompted_model() -> ModelConfig:
    builtin = default_models()[1]
    if not builtin.source:
        pytest.skip("the embedding model's package is not installed")
    return ModelConfig(
        **{
            **builtin.model_dump(),
            "name": PROMPTED,
            "prompts": {"query": QUERY, "document": DOCUMENT},
            "default_input_type": "document",
            "matryoshka_dimensions": SIZES,
        }
    )


@pytest.fixture(scope="module")
def prompted_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    model = prompted_model()
    data = tmp_path_factory.mktemp("prompted")
    settings = load_settings(environ={"AISP_DATA_DIR": str(data)}, port=0, models=(model,))
    services = Services.open(settings)
    assert services.models.wait_loaded(300), "the embedding model did not load in time"
    thread = ServerThread(services)
    thread.start()
    key, _ = services.keys.create("prompted")
    yield Live(thread, services, key)
    thread.stop()
    services.close()


@pytest.fixture(scope="module")
def reference() -> Any:
    """sentence-transformers itself, in this process, given the same prompts by name."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415  (seconds to import)

    return SentenceTransformer(
        default_models()[1].source,
        device="cpu",
        local_files_only=True,
        prompts={"query": QUERY, "document": DOCUMENT},
    )


def expected(reference: Any, texts: list[str], prompt_name: str, size: int | None = None) -> Any:
    return reference.encode(
        texts, prompt_name=prompt_name, truncate_dim=size, normalize_embeddings=True, convert_to_numpy=True
    )


def vectors(result: Any) -> Any:
    return np.array([item.embedding for item in result.data], dtype=np.float32)


def test_input_type_chooses_the_prompt_and_documents_are_the_default(
    prompted_live: Live, reference: Any
) -> None:
    client = sdk(prompted_live)
    query = client.embeddings.create(model=PROMPTED, input=TEXTS, extra_body={"input_type": "query"})
    document = client.embeddings.create(model=PROMPTED, input=TEXTS, extra_body={"input_type": "document"})
    default = client.embeddings.create(model=PROMPTED, input=TEXTS)
    np.testing.assert_allclose(vectors(query), expected(reference, TEXTS, "query"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(vectors(document), expected(reference, TEXTS, "document"), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(vectors(default), vectors(document))
    assert not np.allclose(vectors(query), vectors(document), atol=1e-3)
    # One input at a time (the recorded forward pass) gives the same as in a batch.
    single = client.embeddings.create(model=PROMPTED, input=TEXTS[0], extra_body={"input_type": "query"})
    np.testing.assert_allclose(vectors(single)[0], vectors(query)[0], rtol=0, atol=1e-6)
    # Usage counts what the model read: each input's tokens and its prompt's.
    tokenizer = reference.tokenizer
    for result, prompt in ((query, QUERY), (document, DOCUMENT)):
        read = sum(len(tokenizer(prompt + text)["input_ids"]) for text in TEXTS)
        assert result.usage.prompt_tokens == result.usage.total_tokens == read
    assert query.usage.prompt_tokens == sum(len(tokenizer(t)["input_ids"]) + 2 for t in TEXTS)  # "query", ":"


def test_dimensions_cut_the_vectors_to_a_declared_size_normalised_again(
    prompted_live: Live, reference: Any
) -> None:
    client = sdk(prompted_live)
    full = client.embeddings.create(model=PROMPTED, input=TEXTS, extra_body={"input_type": "query"})
    native = client.embeddings.create(
        model=PROMPTED, input=TEXTS, dimensions=384, extra_body={"input_type": "query"}
    )
    np.testing.assert_array_equal(vectors(native), vectors(full))
    for size in SIZES[1:]:
        cut = client.embeddings.create(
            model=PROMPTED, input=TEXTS, dimensions=size, extra_body={"input_type": "query"}
        )
        got = vectors(cut)
        assert got.shape == (len(TEXTS), size)
        for row in got:
            assert math.isclose(float(np.linalg.norm(row)), 1.0, rel_tol=1e-5)
        np.testing.assert_allclose(got, expected(reference, TEXTS, "query", size), rtol=0, atol=1e-6)
        assert cut.usage.prompt_tokens == full.usage.prompt_tokens
    # As JSON numbers too, and with the default prompt.
    with http(prompted_live) as api:
        response = api.post("/v1/embeddings", json={"model": PROMPTED, "input": TEXTS, "dimensions": 64})
        assert response.status_code == 200, response.text
    got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected(reference, TEXTS, "document", 64), rtol=0, atol=1e-6)


def test_sizes_the_model_does_not_declare_are_refused_naming_the_allowed_ones(prompted_live: Live) -> None:
    with http(prompted_live) as api:
        for size in (100, 512, 1):
            response = api.post("/v1/embeddings", json={"model": PROMPTED, "input": "x", "dimensions": size})
            error = assert_error(response, 400, param="dimensions", message="384, 256, 128 or 64 dimensions")
            assert f"not {size}" in error["message"]
    with pytest.raises(openai.BadRequestError, match="384, 256, 128 or 64"):
        sdk(prompted_live).embeddings.create(model=PROMPTED, input="x", dimensions=32)


def test_an_unknown_input_type_is_refused_naming_the_known_ones(prompted_live: Live) -> None:
    with http(prompted_live) as api:
        for value in ("passage", "search_query", "", 1, None):
            body = {"model": PROMPTED, "input": "x", "input_type": value}
            if value is None:  # null is the same as leaving it out
                assert api.post("/v1/embeddings", json=body).status_code == 200
                continue
            assert_error(
                api.post("/v1/embeddings", json=body),
                400,
                param="input_type",
                message="'query' or 'document'",
            )
    with pytest.raises(openai.BadRequestError, match="input_type"):
        sdk(prompted_live).embeddings.create(model=PROMPTED, input="x", extra_body={"input_type": "passage"})


def test_a_model_without_prompts_embeds_either_input_type_as_it_is(api: httpx.Client) -> None:
    bodies = [
        {"model": EMBED, "input": ["some text", "other"], "input_type": t} for t in ("query", "document")
    ]
    plain = api.post("/v1/embeddings", json={"model": EMBED, "input": ["some text", "other"]}).json()
    for body in bodies:
        response = api.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == plain["data"] and response.json()["usage"] == plain["usage"]


def test_the_test_engine_takes_prompts_and_sizes_as_the_real_one(make_live: Callable[..., Live]) -> None:
    settings = {"prompts": {"query": "find "}, "matryoshka_dimensions": (64, 32, 16)}
    live = make_live(models=(ModelConfig(**{**FAKE_EMBED.model_dump(), **settings}),))
    client = sdk(live)
    plain = client.embeddings.create(model=EMBED, input="cheap hotels", encoding_format="float")
    query = client.embeddings.create(
        model=EMBED, input="cheap hotels", encoding_format="float", extra_body={"input_type": "query"}
    )
    assert query.data[0].embedding != plain.data[0].embedding
    assert (plain.usage.prompt_tokens, query.usage.prompt_tokens) == (2, 3)  # its words, and the prompt's
    cut = client.embeddings.create(model=EMBED, input="cheap hotels", dimensions=16, encoding_format="float")
    assert len(cut.data[0].embedding) == 16
    assert math.isclose(math.fsum(x * x for x in cut.data[0].embedding), 1.0, rel_tol=1e-6)
    with pytest.raises(openai.BadRequestError, match="64, 32 or 16 dimensions, not 8"):
        client.embeddings.create(model=EMBED, input="x", dimensions=8)
