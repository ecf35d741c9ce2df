"""A read-only block of code in a fixed-width font, with a button that copies it to the clipboard."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QFontDatabase, QWheelEvent
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QApplication,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

COPIED_FEEDBACK_MS = 2000


def monospace() -> QFont:
    """A fixed-width family that inherits its size from the widget (so it follows the font setting)."""
    font = QFont()
    font.setFamilies(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).families())
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


def scroll_page(widget: QWidget, event: QWheelEvent) -> None:
    """Hand a turn of the mouse wheel over ``widget`` to the scroll area that holds it (the page)."""
    area = widget.parentWidget()
    while area is not None and not isinstance(area, QAbstractScrollArea):
        area = area.parentWidget()
    if area is None:
        event.ignore()
        return
    viewport = area.viewport()
    at = QPointF(viewport.mapFromGlobal(event.globalPosition().toPoint()))
    QApplication.sendEvent(
        viewport,
        QWheelEvent(
            at,
            event.globalPosition(),
            event.pixelDelta(),
            event.angleDelta(),
            event.buttons(),
            event.modifiers(),
            event.phase(),
            event.inverted(),
        ),
    )
    event.accept()


class CodeText(QPlainTextEdit):
    """Code that asks for exactly the height of its lines, so a page shows it whole."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setFont(monospace())
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTabChangesFocus(True)  # keyboard users tab past the code instead of being trapped in it
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByKeyboard | Qt.TextInteractionFlag.TextSelectableByMouse
        )

    def _height(self) -> int:
        lines = max(1, self.document().blockCount())
        margins = self.contentsMargins()
        scroll = self.horizontalScrollBar().sizeHint().height()
        document = int(self.document().documentMargin() * 2)
        return (
            lines * self.fontMetrics().lineSpacing()
            + document
            + margins.top()
            + margins.bottom()
            + scroll
            + 2
        )

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self._height())

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), self._height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self.updateGeometry()

    def wheelEvent(self, event: QWheelEvent) -> None:
        # The code is shown whole in height: turning the wheel over it scrolls the page, never the code
        # sideways. Only a sideways wheel (or Shift with a mouse that has one) moves along a long line.
        if event.angleDelta().x() == 0:
            scroll_page(self, event)
            return
        super().wheelEvent(event)


class CodeBlock(QWidget):
    """Code with a Copy button; ``section`` and ``title`` name it for screen readers and tests."""

    copied = Signal(str)
    """The code was put on the clipboard; the argument is the text copied."""

    def __init__(
        self, text: str, *, section: str, title: str, language: str, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.section, self.title, self.language = section, title, language
        self.copy_button = QPushButton("Copy", self)  # above the code, so first in Tab order
        self.copy_button.setAccessibleName(f"Copy the {title} example for {section}")
        self.copy_button.setToolTip("Copy this example to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        self.code = CodeText(self)
        self.code.setAccessibleName(f"{section}: {title} example")
        self._reset = QTimer(self)
        self._reset.setSingleShot(True)
        self._reset.setInterval(COPIED_FEEDBACK_MS)
        self._reset.timeout.connect(lambda: self.copy_button.setText("Copy"))

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.code)
        self.set_text(text)

    def text(self) -> str:
        return self.code.toPlainText()

    def set_text(self, text: str) -> None:
        if text != self.text():
            self.code.setPlainText(text)
            self.code.updateGeometry()

    def copy(self) -> None:
        """Put the code on the clipboard and say so on the button for a moment."""
        text = self.text()
        QApplication.clipboard().setText(text)
        self.copy_button.setText("Copied")
        self._reset.start()
        self.copied.emit(text)
