"""Money as the window shows it: amounts in the operator's currency, which the models' prices are set in
and which Settings names (the server stores bare numbers; it has no idea of currencies)."""

from __future__ import annotations

DEFAULT_CURRENCY = "USD"
MAX_CURRENCY = 8
"""Enough for a code (``EUR``), a symbol (``€``) or a short word (``credits``)."""


def clean_currency(text: str) -> str:
    """What the operator typed as a currency, trimmed to something short; the default if nothing."""
    cleaned = " ".join(text.split())[:MAX_CURRENCY]
    return cleaned or DEFAULT_CURRENCY


def amount(value: float) -> str:
    """Two decimals, or as many as show that a little was spent (0.000123)."""
    if value == 0 or abs(value) >= 0.01:
        return f"{value:,.2f}"
    text = f"{value:.8f}".rstrip("0")
    significant = len(text.split(".")[1].lstrip("0"))
    return text if significant <= 3 else f"{value:.{len(text.split('.')[1]) - significant + 3}f}"


def money(value: float, currency: str) -> str:
    """An amount with its currency, e.g. ``0.0123 EUR``."""
    return f"{amount(value)} {currency}".strip()
