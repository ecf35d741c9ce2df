"""One window or server per data folder: a second one on the same folder is refused with the holder's
process id, and the folder is free again as soon as the first one closes (or its process dies)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.config import Settings
from server.instance import DataDirInUse, InstanceLock
from server.services import Services
from tests.conftest import Live

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_instance_on_the_same_data_folder_is_refused(
    live: Live, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    assert settings.data_dir == live.services.settings.data_dir
    with pytest.raises(DataDirInUse) as refused:
        Services.open(settings)
    assert refused.value.holder == os.getpid() and str(settings.data_dir) in str(refused.value)
    assert (settings.data_dir / "instance.lock").stat().st_mode & 0o077 == 0

    # `ai-service-platform serve` on the same folder says so and stops; the running server carries on.
    serve = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from server.cli import main; sys.exit(main(['serve', '--port', '0']))",
        ],
        env={**os.environ, "AISP_DATA_DIR": str(settings.data_dir)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert serve.returncode == 1 and f"process {os.getpid()}" in serve.stderr
    assert "already in use" in serve.stderr
    response = httpx.get(live.base_url + "/models", headers={"Authorization": f"Bearer {live.key}"})
    assert response.status_code == 200


def test_the_folder_is_free_once_the_first_closes_or_dies(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path)
    with pytest.raises(DataDirInUse):
        InstanceLock(tmp_path)
    first.release()
    InstanceLock(tmp_path).release()
    # A process that dies holding the lock leaves nothing stale behind.
    script = (
        "import os, pathlib; from server.instance import InstanceLock; "
        f"InstanceLock(pathlib.Path({str(tmp_path)!r})); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)
    InstanceLock(tmp_path).release()
