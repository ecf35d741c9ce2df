"""installer.iss, read as Inno Setup reads it (its compiler does not run here): every file it takes is one the
bundle build makes, its version is pyproject's, it installs per user or for all users with shortcuts, and
neither an upgrade nor an uninstall touches the user's data unless the user asks."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import platformdirs.windows
import pytest

from app.autostart import BACKGROUND, RUN_KEY, RUN_VALUE
from server.config import APP_NAME
from tests.packaging.bundle import BUILD_TIMEOUT, DIST, NAME, ROOT, build_script

ISS = ROOT / "installer.iss"
SPEC = ROOT / "packaging" / f"{NAME}.spec"
CONTENTS = "_internal"
"""PyInstaller's one-folder layout: the executable beside its contents directory."""


@dataclass
class Script:
    defines: dict[str, str] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)

    def expand(self, text: str) -> str:
        return re.sub(r"\{#(\w+)\}", lambda m: self.defines[m.group(1)], text)

    def setup(self) -> dict[str, str]:
        pairs = (line.split("=", 1) for line in self.sections["Setup"])
        return {key.strip(): self.expand(value.strip()) for key, value in pairs}

    def entries(self, section: str) -> list[dict[str, str]]:
        """The ``Name: value; Name: "value"`` lines of a section, preprocessed."""
        found = []
        for line in self.sections.get(section, []):
            pairs = re.findall(r'(\w+):\s*("(?:[^"]|"")*"|[^;]*)', line)
            found.append({key: self.expand(value.strip().strip('"')) for key, value in pairs})
        return found


def read_script(path: Path = ISS) -> Script:
    script = Script()
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if define := re.fullmatch(r'#define\s+(\w+)\s+"([^"]*)"', line):
            script.defines[define.group(1)] = define.group(2)
        elif include := re.fullmatch(r'#include\s+"([^"]+)"', line):
            script.includes.append(include.group(1))
        elif heading := re.fullmatch(r"\[(\w+)\]", line):
            section = heading.group(1)
            script.sections[section] = []
        elif section == "Code":
            script.sections[section].append(raw)
        elif section and line and not line.startswith((";", "#")):
            script.sections[section].append(line)
    return script


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Script:
    """installer.iss with build/version.iss as packaging/build.py writes it."""
    script = read_script()
    assert script.includes == ["build\\version.iss"]
    version_iss = build_script().write_version_iss(tmp_path_factory.mktemp("build"))
    script.defines.update(read_script(version_iss).defines)
    return script


def bundle_path(source: str, script: Script) -> PurePosixPath:
    """A [Files] Source inside the bundle folder, as built on this platform (no .exe outside Windows)."""
    bundle_dir = script.defines["BundleDir"]
    assert source.startswith(bundle_dir + "\\"), f"{source} is not taken from the bundle ({bundle_dir})"
    inside = PurePosixPath(*source[len(bundle_dir) + 1 :].split("\\"))
    if sys.platform != "win32" and inside.suffix == ".exe":
        inside = inside.with_suffix("")
    return inside


def installed_files(script: Script) -> set[str]:
    """What [Files] puts under {app}, as {app}\\relative paths (directories end in \\*)."""
    made = set()
    for entry in script.entries("Files"):
        name = PurePosixPath(*entry["Source"].split("\\")).name
        made.add(f"{entry['DestDir']}\\{name}")
    return made


def test_the_version_comes_from_pyproject_through_the_build(script: Script) -> None:
    build = build_script()
    assert ROOT / PurePosixPath(*script.includes[0].split("\\")) == build.ROOT / "build" / "version.iss"
    assert script.defines["AppVersion"] == build.project_version()
    setup = script.setup()
    assert setup["AppVersion"] == build.project_version()
    assert build.project_version() in setup["OutputBaseFilename"]


def test_it_installs_for_this_user_or_all_users_under_a_stable_identity(script: Script) -> None:
    setup = script.setup()
    assert re.fullmatch(r"\{\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}", setup["AppId"]), setup["AppId"]
    assert setup["PrivilegesRequired"] == "lowest"
    assert setup["PrivilegesRequiredOverridesAllowed"] == "dialog"
    assert setup["DefaultDirName"].startswith("{autopf}\\")
    assert setup["UninstallDisplayIcon"] == "{app}\\" + script.defines["AppExeName"]


def test_its_icon_is_a_windows_icon_with_every_size_windows_asks_for(script: Script) -> None:
    icon = ROOT / PurePosixPath(*script.setup()["SetupIconFile"].split("\\"))
    data = icon.read_bytes()
    reserved, kind, count = struct.unpack_from("<HHH", data)
    assert (reserved, kind) == (0, 1), f"{icon} is not an ICO file"
    sizes = {data[6 + 16 * i] or 256 for i in range(count)}
    assert {16, 32, 48, 256} <= sizes


def test_it_takes_only_what_the_spec_declares_the_bundle_holds(script: Script) -> None:
    spec = SPEC.read_text(encoding="utf-8")
    assert re.search(rf'^NAME = "{NAME}"$', spec, re.MULTILINE), "the spec names the bundle differently"
    assert "contents_directory" not in spec, "the spec moves the contents folder away from _internal"
    assert PurePosixPath(*script.defines["BundleDir"].split("\\")) == PurePosixPath(
        DIST.relative_to(ROOT), NAME
    )
    assert script.defines["AppExeName"] == f"{NAME}.exe"
    declared = {PurePosixPath(NAME), PurePosixPath(CONTENTS)}
    for entry in script.entries("Files"):
        inside = bundle_path(entry["Source"], script)
        assert PurePosixPath(inside.parts[0]) in declared, f"{entry['Source']} is not part of the bundle"
    assert {f"{{app}}\\{script.defines['AppExeName']}", f"{{app}}\\{CONTENTS}\\*"} <= installed_files(script)


def test_shortcuts_start_the_installed_program(script: Script) -> None:
    made = installed_files(script)
    icons = script.entries("Icons")
    assert {icon["Name"].split("\\")[0] for icon in icons} == {"{autoprograms}", "{autodesktop}"}
    for icon in icons + script.entries("Run"):
        assert icon["Filename"] in made, f"{icon['Filename']} is not installed by [Files]"
    desktop = next(icon for icon in icons if icon["Name"].startswith("{autodesktop}"))
    task = next(t for t in script.entries("Tasks") if t["Name"] == desktop["Tasks"])
    assert "unchecked" in task["Flags"], "the desktop shortcut is optional, off unless chosen"


def test_upgrades_and_uninstalls_touch_only_the_program_folder(script: Script) -> None:
    for section in ("Files", "Dirs"):
        for entry in script.entries(section):
            target = entry.get("DestDir") or entry["Name"]
            assert target.startswith("{app}"), f"[{section}] writes outside the program folder: {target}"
    for section in ("InstallDelete", "UninstallDelete"):
        for entry in script.entries(section):
            assert entry["Name"].startswith("{app}"), f"[{section}] deletes outside the program folder"


def test_the_uninstaller_asks_before_deleting_the_data_the_program_uses(
    script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = script.expand("\n".join(script.sections["Code"]))
    data_dir = re.search(r"ExpandConstant\('\{localappdata\}\\([^']+)'\)", code)
    assert data_dir and data_dir.group(1) == APP_NAME
    # The program's own data directory on Windows, as platformdirs resolves it there.
    monkeypatch.setenv("LOCALAPPDATA", "C:\\Users\\someone\\AppData\\Local")
    monkeypatch.setattr(
        platformdirs.windows, "_RESOLVE_WIN_FOLDER", platformdirs.windows.get_win_folder_from_env_vars
    )
    windows_dir = platformdirs.windows.Windows(APP_NAME, appauthor=False).user_data_dir.replace("/", "\\")
    assert windows_dir == f"C:\\Users\\someone\\AppData\\Local\\{APP_NAME}"

    assert code.count("DelTree(") == 1
    asked = code.index("MsgBox(")
    assert "UninstallSilent()" in code[:asked], "a silent uninstall must keep the data without asking"
    assert "MB_DEFBUTTON2" in code[asked:], "the question defaults to No (keep the data)"
    assert asked < code.index("= IDYES then") < code.index("DelTree(")
    words = re.findall(r"\b(begin|end)\b", re.sub(r"\{[^}]*\}|'[^']*'", "", code), re.IGNORECASE)
    assert words.count("begin") == words.count("end"), "unbalanced begin/end in [Code]"


@pytest.mark.packaging
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_every_file_the_installer_takes_is_in_the_built_bundle(script: Script, bundle: Path) -> None:
    for entry in script.entries("Files"):
        inside = bundle_path(entry["Source"], script)
        matched = list(bundle.glob(str(inside)))
        assert matched, f"{entry['Source']} matches nothing in {bundle}"
        if "recursesubdirs" in entry.get("Flags", ""):
            assert sum(1 for m in matched for _ in m.rglob("*")) > 1000, f"{entry['Source']} is nearly empty"


def test_the_build_and_the_tests_agree_on_which_bundle_is_current() -> None:
    """The stamp's digest is the same whether build.py computes it or pytest (whose sys.path differs) does."""
    printed = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build.py"), "--fingerprint"],
        cwd=ROOT / "packaging", capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert printed.stdout.strip() == build_script().fingerprint()


def test_start_at_login_is_an_option_writing_what_the_window_reads(script: Script) -> None:
    tasks = {task["Name"]: task for task in script.entries("Tasks")}
    assert "unchecked" in tasks["startatlogin"]["Flags"]
    (value,) = [entry for entry in script.entries("Registry") if entry.get("Tasks") == "startatlogin"]
    assert value["Root"] == "HKCU" and "HKEY_CURRENT_USER\\" + value["Subkey"] == RUN_KEY
    assert value["ValueName"] == RUN_VALUE and value["ValueType"] == "string"
    assert value["ValueData"].endswith(f" {BACKGROUND}") and "uninsdeletevalue" in value["Flags"]
