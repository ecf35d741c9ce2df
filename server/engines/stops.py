"""Stop sequences over streamed text: hold back only what might still become a stop sequence."""

from __future__ import annotations


class StopScanner:
    """Feed text as it is generated; get back what is safe to send, and whether a stop was hit."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        self._pending += text
        first = min(
            (i for i in (self._pending.find(s) for s in self._stops) if i >= 0),
            default=-1,
        )
        if first >= 0:
            self.stopped = True
            out, self._pending = self._pending[:first], ""
            return out
        hold = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._pending)), hold, -1):
                if self._pending.endswith(stop[:size]):
                    hold = size
                    break
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return out

    def flush(self) -> str:
        """What was held back, once generation has ended without a stop."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out
