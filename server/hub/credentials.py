"""The Hugging Face access token, for gated repositories (EmbeddingGemma needs Google's licence accepted
on its page, and a token of the account that accepted it).

Kept in the operating system's credential store through ``keyring`` (the Windows Credential Manager, the
macOS Keychain, the Secret Service of GNOME or KDE) where there is one; otherwise in ``hf-token`` in the
data folder, readable by its owner alone. Never in the database, never logged (``server.redaction``
hides anything shaped like one), and handed only to the download process, which sends it to the Hugging
Face endpoint alone. ``HF_TOKEN`` in the environment is used when nothing is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import keyring
import keyring.errors
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from server.datadir import create_private

log = logging.getLogger(__name__)

SERVICE = "ai-service-platform"
ACCOUNT = "huggingface-token"
FILE_NAME = "hf-token"
MAX_LENGTH = 512

_NAMES = {
    "WinVaultKeyring": "the Windows Credential Manager",
    "Keyring": "the system's credential store",
    "SecretService Keyring": "the Secret Service (GNOME Keyring or KWallet)",
    "macOS Keyring": "the macOS Keychain",
    "DBusKeyring": "KWallet",
}


def system_store() -> KeyringBackend | None:
    """The operating system's credential store, if this machine has one that works."""
    try:
        backend = keyring.get_keyring()
        usable = not isinstance(backend, fail.Keyring | null.Keyring) and float(backend.priority) > 0
    except Exception as exc:  # a broken D-Bus or keychain: the file it is
        log.info("no credential store: %s", exc)
        return None
    return backend if usable else None


def check(token: str) -> str:
    """The token as given, trimmed; ``ValueError`` if it cannot be one."""
    value = token.strip()
    if not value or len(value) > MAX_LENGTH or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("an access token is one word of printable characters (Hugging Face's begin hf_)")
    return value


class TokenStore:
    """Where the access token is kept, and the token itself."""

    def __init__(
        self,
        data_dir: Path,
        backend: KeyringBackend | None | Literal["system"] = "system",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``backend``: a credential store, ``None`` for the file alone, or ``"system"``: the operating
        system's, if it has one (looked for at first use: it takes a tenth of a second)."""
        self._file = data_dir / FILE_NAME
        self._chosen = backend
        self._found: KeyringBackend | None = None
        self._looked = False
        self._looking = threading.Lock()
        self._environ = os.environ if environ is None else environ

    @property
    def _backend(self) -> KeyringBackend | None:
        if self._chosen != "system":
            return self._chosen
        with self._looking:
            if not self._looked:
                self._found, self._looked = system_store(), True
        return self._found

    @property
    def place(self) -> str:
        """Where a token given now is kept, in words."""
        if self._backend is not None:
            return _NAMES.get(type(self._backend).__name__, _NAMES.get(str(self._backend.name), "")) or (
                f"the system's credential store ({self._backend.name})"
            )
        return f"the file {self._file} (readable by you alone)"

    def get(self) -> str | None:
        """The stored token, else ``HF_TOKEN`` from the environment, else none."""
        if self._backend is not None:
            try:
                stored = self._backend.get_password(SERVICE, ACCOUNT)
            except keyring.errors.KeyringError as exc:
                log.warning("cannot read the access token from %s: %s", self.place, exc)
                stored = None
            if stored:
                return stored
        with contextlib.suppress(FileNotFoundError):
            stored = self._file.read_text(encoding="utf-8").strip()
            if stored:
                return stored
        return self._environ.get("HF_TOKEN", "").strip() or None

    @property
    def source(self) -> str | None:
        """Where the token :meth:`get` returns comes from, in words; ``None`` without one."""
        if self._backend is not None:
            with contextlib.suppress(keyring.errors.KeyringError):
                if self._backend.get_password(SERVICE, ACCOUNT):
                    return self.place
        if self._file.is_file() and self._file.read_text(encoding="utf-8").strip():
            return f"the file {self._file}"
        if self._environ.get("HF_TOKEN", "").strip():
            return "the environment variable HF_TOKEN"
        return None

    def set(self, token: str) -> str:
        """Keep ``token`` (replacing any other); returns where it went, in words."""
        value = check(token)
        if self._backend is not None:
            try:
                self._backend.set_password(SERVICE, ACCOUNT, value)
            except keyring.errors.KeyringError as exc:
                log.warning("cannot store the access token in %s (%s): using a file", self.place, exc)
            else:
                self._file.unlink(missing_ok=True)  # one place only: an older copy would outlive a change
                return self.place
        self._file.unlink(missing_ok=True)
        create_private(self._file)  # 0600 before the token is in it
        self._file.write_text(value, encoding="utf-8")
        return f"the file {self._file} (readable by you alone)"

    def clear(self) -> None:
        """Forget the stored token (``HF_TOKEN`` in the environment stays what it is)."""
        if self._backend is not None:
            with contextlib.suppress(keyring.errors.PasswordDeleteError, keyring.errors.KeyringError):
                self._backend.delete_password(SERVICE, ACCOUNT)
        self._file.unlink(missing_ok=True)
