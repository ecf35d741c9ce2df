"""The download window through its real widgets, against the fake Hugging Face endpoint: a repository looked
up with its quantisations and the recommendation, a download followed with speed and time left, paused,
resumed, added to the table and answering through the SDK; a gated repository explained, a token kept, and
the download then going through; the models folder's contents, and deleting what no model uses.
Screenshots go to tests/artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.pages.downloads import DownloadsDialog
from app.window import PAGES, MainWindow
from server.hub.downloads import DownloadStatus
from server.services import settings_from_store
from tests.support.fake_hub import GATED_REPO, GGUF_REPO, SMOL, TOKEN, FakeHub

from .conftest import SDK, cell_text, click, opened, settle
from .test_accessibility import clipped, overlapping, unlabelled
from .test_models_page import ask

MODELS = PAGES.index("Models")
MB = 1024 * 1024


def open_downloads(qtbot: QtBot, window: MainWindow) -> DownloadsDialog:
    window.show_page(MODELS)
    qtbot.waitUntil(lambda: window.models_page.hardware is not None, timeout=30_000)  # for the recommendation
    click(qtbot, window.models_page.download_button)
    dialog = opened(window.downloads_dialog)
    qtbot.waitUntil(dialog.isVisible)
    return dialog


def look_up(qtbot: QtBot, dialog: DownloadsDialog, repo: str) -> None:
    dialog.source.setCurrentIndex(dialog.source.findData(""))  # Another repository…
    qtbot.keyClicks(dialog.repository, repo)
    with qtbot.waitSignal(dialog.listed, timeout=30_000):
        click(qtbot, dialog.look_up_button)


def shown_status(
    qtbot: QtBot, dialog: DownloadsDialog, ident: str, ok: Callable[[DownloadStatus], bool]
) -> DownloadStatus:
    """Wait until the window shows the download in a state ``ok`` accepts."""
    qtbot.waitUntil(lambda: (s := dialog.status(ident)) is not None and ok(s), timeout=120_000)
    return opened(dialog.status(ident))


def test_a_gguf_is_chosen_downloaded_paused_resumed_and_served(
    qtbot: QtBot, make_window: Callable[..., MainWindow], hub: FakeHub, sdk: SDK, screenshots: Path
) -> None:
    window = make_window(hf_endpoint=hub.url)
    dialog = open_downloads(qtbot, window)
    assert dialog.source.currentText().startswith("qwen3-30b-a3b: Qwen/Qwen3-30B-A3B-GGUF")
    assert dialog.repository.isReadOnly()  # a preset's repository; "Another repository…" takes any

    look_up(qtbot, dialog, GGUF_REPO)
    assert [cell_text(dialog.choices, 0, c) for c in range(4)] == ["Q4_1", "93.81 MiB", "1", "recommended"]
    assert "Recommended for this machine: Q4_1: the largest that fits" in dialog.listing_note.text()
    assert dialog.name.text() == "smollm2-135m-instruct.q4_1" and not dialog.gated_note.isVisible()
    dialog.name.clear()
    qtbot.keyClicks(dialog.name, "smol")
    settle(qtbot)
    assert not unlabelled(dialog) and not clipped(dialog) and not overlapping(dialog)

    hub.rate = 6 * MB
    with qtbot.waitSignal(dialog.download_started, timeout=10_000) as started:
        click(qtbot, dialog.download_button)
    ident = str(started.args[0])
    moving = shown_status(qtbot, dialog, ident, lambda s: s.speed is not None and s.done_bytes > 10 * MB)
    row = dialog.list.rows[ident]
    settle(qtbot)
    assert 0 < row.bar.value() < 1000 and "MiB/s" in row.detail.text() and "left" in row.detail.text()
    assert row.title.text().startswith("<b>smol</b> from " + GGUF_REPO)
    assert dialog.grab().save(str(screenshots / "downloads-in-progress.png"))
    assert moving.state == "downloading" and row.pause_button.isVisible()

    click(qtbot, row.pause_button)
    paused = shown_status(qtbot, dialog, ident, lambda s: s.state == "paused")
    qtbot.waitUntil(lambda: row.resume_button.isVisible())
    assert row.detail.text().startswith("Paused") and 0 < paused.done_bytes < paused.total_bytes
    assert window.models_page.row("smol") is None  # nothing is added before it is whole and verified

    hub.rate = None
    with qtbot.waitSignal(dialog.download_finished, timeout=120_000):
        click(qtbot, row.resume_button)
    qtbot.waitUntil(lambda: row.dismiss_button.isVisible())
    assert "added to the model table as smol and loaded" in row.detail.text()
    page = window.models_page
    qtbot.waitUntil(
        lambda: (r := page.row("smol")) is not None and r.status.state == "loaded", timeout=60_000
    )
    key, _ = window.services.keys.create("downloads")
    assert ask(qtbot, sdk(window, key, timeout=60), "smol")

    qtbot.waitUntil(lambda: dialog.folder_box.stored.rowCount() == 1)
    assert cell_text(dialog.folder_box.stored, 0, 0) == f"{GGUF_REPO}/{SMOL.name}"
    assert cell_text(dialog.folder_box.stored, 0, 2) == "smol"
    dialog.folder_box.stored.selectRow(0)
    click(qtbot, dialog.folder_box.delete_button)
    assert dialog.folder_box.message.text().startswith(f"{SMOL.name} is served as smol: remove that model")
    assert dialog.grab().save(str(screenshots / "downloads-done.png"))


def test_a_gated_repository_is_explained_and_downloads_once_a_token_is_kept(
    qtbot: QtBot, make_window: Callable[..., MainWindow], hub: FakeHub, screenshots: Path
) -> None:
    window = make_window(hf_endpoint=hub.url, load_models=False)  # added to the table, not loaded
    dialog = open_downloads(qtbot, window)
    qtbot.waitUntil(lambda: dialog.token_box.state.text().startswith("No token is kept."))
    look_up(qtbot, dialog, GATED_REPO)
    assert dialog.gated_note.isVisible()
    assert f"{GATED_REPO} is gated: accept its licence at" in dialog.gated_note.text()
    assert dialog.name.text() == "gated-minilm"
    with qtbot.waitSignal(dialog.download_started, timeout=10_000) as started:
        click(qtbot, dialog.download_button)
    ident = str(started.args[0])
    refused = shown_status(qtbot, dialog, ident, lambda s: s.state == "failed")
    row = dialog.list.rows[ident]
    qtbot.waitUntil(lambda: row.resume_button.isVisible())
    assert refused.error_kind == "gated" and "give an access token" in row.detail.text()
    assert dialog.grab().save(str(screenshots / "downloads-gated.png"))

    box = dialog.token_box
    qtbot.keyClicks(box.field, TOKEN)
    with qtbot.waitSignal(box.token_saved, timeout=10_000):
        click(qtbot, box.save_button)
    token_file = window.services.settings.data_dir / "hf-token"
    assert box.state.text() == f"The token is kept in the file {token_file} (readable by you alone)."
    assert box.field.text() == "" and not dialog.gated_note.isVisible()

    with qtbot.waitSignal(dialog.download_finished, timeout=120_000):
        click(qtbot, row.resume_button)
    assert "added to the model table as gated-minilm" in row.detail.text()
    qtbot.waitUntil(lambda: window.models_page.row("gated-minilm") is not None, timeout=10_000)


def test_what_no_model_uses_is_deleted_and_another_models_folder_chosen(
    qtbot: QtBot, make_window: Callable[..., MainWindow], hub: FakeHub, tmp_path: Path
) -> None:
    window = make_window(hf_endpoint=hub.url, load_models=False)
    dialog = open_downloads(qtbot, window)
    look_up(qtbot, dialog, GGUF_REPO)
    with qtbot.waitSignal(dialog.download_finished, timeout=120_000):
        click(qtbot, dialog.download_button)
    window.services.models.remove("smollm2-135m-instruct.q4_1")
    dialog.folder_box.refresh()
    qtbot.waitUntil(
        lambda: (
            dialog.folder_box.stored.rowCount() == 1
            and cell_text(dialog.folder_box.stored, 0, 2) == "not in the table"
        )
    )
    dialog.folder_box.stored.selectRow(0)
    click(qtbot, dialog.folder_box.delete_button)
    box = opened(dialog.folder_box.delete_box)
    qtbot.waitUntil(box.isVisible)
    delete = next(b for b in box.buttons() if b.text() == "Delete")
    click(qtbot, delete)
    # Until the list read after the deletion is shown (one read before it may still be on its way).
    qtbot.waitUntil(lambda: dialog.folder_box.stored.rowCount() == 0, timeout=10_000)
    assert not (window.services.settings.models_folder / GGUF_REPO).exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder_box = dialog.folder_box
    click(qtbot, folder_box.folder_button)
    picker = opened(folder_box.picker)
    qtbot.waitUntil(picker.isVisible)
    picker.selectFile(str(elsewhere))
    with qtbot.waitSignal(folder_box.folder_changed, timeout=10_000):
        picker.accept()
    assert folder_box.folder.text() == str(elsewhere) and window.services.downloads.folder == elsewhere
    data = window.services.settings.data_dir
    assert settings_from_store(environ={"AISP_DATA_DIR": str(data)}).models_folder == elsewhere  # kept
