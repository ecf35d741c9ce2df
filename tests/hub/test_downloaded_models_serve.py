"""What was downloaded serves at once: a GGUF and a sentence-transformers folder, downloaded from the fake
endpoint into a running server's table, loaded, and answering the official SDK."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from server.hub.downloads import pick
from tests.conftest import Live
from tests.support.fake_hub import FOLDER_REPO, GGUF_REPO, FakeHub


@pytest.mark.slow
def test_downloaded_models_are_added_loaded_and_answer_through_the_api(
    make_live: Callable[..., Live], hub: FakeHub
) -> None:
    live = make_live(hf_endpoint=hub.url)
    downloads = live.services.downloads
    statuses = []
    for repo in (GGUF_REPO, FOLDER_REPO):
        listing = downloads.inspect(repo)
        statuses.append(downloads.start(listing, pick(listing, None, None)[0]))
    chat, embed = (downloads.wait(s.id, 300) for s in statuses)
    assert (chat.state, embed.state) == ("done", "done"), (chat.message, embed.message)
    assert "loaded" in (chat.message or "") and "loaded" in (embed.message or "")

    client = openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0, timeout=120)
    served = {m.id for m in client.models.list()}
    assert {chat.name, embed.name} <= served
    reply = client.chat.completions.create(
        model=chat.name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0
    vectors = client.embeddings.create(model=embed.name, input=["a downloaded model"])
    assert len(vectors.data[0].embedding) == 384
    client.close()
