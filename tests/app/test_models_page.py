"""The Models page through its real widgets: presets, a missing file reported with its reason, a real GGUF
added, loaded, answered through the SDK, unloaded, loaded again, changed and the table kept across a
restart; queues visible while a slow model is busy; the hardware panel and the live memory estimate; an
upstream model's replicas and their health; invalid settings explained in the form."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from PySide6.QtWidgets import QFileDialog
from pytestqt.qtbot import QtBot

from app.pages.hardware import gib
from app.pages.model_dialog import ModelDialog
from app.pages.model_rows import LONGEST_CELL
from app.pages.models import ModelsPage
from app.window import PAGES, MainWindow
from server.config import default_models, load_settings
from server.doctor import fact_lines
from server.gpu import Hardware
from server.runner import ServerThread
from server.services import Services, settings_from_store
from tests.conftest import Live, fake_models

from .conftest import SDK, cell_text, click, close_window, settle
from .test_key_flow import off_thread

MODELS = PAGES.index("Models")
SMOL = default_models()[0]


def models_page(qtbot: QtBot, window: MainWindow) -> ModelsPage:
    """Show the Models page and wait until its table and the hardware probe are in."""
    page = window.models_page
    window.show_page(MODELS)
    qtbot.waitUntil(lambda: page.hardware is not None and bool(page.rows()), timeout=30_000)
    return page


def add_dialog(qtbot: QtBot, page: ModelsPage) -> ModelDialog:
    click(qtbot, page.add_button)
    dialog = page.model_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    return dialog


def served(qtbot: QtBot, client: openai.OpenAI) -> set[str]:
    return {m.id for m in off_thread(qtbot, lambda: client.models.list())}


def ask(qtbot: QtBot, client: openai.OpenAI, model: str, text: str = "say hi", timeout: float = 60) -> str:
    reply = off_thread(
        qtbot,
        lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=4
        ),
        timeout=timeout,
    )
    return reply.choices[0].message.content or ""


def test_a_preset_fits_the_hardware_a_missing_file_is_refused_and_a_damaged_one_is_explained(
    qtbot: QtBot, window: MainWindow, sdk: SDK, tmp_path: Path
) -> None:
    page = models_page(qtbot, window)
    dialog = add_dialog(qtbot, page)
    assert dialog.browse_button.isVisible() and dialog.browse_button.text() == "&Browse…"

    dialog.preset.setCurrentIndex(dialog.preset.findData("embeddinggemma-300m"))
    assert (dialog.name.text(), dialog.engine.currentData(), dialog.kind.currentData()) == (
        "embeddinggemma-300m",
        "sentence-transformers",
        "embedding",
    )
    assert dialog.context.value() == 2048 and dialog.max_batch.value() == 256 and dialog.use_gpu.isChecked()
    assert not dialog.price_out.isVisible() and dialog.price_in.isVisible()  # embeddings have no output
    assert dialog.browse_button.accessibleName() == "Choose the model directory"
    assert not dialog.kind.isEnabled()  # sentence-transformers serves embeddings only
    click(qtbot, dialog.browse_button)
    assert dialog.picker is not None and dialog.picker.fileMode() == QFileDialog.FileMode.Directory
    dialog.picker.reject()
    # The preset's settings the form has no field for come along: its prompts, sizes and precision.
    dialog.source.setText(str(tmp_path / "embeddinggemma-300m"))
    chosen = dialog.config()
    assert chosen.prompts == {"query": "task: search result | query: ", "document": "title: none | text: "}
    assert (chosen.default_input_type, chosen.matryoshka_dimensions, chosen.dtype) == (
        "document",
        (768, 512, 256, 128),
        "float32",
    )

    dialog.preset.setCurrentIndex(dialog.preset.findData("qwen3-30b-a3b"))
    assert (dialog.name.text(), dialog.engine.currentData(), dialog.kind.currentData()) == (
        "qwen3-30b-a3b",
        "llama.cpp",
        "chat",
    )
    hardware = page.hardware
    assert hardware is not None
    if hardware.llama_gpu_offload:
        assert dialog.gpu_layers.text() == "All layers"
    else:  # this machine: llama.cpp runs on the CPU, and the preset says so rather than offer a GPU
        assert dialog.gpu_layers.value() == 0 and "no GPU offload" in dialog.preset_note.text()
    assert dialog.context.value() == 32768 and dialog.max_reply.isVisible() and dialog.price_out.isVisible()
    assert dialog.reasoning.isChecked() and dialog.reasoning.isVisible() and not dialog.max_batch.isVisible()
    assert dialog.browse_button.accessibleName() == "Choose the GGUF file"
    assert "32K context" in dialog.preset_note.text()
    qtbot.waitUntil(lambda: dialog.estimate.text() == "Choose the model's file to see whether it fits.")
    missing = tmp_path / "models" / "Qwen3-30B-A3B-Q4_K_M.gguf"
    qtbot.keyClicks(dialog.source, str(missing))
    qtbot.waitUntil(lambda: dialog.estimate.text() == f"No file at {missing}")
    click(qtbot, dialog.ok_button)  # refused: nothing is saved to be tried again at every start
    qtbot.waitUntil(dialog.error.isVisible)
    assert dialog.isVisible() and dialog.error.text() == f"GGUF file: no file at {missing}."
    assert window.services.store.get_setting("models") is None

    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(b"GGUF" + b"\x00" * 64)
    dialog.source.setText(str(damaged))
    with qtbot.waitSignal(page.model_loaded, timeout=20_000) as loaded:
        click(qtbot, dialog.ok_button)
    assert loaded.args == ["qwen3-30b-a3b"]
    assert page.cell("qwen3-30b-a3b", "State").startswith("Failed: cannot load damaged.gguf")
    assert page.cell("qwen3-30b-a3b", "Source") == damaged.name
    page.select("qwen3-30b-a3b")
    qtbot.waitUntil(lambda: "not a GGUF model" in page.details.text())
    assert "GPU layers" not in page.details.text().split("Suggestion:")[1].split("<br>")[0]
    assert page.load_button.isEnabled() and page.edit_button.isEnabled()
    assert not page.unload_button.isEnabled()

    key, _ = window.services.keys.create("lister")
    assert served(qtbot, sdk(window, key)) == {"fake-chat", "fake-embed"}
    saved = {row["name"]: row for row in window.services.store.get_setting("models")}
    assert saved["qwen3-30b-a3b"]["source"] == str(damaged)
    assert saved["qwen3-30b-a3b"]["reasoning"] is True
    assert saved["qwen3-30b-a3b"]["load_at_start"] is False  # not tried again at every start


def test_a_price_change_applies_at_once_and_a_reload_keeps_answering(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK
) -> None:
    window = make_window(models=fake_models(reply="old"))
    page = models_page(qtbot, window)
    client = sdk(window, window.services.keys.create("steady")[0])
    before = window.services.models.status("fake-chat").load_seconds
    page.select("fake-chat")
    click(qtbot, page.edit_button)
    edit = page.model_dialog
    assert edit is not None and edit.ok_button.text() == "Save"
    edit.price_in.setValue(7.5)
    assert edit.ok_button.text() == "Save"  # a price needs no reload
    with qtbot.waitSignal(page.model_changed, timeout=10_000):
        click(qtbot, edit.ok_button)
    qtbot.waitUntil(lambda: page.cell("fake-chat", "Price in / out (per 1M)").startswith("7.5 "))
    status = window.services.models.status("fake-chat")
    assert status.state == "loaded" and status.load_seconds == before and not status.reloading

    page.select("fake-chat")
    click(qtbot, page.edit_button)
    edit = page.model_dialog
    assert edit is not None
    edit.source.setText("reply=new,load_delay=1.5")
    assert edit.ok_button.text() == "Save and reload"
    answers: list[str] = []
    with qtbot.waitSignal(page.model_loaded, timeout=20_000):
        click(qtbot, edit.ok_button)
        qtbot.waitUntil(lambda: "loading the new settings" in page.cell("fake-chat", "State"), timeout=5000)
        answers.append(ask(qtbot, client, "fake-chat"))  # the old instance answers meanwhile
    assert answers == ["old"]
    assert page.cell("fake-chat", "State") == "Loaded"
    assert ask(qtbot, client, "fake-chat") == "new"


def test_the_buttons_stay_put_when_the_hardware_check_finishes(
    qtbot: QtBot, make_window: Callable[..., MainWindow], hardware: Callable[[], Hardware]
) -> None:
    gate = threading.Event()

    def slow_probe() -> Hardware:
        gate.wait(30)
        return hardware()

    window = make_window(probe=slow_probe)
    page = window.models_page
    window.show_page(MODELS)
    qtbot.waitUntil(lambda: bool(page.rows()))
    assert page.hardware_panel.text.text() == "Checking the GPU and memory…"
    where = {b.text(): b.mapTo(window, b.rect().topLeft()) for b in (page.add_button, page.edit_button)}
    gate.set()
    qtbot.waitUntil(lambda: page.hardware is not None, timeout=30_000)
    settle(qtbot)
    assert page.hardware_panel.text.text().count("\n") >= 3
    assert {
        b.text(): b.mapTo(window, b.rect().topLeft()) for b in (page.add_button, page.edit_button)
    } == where


def _cut(text: str) -> str:
    """What a cell shows of a long text."""
    return text if len(text) <= LONGEST_CELL else text[: LONGEST_CELL - 1] + "…"


def test_add_load_unload_reload_change_remove_and_the_table_survives_a_restart(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK, tmp_path: Path
) -> None:
    window = make_window()
    page = models_page(qtbot, window)
    dialog = add_dialog(qtbot, page)
    qtbot.keyClicks(dialog.name, "smol")
    click(qtbot, dialog.browse_button)  # the picker, window-modal over the form
    picker = dialog.picker
    assert picker is not None and picker.isVisible() and picker.isModal()
    assert (
        picker.fileMode() == QFileDialog.FileMode.ExistingFile
        and "GGUF models (*.gguf)" in picker.nameFilters()
    )
    picker.selectFile(SMOL.source)
    picker.accept()
    assert dialog.source.text() == SMOL.source
    dialog.context.setValue(2048)
    dialog.threads.setValue(1)
    assert dialog.parallel.isVisibleTo(dialog) and dialog.parallel.text() == "Automatic"
    dialog.parallel.setValue(3)
    with qtbot.waitSignal(page.model_loaded, timeout=60_000):
        click(qtbot, dialog.ok_button)
    assert page.cell("smol", "State") == "Loaded"
    assert page.cell("smol", "Parallel") == "3"  # as the engine reports it
    assert re.fullmatch(r"\d+ MB", page.cell("smol", "Size"))
    assert (page.cell("smol", "Context"), page.cell("smol", "Threads")) == ("2,048", "1")
    assert page.cell("smol", "Memory") == "Fits"
    key, _ = window.services.keys.create("models")
    client = sdk(window, key, timeout=60)
    assert ask(qtbot, client, "smol")
    assert "smol" in served(qtbot, client)

    page.select("smol")
    with qtbot.waitSignal(page.model_unloaded, timeout=30_000):
        click(qtbot, page.unload_button)
    assert page.cell("smol", "State") == "Not loaded"
    assert "smol" not in served(qtbot, client)
    with pytest.raises(openai.NotFoundError):
        ask(qtbot, client, "smol")

    with qtbot.waitSignal(page.model_loaded, timeout=60_000):
        click(qtbot, page.load_button)
    assert page.cell("smol", "State") == "Loaded" and ask(qtbot, client, "smol")
    with qtbot.waitSignal(page.model_loaded, timeout=60_000):
        click(qtbot, page.reload_button)
    assert page.cell("smol", "State") == "Loaded" and ask(qtbot, client, "smol")

    click(qtbot, page.edit_button)
    edit = page.model_dialog
    assert edit is not None and edit.name.isReadOnly() and edit.ok_button.text() == "Save"
    edit.context.setValue(4096)
    assert edit.ok_button.text() == "Save and reload"
    with qtbot.waitSignal(page.model_loaded, timeout=60_000):
        click(qtbot, edit.ok_button)
    assert page.cell("smol", "Context") == "4,096" and page.cell("smol", "State") == "Loaded"

    page.select("fake-embed")
    click(qtbot, page.remove_button)
    box = page.remove_box
    assert box is not None and box.isVisible()
    confirm = next(b for b in box.buttons() if b.text() == "Remove model")
    with qtbot.waitSignal(page.model_removed, timeout=10_000):
        click(qtbot, confirm)
    assert [row.config.name for row in page.rows()] == ["fake-chat", "smol"]
    assert served(qtbot, client) == {"fake-chat", "smol"}
    window.new_key()  # the key dialogs offer the models as the table has them now
    offered = window.keys_page.create_dialog
    assert offered is not None
    assert [offered.models.item(i).text() for i in range(offered.models.count())] == ["fake-chat", "smol"]
    offered.reject()

    close_window(qtbot, window)
    again = make_window(settings=settings_from_store({"AISP_DATA_DIR": str(tmp_path / "data")}, port=0))
    page = models_page(qtbot, again)
    assert [(row.config.name, row.status.state) for row in page.rows()] == [
        ("fake-chat", "loaded"),
        ("smol", "loaded"),
    ]
    smol = page.row("smol")
    assert smol is not None
    assert (smol.config.source, smol.config.context_length, smol.config.threads) == (SMOL.source, 4096, 1)
    key, _ = again.services.keys.create("after the restart")
    assert ask(qtbot, sdk(again, key, timeout=60), "smol")


def test_queue_length_and_wait_show_while_a_slow_model_is_busy(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK
) -> None:
    window = make_window(models=fake_models(delay="0.05", repeat="1"))
    page = models_page(qtbot, window)
    assert page.cell("fake-chat", "Queue") == "0 running · 0 waiting"
    clients = [sdk(window, window.services.keys.create(name)[0], timeout=30) for name in ("one", "two")]
    finished: list[int] = []

    def stream(client: openai.OpenAI, tokens: int = 20) -> None:
        chunks = client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "go"}], max_tokens=tokens, stream=True
        )
        finished.append(sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content))

    # The SDK builds its types on first use, which holds up the first requests unevenly: warm it up.
    for client in clients:
        off_thread(qtbot, lambda client=client: stream(client, 1))  # type: ignore[misc]
    finished.clear()
    threads = [threading.Thread(target=stream, args=(clients[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    busy = re.compile(r"1 running · ([23]) waiting \(2 keys\)")
    qtbot.waitUntil(lambda: busy.fullmatch(page.cell("fake-chat", "Queue")) is not None, timeout=10_000)
    assert re.fullmatch(r"\d+\.\d s now · \d+\.\d\d s mean", page.cell("fake-chat", "Wait"))
    page.select("fake-chat")
    assert re.search(r"Queue: 1 running, [23] waiting from 2 keys, the longest for", page.details.text())
    qtbot.waitUntil(lambda: len(finished) == 4, timeout=20_000)
    for thread in threads:
        thread.join()
    assert finished == [20, 20, 20, 20]
    qtbot.waitUntil(lambda: page.cell("fake-chat", "Queue") == "0 running · 0 waiting", timeout=5000)
    mean = re.fullmatch(r"(\d+\.\d\d) s mean", page.cell("fake-chat", "Wait"))
    assert mean is not None and float(mean.group(1)) > 0.1  # three of the four waited for others


def test_a_crashed_engine_shows_as_restarting_then_loaded_with_the_crash_and_its_reason(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK, artifacts: Path
) -> None:
    # In an engine process of its own that segfaults before its third token, and takes a second to load.
    window = make_window(models=fake_models(process="1", crash_at="2", load_delay="1.5"))
    page = models_page(qtbot, window)
    assert page.cell("fake-chat", "State") == "Loaded"
    client = sdk(window, window.services.keys.create("crash")[0], timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        off_thread(
            qtbot,
            lambda: client.chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": "a b c d"}], max_tokens=10
            ),
        )
    assert caught.value.status_code == 503
    qtbot.waitUntil(lambda: page.cell("fake-chat", "State") == "Restarting after a crash…", timeout=5000)
    qtbot.waitUntil(
        lambda: page.cell("fake-chat", "State") == "Loaded (restarted 1× after a crash)", timeout=20_000
    )
    page.select("fake-chat")
    assert re.search(
        r"Engine crashed at \d\d:\d\d:\d\d: killed by signal 11 \(SIGSEGV\)", page.details.text()
    )
    window.grab().save(str(artifacts / "models-after-an-engine-crash.png"))
    assert ask(qtbot, client, "fake-chat", "a") == "a"  # served again, under the crash point


def test_the_hardware_panel_says_what_the_probe_found(
    qtbot: QtBot, make_window: Callable[..., MainWindow], hardware: Callable[[], Hardware]
) -> None:
    probes: list[Hardware] = []

    def probe() -> Hardware:  # the window's probe (in a child process), run once for the whole session
        probes.append(hardware())
        return probes[-1]

    page = models_page(qtbot, make_window(probe=probe))
    found = page.hardware
    assert found is not None and found.llama is not None
    text = page.hardware_panel.text.text()
    assert text == "\n".join(fact_lines(found))  # what `ai-service-platform doctor` prints
    assert text.startswith(f"CPU: {found.cpu_model}; instruction sets ")
    assert f"CPU backend {found.llama['cpu_variant']}, the best of" in text
    assert "AMX: not used" in text
    if found.llama_gpu_offload:
        assert "GPU offload: yes" in text
    else:  # this machine
        assert "GPU offload: no — llama.cpp was built without a GPU backend" in text
    assert f"torch {found.torch_version}: embeddings on the {'cuda' if found.torch_cuda else 'cpu'}." in text
    if not found.devices:
        assert "GPU: none found." in text
    for device in found.devices:
        assert f"GPU: {device.name}, " in text
    assert found.system_ram_bytes is not None and f"Memory: {gib(found.system_ram_bytes)}" in text
    assert page.cell("fake-chat", "Memory") == "–"  # nothing to load here

    with qtbot.waitSignal(page.hardware_panel.hardware_probed, timeout=30_000):
        click(qtbot, page.hardware_panel.refresh_button)
        assert page.hardware_panel.text.text() == "Checking the GPU and memory…"
        assert not page.hardware_panel.refresh_button.isEnabled()
    assert page.hardware_panel.refresh_button.isEnabled() and len(probes) == 2
    assert page.hardware_panel.text.text() == text


def _ram(text: str) -> float:
    found = re.search(r"([\d.]+) GiB in RAM", text)
    assert found is not None, text
    return float(found.group(1))


def test_the_estimate_in_the_form_follows_the_context_length_and_the_page_suggests_a_fix(
    qtbot: QtBot, window: MainWindow
) -> None:
    page = models_page(qtbot, window)
    dialog = add_dialog(qtbot, page)
    qtbot.keyClicks(dialog.name, "smol")
    dialog.source.setText(SMOL.source)
    dialog.context.setValue(2048)
    qtbot.waitUntil(lambda: "in RAM" in dialog.estimate.text() and "trained" not in dialog.estimate.text())
    small = dialog.estimate.text()
    assert small.startswith("Fits: ") and dialog.estimate.property("tone") == ""
    assert "layers offloaded" in small
    with qtbot.waitSignal(dialog.estimated, timeout=5000):
        dialog.context.setValue(32768)
    large = dialog.estimate.text()
    assert large != small and _ram(large) > _ram(small)
    assert large.startswith("Does not fit: ") and "exceeds the 8192 it was trained for" in large
    assert dialog.estimate.property("tone") == "warning"

    # Loading anyway is the operator's choice; the page keeps saying what to change.
    with qtbot.waitSignal(dialog.estimated, timeout=5000):
        dialog.context.setValue(16384)
    assert dialog.estimate.text().startswith("Does not fit: ")
    with qtbot.waitSignal(page.model_loaded, timeout=60_000):
        click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: page.cell("smol", "Memory") == "Does not fit")
    page.select("smol")
    # Every layer is on the CPU here: fewer GPU layers would change nothing.
    assert "Suggestion: Choose a smaller context or a smaller model" in page.details.text()
    assert "exceeds the 8192 it was trained for" in page.details.text()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Live]:
    """Another server on loopback, with fake models, for the window to use as an upstream."""
    settings = load_settings(
        environ={"AISP_DATA_DIR": str(tmp_path / "upstream")}, port=0, models=fake_models()
    )
    services = Services.open(settings)
    assert services.models.wait_loaded(30)
    thread = ServerThread(services)
    thread.start()
    key, _ = services.keys.create("the window's relay")
    yield Live(thread, services, key)
    thread.stop()
    services.close()


def test_an_upstream_model_shows_each_replicas_health(
    qtbot: QtBot, window: MainWindow, upstream: Live, sdk: SDK, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISP_TEST_UPSTREAM_KEY", upstream.key)
    page = models_page(qtbot, window)
    dialog = add_dialog(qtbot, page)
    dialog.engine.setCurrentIndex(dialog.engine.findData("upstream"))
    assert not dialog.browse_button.isVisible() and not dialog.gpu_layers.isVisible()
    assert dialog.upstream_model.isVisible() and dialog.credential_env.isVisible()
    qtbot.keyClicks(dialog.name, "relay-chat")
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    qtbot.keyClicks(dialog.source, f"{upstream.base_url} , {dead}")
    qtbot.keyClicks(dialog.upstream_model, "fake-chat")
    qtbot.keyClicks(dialog.credential_env, "AISP_TEST_UPSTREAM_KEY")
    with qtbot.waitSignal(page.model_loaded, timeout=10_000):
        click(qtbot, dialog.ok_button)
    assert page.cell("relay-chat", "State") == "Loaded"
    assert page.cell("relay-chat", "Queue") == "0 in flight"
    page.select("relay-chat")
    assert page.replicas.isVisible() and page.replicas.rowCount() == 2
    replicas = page.replicas
    assert [cell_text(replicas, r, 0) for r in range(2)] == [upstream.base_url, dead]

    # The server checks every replica as it starts, and every few seconds after.
    with qtbot.waitSignal(window.server.server_stopped, timeout=10_000):
        click(qtbot, window.header.toggle)
    with qtbot.waitSignal(window.server.server_started, timeout=10_000):
        click(qtbot, window.header.toggle)
    qtbot.waitUntil(lambda: replicas.rowCount() == 2 and cell_text(replicas, 1, 1) == "No", timeout=10_000)
    assert cell_text(replicas, 0, 1) == "Yes" and cell_text(replicas, 0, 3).endswith(" ms")
    assert cell_text(replicas, 1, 3) == "–" and cell_text(replicas, 1, 7)  # why it is down

    key, _ = window.services.keys.create("relay user")
    assert ask(qtbot, sdk(window, key), "relay-chat", "through the relay") == "through the relay"
    stored = json.dumps(window.services.store.get_setting("models"))
    assert "AISP_TEST_UPSTREAM_KEY" in stored and upstream.key not in stored  # the name, never the secret


def test_invalid_settings_are_explained_in_the_form_and_nothing_is_added(
    qtbot: QtBot, window: MainWindow
) -> None:
    page = models_page(qtbot, window)
    dialog = add_dialog(qtbot, page)

    def refused(fragment: str) -> None:
        click(qtbot, dialog.ok_button)
        assert dialog.isVisible() and dialog.error.isVisible(), "the dialog closed"
        assert fragment in dialog.error.text(), dialog.error.text()

    qtbot.keyClicks(dialog.name, "spaces are not allowed")
    dialog.source.setText("/models/x.gguf")
    refused("Name: String should match pattern")
    dialog.name.setText("fake-chat")
    refused("Name: a model named fake-chat already exists.")
    dialog.name.setText("new-one")
    dialog.source.clear()
    refused("GGUF file: choose where the model is.")
    dialog.engine.setCurrentIndex(dialog.engine.findData("upstream"))
    dialog.source.setText("gpu-box:8000/v1")
    refused("An upstream model's source is its base URL(s)")
    dialog.reject()
    qtbot.wait(100)
    assert [row.config.name for row in page.rows()] == ["fake-chat", "fake-embed"]
    assert window.services.store.get_setting("models") is None
