"""The ``packaging`` marker: tests that build (or reuse) the PyInstaller bundle and run it, minutes each.

They are left out of a plain ``pytest`` run (see ``addopts`` in pyproject.toml) and selected with
``-m packaging`` (``make package-test``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.packaging.bundle import ensure_bundle


@pytest.fixture(scope="session")
def bundle() -> Path:
    """The one-folder bundle of the current sources (built here if ``make package`` has not built it)."""
    return ensure_bundle()
