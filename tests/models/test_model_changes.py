"""Changing a model while clients use it: prices, reasoning and limits apply at once without a reload;
a change that needs a new instance keeps answering with the old one until the new one is ready (never
404 or 503), lets a stream that was running finish, and keeps the old settings if the new ones fail.
A request that sets no maximum output gets the model's default one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from server.config import ModelConfig, needs_reload
from server.metering.ledger import ledger_rows
from tests.conftest import FAKE_CHAT, Live, fake_models

ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "the old words"}]


def chat(live: Live, **extra: object) -> httpx.Response:
    return httpx.post(
        live.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {live.key}"},
        json={"model": "fake-chat", "messages": ASK, **extra},
        timeout=30,
    )


def test_a_price_change_applies_at_once_without_a_reload(live: Live) -> None:
    manager = live.services.models
    before = manager.status("fake-chat")
    cheaper = FAKE_CHAT.model_copy(
        update={"price_input_per_million": 1000.0, "price_output_per_million": 0.0}
    )
    assert not needs_reload(FAKE_CHAT, cheaper)
    assert manager.replace(cheaper) is False
    after = manager.status("fake-chat")
    assert after.state == "loaded" and after.load_seconds == before.load_seconds and not after.reloading
    assert manager.configs()[0] == cheaper
    response = chat(live)
    assert response.status_code == 200
    live.services.ledger.flush()
    row = next(r for r in ledger_rows(live.services.store) if r["model"] == "fake-chat")
    assert row["cost"] == row["input_tokens"] * 1000.0 / 1_000_000


def test_a_reload_keeps_answering_with_the_old_instance_until_the_new_one_is_ready(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(models=fake_models(reply="old", delay="0.05", repeat="1"))
    manager = live.services.models
    changed = FAKE_CHAT.model_copy(update={"source": "reply=new,load_delay=1.5"})
    assert manager.replace(changed) is True
    assert manager.status("fake-chat").state == "loaded"  # nothing happens until the load
    streamed: list[str] = []

    def long_stream() -> None:
        with httpx.stream(
            "POST",
            live.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {live.key}"},
            json={"model": "fake-chat", "messages": ASK, "max_tokens": 40, "stream": True},
            timeout=30,
        ) as response:
            streamed.extend(line for line in response.iter_lines() if line.startswith("data:"))

    streaming = threading.Thread(target=long_stream)
    streaming.start()  # 40 tokens at 0.05 s each: it runs across the switch
    loading = threading.Thread(target=manager.load, args=("fake-chat",))
    loading.start()
    answers: list[tuple[int, str]] = []
    while loading.is_alive():
        response = chat(live, max_tokens=1)
        body = response.json()
        answers.append(
            (response.status_code, body["choices"][0]["message"]["content"] if body.get("choices") else body)
        )
        if manager.status("fake-chat").reloading:
            assert manager.status("fake-chat").state == "loaded"
    loading.join()
    streaming.join()
    assert {status for status, _ in answers} == {200}, answers
    assert ("200", "old") in {(str(s), t) for s, t in answers}
    assert chat(live, max_tokens=1).json()["choices"][0]["message"]["content"] == "new"
    assert manager.configs()[0] == changed
    assert streamed[-1] == "data: [DONE]" and len(streamed) == 1 + 40 + 1 + 1  # role, tokens, end, done


def test_new_settings_that_fail_to_load_leave_the_model_serving_with_the_old_ones(live: Live) -> None:
    manager = live.services.models
    broken = ModelConfig(name="fake-chat", kind="chat", engine="llama.cpp", source="/nowhere/model.gguf")
    assert manager.replace(broken) is True
    assert manager.configs()[0] == broken  # what the operator asked for, until the load says otherwise
    status = manager.load("fake-chat")
    assert status.state == "loaded" and "no GGUF file" in (status.reload_error or "")
    assert manager.configs()[0] == FAKE_CHAT
    assert chat(live).status_code == 200


def test_a_request_without_a_maximum_gets_the_models_default(make_live: Callable[..., Live]) -> None:
    capped = FAKE_CHAT.model_copy(update={"source": "repeat=1", "default_max_tokens": 7})
    live = make_live(models=(capped,))
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        reply = client.chat.completions.create(model="fake-chat", messages=ASK)
        assert reply.usage is not None and reply.usage.completion_tokens == 7
        assert reply.choices[0].finish_reason == "length"
        asked = client.chat.completions.create(model="fake-chat", messages=ASK, max_tokens=12)
        assert asked.usage is not None and asked.usage.completion_tokens == 12  # a request's own maximum wins
        response = client.responses.create(model="fake-chat", input="the old words")
        assert response.usage is not None and response.usage.output_tokens == 7
    started = time.monotonic()
    uncapped = capped.model_copy(update={"default_max_tokens": None})
    assert live.services.models.replace(uncapped) is False  # applies at once
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        reply = client.chat.completions.create(model="fake-chat", messages=ASK)
    assert reply.usage is not None and reply.usage.completion_tokens > 1000  # up to the context
    assert time.monotonic() - started < 20
