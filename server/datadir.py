"""The data folder is its user's alone: the database (stored conversations, the ledger), its log and the
server secret are readable by no other account of the machine.

On POSIX the folder is 0700 and every file in it 0600; SQLite gives its log and shared-memory files the
database file's own mode, so creating that file 0600 covers them. On Windows the folder gets an access
list that grants its user alone, inherited by every file made in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def protect(directory: Path) -> None:
    """Make ``directory`` (creating it) and everything in it private to the current user, fixing what an
    older version, or another program, left open. A file that cannot be changed is reported, not fatal."""
    directory.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    if sys.platform == "win32":
        _restrict_to_user(directory)
        return
    _chmod(directory, FOLDER_MODE)
    for root, folders, files in os.walk(directory):
        for name in folders:
            _chmod(Path(root, name), FOLDER_MODE)
        for name in files:
            _chmod(Path(root, name), FILE_MODE)


def create_private(path: Path) -> None:
    """Create ``path`` empty and readable by its owner alone, unless it exists (then it is left as it is)."""
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except OSError as exc:
        log.warning("cannot make %s private to its user: %s", path, exc)


if sys.platform == "win32":

    def _restrict_to_user(directory: Path) -> None:
        """An access list granting the current user alone, with nothing inherited from the parents: on the
        folder (inherited by the files made in it later) and on each file already there."""
        try:
            sid = _user_sid()
            _icacls(directory, f"*{sid}:(OI)(CI)F")
            for root, folders, files in os.walk(directory):
                for name in folders:
                    _icacls(Path(root, name), f"*{sid}:(OI)(CI)F")
                for name in files:
                    _icacls(Path(root, name), f"*{sid}:F")
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.warning("cannot make %s private to its user: %s", directory, exc)

    def _user_sid() -> str:
        out = _run(["whoami", "/user", "/fo", "csv", "/nh"])
        sid = out.strip().rsplit(",", 1)[-1].strip().strip('"')
        if not sid.startswith("S-1-"):
            raise ValueError(f"whoami gave no SID: {out!r}")
        return sid

    def _icacls(path: Path, grant: str) -> None:
        _run(["icacls", str(path), "/inheritance:r", "/grant:r", grant, "/Q"])

    def _run(command: list[str]) -> str:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            creationflags=subprocess.CREATE_NO_WINDOW,  # no console flashes over the window
        )
        return done.stdout
