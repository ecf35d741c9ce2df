"""What a key may use, as the key dialogs ask for it and the API Keys table shows it: the models it may
name, its rates (requests and tokens per minute, requests at once) and its budget, with the key's use
against each.

The fields are checked by :class:`server.access.keys.KeyLimits` itself, so the window and the CLI refuse the
same values with the same words.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.currency import amount
from server.access.keys import KeyLimits
from server.access.limits import BudgetState, KeyActivity
from server.errors import InvalidRequest

RATE_FIELDS = {
    "rpm": "Requests per minute",
    "tpm": "Tokens per minute",
    "max_concurrent": "Requests at once",
}
MNEMONICS = {
    "rpm": "Re&quests per minute:",
    "tpm": "&Tokens per minute:",
    "max_concurrent": "Requests at &once:",
}
BUDGET_FIELDS = {"budget": "The budget", "budget_amount": "The budget", "budget_unit": "The budget's unit"}
UNITS = (("tokens", "tokens"), ("cost", "money (from the models' prices)"))
PERIODS = (
    ("", "choose a period"),
    ("day", "per day"),
    ("week", "per week"),
    ("month", "per calendar month"),
    ("lifetime", "in total (never renews)"),
)
PERIOD_WORDS = {"day": "today", "week": "this week", "month": "this month", "lifetime": "in total"}


def _label(text: str, buddy: QWidget, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setBuddy(buddy)
    return label


def _number(text: str) -> str:
    return text.strip().replace(",", "").replace("_", "").replace(" ", "")


class LimitsBox(QGroupBox):
    """Rates and a budget; an empty field means no limit."""

    def __init__(self, limits: KeyLimits, parent: QWidget | None = None) -> None:
        super().__init__("Limits (leave a field empty for no limit)", parent)
        self.rates: dict[str, QLineEdit] = {}
        form = QFormLayout(self)
        for name in RATE_FIELDS:
            edit = QLineEdit(self)
            edit.setPlaceholderText("no limit")
            edit.setMaxLength(15)
            self.rates[name] = edit
            form.addRow(_label(MNEMONICS[name], edit, self), edit)
        self.budget_amount = QLineEdit(self)
        self.budget_amount.setPlaceholderText("no budget")
        self.budget_amount.setMaxLength(20)
        self.budget_unit = QComboBox(self)
        self.budget_unit.setAccessibleName("Budget unit")
        for key, text in UNITS:
            self.budget_unit.addItem(text, key)
        self.budget_period = QComboBox(self)
        self.budget_period.setAccessibleName("Budget period")
        for key, text in PERIODS:
            self.budget_period.addItem(text, key)
        for combo in (self.budget_unit, self.budget_period):
            combo.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)  # never cut short
        budget = QVBoxLayout()
        budget.addWidget(self.budget_amount)
        choices = QHBoxLayout()
        choices.addWidget(self.budget_unit)
        choices.addWidget(self.budget_period)
        choices.addStretch(1)
        budget.addLayout(choices)
        form.addRow(_label("&Budget:", self.budget_amount, self), budget)
        self.set_limits(limits)

    def set_limits(self, limits: KeyLimits) -> None:
        for name, edit in self.rates.items():
            value = getattr(limits, name)
            edit.setText("" if value is None else str(value))
        amount = limits.budget_amount
        self.budget_amount.setText("" if amount is None else f"{amount:g}")
        self.budget_unit.setCurrentIndex(max(0, self.budget_unit.findData(limits.budget_unit or "tokens")))
        self.budget_period.setCurrentIndex(max(0, self.budget_period.findData(limits.budget_period or "")))

    def limits(self) -> KeyLimits:
        """The limits the fields describe; raises :class:`InvalidRequest` saying which value is wrong."""
        rates: dict[str, int | None] = {}
        for name, edit in self.rates.items():
            text = _number(edit.text())
            try:
                rates[name] = int(text) if text else None
            except ValueError:
                raise InvalidRequest(f"{RATE_FIELDS[name]} must be a whole number", param=name) from None
        text = _number(self.budget_amount.text())
        try:
            amount = float(text) if text else None
        except ValueError:
            raise InvalidRequest("The budget must be a number", param="budget_amount") from None
        period = self.budget_period.currentData() or None
        unit = self.budget_unit.currentData() if amount is not None or period is not None else None
        try:
            return KeyLimits(
                rpm=rates["rpm"],
                tpm=rates["tpm"],
                max_concurrent=rates["max_concurrent"],
                budget_unit=unit,
                budget_amount=amount,
                budget_period=period,
            )
        except InvalidRequest as exc:
            # The server names its fields; the operator reads the labels beside them.
            param = exc.param or ""
            label = RATE_FIELDS.get(param) or BUDGET_FIELDS.get(param)
            message = exc.message
            if label and message.startswith(param):
                message = label + message[len(param) :]
            raise InvalidRequest(message[:1].upper() + message[1:], param=param) from exc

    def field(self, param: str | None) -> QWidget:
        """The field an error's ``param`` points at (to give it focus)."""
        if param in self.rates:
            return self.rates[param]
        if param == "budget_period":
            return self.budget_period
        return self.budget_amount


class ModelPicker(QWidget):
    """Every model, or only those ticked."""

    changed = Signal()

    def __init__(
        self, models: Sequence[str], allowed: tuple[str, ...] | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.all_models = QCheckBox("All models, including ones added later", self)
        self.all_models.setChecked(allowed is None)
        self.models = QListWidget(self)
        self.models.setAccessibleName("Allowed models")
        names = list(models) + [name for name in allowed or () if name not in models]
        for name in names:
            item = QListWidgetItem(name, self.models)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            ticked = allowed is not None and name in allowed
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
        self.models.setEnabled(allowed is not None)
        rows = min(6, max(2, len(names)))
        self.models.setMaximumHeight(self.models.sizeHintForRow(0) * rows + 8)
        self.all_models.toggled.connect(lambda on: self.models.setEnabled(not on))
        self.all_models.toggled.connect(self.changed)
        self.models.itemChanged.connect(self.changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.all_models)
        layout.addWidget(self.models)

    def picked(self) -> tuple[str, ...]:
        items = (self.models.item(i) for i in range(self.models.count()))
        return tuple(item.text() for item in items if item.checkState() == Qt.CheckState.Checked)

    def allowed(self) -> tuple[str, ...] | None:
        """``None`` allows every model."""
        return None if self.all_models.isChecked() else self.picked()

    def valid(self) -> bool:
        return self.all_models.isChecked() or bool(self.picked())


def _of(used: int, limit: int | None, unit: str) -> str | None:
    if limit is not None:
        return f"{used:,}/{limit:,} {unit}"
    return f"{used:,} {unit}" if used else None


def rate_text(limits: KeyLimits, activity: KeyActivity) -> str:
    """Use in the last minute against the key's rates, e.g. ``12/60 rpm · 3,400/100,000 tpm``."""
    parts = [
        _of(activity.requests_last_minute, limits.rpm, "rpm"),
        _of(activity.tokens_last_minute, limits.tpm, "tpm"),
        _of(activity.in_flight, limits.max_concurrent, "at once"),
    ]
    shown = [part for part in parts if part is not None]
    limited = any(v is not None for v in (limits.rpm, limits.tpm, limits.max_concurrent))
    if not limited:
        return " · ".join(["No rate limits", *shown])
    return " · ".join(shown)


def renews_text(budget: BudgetState) -> str:
    if budget.renews_at is None:
        return ""
    moment = time.localtime(budget.renews_at)
    if budget.period == "day":
        return f" (renews {time.strftime('%H:%M', moment)})"
    return f" (renews {moment.tm_mday} {time.strftime('%b', moment)})"


def budget_text(budget: BudgetState | None, renews: bool = True, currency: str = "") -> str:
    """Spending against the budget, e.g. ``3,400/100,000 tokens this month (renews 1 Dec)`` or
    ``1.20/5.00 EUR this month``."""
    if budget is None:
        return "No budget"
    if budget.unit == "tokens":
        amounts = f"{budget.spent:,.0f}/{budget.amount:,.0f} tokens"
    else:
        amounts = f"{amount(budget.spent)}/{amount(budget.amount)} {currency or 'cost'}"
    period = PERIOD_WORDS.get(budget.period, budget.period)
    return f"{amounts} {period}{renews_text(budget) if renews else ''}"


def budget_tooltip(budget: BudgetState | None, currency: str = "") -> str:
    if budget is None:
        return "No budget"
    held = f"; {budget.reserved:,.6g} held for requests in flight" if budget.reserved else ""
    return f"{budget_text(budget, currency=currency)}{held}"
