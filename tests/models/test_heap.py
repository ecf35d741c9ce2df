"""Long-lived objects stay out of the garbage collector's full passes while the server runs, and an
unloaded model's objects go back to it, so that what it left in reference cycles is freed."""

from __future__ import annotations

import gc
import time
import weakref
from typing import Any

from server.config import ModelConfig
from server.engines.fake import FakeChat
from server.engines.manager import ModelManager
from tests.conftest import Live


class _Tangled(FakeChat):
    """An engine holding a reference cycle, as real engines do (callbacks, parents and children)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.cycle: dict[str, Any] = {"engine": self}


def _tangled(config: ModelConfig) -> Any:
    return _Tangled(config)


def test_a_full_collection_on_a_running_server_walks_only_what_requests_made(live: Live) -> None:
    assert gc.get_freeze_count() > 0  # the server's modules, app and models are set aside
    started = time.perf_counter()
    gc.collect()
    assert time.perf_counter() - started < 0.5  # sanity bound only: the frozen part is not walked
    walked = sum(len(gc.get_objects(generation)) for generation in range(3))
    assert walked < gc.get_freeze_count()


def test_an_unloaded_model_is_freed_even_when_it_holds_reference_cycles() -> None:
    config = ModelConfig(name="tangled", kind="chat", engine="fake", source="reply=hi")
    manager = ModelManager([config], max_queue=4, engines={"fake": _tangled}, retire_grace_s=0.0)
    try:
        assert manager.load("tangled").state == "loaded"
        engine = weakref.ref(manager.get("tangled", "chat")[0])
        assert gc.is_tracked(engine()) and engine() is not None
        manager.unload("tangled")
        assert engine() is None  # set aside while loaded, it went back to the collector and was freed

        manager.load("tangled")
        reloaded = weakref.ref(manager.get("tangled", "chat")[0])
        manager.load("tangled")  # a reload frees the engine it replaces, too, once it has retired
        deadline = time.monotonic() + 10
        while reloaded() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reloaded() is None
    finally:
        manager.close()
