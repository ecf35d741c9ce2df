"""The Usage page's cards: today and this month at a glance (requests, tokens, cost in the operator's
currency), whatever range the graphs below show."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.currency import money
from server.metering.reports import Amounts, totals
from server.store import Store


@dataclass(frozen=True)
class Glance:
    today: Amounts
    month: Amounts


def local_day_start(moment: float) -> float:
    day = time.localtime(moment)
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))


def local_month_start(moment: float) -> float:
    day = time.localtime(moment)
    return time.mktime((day.tm_year, day.tm_mon, 1, 0, 0, 0, 0, 0, -1))


def read_glance(store: Store, now: float) -> Glance:
    """Today's and this month's totals, in local time (blocking: reads the store)."""
    return Glance(
        totals(store, local_day_start(now), now + 1),
        totals(store, local_month_start(now), now + 1),
    )


class Card(QFrame):
    """One period's requests, tokens and cost."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = title
        heading = QLabel(f"<b>{title}</b>", self)
        self.requests = QLabel(self)
        self.tokens = QLabel(self)
        self.cost = QLabel(self)
        for label, what in ((self.requests, "requests"), (self.tokens, "tokens"), (self.cost, "cost")):
            label.setAccessibleName(f"{title}: {what}")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.requests)
        layout.addWidget(self.tokens)
        layout.addWidget(self.cost)

    def show_amounts(self, amounts: Amounts, currency: str) -> None:
        self.requests.setText(f"<b>{amounts.requests:,}</b> requests")
        self.tokens.setText(
            f"<b>{amounts.input_tokens + amounts.output_tokens:,}</b> tokens "
            f"({amounts.input_tokens:,} in, {amounts.output_tokens:,} out)"
        )
        self.cost.setText(f"<b>{html.escape(money(amounts.cost, currency))}</b>")


class GlanceCards(QWidget):
    """Today and this month, side by side."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.today = Card("Today", self)
        self.month = Card("This month", self)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.today, 1)
        row.addWidget(self.month, 1)

    def show_glance(self, glance: Glance, currency: str) -> None:
        self.today.show_amounts(glance.today, currency)
        self.month.show_amounts(glance.month, currency)
