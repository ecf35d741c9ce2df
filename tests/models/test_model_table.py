"""The model table: loading states, failures with reasons, changes saved across restarts, GPU awareness."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from server.config import BUILTIN, ModelConfig, default_models
from server.gguf import GGUFError, architecture, read_metadata
from server.gpu import Device, Hardware, default_slots, estimate, probe
from server.services import Services, settings_from_store
from tests.conftest import Live, fake_models


def test_a_model_that_fails_to_load_is_reported_and_not_served(
    make_live: Callable[..., Live], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 64)
    models = (
        *fake_models(),
        ModelConfig(name="broken", kind="chat", engine="llama.cpp", source=str(corrupt)),
        ModelConfig(name="missing", kind="chat", engine="llama.cpp", source=str(tmp_path / "nope.gguf")),
    )
    live = make_live(models=models)
    states = {s.name: s for s in live.services.models.statuses()}
    assert states["broken"].state == "failed" and states["broken"].error
    assert states["missing"].state == "failed" and "no GGUF file" in (states["missing"].error or "")
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        assert {m.id for m in client.models.list()} == {"fake-chat", "fake-embed"}
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])


def test_load_unload_and_reload_without_restarting(live: Live) -> None:
    manager = live.services.models
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        manager.unload("fake-chat")
        assert manager.status("fake-chat").state == "unloaded"
        assert "fake-chat" not in {m.id for m in client.models.list()}
        manager.load("fake-chat")
        reply = client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "back again"}]
        )
        assert reply.choices[0].message.content == "back again"
        manager.replace(ModelConfig(name="fake-chat", kind="chat", engine="fake", source="reply=changed"))
        manager.load("fake-chat")
        reply = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content == "changed"


def test_changes_to_the_table_survive_a_restart(
    make_services: Callable[..., Services], tmp_path: Path
) -> None:
    services = make_services(models=(*default_models()[:1], *fake_models()))
    services.models.add(ModelConfig(name="extra", kind="chat", engine="fake", source="reply=hi", threads=3))
    services.models.remove("fake-embed")
    services.save_models()
    stored = services.store.get_setting("models")
    assert [row["name"] for row in stored] == ["smollm2-135m-instruct", "fake-chat", "extra"]
    assert stored[0]["source"] == BUILTIN  # the packaged file is found wherever it is installed
    data_dir = services.settings.data_dir
    services.close()
    settings = settings_from_store(environ={"AISP_DATA_DIR": str(data_dir)})
    names = [m.name for m in settings.models]
    assert names == ["smollm2-135m-instruct", "fake-chat", "extra"]
    assert settings.model("smollm2-135m-instruct").source == default_models()[0].source  # type: ignore[union-attr]
    assert settings.model("extra").threads == 3  # type: ignore[union-attr]


def test_server_settings_saved_from_the_window_apply_at_the_next_start(
    make_services: Callable[..., Services],
) -> None:
    services = make_services()
    services.save_server_settings(port=9123, lan=True)
    with pytest.raises(ValueError):
        services.save_server_settings(data_dir="/elsewhere")
    data_dir = services.settings.data_dir
    settings = settings_from_store(environ={"AISP_DATA_DIR": str(data_dir)})
    assert settings.port == 9123 and settings.lan is True and settings.bind_host == "0.0.0.0"
    assert settings_from_store(environ={"AISP_DATA_DIR": str(data_dir), "AISP_LAN": "0"}).lan is False


def test_gguf_metadata_and_memory_estimate() -> None:
    smol = default_models()[0]
    arch = architecture(read_metadata(Path(smol.source)))
    assert arch == {"layers": 30, "trained_context": 8192, "kv_width": 384}
    hardware = Hardware(True, True, (), 24 * 2**30, 16 * 2**30, ())
    fit = estimate(smol.model_copy(update={"n_gpu_layers": -1, "context_length": 8192}), hardware)
    kv = 2 * 8192 * 30 * 384  # one request's context
    # 8 requests at once: their caches (1.5 GiB) fit in a quarter of the 16 GiB free, many times over.
    assert fit.gpu_bytes == Path(smol.source).stat().st_size + 8 * kv and fit.cpu_bytes == 0
    assert "8 requests at once" in fit.message
    one = estimate(smol.model_copy(update={"n_gpu_layers": -1, "parallel": 1}), hardware)
    assert one.gpu_bytes == Path(smol.source).stat().st_size + kv
    small_gpu = Hardware(True, True, (Device("tiny", 2**27, 2**26),), 24 * 2**30, 16 * 2**30, ())
    tight = estimate(smol.model_copy(update={"n_gpu_layers": -1}), small_gpu)
    assert tight.fits is False and "offload fewer layers" in tight.message
    half = estimate(smol.model_copy(update={"n_gpu_layers": 15, "context_length": 2048}), small_gpu)
    assert half.gpu_bytes == pytest.approx((half.gpu_bytes + half.cpu_bytes) / 2, rel=0.01)
    too_long = estimate(smol.model_copy(update={"context_length": 32768}), hardware)
    assert too_long.fits is False and "trained for" in too_long.message
    cpu_only = estimate(
        smol.model_copy(update={"n_gpu_layers": -1}), Hardware(False, False, (), 2**34, 2**33, ())
    )
    assert cpu_only.gpu_bytes == 0 and cpu_only.fits is True
    # Unset, the requests generated at once follow the memory: their caches take at most a quarter of it.
    little = Hardware(False, False, (), 2**32, 2**30, ())  # 1 GiB available
    assert default_slots(smol.model_copy(update={"context_length": 8192}), little) == 1  # 180 MiB each
    assert default_slots(smol.model_copy(update={"context_length": 2048}), little) == 5  # 45 MiB each
    assert default_slots(smol.model_copy(update={"context_length": 512}), little) == 8  # at most 8
    assert default_slots(smol.model_copy(update={"parallel": 3}), little) == 3  # the operator's choice


def test_a_damaged_gguf_is_refused_by_the_metadata_reader(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE")
    with pytest.raises(GGUFError):
        read_metadata(bad)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(Path(default_models()[0].source).read_bytes()[:100])
    with pytest.raises(GGUFError):
        read_metadata(truncated)


def test_the_hardware_probe_reports_what_it_finds() -> None:
    hardware = probe()
    assert hardware.system_ram_bytes and hardware.system_ram_bytes > 2**28
    if not hardware.devices:
        assert "No GPU found." in hardware.notes
    if not hardware.llama_gpu_offload:
        assert any("without GPU offload" in note for note in hardware.notes)


HARDWARE = probe()


@pytest.mark.skipif(
    not (HARDWARE.llama_gpu_offload and HARDWARE.devices),
    reason="needs llama.cpp built with GPU offload and a GPU (this machine has neither)",
)
def test_gpu_offload_serves_the_model(make_live: Callable[..., Live]) -> None:
    smol = default_models()[0].model_copy(update={"n_gpu_layers": -1})
    live = make_live(models=(smol,))
    assert live.services.models.status(smol.name).state == "loaded"
    with openai.OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0) as client:
        reply = client.chat.completions.create(
            model=smol.name, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
    assert reply.choices[0].message.content


def test_closing_while_a_model_loads_does_not_wait_for_it(make_settings: Callable[..., Any]) -> None:
    services = Services.open(make_settings(models=fake_models(load_delay="3")))
    started = time.monotonic()
    services.close()
    assert time.monotonic() - started < 2.0  # the loader is not awaited beyond its short grace
    time.sleep(3.5)
    assert services.models.status("fake-chat").state == "unloaded"  # loaded after close: closed at once


def test_a_model_unloaded_by_the_operator_stays_unloaded_after_a_restart(
    make_services: Callable[..., Services],
) -> None:
    services = make_services()
    services.models.unload("fake-chat")
    services.models.set_load_at_start("fake-chat", False)
    services.save_models()
    data_dir = services.settings.data_dir
    services.close()
    reopened = Services.open(settings_from_store(environ={"AISP_DATA_DIR": str(data_dir)}))
    try:
        assert reopened.models.wait_loaded(30)
        states = {s.name: s.state for s in reopened.models.statuses()}
        assert states == {"fake-chat": "unloaded", "fake-embed": "loaded"}
    finally:
        reopened.close()


def test_a_model_too_big_for_memory_is_refused_with_a_suggestion(make_live: Callable[..., Live]) -> None:
    smol = default_models()[0]
    arch = architecture(read_metadata(Path(smol.source)))
    available = probe(with_torch=False).system_ram_available_bytes or 0
    context = 1_048_576
    if 2 * context * arch["layers"] * arch["kv_width"] <= available:
        pytest.skip("this machine has enough memory for the largest context a model may ask for")
    live = make_live(models=(smol.model_copy(update={"context_length": context}), *fake_models()))
    status = live.services.models.status(smol.name)
    assert status.state == "failed"
    assert "will not fit" in (status.error or "") and "smaller context" in (status.error or "")
    assert live.services.models.status("fake-chat").state == "loaded"  # the appliance carries on
