"""packaging/linux/install.sh puts the bundle in ~/.local/opt, a launcher in ~/.local/bin, and a menu entry
and icons in ~/.local/share; upgrades swap the program, uninstalling removes it, and neither touches data."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from server.config import APP_NAME
from tests.packaging.bundle import NAME, ROOT, bare_env

INSTALL = ROOT / "packaging" / "linux" / "install.sh"
DESKTOP = ROOT / "packaging" / "linux" / f"{NAME}.desktop"
ICONS = ROOT / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def fake_bundle(folder: Path, says: str) -> Path:
    """A folder shaped like the bundle: the executable (here a script) and its resources."""
    (folder / "_internal" / "resources").mkdir(parents=True)
    shutil.copytree(ICONS, folder / "_internal" / "resources" / "icons")
    program = folder / NAME
    program.write_text(f"#!/bin/sh\necho {says}\n")
    program.chmod(0o755)
    return folder


def install(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), *args],
        env=bare_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def desktop_entry(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return parser["Desktop Entry"]


def test_the_desktop_entry_launches_the_app_with_its_icon() -> None:
    entry = desktop_entry(DESKTOP)
    assert entry["Type"] == "Application" and entry["Name"] == "AI Service Platform"
    assert entry["Icon"] == NAME and entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";") and entry["StartupWMClass"] == NAME
    assert (ICONS / f"{NAME}.svg").is_file()
    assert all((ICONS / f"{NAME}-{size}.png").is_file() for size in SIZES)


def test_install_upgrade_and_uninstall_for_the_current_user(tmp_path: Path) -> None:
    home = tmp_path / "home with space"
    home.mkdir()
    done = install(home, str(fake_bundle(tmp_path / "v1", "first")))
    assert done.returncode == 0, done.stderr

    prefix = home / ".local" / "opt" / NAME
    share = home / ".local" / "share"
    launcher = home / ".local" / "bin" / NAME
    entry_path = share / "applications" / f"{NAME}.desktop"
    assert subprocess.run([str(launcher)], capture_output=True, text=True, check=True).stdout == "first\n"
    entry = desktop_entry(entry_path)
    assert entry["Exec"] == f'"{prefix / NAME}"'
    assert entry["TryExec"] == str(prefix / NAME)
    for size in SIZES:
        assert (share / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png").is_file()
    assert (share / "icons" / "hicolor" / "scalable" / "apps" / f"{NAME}.svg").is_file()
    if validator := shutil.which("desktop-file-validate"):
        checked = subprocess.run([validator, str(entry_path)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr

    data = share / APP_NAME  # where the program keeps keys, usage and settings (platformdirs)
    data.mkdir()
    (data / "aisp.sqlite3").write_bytes(b"the user's data")

    done = install(home, str(fake_bundle(tmp_path / "v2", "second")))
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(launcher)], capture_output=True, text=True, check=True).stdout == "second\n"
    assert sorted(p.name for p in prefix.parent.iterdir()) == [NAME], "the upgrade left its scaffolding"

    done = install(home, "--uninstall")
    assert done.returncode == 0, done.stderr
    assert not prefix.exists() and not launcher.exists() and not os.path.lexists(launcher)
    assert not entry_path.exists()
    assert not list((share / "icons").rglob(f"{NAME}.*"))
    assert (data / "aisp.sqlite3").read_bytes() == b"the user's data"
    assert str(data) in done.stdout


def test_install_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = install(tmp_path, str(tmp_path / "empty"))
    assert done.returncode != 0 and "not a bundle" in done.stderr
    assert not (tmp_path / ".local" / "opt").exists()


@pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None, reason="desktop-file-utils is not installed"
)
def test_the_desktop_entry_is_valid() -> None:
    checked = subprocess.run(
        ["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
