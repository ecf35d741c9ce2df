"""Shared fixtures: a fresh data directory per test, services on a real SQLite file, live servers on
loopback (fast fake engines, or the real embedded models loaded once per session)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Never the developer's own credential store: tests that need one give their own.
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")

from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from server.config import ModelConfig, Settings, default_models, load_settings  # noqa: E402
from server.runner import ServerThread  # noqa: E402
from server.services import Services  # noqa: E402

pytest_plugins = ["tests.support.disk", "tests.support.fake_hub"]

ARTIFACTS = Path(__file__).parent / "artifacts"

FAKE_CHAT = ModelConfig(
    name="fake-chat",
    kind="chat",
    engine="fake",
    source="",
    context_length=2048,
    price_input_per_million=1.0,
    price_output_per_million=2.0,
)
FAKE_EMBED = ModelConfig(name="fake-embed", kind="embedding", engine="fake", source="dims=64")


def fake_models(**chat_options: str) -> tuple[ModelConfig, ...]:
    source = ",".join(f"{k}={v}" for k, v in chat_options.items())
    return (FAKE_CHAT.model_copy(update={"source": source}), FAKE_EMBED)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        overrides.setdefault("models", fake_models())
        overrides.setdefault("port", 0)
        return load_settings(environ={"AISP_DATA_DIR": str(tmp_path / "data")}, **overrides)

    return build


@pytest.fixture
def make_services(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Services]]:
    opened: list[Services] = []

    def build(**overrides: Any) -> Services:
        services = Services.open(make_settings(**overrides))
        services.models.wait_loaded(60)
        opened.append(services)
        return services

    yield build
    for services in opened:
        services.close()


@dataclass
class Live:
    """A server listening on loopback, its services, and a key to call it with."""

    thread: ServerThread
    services: Services
    key: str

    @property
    def url(self) -> str:
        return self.thread.url

    @property
    def base_url(self) -> str:
        return self.thread.url + "/v1"

    def new_key(self, name: str = "test", **options: Any) -> str:
        secret, _ = self.services.keys.create(name, **options)
        return secret


def _start(services: Services) -> Live:
    thread = ServerThread(services)
    thread.start()
    key, _ = services.keys.create("fixture")
    return Live(thread, services, key)


@pytest.fixture
def make_live(make_services: Callable[..., Services]) -> Iterator[Callable[..., Live]]:
    """Start a live server with fake engines (or whatever ``models`` says)."""
    started: list[Live] = []

    def build(**overrides: Any) -> Live:
        live = _start(make_services(**overrides))
        started.append(live)
        return live

    yield build
    for live in started:
        live.thread.stop()


@pytest.fixture
def live(make_live: Callable[..., Live]) -> Live:
    return make_live()


@pytest.fixture(scope="session")
def real_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The real embedded models (SmolLM2 on llama.cpp, MiniLM on sentence-transformers), loaded once."""
    data = tmp_path_factory.mktemp("real-data")
    models = tuple(
        m.model_copy(update={"price_input_per_million": 0.5, "price_output_per_million": 1.5})
        for m in default_models()
    )
    settings = load_settings(environ={"AISP_DATA_DIR": str(data)}, port=0, models=models)
    services = Services.open(settings)
    assert services.models.wait_loaded(300), "the embedded models did not load in time"
    failed = [s for s in services.models.statuses() if s.state != "loaded"]
    assert not failed, f"embedded models failed to load: {failed}"
    live = _start(services)
    yield live
    live.thread.stop()
    services.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    """llama-cpp-python opens two /dev/null files at import and never closes them."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
