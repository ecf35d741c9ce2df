"""The access token for gated repositories: in the system's credential store where there is one, else in
a file readable by its owner alone; never in a log line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keyring.errors
import pytest
from keyring.backend import KeyringBackend

from server.hub.credentials import ACCOUNT, SERVICE, TokenStore, system_store

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_" + "t" * 34


class MemoryStore(KeyringBackend):
    """A credential store that keeps passwords in a dict (the system's own is no test's to touch)."""

    priority = -1  # never chosen by keyring itself

    def __init__(self, broken: bool = False) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.saved: dict[tuple[str, str], str] = {}
        self.broken = broken

    def get_password(self, service: str, username: str) -> str | None:
        return self.saved.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.broken:
            raise keyring.errors.PasswordSetError("the keyring is locked")
        self.saved[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.saved:
            raise keyring.errors.PasswordDeleteError("not there")
        del self.saved[(service, username)]


def test_without_a_credential_store_the_token_is_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    assert system_store() is None  # this machine has none (and the tests never use the developer's)
    tokens = TokenStore(tmp_path, environ={})
    assert tokens.get() is None and tokens.source is None
    place = tokens.set(f"  {TOKEN}\n")
    path = tmp_path / "hf-token"
    assert place == f"the file {path} (readable by you alone)"
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == TOKEN
    assert tokens.get() == TOKEN and tokens.source == f"the file {path}"
    tokens.clear()
    assert tokens.get() is None and not path.exists()


def test_with_a_credential_store_the_token_is_kept_there_and_not_on_disk(tmp_path: Path) -> None:
    store = MemoryStore()
    tokens = TokenStore(tmp_path, store, environ={})
    (tmp_path / "hf-token").write_text("hf_older")
    assert "credential store" in tokens.set(TOKEN)
    assert store.saved == {(SERVICE, ACCOUNT): TOKEN} and not (tmp_path / "hf-token").exists()
    assert tokens.get() == TOKEN and "credential store" in (tokens.source or "")
    tokens.clear()
    assert store.saved == {} and tokens.get() is None


def test_a_store_that_refuses_it_leaves_the_file_and_says_so(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path, MemoryStore(broken=True), environ={})
    assert tokens.set(TOKEN) == f"the file {tmp_path / 'hf-token'} (readable by you alone)"
    assert tokens.get() == TOKEN


def test_hf_token_in_the_environment_is_used_when_none_is_kept(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path, None, environ={"HF_TOKEN": TOKEN})
    assert tokens.get() == TOKEN and tokens.source == "the environment variable HF_TOKEN"
    tokens.set("hf_" + "k" * 34)
    assert tokens.get() == "hf_" + "k" * 34  # a kept token wins


@pytest.mark.parametrize("bad", ["", "   ", "hf_two words", "hf_\x00null", "x" * 600])
def test_what_cannot_be_a_token_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="access token"):
        TokenStore(tmp_path, None, environ={}).set(bad)
    assert not (tmp_path / "hf-token").exists()


def test_a_hugging_face_token_never_reaches_a_log_line() -> None:
    program = f"""
import logging
from server.logs import configure_logging
configure_logging("debug")
log = logging.getLogger("server.test")
log.info("token {TOKEN} in the message")
log.debug("header %s", "Authorization: {TOKEN}")
try:
    raise RuntimeError("refused {TOKEN}")
except RuntimeError:
    log.exception("download failed")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "download failed" in result.stderr and "hf_[redacted]" in result.stderr
    assert TOKEN not in result.stderr and TOKEN[3:15] not in result.stderr
