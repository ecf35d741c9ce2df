"""The README's commands work as written: its key-creation line and every curl example, run by a shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Live

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
CURLS = [block for block in BLOCKS if block.lstrip().startswith("curl")]
CREATE = next(block for block in BLOCKS if "keys create --name" in block and block.startswith("export"))


def test_the_readme_has_a_curl_example_per_endpoint() -> None:
    text = "\n".join(CURLS)
    for path in ("/v1/models", "/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
        assert path in text


@pytest.fixture(scope="module")
def readme_key(real_live: Live) -> str:
    command = CREATE.replace(
        ".venv/bin/ai-service-platform", str(Path(sys.executable).parent / "ai-service-platform")
    )
    env = {**os.environ, "AISP_DATA_DIR": str(real_live.services.settings.data_dir)}
    done = subprocess.run(
        ["bash", "-c", command + '\nprintf %s "$AISP_KEY"'],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    key = done.stdout.strip()
    assert re.fullmatch(r"aisp-[0-9A-Za-z]{49}", key), done.stdout
    return key


@pytest.mark.parametrize("block", CURLS, ids=[re.search(r"/v1/\w+(/\w+)?", b).group(0) for b in CURLS])  # type: ignore[union-attr]
def test_curl_example(block: str, real_live: Live, readme_key: str) -> None:
    command = block.replace("http://127.0.0.1:8090", real_live.url)
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, "AISP_KEY": readme_key},
        timeout=120,
        check=True,
    )
    out = done.stdout
    if '"stream": true' in block:
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    else:
        body = json.loads(out)
        assert body.get("error") is None, body
        assert body["object"] in ("list", "chat.completion", "response")
