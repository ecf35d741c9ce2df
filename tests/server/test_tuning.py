"""Process-wide tuning: the headless server tunes its process (and ``AISP_TUNING=0`` leaves it alone), the
window's process is never tuned, an engine's process gets its OpenMP setting unless the operator chose
one; in a tuned process long-lived objects stay out of the collector's full passes, and an unloaded
model's objects are freed in any process, reference cycles included."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from server.config import ModelConfig
from server.engines.fake import FakeChat
from server.engines.manager import ModelManager
from server.tuning import SWITCH_INTERVAL_S, apply_to_engine
from tests.security.conftest import ROOT, ServerProcess


class _Tangled(FakeChat):
    """An engine holding a reference cycle, as real engines do (callbacks, parents and children)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.cycle: dict[str, Any] = {"engine": self}


def _tangled(config: ModelConfig) -> Any:
    return _Tangled(config)


WINDOW_LIKE = """
import gc, sys, tempfile
from server.config import load_settings
from server.runner import ServerThread
from server.services import Services
services = Services.open(load_settings(environ={"AISP_DATA_DIR": tempfile.mkdtemp()}, port=0, models=()))
thread = ServerThread(services)
thread.start()
print(sys.getswitchinterval(), gc.get_freeze_count())
thread.stop()
services.close()
"""

PROBE = """
import gc, sys, tempfile
from server.config import load_settings
from server.tuning import apply_to_server, settle
settings = load_settings(environ={"AISP_TUNING": sys.argv[1], "AISP_DATA_DIR": tempfile.mkdtemp()}, models=())
apply_to_server(settings.tuning)
settle()
print(sys.getswitchinterval(), gc.get_freeze_count())
"""


def _python(code: str, *args: str) -> tuple[float, int]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    interval, frozen = done.stdout.split()
    return float(interval), int(frozen)


@pytest.mark.parametrize(("switch", "tuned"), [("1", True), ("0", False)])
def test_the_headless_server_tunes_its_process_unless_switched_off(
    tmp_path: Path, switch: str, tuned: bool
) -> None:
    interval, frozen = _python(PROBE, switch)
    assert (interval == SWITCH_INTERVAL_S, frozen > 0) == (tuned, tuned)
    server = ServerProcess(tmp_path / "data", AISP_TUNING=switch).start()
    assert server.stop() == 0
    said = "process tuned for serving" if tuned else "process tuning is off"
    assert said in server.log()


def test_the_windows_process_is_not_tuned() -> None:
    """The window runs the server on a thread (``ServerThread``): its process keeps Python's defaults."""
    assert _python(WINDOW_LIKE) == (0.005, 0)


def test_an_engines_process_gets_its_openmp_setting_unless_chosen() -> None:
    environ: dict[str, str] = {}
    apply_to_engine(environ)
    assert environ == {"GOMP_SPINCOUNT": "10000"}
    chosen = {"GOMP_SPINCOUNT": "300000"}
    apply_to_engine(chosen)
    assert chosen == {"GOMP_SPINCOUNT": "300000"}
    off = {"AISP_TUNING": "0"}
    apply_to_engine(off)
    assert off == {"AISP_TUNING": "0"}


def test_a_full_collection_in_a_tuned_process_walks_only_what_was_made_since() -> None:
    code = PROBE.replace("settle()", "settle(); gc.collect()").replace(
        "gc.get_freeze_count())", "gc.get_freeze_count() - sum(len(gc.get_objects(g)) for g in range(3)))"
    )
    _interval, frozen_minus_walked = _python(code, "1")
    assert frozen_minus_walked > 0  # the objects set aside outnumber those a full pass still walks


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
        manager.load("tangled")  # a reload frees the engine it replaces too, once it has retired
        deadline = time.monotonic() + 10
        while reloaded() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reloaded() is None
    finally:
        manager.close()
