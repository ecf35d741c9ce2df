"""``GET /v1/models`` and ``GET /v1/models/{model}``: the models the key may use, as OpenAI shapes them."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.conftest import CHAT, EMBED, assert_error, http, sdk
from tests.conftest import Live
from tests.spec import validate


def test_list_models_conforms_and_lists_every_loaded_model(api: httpx.Client) -> None:
    response = api.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    validate("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == [CHAT, EMBED]
    for model in body["data"]:
        validate("Model", model)
        assert model["object"] == "model"
        assert model["owned_by"] == "ai-service-platform"
        assert isinstance(model["created"], int) and model["created"] > 1_600_000_000
    assert response.headers["x-request-id"].startswith("req_")


def test_sdk_lists_and_retrieves_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [CHAT, EMBED]
    model = client.models.retrieve(EMBED)
    assert (model.id, model.object) == (EMBED, "model")


def test_retrieve_model_conforms(api: httpx.Client) -> None:
    response = api.get(f"/v1/models/{CHAT}")
    assert response.status_code == 200
    validate("Model", response.json())
    assert response.json()["id"] == CHAT


def test_unknown_model_is_404_model_not_found(api: httpx.Client) -> None:
    error = assert_error(api.get("/v1/models/gpt-4o"), 404, code="model_not_found", param="model")
    assert "gpt-4o" in error["message"]


def test_a_restricted_key_sees_only_its_models(live: Live) -> None:
    key = live.new_key("embed-only", allowed_models=[EMBED])
    with http(live, key) as api:
        listed = api.get("/v1/models").json()
        assert [m["id"] for m in listed["data"]] == [EMBED]
        assert api.get(f"/v1/models/{EMBED}").status_code == 200
        # A model the key may not use does not exist, as far as the key can tell.
        assert_error(api.get(f"/v1/models/{CHAT}"), 404, code="model_not_found", param="model")
        chat = api.post(
            "/v1/chat/completions", json={"model": CHAT, "messages": [{"role": "user", "content": "x"}]}
        )
        assert_error(chat, 404, code="model_not_found", param="model")
    with pytest.raises(openai.NotFoundError):
        sdk(live, key).models.retrieve(CHAT)


def test_a_key_allowed_no_model_sees_an_empty_list(live: Live) -> None:
    key = live.new_key("nothing", allowed_models=[])
    with http(live, key) as api:
        body = api.get("/v1/models").json()
    validate("ListModelsResponse", body)
    assert body == {"object": "list", "data": []}


def test_models_need_a_key(live: Live) -> None:
    with http(live, key="") as api:
        assert_error(api.get("/v1/models"), 401, code="invalid_api_key")
        assert_error(api.get(f"/v1/models/{CHAT}"), 401, code="invalid_api_key")
