"""A fake Hugging Face endpoint on loopback serving the embedded models as repositories: the SmolLM2 GGUF
(``GGUF_REPO``), the MiniLM folder (``FOLDER_REPO``) and the same folder behind a gate (``GATED_REPO``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.config import default_models
from tests.support.fake_hub import FakeHub, FakeRepo, fake_file, folder_repo

GGUF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FOLDER_REPO = "sentence-transformers/all-MiniLM-L6-v2"
GATED_REPO = "acme/gated-minilm"
TOKEN = "hf_" + "Q" * 34
SMOL = Path(default_models()[0].source)
MINILM = Path(default_models()[1].source)


@pytest.fixture(scope="session")
def repositories() -> dict[str, FakeRepo]:
    """The repositories, their checksums computed once."""
    readme = MINILM / "README.md"
    gguf = FakeRepo(
        GGUF_REPO,
        {
            SMOL.name: fake_file(SMOL.name, SMOL, lfs=True),
            "README.md": fake_file("README.md", readme, lfs=False),
        },
    )
    return {
        GGUF_REPO: gguf,
        FOLDER_REPO: folder_repo(FOLDER_REPO, MINILM),
        GATED_REPO: folder_repo(GATED_REPO, MINILM, gated=True),
    }


@pytest.fixture
def hub(repositories: dict[str, FakeRepo]) -> Iterator[FakeHub]:
    fake = FakeHub(repos=dict(repositories), tokens={TOKEN}).start()
    yield fake
    fake.stop()
