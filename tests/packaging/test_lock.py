"""The lock files agree with pyproject.toml: every dependency it declares is pinned, at a version its
specifier allows, with hashes; nothing is pinned as a direct dependency that pyproject.toml no longer
declares; and each lock holds the one below it (app ⊂ test ⊂ package) at the same versions."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "packaging" / "lock"
LAYERS = {"app.txt": (), "test.txt": ("test",), "package.txt": ("test", "package")}
"""Each lock file and the extras it is compiled with (see ``make lock``)."""


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def pins(text: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, hashes, what it is there for) for every entry of a pip-compile lock file."""
    found: dict[str, tuple[str, list[str], list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if match is None:
            continue
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        via = [line.strip("# ").strip() for line in block.splitlines() if line.lstrip().startswith("#")]
        found[canonicalize_name(match.group(1))] = (match.group(2), hashes, via)
    return found


@pytest.mark.parametrize("lock_name", list(LAYERS))
def test_every_declared_dependency_is_pinned_within_its_specifier_with_hashes(lock_name: str) -> None:
    locked = pins((LOCK / lock_name).read_text(encoding="utf-8"))
    environment = {"extra": ""}
    for requirement in declared(LAYERS[lock_name]):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is in pyproject.toml but not in {lock_name}: run `make lock`"
        version = Version(locked[name][0])
        # A local build label (torch's "+cpu") is the same release as far as the specifier goes.
        assert requirement.specifier.contains(version.public, prereleases=True), (
            f"{lock_name} pins {name}=={version}, outside pyproject.toml's {requirement}: run `make lock`"
        )
    for pinned, (pinned_version, hashes, _) in locked.items():
        assert hashes, f"{lock_name} pins {pinned}=={pinned_version} without a hash"


@pytest.mark.parametrize("lock_name", list(LAYERS))
def test_nothing_is_locked_as_a_dependency_pyproject_no_longer_declares(lock_name: str) -> None:
    wanted = {canonicalize_name(r.name) for r in declared(LAYERS[lock_name])}
    for name, (_, _, via) in pins((LOCK / lock_name).read_text(encoding="utf-8")).items():
        if any(reason.startswith("ai-service-platform (pyproject.toml)") for reason in via):
            assert name in wanted, (
                f"{lock_name} still pins {name} for pyproject.toml, which no longer asks for it"
            )


def test_each_lock_holds_the_one_below_at_the_same_versions() -> None:
    names = list(LAYERS)
    for lower, upper in zip(names, names[1:], strict=False):
        below = pins((LOCK / lower).read_text(encoding="utf-8"))
        above = pins((LOCK / upper).read_text(encoding="utf-8"))
        for name, (version, _, _) in below.items():
            assert name in above and above[name][0] == version, (
                f"{upper} pins {name} {above.get(name, ('nothing',))[0]}, {lower} pins {version}"
            )


def test_the_installed_environment_is_the_locked_one() -> None:
    """What `make test` installed is what test.txt pins (a stale .venv, or a package installed by hand,
    would make the tests run against something the lock file does not describe)."""
    locked = pins((LOCK / "test.txt").read_text(encoding="utf-8"))
    installed = {
        str(canonicalize_name(d.metadata["Name"])): d.version for d in importlib.metadata.distributions()
    }
    differing = {
        name: (version, installed.get(name))
        for name, (version, _, _) in locked.items()
        if name in installed and installed[name] != version
    }
    assert not differing, f"installed versions differ from packaging/lock/test.txt: {differing}"
