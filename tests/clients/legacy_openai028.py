"""Exercise the server the way old code does: the legacy ``openai==0.28.1`` SDK.

Runs as its own process under tests/.envs/openai028/bin/python (made by setup.sh), with
AISP_BASE_URL (ending in /v1), AISP_API_KEY, AISP_CHAT_MODEL and AISP_EMBED_MODEL set.
Prints one JSON object summarising the replies; exits non-zero on anything unexpected.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import openai

PROG = "legacy_openai028"
MESSAGES = [{"role": "user", "content": "Say hello in three words."}]
TEXTS = ["The quick brown fox.", "Jumped over the lazy dog."]


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{PROG}: {name} is not set")
    return value


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def run() -> dict[str, Any]:
    openai.api_base = env("AISP_BASE_URL")
    openai.api_key = env("AISP_API_KEY")
    chat_model, embed_model = env("AISP_CHAT_MODEL"), env("AISP_EMBED_MODEL")

    models = openai.Model.list()

    chat = openai.ChatCompletion.create(model=chat_model, messages=MESSAGES, max_tokens=16)

    stream = openai.ChatCompletion.create(model=chat_model, messages=MESSAGES, max_tokens=16, stream=True)
    chunks = list(stream)
    check(len(chunks) > 0, "the stream had no chunks")
    streamed = [choice for chunk in chunks for choice in chunk.choices]

    # 0.28.1 asks for base64 and decodes it to floats with numpy.
    embeddings = openai.Embedding.create(model=embed_model, input=TEXTS)
    vectors = [item.embedding for item in sorted(embeddings.data, key=lambda item: item.index)]
    dims = {len(vector) for vector in vectors}
    check(len(dims) == 1, f"embeddings of different sizes: {sorted(dims)}")
    check(all(isinstance(x, float) for vector in vectors for x in vector), "embeddings are not float lists")

    try:
        openai.Model.list(api_key="sk-aisp-not-a-valid-key")
    except openai.error.AuthenticationError as err:
        error_status = err.http_status
    else:
        raise RuntimeError("a request with a bad API key succeeded")

    return {
        "sdk": f"openai-python {openai.version.VERSION}",
        "models": [model.id for model in models.data],
        "chat_text": chat.choices[0].message.content,
        "chat_finish_reason": chat.choices[0].finish_reason,
        "chat_usage": chat.usage.to_dict_recursive(),
        "stream_chunks": len(chunks),
        "stream_text": "".join(choice.delta.get("content") or "" for choice in streamed),
        "stream_finish_reason": next((c.finish_reason for c in streamed if c.finish_reason), None),
        "embedding_count": len(vectors),
        "embedding_dims": dims.pop(),
        "embedding_head": vectors[0][:3],
        "error_status": error_status,
    }


if __name__ == "__main__":
    try:
        summary = run()
    except openai.error.OpenAIError as err:
        sys.exit(f"{PROG}: {type(err).__name__}: {err}")
    print(json.dumps(summary))  # noqa: T201 - the one line of output the tests read
