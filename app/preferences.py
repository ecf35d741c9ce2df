"""What the window remembers in the store: its appearance, the support contact, and the server's address.

Reading happens once at start-up (before the window exists); saving is called through
:class:`app.tasks.Tasks` so the GUI thread never writes the database. The server's own settings
(host, port, LAN) live under the ``server`` setting, where ``ai-service-platform serve`` reads them too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from app.currency import DEFAULT_CURRENCY, clean_currency
from app.theme import DEFAULT_FONT_STEP, THEMES, ThemeName, font_step
from server.config import ConfigError, Settings, load_settings
from server.store import Store

WINDOW_SETTING = "window"
SERVER_SETTING = "server"
MAX_CONTACT = 500
CloseAction = Literal["ask", "background", "quit"]
CLOSE_ACTIONS: tuple[tuple[CloseAction, str], ...] = (
    ("ask", "Ask what to do"),
    ("background", "Keep serving (in the tray)"),
    ("quit", "Quit and stop serving"),
)


@dataclass(frozen=True)
class Preferences:
    """The window's own settings."""

    theme: ThemeName = "system"
    font_size: str = DEFAULT_FONT_STEP
    support_contact: str = ""
    currency: str = DEFAULT_CURRENCY
    """What the models' prices are in; costs and money budgets are shown in it."""
    close_action: CloseAction = "ask"
    """What closing the window does: ask (the first time), keep serving in the background, or quit."""


def load_preferences(store: Store) -> Preferences:
    """The saved preferences; unknown or damaged values fall back to the defaults."""
    saved: Any = store.get_setting(WINDOW_SETTING, {})
    if not isinstance(saved, dict):
        return Preferences()
    theme = saved.get("theme")
    contact = saved.get("support_contact")
    currency = saved.get("currency")
    close = saved.get("close_action")
    return Preferences(
        theme=theme if theme in {name for name, _ in THEMES} else "system",
        font_size=font_step(str(saved.get("font_size", DEFAULT_FONT_STEP))).key,
        support_contact=contact.strip()[:MAX_CONTACT] if isinstance(contact, str) else "",
        currency=clean_currency(currency) if isinstance(currency, str) else DEFAULT_CURRENCY,
        close_action=close if close in {key for key, _ in CLOSE_ACTIONS} else "ask",
    )


def save_preferences(store: Store, preferences: Preferences) -> None:
    store.set_setting(WINDOW_SETTING, asdict(preferences))


@dataclass(frozen=True)
class Network:
    """Where the server listens: the address used while LAN serving is off, the port, the LAN switch."""

    host: str
    port: int
    lan: bool


def check_network(network: Network) -> str | None:
    """Why these values cannot be used (the message names the value), or ``None`` if they can."""
    try:
        load_settings(environ={}, host=network.host.strip(), port=network.port, lan=network.lan, models=())
    except ConfigError as exc:
        return str(exc).removeprefix("invalid settings: ")
    return None


def save_network(store: Store, network: Network) -> None:
    """Save host, port and LAN under the server's setting, keeping whatever else is stored there."""
    saved: Any = store.get_setting(SERVER_SETTING, {})
    values = dict(saved) if isinstance(saved, dict) else {}
    values.update(host=network.host.strip(), port=network.port, lan=network.lan)
    store.set_setting(SERVER_SETTING, values)


def network_of(settings: Settings) -> Network:
    return Network(settings.host, settings.port, settings.lan)
