"""What looks like a secret, and how it is hidden wherever text a client sent is logged or kept."""

from __future__ import annotations

import re

_KEY = re.compile(r"aisp-[0-9A-Za-z]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_HF_TOKEN = re.compile(r"hf_[0-9A-Za-z]{16,}")
"""A Hugging Face access token (``hf_`` and 34 letters and digits, today)."""
REDACTED_KEY = "aisp-[redacted]"
REDACTED_HF_TOKEN = "hf_[redacted]"


def redact_keys(text: str) -> str:
    """Replace anything shaped like one of this server's API keys (safe inside JSON: the shape is
    letters and digits only)."""
    return _KEY.sub(REDACTED_KEY, text)


def redact(text: str) -> str:
    """Replace anything that looks like a key, a Hugging Face token or a bearer token (for free text such as
    log lines)."""
    return _BEARER.sub(r"\1[redacted]", _HF_TOKEN.sub(REDACTED_HF_TOKEN, redact_keys(text)))
