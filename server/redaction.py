"""What looks like a secret, and how it is hidden wherever text a client sent is logged or kept."""

from __future__ import annotations

import re

_KEY = re.compile(r"aisp-[0-9A-Za-z]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
REDACTED_KEY = "aisp-[redacted]"


def redact_keys(text: str) -> str:
    """Replace anything shaped like one of this server's API keys (safe inside JSON: the shape is
    letters and digits only)."""
    return _KEY.sub(REDACTED_KEY, text)


def redact(text: str) -> str:
    """Replace anything that looks like a key or a bearer token (for free text such as log lines)."""
    return _BEARER.sub(r"\1[redacted]", redact_keys(text))
