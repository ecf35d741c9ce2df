"""The mock upstream on loopback, and a model table that serves it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.config import ModelConfig
from server.metering.ledger import ledger_rows
from tests.conftest import FAKE_EMBED, Live
from tests.support.mock_upstream import MockUpstream


@pytest.fixture
def mock() -> Iterator[MockUpstream]:
    upstream = MockUpstream().start()
    yield upstream
    upstream.stop()


def upstream_models(*urls: str, **extra: Any) -> tuple[ModelConfig, ...]:
    """``up-chat`` and ``up-embed``, served by the upstreams at ``urls``."""
    chat = ModelConfig(
        name="up-chat",
        kind="chat",
        engine="upstream",
        source=",".join(urls),
        upstream_model="upstream-model",
        price_input_per_million=1.0,
        price_output_per_million=2.0,
        **extra,
    )
    embed = ModelConfig(
        name="up-embed", kind="embedding", engine="upstream", source=",".join(urls), upstream_model="e"
    )
    return (chat, embed, FAKE_EMBED)


def upstream_rows(live: Live) -> list[dict[str, Any]]:
    """The ledger rows of ``up-chat``, once every row is written."""
    live.services.ledger.flush()
    return [r for r in ledger_rows(live.services.store) if r["model"] == "up-chat"]
