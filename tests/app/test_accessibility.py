"""Accessible by default: every control is labelled, Tab follows the layout, shortcuts reach every page
and create a key, and nothing clips or overlaps on any page in either theme at the smallest and largest
font sizes; a screenshot of each of those is saved under tests/artifacts/screenshots/."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDialog,
    QHeaderView,
    QLabel,
    QLayout,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QStyle,
    QTabBar,
    QTableView,
    QWidget,
)
from pytestqt.qtbot import QtBot

from app.theme import FONT_STEPS, ThemeName
from app.window import PAGES, MainWindow
from server.access.keys import KeyLimits
from server.config import ModelConfig
from server.metering.ledger import UsageEntry
from server.model_presets import preset
from tests.conftest import fake_models

from .conftest import cell_text, opened, settle

EXTREMES = (FONT_STEPS[0], FONT_STEPS[-1])
THEMES: tuple[ThemeName, ...] = ("light", "dark")


def _shown(widget: QWidget, root: QWidget) -> bool:
    return widget.isVisible() and widget.isVisibleTo(root) and widget.width() > 0


CELLS_CHECKED = 40
"""Rows of each table whose every cell is measured against its text."""


def _cut_cells(view: QAbstractItemView) -> list[str]:
    """Cells, headings and list entries narrower than their text (an elided "…" hides what they say)."""
    problems = []
    model = view.model()
    if model is None:
        return problems
    columns = model.columnCount(QModelIndex()) if isinstance(view, QTableView) else 1
    metrics = view.fontMetrics()
    margin = 2 * (view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1)
    if isinstance(view, QTableView) and not view.horizontalHeader().isHidden():
        header = view.horizontalHeader()
        for column in range(columns):
            if header.isSectionHidden(column):
                continue
            text = str(model.headerData(column, Qt.Orientation.Horizontal) or "")
            if header.sectionSize(column) < header.fontMetrics().horizontalAdvance(text) + margin:
                problems.append(f"{view.accessibleName()!r} heading {text!r} is cut short")
    for row in range(min(model.rowCount(QModelIndex()), CELLS_CHECKED)):
        for column in range(columns):
            index = model.index(row, column)
            text = str(model.data(index) or "")
            if not text:
                continue
            rect = view.visualRect(index)
            if rect.isEmpty():
                continue
            icon = view.iconSize().width() + margin if isinstance(view, QListWidget) else 0
            if rect.width() < metrics.horizontalAdvance(text) + margin + icon:
                problems.append(f"{view.accessibleName()!r} cell {text[:40]!r} is cut short")
    return problems


def clipped(root: QWidget) -> list[str]:
    """Text-bearing widgets smaller than their text needs: labels, buttons, fields, tabs, and the
    cells and headings of tables and lists."""
    problems = []
    for widget in root.findChildren(QWidget):
        if not _shown(widget, root):
            continue
        size = widget.size()
        if isinstance(widget, QAbstractItemView):
            problems += _cut_cells(widget)
            continue
        if isinstance(widget, QTabBar):
            for tab in range(widget.count()):
                text = widget.tabText(tab).replace("&", "")
                if widget.tabRect(tab).width() < widget.fontMetrics().horizontalAdvance(text):
                    problems.append(f"tab {text!r} is cut short")
            continue
        if isinstance(widget, QLabel) and widget.text():
            if widget.wordWrap():
                need = widget.heightForWidth(size.width())
                if need > size.height():
                    problems.append(
                        f"label {widget.text()[:40]!r}: needs {need} px high, has {size.height()}"
                    )
            else:
                hint = widget.sizeHint()
                if hint.width() > size.width() or hint.height() > size.height():
                    problems.append(
                        f"label {widget.text()[:40]!r}: needs {hint.toTuple()}, has {size.toTuple()}"
                    )
        elif (
            isinstance(widget, QAbstractButton) and widget.text() and not isinstance(widget.parent(), QTabBar)
        ):
            hint = widget.sizeHint()
            if hint.width() > size.width() or hint.height() > size.height():
                problems.append(f"button {widget.text()!r}: needs {hint.toTuple()}, has {size.toTuple()}")
        elif isinstance(widget, QComboBox | QLineEdit | QAbstractSpinBox) and not isinstance(
            widget.parent(), QComboBox | QAbstractSpinBox
        ):
            # A combo box must show its longest entry whole; an edit at least its minimum.
            needed = widget.sizeHint() if isinstance(widget, QComboBox) else widget.minimumSizeHint()
            if widget.sizeHint().height() > size.height() or needed.width() > size.width():
                problems.append(
                    f"{type(widget).__name__} {widget.accessibleName()!r}: too small {size.toTuple()}"
                )
    return problems


def _laid_out(layout: QLayout) -> list[QWidget]:
    widgets = []
    for i in range(layout.count()):
        item = opened(layout.itemAt(i))
        widget, inner = item.widget(), item.layout()
        if widget is not None:
            widgets.append(widget)
        elif inner is not None:
            widgets.extend(_laid_out(inner))
    return widgets


def overlapping(root: QWidget) -> list[str]:
    """Widgets placed by the same layout whose rectangles intersect."""
    problems = []
    for parent in [root, *root.findChildren(QWidget)]:
        layout = parent.layout()
        if layout is None or not _shown(parent, root) and parent is not root:
            continue
        placed = [w for w in _laid_out(layout) if _shown(w, root)]
        for a, b in itertools.combinations(placed, 2):
            if a.geometry().intersects(b.geometry()):
                problems.append(
                    f"{type(a).__name__} {a.geometry().getRect()} overlaps {type(b).__name__} {b.geometry().getRect()}"
                )
    return problems


def unlabelled(root: QWidget) -> list[str]:
    """Controls that a screen reader could not name: no text, no accessible name, no label buddy."""
    buddies = {id(label.buddy()) for label in root.findChildren(QLabel) if label.buddy() is not None}
    problems = []
    for widget in root.findChildren(QWidget):
        if not _shown(widget, root) or isinstance(widget.parent(), QComboBox | QAbstractSpinBox | QTabBar):
            continue
        if isinstance(widget, QHeaderView | QTabBar):
            continue
        named = bool(widget.accessibleName()) or id(widget) in buddies
        if isinstance(widget, QAbstractButton):
            named = named or bool(widget.text().replace("&", "").strip())
        elif not isinstance(
            widget, QComboBox | QLineEdit | QAbstractSpinBox | QAbstractItemView | QPlainTextEdit
        ):
            continue
        if not named:
            problems.append(
                f"{type(widget).__name__} at {widget.mapTo(root, widget.rect().topLeft()).toTuple()}"
            )
    return problems


@pytest.fixture
def busy_window(window: MainWindow) -> MainWindow:
    """A window with keys and a day of usage, so the tables and graphs have something to show."""
    keys = window.services.keys
    ids = [
        keys.create(name, owner_note=f"{name}'s key")[1].id
        for name in ("Alice's laptop", "Build server", "Reporting")
    ]
    now = time.time()
    for n in range(120):
        chat = n % 4 != 0
        window.services.ledger.submit(
            UsageEntry(
                request_id=f"req_{n}",
                key_id=ids[n % 3],
                model="fake-chat" if chat else "fake-embed",
                endpoint="chat.completions" if chat else "embeddings",
                input_tokens=40 + (n * 7) % 90,
                output_tokens=(n * 13) % 200 if chat else 0,
                cost=((40 + (n * 7) % 90) + 2 * ((n * 13) % 200 if chat else 0)) / 1e6,
                created_at=now - n * 700,
            )
        )
    window.services.ledger.flush()
    return window


def test_every_page_fits_in_both_themes_at_the_smallest_and_largest_font(
    qtbot: QtBot, busy_window: MainWindow, screenshots: Path
) -> None:
    window = busy_window
    failures = []
    for theme, step in itertools.product(THEMES, EXTREMES):
        window.theme.set_theme(theme)
        window.theme.set_font_size(step.key)
        for index, name in enumerate(PAGES):
            window.show_page(index)
            if index == 2:
                qtbot.waitUntil(
                    lambda: (
                        window.usage_page.series is not None and window.usage_page.series.total().requests > 0
                    )
                )
            settle(qtbot)
            where = f"{name}, {theme}, {step.label}"
            failures += [f"{where}: {p}" for p in clipped(window) + overlapping(window)]
            slug = name.lower().replace(" ", "-")
            assert window.grab().save(str(screenshots / f"{index + 1}-{slug}-{theme}-{step.key}.png"))
            if index == 2 and step is EXTREMES[-1]:  # the widest controls: a custom range
                usage = window.usage_page
                with qtbot.waitSignal(usage.usage_loaded, timeout=10_000):
                    usage.range.setCurrentIndex(usage.range.findData("custom"))
                settle(qtbot)
                failures += [f"{where}, custom range: {p}" for p in clipped(window) + overlapping(window)]
                window.grab().save(str(screenshots / f"{index + 1}-{slug}-custom-{theme}-{step.key}.png"))
                with qtbot.waitSignal(usage.usage_loaded, timeout=10_000):
                    usage.range.setCurrentIndex(usage.range.findData("day"))
            if index == 0:  # the whole page too, examples included, not only what fits the window
                page = window.pages[0]
                assert page.grab().save(str(screenshots / f"{index + 1}-{slug}-{theme}-{step.key}-whole.png"))
    assert not failures, "\n".join(failures)


def out_of_order(root: QWidget) -> list[str]:
    """Controls that Tab reaches before one above or to the left of them (inside ``root`` only)."""
    stops: list[QWidget] = []
    widget = opened(root.nextInFocusChain())
    while widget is not root and len(stops) < 500:
        if (
            root.isAncestorOf(widget)
            and _shown(widget, root)
            and widget.isEnabled()
            and widget.focusPolicy() & Qt.FocusPolicy.TabFocus
            and not isinstance(widget.parent(), QComboBox | QAbstractSpinBox)
        ):
            stops.append(widget)
        widget = opened(widget.nextInFocusChain())
    problems = []
    for a, b in itertools.pairwise(stops):
        pa, pb = a.mapTo(root, a.rect().topLeft()), b.mapTo(root, b.rect().topLeft())
        if not (pb.y() > pa.y() + 2 or (abs(pb.y() - pa.y()) <= a.height() and pb.x() > pa.x())):
            problems.append(
                f"Tab goes from {type(a).__name__} at {pa.toTuple()} back to {type(b).__name__} at {pb.toTuple()}"
            )
    return problems


def _check(qtbot: QtBot, widget: QWidget, where: str, shot: Path) -> list[str]:
    """Lay ``widget`` out, save its picture, and list what clips, overlaps, has no name or is out of Tab
    order."""
    settle(qtbot)
    assert widget.grab().save(str(shot))
    tab = out_of_order(widget) if isinstance(widget, QDialog) else []
    return [f"{where}: {p}" for p in clipped(widget) + overlapping(widget) + unlabelled(widget) + tab]


def test_the_key_dialogs_fit_in_both_themes_at_the_smallest_and_largest_font(
    qtbot: QtBot, window: MainWindow, screenshots: Path
) -> None:
    page = window.keys_page
    window.services.keys.create(
        "Reporting",
        allowed_models=["fake-embed"],
        limits=KeyLimits(rpm=60, tpm=100_000, max_concurrent=4),
    )
    window.services.keys.create(
        "Interns",
        limits=KeyLimits(rpm=10, budget_unit="cost", budget_amount=5, budget_period="month"),
    )
    window.show_page(PAGES.index("API Keys"))
    qtbot.waitUntil(lambda: len(page.records()) == 2, timeout=5000)
    failures: list[str] = []
    for theme, step in itertools.product(THEMES, EXTREMES):
        window.theme.set_theme(theme)
        window.theme.set_font_size(step.key)
        suffix = f"{theme}-{step.key}"
        failures += _check(
            qtbot, window, f"keys with limits, {suffix}", screenshots / f"2-api-keys-limits-{suffix}.png"
        )
        window.new_key()
        create = page.create_dialog
        assert create is not None
        qtbot.waitUntil(create.isVisible)
        failures += _check(qtbot, create, f"new key, {suffix}", screenshots / f"dialog-new-key-{suffix}.png")
        qtbot.keyClicks(create.name, "Screenshot")
        qtbot.keyClicks(create.limits.budget_amount, "5")
        create.accept()  # refused: the budget has no period
        assert create.error.isVisible()
        failures += _check(
            qtbot, create, f"new key refused, {suffix}", screenshots / f"dialog-new-key-error-{suffix}.png"
        )
        create.reject()
        page.select(page.records()[0].id)
        page.edit_limits_selected()
        edit = page.limits_dialog
        assert edit is not None
        qtbot.waitUntil(edit.isVisible)
        failures += _check(
            qtbot, edit, f"key limits, {suffix}", screenshots / f"dialog-key-limits-{suffix}.png"
        )
        edit.reject()
    window.new_key()
    create = page.create_dialog
    assert create is not None
    qtbot.keyClicks(create.name, "Screenshot")
    with qtbot.waitSignal(page.key_created, timeout=10_000):
        create.accept()
    secret = page.secret_dialog
    assert secret is not None
    failures += _check(qtbot, secret, "secret", screenshots / f"dialog-secret-{EXTREMES[-1].key}.png")
    assert not failures, "\n".join(failures)


def test_the_models_page_and_its_form_fit_in_both_themes_at_the_smallest_and_largest_font(
    qtbot: QtBot, make_window: Callable[..., MainWindow], screenshots: Path
) -> None:
    missing = "/srv/models/qwen3/Qwen3-30B-A3B-Instruct-2507-Q4_K_M-00001-of-00002.gguf"
    window = make_window(
        models=(
            *fake_models(),
            preset("qwen3-30b-a3b").config(source=missing),
            ModelConfig(
                name="relay",
                kind="chat",
                engine="upstream",
                source="http://127.0.0.1:9/v1,http://127.0.0.1:10/v1",
                upstream_model="qwen3-30b-a3b",
            ),
        )
    )
    page = window.models_page
    window.show_page(PAGES.index("Models"))
    qtbot.waitUntil(lambda: page.hardware is not None and len(page.rows()) == 4, timeout=30_000)
    qtbot.waitUntil(lambda: page.cell("relay", "State") == "Loaded")
    page.select("relay")
    qtbot.waitUntil(lambda: page.replicas.rowCount() == 2 and cell_text(page.replicas, 0, 1) == "No")
    failures: list[str] = []
    for theme, step in itertools.product(THEMES, EXTREMES):
        window.theme.set_theme(theme)
        window.theme.set_font_size(step.key)
        suffix = f"{theme}-{step.key}"
        page.select("relay")
        failures += _check(
            qtbot, window, f"upstream, {suffix}", screenshots / f"5-models-upstream-{suffix}.png"
        )
        page.select("qwen3-30b-a3b")
        failures += _check(qtbot, window, f"failed, {suffix}", screenshots / f"5-models-failed-{suffix}.png")
        page.add_model()
        dialog = page.model_dialog
        assert dialog is not None
        qtbot.waitUntil(dialog.isVisible)
        dialog.preset.setCurrentIndex(dialog.preset.findData("qwen3-30b-a3b"))
        dialog.source.setText(missing)
        qtbot.waitUntil(lambda dialog=dialog: dialog.estimate.text().startswith("No file at"))  # type: ignore[misc]
        failures += _check(qtbot, dialog, f"add, {suffix}", screenshots / f"dialog-add-model-{suffix}.png")
        dialog.engine.setCurrentIndex(dialog.engine.findData("upstream"))
        dialog.accept()  # refused: the name is taken and the source is no URL
        assert dialog.error.isVisible()
        failures += _check(
            qtbot, dialog, f"add upstream, {suffix}", screenshots / f"dialog-add-upstream-{suffix}.png"
        )
        dialog.reject()
        page.edit_selected()
        edit = page.model_dialog
        assert edit is not None
        qtbot.waitUntil(lambda edit=edit: edit.isVisible() and edit.estimate.text() != "Estimating…")  # type: ignore[misc]
        failures += _check(qtbot, edit, f"edit, {suffix}", screenshots / f"dialog-edit-model-{suffix}.png")
        edit.reject()
    assert not failures, "\n".join(failures)


def test_every_control_is_labelled(qtbot: QtBot, busy_window: MainWindow) -> None:
    window = busy_window
    problems = []
    for index, name in enumerate(PAGES):
        window.show_page(index)
        settle(qtbot)
        problems += [f"{name}: {p}" for p in unlabelled(window)]
    assert not problems, "\n".join(problems)


def _tab_stops(qtbot: QtBot, window: MainWindow) -> list[QWidget]:
    """Press Tab from the sidebar until focus comes back to it; the widgets visited, in order."""
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.sidebar.setFocus()
    visited: list[QWidget] = []
    for _ in range(80):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        focused = opened(QApplication.focusWidget())
        if focused is window.sidebar:
            return visited
        visited.append(focused)
    raise AssertionError(f"Tab never came back to the sidebar: {[type(w).__name__ for w in visited]}")


def test_tab_follows_the_layout_on_every_page(qtbot: QtBot, busy_window: MainWindow) -> None:
    window = busy_window
    for index, name in enumerate(PAGES):
        window.show_page(index)
        settle(qtbot)
        stops = _tab_stops(qtbot, window)
        header = window.header
        assert stops[:2] == [header.copy_button, header.toggle], name  # the status strip, in reading order
        page = window.pages[index]
        inside = [w for w in stops if page.isAncestorOf(w)]
        assert inside, f"{name}: Tab never enters the page"
        assert len(inside) == len(stops) - 2, f"{name}: Tab wanders outside the page"
        places = [w.mapTo(page, w.rect().topLeft()) for w in inside]
        for (a, wa), (b, wb) in itertools.pairwise(zip(places, inside, strict=True)):
            reading_order = b.y() > a.y() + 2 or (abs(b.y() - a.y()) <= wa.height() and b.x() > a.x())
            assert reading_order, (
                f"{name}: Tab goes from {type(wa).__name__} at {a.toTuple()} back to {type(wb).__name__} at {b.toTuple()}"
            )


def test_shortcuts_reach_every_page_and_create_a_key(qtbot: QtBot, window: MainWindow) -> None:
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    for index in (4, 2, 0, 3, 1):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{index + 1}"), Qt.KeyboardModifier.ControlModifier)
        assert window.current_page() is window.pages[index]
        assert window.sidebar.currentRow() == index
    window.show_page(0)
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page() is window.keys_page
    dialog = window.keys_page.create_dialog
    assert isinstance(dialog, QDialog) and dialog.isVisible() and dialog.isModal()
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert not dialog.isVisible()
