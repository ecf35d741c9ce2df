"""``POST /v1/embeddings``: strings, token ids, float and base64; and the real MiniLM's sense of meaning."""

from __future__ import annotations

import base64
import math
import re
import struct
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import EMBED, REAL_EMBED, assert_error, http, sdk
from tests.conftest import Live
from tests.spec import validate

FAKE_DIMS = 64


def embed(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/embeddings", json={"model": body.pop("model", EMBED), **body})
    assert response.status_code == 200, response.text
    value: dict[str, Any] = response.json()
    # OpenAI's schema knows only float arrays; base64 is checked against it once decoded.
    decoded = [
        {**d, "embedding": decode(d["embedding"])} if isinstance(d["embedding"], str) else d
        for d in value["data"]
    ]
    validate("CreateEmbeddingResponse", {**value, "data": decoded})
    return value


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def decode(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def as_float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def test_one_string(api: httpx.Client) -> None:
    body = embed(api, input="a single sentence")
    assert body["object"] == "list" and body["model"] == EMBED
    [item] = body["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == FAKE_DIMS
    assert math.isclose(math.sqrt(sum(x * x for x in item["embedding"])), 1.0, rel_tol=1e-6)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_an_array_of_strings_keeps_its_order(api: httpx.Client) -> None:
    texts = ["first text", "second", "a third text here"]
    body = embed(api, input=texts)
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    singles = [embed(api, input=t)["data"][0]["embedding"] for t in texts]
    assert [d["embedding"] for d in body["data"]] == singles
    assert body["usage"]["prompt_tokens"] == 2 + 1 + 4


@pytest.mark.parametrize("tokens", [[101, 2023, 102], [[101, 2023, 102], [7, 8]]])
def test_token_ids_as_langchain_sends_them(api: httpx.Client, tokens: list[Any]) -> None:
    body = embed(api, input=tokens)
    expected = 1 if isinstance(tokens[0], int) else len(tokens)
    assert [d["index"] for d in body["data"]] == list(range(expected))
    assert all(len(d["embedding"]) == FAKE_DIMS for d in body["data"])


def test_base64_holds_the_same_little_endian_float32_vector(api: httpx.Client) -> None:
    floats = embed(api, input=["same text", "other"], encoding_format="float")["data"]
    packed = embed(api, input=["same text", "other"], encoding_format="base64")["data"]
    for f, b in zip(floats, packed, strict=True):
        assert isinstance(b["embedding"], str)
        assert decode(b["embedding"]) == as_float32(f["embedding"])


def test_the_sdk_asks_for_base64_and_gets_floats(live: Live) -> None:
    seen: list[bytes] = []
    with httpx.Client(event_hooks={"request": [lambda r: seen.append(r.content)]}) as transport:
        client = sdk(live, http_client=transport)
        result = client.embeddings.create(model=EMBED, input=["sdk text"])
        explicit = client.embeddings.create(model=EMBED, input="sdk text", encoding_format="float")
    assert b'"encoding_format":"base64"' in seen[0].replace(b" ", b"")  # the SDK's own default
    with http(live) as api:
        expected = embed(api, input="sdk text")["data"][0]["embedding"]
    assert result.data[0].embedding == pytest.approx(expected, abs=1e-6)
    assert result.usage.prompt_tokens == 2
    assert explicit.data[0].embedding == expected


def test_dimensions_must_match_the_model(api: httpx.Client) -> None:
    assert len(embed(api, input="x", dimensions=FAKE_DIMS)["data"][0]["embedding"]) == FAKE_DIMS
    error = assert_error(
        api.post("/v1/embeddings", json={"model": EMBED, "input": "x", "dimensions": 8}),
        400,
        param="dimensions",
    )
    assert str(FAKE_DIMS) in error["message"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([], "non-empty"),
        ("", None),
        (5, "string"),
        ([["a"]], "token"),
        (["text", [1, 2]], "string"),
        ([[]], "non-empty"),
        ([[1, -2]], "out of range"),
        ([[1, 2**40]], "out of range"),
        ([[1, 50_000]], "vocabulary"),
        ([[1.5, 2]], None),
        ([True, 2], None),
        ({"text": "x"}, None),
        (None, None),
    ],
)
def test_bad_inputs_are_400_naming_input(api: httpx.Client, value: Any, why: str | None) -> None:
    if value == "":
        # An empty string is a valid (if pointless) input, as OpenAI treats it.
        embed(api, input=value)
        return
    response = api.post("/v1/embeddings", json={"model": EMBED, "input": value})
    assert_error(response, 400, param="input", message=why)


def test_too_many_inputs_for_the_model(api: httpx.Client) -> None:
    response = api.post("/v1/embeddings", json={"model": EMBED, "input": ["x"] * 257})
    assert_error(response, 400, param="input", message="at most 256")
    response = api.post("/v1/embeddings", json={"model": EMBED, "input": ["x"] * 2049})
    assert_error(response, 400, param="input", message="at most 2048")


def test_an_oversized_input_is_refused(api: httpx.Client) -> None:
    response = api.post("/v1/embeddings", json={"model": EMBED, "input": ["x" * 100_001]})
    assert_error(response, 400, param="input", message="longer than")


def test_a_chat_model_does_not_embed(api: httpx.Client) -> None:
    assert_error(
        api.post("/v1/embeddings", json={"model": "fake-chat", "input": "x"}),
        404,
        code="model_not_found",
        param="model",
    )
    assert_error(
        api.post(
            "/v1/chat/completions", json={"model": EMBED, "messages": [{"role": "user", "content": "x"}]}
        ),
        404,
        code="model_not_found",
        param="model",
    )


# -- the real model ------------------------------------------------------------------------------


def test_similar_sentences_are_closer_than_unrelated_ones(real_live: Live) -> None:
    client = sdk(real_live)
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The quarterly tax report is due next Tuesday.",
        "Photosynthesis converts sunlight into chemical energy in plants.",
    ]
    result = client.embeddings.create(model=REAL_EMBED, input=texts)  # base64 on the wire, as the SDK asks
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 384 for v in vectors)
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)
    similar = cosine(vectors[0], vectors[1])
    assert similar > 0.5
    assert similar > cosine(vectors[0], vectors[2]) + 0.3
    assert similar > cosine(vectors[0], vectors[3]) + 0.3
    assert similar > cosine(vectors[1], vectors[2]) + 0.3
    # MiniLM counts its own tokens, [CLS] and [SEP] included.
    assert result.usage.prompt_tokens > sum(len(t.split()) for t in texts)


def test_real_model_vectors_are_sentence_transformers_own(real_live: Live) -> None:
    """The vectors sentence-transformers computes, normalised, sent as float32: each JSON number is the
    shortest text that reads back as its float32 (at most 9 significant digits), base64 holds the same bits."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    config = real_live.services.settings.model(REAL_EMBED)
    assert config is not None
    model = SentenceTransformer(config.source, device="cpu", local_files_only=True)
    texts = ["A man is playing a guitar on stage.", "The quarterly tax report is due next Tuesday.", "x"]
    expected = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    with http(real_live) as api:
        response = api.post("/v1/embeddings", json={"model": REAL_EMBED, "input": texts})
        assert response.status_code == 200, response.text
        packed = embed(api, model=REAL_EMBED, input=texts, encoding_format="base64")["data"]
    floats = response.json()["data"]
    for row, f, b in zip(expected, floats, packed, strict=True):
        assert decode(b["embedding"]) == as_float32(f["embedding"])
        np.testing.assert_allclose(as_float32(f["embedding"]), row, rtol=0, atol=1e-6)
    numbers = re.findall(rb"-?[0-9][0-9.]*(?:e-?[0-9]+)?", response.content.split(b'"model"')[0])
    digits = [len(n.lstrip(b"-").split(b"e")[0].replace(b".", b"").strip(b"0")) for n in numbers]
    assert len(digits) > 3 * 384 and max(digits) <= 9


def test_real_model_token_ids_embed_like_the_text(real_live: Live) -> None:
    from transformers import AutoTokenizer

    config = real_live.services.settings.model(REAL_EMBED)
    assert config is not None
    tokenizer = AutoTokenizer.from_pretrained(config.source, local_files_only=True)
    text = "the quick brown fox jumps over the lazy dog"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with http(real_live) as api:
        from_text = embed(api, model=REAL_EMBED, input=text)
        from_ids = embed(api, model=REAL_EMBED, input=[ids])
        assert from_text["usage"]["prompt_tokens"] == len(ids) + 2
        assert cosine(from_text["data"][0]["embedding"], from_ids["data"][0]["embedding"]) > 0.999
        too_big = api.post("/v1/embeddings", json={"model": REAL_EMBED, "input": [[1, tokenizer.vocab_size]]})
        assert_error(too_big, 400, param="input", message="vocabulary")


def test_real_model_refuses_inputs_longer_than_its_context(real_live: Live) -> None:
    with http(real_live) as api:
        fits = embed(api, model=REAL_EMBED, input="word " * 250)
        assert fits["usage"]["prompt_tokens"] == 252  # [CLS] + 250 + [SEP], within MiniLM's 256
        response = api.post("/v1/embeddings", json={"model": REAL_EMBED, "input": ["short", "word " * 300]})
        error = assert_error(response, 400, param="input", code="context_length_exceeded", message="input[1]")
        assert "256" in error["message"]
        assert embed(api, model=REAL_EMBED, input="still serving")["data"]


def test_real_model_refuses_other_dimensions(real_live: Live) -> None:
    with http(real_live) as api:
        response = api.post("/v1/embeddings", json={"model": REAL_EMBED, "input": "x", "dimensions": 256})
        assert_error(response, 400, param="dimensions", message="384")
    with pytest.raises(openai.BadRequestError):
        sdk(real_live).embeddings.create(model=REAL_EMBED, input="x", dimensions=256)
