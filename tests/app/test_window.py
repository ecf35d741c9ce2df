"""The window and its server: the status strip, start and stop, a port clash, a clean close, and the
console script (window with no arguments, the headless commands with any)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app import main as app_main
from app.single_instance import activate_running
from app.theme import TONES
from app.window import MainWindow
from server.config import Settings
from server.instance import DataDirInUse
from server.store import Store
from tests.conftest import fake_models

from .conftest import SDK, click, close_window


def reachable(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_header_shows_address_scope_models_and_a_live_counter(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    header, view = window.header, window.server.view
    assert view.url.startswith("http://127.0.0.1:") and reachable(view.url)
    assert header.state.text() == "<b>Running</b>"
    assert header.address.text() == f"at {view.url}/v1"
    assert header.scope.text() == "This computer only"
    assert header.models.text() == "Models: fake-chat (ready) · fake-embed (ready)"
    assert header.requests.text() == "Requests: 0"
    key, _ = window.services.keys.create("counter")
    client = sdk(window, key)
    for n in range(3):
        client.embeddings.create(model="fake-embed", input=f"request {n}")
    qtbot.waitUntil(lambda: header.requests.text() == "Requests: 3", timeout=5000)


def test_stop_and_start_from_the_header(qtbot: QtBot, window: MainWindow) -> None:
    url = window.server.view.url
    with qtbot.waitSignal(window.server.server_stopped, timeout=10_000):
        click(qtbot, window.header.toggle)
    assert not reachable(url)
    assert window.header.state.text() == "<b>Stopped</b>"
    assert window.header.toggle.text() == "St&art server"
    with qtbot.waitSignal(window.server.server_started, timeout=10_000):
        click(qtbot, window.header.toggle)
    assert window.server.view.url == url and reachable(url)
    assert window.header.toggle.text() == "&Stop server"


@pytest.fixture
def taken_port() -> Iterator[int]:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    yield blocker.getsockname()[1]
    blocker.close()


def test_a_port_in_use_is_reported_not_fatal(
    qtbot: QtBot, make_window: Callable[..., MainWindow], taken_port: int
) -> None:
    window = make_window(start=False, port=taken_port)
    with qtbot.waitSignal(window.server.start_failed, timeout=10_000) as failed:
        window.start_server()
    assert f"Port {taken_port}" in failed.args[0] and "already in use" in failed.args[0]
    qtbot.waitUntil(lambda: "already in use" in window.header.address.text())
    assert window.header.state.text() == "<b>Stopped</b>"
    assert window.header.state.property("tone") == "error"
    colour = window.header.state.palette().color(QPalette.ColorRole.WindowText).name()
    assert colour == TONES["light"]["error"]
    assert window.header.toggle.isEnabled()  # the operator can free the port and try again


def test_closing_the_window_lets_a_stream_finish_then_stops_everything(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK
) -> None:
    window = make_window(models=fake_models(delay="0.005", repeat="1"))
    url, data_dir = window.server.view.url, window.services.settings.data_dir
    key, _ = window.services.keys.create("streamer")
    client = sdk(window, key)
    received: list[str] = []
    first = threading.Event()

    def stream() -> None:
        chunks = client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "go"}], max_tokens=200, stream=True
        )
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(10)
    with qtbot.waitSignal(window.closed, timeout=20_000):
        window.close()
    assert not window.isVisible()
    reader.join(10)
    assert not reader.is_alive()
    assert len(received) == 200  # the grace period let the stream end instead of cutting it
    assert not reachable(url)
    store = Store(data_dir / "aisp.sqlite3")  # the services closed cleanly: the ledger holds the stream
    try:
        row = store.db.execute_sql("SELECT output_tokens, status FROM usage_record").fetchall()
    finally:
        store.close()
    assert row == [(200, "completed")]


def test_a_stream_still_running_after_the_grace_is_ended_and_billed_when_the_window_closes(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK
) -> None:
    window = make_window(models=fake_models(delay="0.01", repeat="1"), shutdown_grace_s=0.3)
    data_dir = window.services.settings.data_dir
    engine, _, _ = window.services.models.get("fake-chat", "chat")
    key, record = window.services.keys.create("streamer")
    client = sdk(window, key, timeout=30)
    received: list[str] = []
    ended: list[str] = []
    first = threading.Event()

    def stream() -> None:
        chunks = client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "go"}], max_tokens=2000, stream=True
        )
        try:
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
                    first.set()
        except openai.APIError as exc:  # the server's last event: why the stream ended
            ended.append(str(exc.code))

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(10)
    with qtbot.waitSignal(window.closed, timeout=20_000):
        window.close()
    reader.join(10)
    assert ended == ["server_stopped"] and 0 < len(received) < 2000
    store = Store(data_dir / "aisp.sqlite3")
    try:
        rows = store.db.execute_sql(
            "SELECT status, output_tokens, exact FROM usage_record WHERE key_id = ?", (record.id,)
        ).fetchall()
    finally:
        store.close()
    # Exactly what the engine generated, the tokens it made after the last one was sent included.
    assert rows == [("server_stopped", engine.generated, 1)]  # type: ignore[union-attr]
    assert engine.generated >= len(received)  # type: ignore[union-attr]


def test_the_console_script_delegates_any_argument_to_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AISP_DATA_DIR", str(tmp_path / "data"))
    assert app_main.main(["keys", "create", "--name", "from the shell"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("aisp-")
    assert app_main.main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["from the shell"]


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """``main()`` configures logging and an event loop for the whole process, as a program should."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()  # the log file the window configured
    root.handlers[:] = handlers
    root.setLevel(level)
    asyncio.set_event_loop_policy(None)


def test_the_console_script_without_arguments_opens_the_window_fast_and_closes_cleanly(
    qapp: QApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_process_state: None
) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps([m.model_dump() for m in fake_models()]), encoding="utf-8")
    monkeypatch.setenv("AISP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AISP_PORT", "0")
    monkeypatch.setenv("AISP_MODELS", str(models))
    seen: dict[str, object] = {}
    began = time.monotonic()

    def watch() -> None:
        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and "shown" not in seen:
            seen["shown"] = time.monotonic() - began
        if windows and windows[0].server.view.running:
            window = windows[0]
            seen["url"] = window.server.view.url
            seen["reachable"] = reachable(window.server.view.url)
            window.close()
            return
        if time.monotonic() - began < 20:
            QTimer.singleShot(20, watch)

    QTimer.singleShot(0, watch)
    assert app_main.main([]) == 0
    assert seen["reachable"] is True
    assert float(seen["shown"]) < 3.0  # type: ignore[arg-type]
    assert not reachable(str(seen["url"]))


def test_a_second_launch_on_the_same_data_folder_brings_the_first_window_forward(
    qtbot: QtBot, window: MainWindow, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    window.hide()  # as if it were in the tray, or behind other windows
    # The second launch, as a user starts it: the same program, the same data folder, another process.
    second = subprocess.Popen(
        [sys.executable, "-c", "import sys; from app.main import main; sys.exit(main([]))"],
        env={**os.environ, "AISP_DATA_DIR": str(settings.data_dir), "QT_QPA_PLATFORM": "offscreen"},
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with qtbot.waitSignal(window.brought_forward, timeout=60_000):
            qtbot.waitUntil(lambda: second.poll() is not None, timeout=60_000)
    finally:
        if second.poll() is None:
            second.kill()
        output = second.communicate()[0].decode(errors="replace")
    assert second.returncode == 0, output
    assert window.isVisible() and window.server.view.running  # nothing was reloaded or restarted
    assert window.services.instance is not None and window.services.instance.held
    with pytest.raises(DataDirInUse):  # and in this process too, the folder is the first window's
        app_main.prepare(settings)
    assert not activate_running(settings.data_dir.parent / "elsewhere", wait_ms=200)


def test_the_request_count_carries_over_from_earlier_runs(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK, tmp_path: Path
) -> None:
    window = make_window()
    key, _ = window.services.keys.create("counted")
    for n in range(2):
        sdk(window, key).embeddings.create(model="fake-embed", input=f"request {n}")
    qtbot.waitUntil(lambda: window.header.requests.text() == "Requests: 2", timeout=5000)
    close_window(qtbot, window)
    again = make_window()
    qtbot.waitUntil(lambda: again.header.requests.text() == "Requests: 2", timeout=5000)
    assert "0 of them since this window opened" in again.header.requests.toolTip()
    sdk(again, key).embeddings.create(model="fake-embed", input="one more")
    qtbot.waitUntil(lambda: again.header.requests.text() == "Requests: 3", timeout=5000)


def test_copy_buttons_for_the_base_url_and_every_lan_address(qtbot: QtBot, window: MainWindow) -> None:
    header = window.header
    assert header.copy_button.isVisible() and not header.more_button.isVisible()
    with qtbot.waitSignal(header.copied, timeout=2000):
        click(qtbot, header.copy_button)
    assert QApplication.clipboard().text() == window.server.view.base_url
    assert header.copy_button.text() == "Copied"

    # Serving the LAN on a machine with two networks: each address can be copied.
    view = replace(
        window.server.view,
        url="http://192.0.2.10:8090",
        lan=True,
        lan_address="192.0.2.10",
        lan_addresses=("192.0.2.10", "198.51.100.7"),
    )
    header.show_status(view)
    assert header.more_button.isVisible()
    assert header.urls() == [
        "http://192.0.2.10:8090/v1",
        "http://198.51.100.7:8090/v1",
        "http://127.0.0.1:8090/v1",
    ]
    actions = header.copy_menu.actions()
    assert [a.text() for a in actions] == [f"Copy {url}" for url in header.urls()]
    actions[1].trigger()
    assert QApplication.clipboard().text() == "http://198.51.100.7:8090/v1"
    click(qtbot, header.copy_button)
    assert QApplication.clipboard().text() == "http://192.0.2.10:8090/v1"
    assert header.scope.text() == "LAN: 192.0.2.10"
