"""Build the one-folder bundle with PyInstaller (``make package`` runs this; on Windows run it directly).

Prints the bundle's size and the build time; writes ``build/version.iss`` (the version from pyproject.toml,
for installer.iss) and a stamp beside the bundle, ``dist/ai-service-platform.build.json``, naming the
sources and installed packages it was built from, so that ``--if-stale`` and the packaging tests reuse a
bundle of the same sources instead of spending minutes building it again.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "ai-service-platform"
SPEC = ROOT / "packaging" / f"{NAME}.spec"
EXECUTABLE = NAME + (".exe" if sys.platform == "win32" else "")
INPUTS = (
    "pyproject.toml",
    "server",
    "app",
    "resources/help",
    "resources/icons",
    "packaging/ai-service-platform.spec",
    "packaging/entry.py",
)
"""What goes into the bundle: a change to any of these (or to an installed package) makes it stale."""
MIN_FREE_BYTES = 4 * 1024**3
"""The bundle (~1.1 GB) plus PyInstaller's work files (~1 GB), with room to spare."""


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def _files(relative: str) -> Iterator[Path]:
    path = ROOT / relative
    if path.is_file():
        yield path
    elif path.is_dir():
        for found in sorted(path.rglob("*")):
            if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc":
                yield found


def installed_distributions() -> list[str]:
    """``name==version`` of every package in this interpreter's site-packages. Only there: a process's
    sys.path may hold more (pytest puts the repository on it, whose ``*.egg-info`` would count)."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return sorted(
        f"{(dist.metadata['Name'] or '').lower()}=={dist.version}"
        for dist in importlib.metadata.distributions(path=paths)
    )


def fingerprint() -> str:
    """A digest of the bundle's inputs: the sources, the installed distributions, Python itself."""
    digest = hashlib.sha256()
    for relative in INPUTS:
        for path in _files(relative):
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update("\n".join(installed_distributions()).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def bundle_size(path: Path) -> tuple[int, int]:
    """Bytes and files in a folder, symbolic links counted as links (as an installer stores them)."""
    total = files = 0
    for directory, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(directory, name)).st_size
            files += 1
    return total, files


def stamp_path(dist: Path) -> Path:
    return dist / f"{NAME}.build.json"


def read_stamp(dist: Path) -> dict[str, Any] | None:
    try:
        stamp: dict[str, Any] = json.loads(stamp_path(dist).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp


def is_current(dist: Path) -> bool:
    """The bundle in ``dist`` exists, is complete, and was built from the sources as they are now."""
    stamp = read_stamp(dist)
    return (
        stamp is not None
        and stamp.get("fingerprint") == fingerprint()
        and (dist / NAME / EXECUTABLE).is_file()
    )


def write_version_iss(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    target = work / "version.iss"
    target.write_text(
        "; Written by packaging/build.py from pyproject.toml; installer.iss includes it.\n"
        f'#define AppVersion "{project_version()}"\n',
        encoding="utf-8",
    )
    return target


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def build(dist: Path, work: Path, *, clean: bool = False) -> dict[str, Any]:
    dist.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dist).free
    if free < MIN_FREE_BYTES:
        raise SystemExit(
            f"only {_human(free)} free beside {dist}: the build needs about {_human(MIN_FREE_BYTES)}"
        )
    write_version_iss(work)
    stamp_path(dist).unlink(missing_ok=True)  # a failed build must not leave a stamp that says "current"
    sources = fingerprint()
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(dist), "--workpath", str(work), str(SPEC),
    ]  # fmt: skip
    if clean:
        command.append("--clean")
    # PyInstaller imports every torch submodule to list them; their deprecation notices are only noise here.
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning"}
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT, env=env)
    seconds = time.monotonic() - started
    size, files = bundle_size(dist / NAME)
    stamp = {
        "name": NAME,
        "version": project_version(),
        "executable": f"{NAME}/{EXECUTABLE}",
        "fingerprint": sources,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 1),
        "bytes": size,
        "files": files,
        "python": platform.python_version(),
        "platform": sys.platform,
    }
    stamp_path(dist).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return stamp


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dist", type=Path, default=ROOT / "dist", help="where the bundle goes (default dist/)"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build", help="PyInstaller's work files (build/)")
    parser.add_argument("--if-stale", action="store_true", help="build only if the sources changed since")
    parser.add_argument("--clean", action="store_true", help="empty PyInstaller's cache first")
    parser.add_argument("--fingerprint", action="store_true", help="print the digest of the inputs and exit")
    args = parser.parse_args(argv)
    dist, work = args.dist.resolve(), args.work.resolve()
    if args.fingerprint:
        sys.stdout.write(fingerprint() + "\n")
        return 0
    if args.if_stale and is_current(dist):
        write_version_iss(work)
        stamp = read_stamp(dist) or {}
        sys.stdout.write(
            f"{dist / NAME} is current (built {stamp.get('built_at')} from these sources): not rebuilding\n"
        )
        return 0
    stamp = build(dist, work, clean=args.clean)
    minutes, seconds = divmod(round(stamp["build_seconds"]), 60)
    sys.stdout.write(
        f"bundle {dist / NAME}: {_human(stamp['bytes'])} in {stamp['files']:,} files; "
        f"built in {minutes} min {seconds:02d} s (version {stamp['version']})\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
