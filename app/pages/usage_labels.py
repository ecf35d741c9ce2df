"""How the Usage page names what it groups by: short labels that stay distinct (legends, table headings)
and the full names behind them (tooltips, exports).

Keys are named by their name and the last four characters of their secret, which tell a rolled key from
the one it replaced; a deleted key by its id. Requests refused before they named a model of the table
are counted under a model of their own, named as such rather than left blank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.access.keys import KeyService
from server.metering.reports import OTHER, GroupBy, split_pair

SHORT_NAME = 22
"""Characters of a key's or model's name kept in a short label (the rest is in its tooltip)."""
NO_KEY = "(no key)"
NO_MODEL = "(refused, no model)"
OTHERS: Mapping[GroupBy, str] = {
    "model": "Other models",
    "key": "Other keys",
    "key_model": "Other keys and models",
    "none": "Other",
}


@dataclass(frozen=True)
class KeyName:
    name: str
    ending: str
    """The last four characters of the key's secret (its hint shows them too)."""


def key_names(keys: KeyService) -> dict[str, KeyName]:
    """Every key's name and ending, by id (blocking: reads the store)."""
    return {record.id: KeyName(record.name, record.hint[-4:]) for record in keys.list()}


def _cut(text: str, longest: int = SHORT_NAME) -> str:
    return text if len(text) <= longest else text[: longest - 1].rstrip() + "…"


class Labels:
    """The names of one series' groups."""

    def __init__(self, group_by: GroupBy, keys: Mapping[str, KeyName], groups: tuple[str, ...] = ()) -> None:
        self.group_by = group_by
        self._keys = keys
        shorts = {group: self._name(group, short=True) for group in groups}
        clashes = {label for label in shorts.values() if list(shorts.values()).count(label) > 1}
        # Short labels that would read alike fall back to the full names.
        self._shorts = {g: (self.full(g) if label in clashes else label) for g, label in shorts.items()}

    def full(self, group: str) -> str:
        """The whole name: tooltips and exports."""
        return self._name(group, short=False)

    def short(self, group: str) -> str:
        """A name short enough for a legend or a table heading, distinct from the others shown."""
        return self._shorts.get(group) or self._name(group, short=True)

    def _name(self, group: str, short: bool) -> str:
        if self.group_by == "none":
            return "All requests"
        if group == OTHER:
            return OTHERS[self.group_by]
        if self.group_by == "model":
            return self._model(group, short)
        if self.group_by == "key":
            return self._key(group, short)
        key, model = split_pair(group)
        return f"{self._key(key, short)} · {self._model(model, short)}"

    def _key(self, key_id: str, short: bool) -> str:
        if not key_id:
            return NO_KEY
        known = self._keys.get(key_id)
        if known is None:
            return f"deleted key …{key_id[-4:]}" if short else f"deleted key {key_id}"
        if short:
            return f"{_cut(known.name)} (…{known.ending})"
        return f"{known.name} (key ending {known.ending})"

    @staticmethod
    def _model(model: str, short: bool) -> str:
        if not model:
            return NO_MODEL
        return _cut(model, 2 * SHORT_NAME) if short else model
