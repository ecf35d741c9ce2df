"""Downloading from a fake Hugging Face endpoint through the service the window and ``models pull`` use:
progress with speed and time left, a cut connection and a restart resumed with byte ranges, a damaged
file refused, a full disk refused up front, and what finished added to the model table."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from server.hub.downloads import DownloadService, pick
from server.hub.errors import HubError
from server.services import Services, settings_from_store
from tests.support.fake_hub import FOLDER_REPO, GATED_REPO, GGUF_REPO, SMOL, TOKEN, FakeHub

MB = 1024 * 1024


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def offline_services(make_services: Callable[..., Services], hub: FakeHub, **overrides: object) -> Services:
    """Services that download from ``hub`` and load nothing."""
    return make_services(hf_endpoint=hub.url, load_models=False, **overrides)


def test_a_gguf_is_listed_downloaded_with_progress_verified_and_added_to_the_table(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = offline_services(make_services, hub)
    listing = services.downloads.inspect(GGUF_REPO)
    assert listing.kind == "gguf" and listing.revision and not listing.gated
    paths, why = pick(listing, "Q4_1", None)
    assert paths == [SMOL.name] and why == "Q4_1"

    hub.rate = 40 * MB  # slow enough to be watched
    started = services.downloads.start(listing, paths)
    status = services.downloads.wait(started.id, 60, until=lambda s: not s.working or s.speed is not None)
    assert status.state == "downloading" and 0 < status.fraction < 1 and status.speed and status.eta_s
    done = services.downloads.wait(started.id, 120)
    assert done.state == "done", done.message

    target = services.settings.models_folder / GGUF_REPO / SMOL.name
    assert done.target == str(target) and sha256(target) == sha256(SMOL)
    config = services.settings.model(done.name) or next(
        c for c in services.models.configs() if c.name == done.name
    )
    assert (config.name, config.kind, config.engine, config.source) == (
        "smollm2-135m-instruct.q4_1",
        "chat",
        "llama.cpp",
        str(target),
    )
    assert not any((services.settings.models_folder / ".downloads").iterdir())
    saved = settings_from_store(environ={"AISP_DATA_DIR": str(services.settings.data_dir)})
    assert saved.model("smollm2-135m-instruct.q4_1") is not None  # kept for the next start


def ranges(hub: FakeHub, path: str) -> list[int]:
    """Where each request for the file's content started (0: from the beginning)."""
    return [
        int(seen.range.removeprefix("bytes=").split("-")[0]) if seen.range else 0
        for seen in hub.requests_for(path)
        if seen.method == "GET" and "/blobs/" in seen.path
    ]


def test_a_connection_cut_in_the_middle_of_a_file_goes_on_with_a_byte_range(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = offline_services(make_services, hub)
    listing = services.downloads.inspect(GGUF_REPO)
    hub.cut_after[SMOL.name] = 30 * MB
    status = services.downloads.wait(services.downloads.start(listing, [SMOL.name]).id, 120)
    assert status.state == "done", status.message
    assert ranges(hub, SMOL.name) == [0, 30 * MB]  # the rest, not the whole file again
    assert hub.served[SMOL.name] == SMOL.stat().st_size
    assert sha256(Path(status.target)) == sha256(SMOL)


def test_a_paused_download_goes_on_after_a_restart_from_where_it_stopped(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    first = offline_services(make_services, hub)
    listing = first.downloads.inspect(GGUF_REPO)
    hub.rate = 20 * MB
    started = first.downloads.start(listing, [SMOL.name])
    first.downloads.wait(started.id, 60, until=lambda s: s.done_bytes > 20 * MB)
    paused = first.downloads.pause(started.id)
    # What reached the disk counts (huggingface_hub writes 10 MB at a time).
    assert paused.state == "paused" and 10 * MB <= paused.done_bytes < paused.total_bytes
    first.close()

    hub.rate = None
    again = offline_services(make_services, hub)
    [found] = again.downloads.statuses()
    assert (found.id, found.state, found.done_bytes) == (started.id, "paused", paused.done_bytes)
    assert again.models.configs() == first.models.configs()  # nothing added while unfinished
    resumed = again.downloads.resume(found.id)
    assert resumed.state == "downloading"
    status = again.downloads.wait(found.id, 120)
    assert status.state == "done", status.message
    first_range, second_range = ranges(hub, SMOL.name)
    assert first_range == 0 and second_range == paused.done_bytes
    # Sent twice at most: what was in flight when it paused (huggingface_hub reads 10 MB at a time).
    assert hub.served[SMOL.name] < SMOL.stat().st_size + 16 * MB
    assert sha256(Path(status.target)) == sha256(SMOL)


def test_a_download_running_when_the_appliance_closes_goes_on_by_itself_at_the_next_start(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    first = offline_services(make_services, hub)
    listing = first.downloads.inspect(FOLDER_REPO)
    paths, _ = pick(listing, None, None)
    hub.rate = 10 * MB
    started = first.downloads.start(listing, paths)
    first.downloads.wait(started.id, 60, until=lambda s: s.done_bytes > 5 * MB)
    first.close()

    hub.rate = None
    again = make_services(hf_endpoint=hub.url)  # a start that loads models goes on with downloads
    status = again.downloads.wait(started.id, 120)
    assert status.state == "done", status.message
    folder = again.settings.models_folder / FOLDER_REPO
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(paths)
    assert "all-minilm-l6-v2" in [c.name for c in again.models.configs()]


def test_a_damaged_file_is_refused_and_nothing_is_added(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = offline_services(make_services, hub)
    before = services.models.configs()
    listing = services.downloads.inspect(GGUF_REPO)
    hub.corrupt.add(SMOL.name)
    status = services.downloads.wait(services.downloads.start(listing, [SMOL.name]).id, 120)
    assert (status.state, status.error_kind) == ("failed", "checksum")
    assert SMOL.name in (status.message or "") and "checksum" in (status.message or "")
    assert services.models.configs() == before
    assert not Path(status.target).exists()
    assert status.done_bytes == 0  # the damaged file is gone: a retry fetches it whole

    hub.corrupt.clear()
    retried = services.downloads.resume(status.id)
    assert services.downloads.wait(retried.id, 120).state == "done"


def test_a_disk_too_small_is_refused_before_anything_is_downloaded(
    make_services: Callable[..., Services], hub: FakeHub, small_disk: Path
) -> None:
    services = offline_services(make_services, hub, models_dir=small_disk / "models")
    listing = services.downloads.inspect(GGUF_REPO)
    with pytest.raises(HubError, match="not enough disk space") as refused:
        services.downloads.start(listing, [SMOL.name])
    assert refused.value.kind == "disk_full" and str(small_disk) in refused.value.message
    assert not list(ranges(hub, SMOL.name)) and services.downloads.statuses() == []


def test_the_free_space_check_counts_what_other_downloads_still_need(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = offline_services(make_services, hub)
    size = SMOL.stat().st_size
    downloads = DownloadService(
        services.settings.models_folder,
        services.downloads.hub,
        services.models,
        services.save_models,
        space=lambda _folder: size + 100 * MB,  # room for one of the two
        load=False,
    )
    gguf = downloads.inspect(GGUF_REPO)
    hub.rate = 5 * MB
    downloads.start(gguf, [SMOL.name])
    folder = downloads.inspect(FOLDER_REPO)
    try:
        with pytest.raises(HubError, match="other downloads") as refused:
            downloads.start(folder, pick(folder, None, None)[0])
        assert refused.value.kind == "disk_full" and [s.repo_id for s in downloads.statuses()] == [GGUF_REPO]
    finally:
        downloads.close()


def test_a_gated_repository_is_explained_and_downloads_once_a_token_is_given(
    make_services: Callable[..., Services], hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    services = offline_services(make_services, hub)
    before = services.models.configs()
    listing = services.downloads.inspect(GATED_REPO)  # its files are listed to anyone, as on the Hub
    assert listing.gated and listing.kind == "sentence-transformers"
    started = services.downloads.start(listing, pick(listing, None, None)[0])

    refused = services.downloads.wait(started.id, 60)
    assert (refused.state, refused.error_kind, refused.resumable) == ("failed", "gated", True)
    assert f"accept its licence at {hub.url}/{GATED_REPO}" in (refused.message or "")
    assert "access token" in (refused.message or "") and services.models.configs() == before

    services.tokens.set("hf_" + "W" * 34)  # a token whose account was not granted the model
    refused = services.downloads.wait(services.downloads.resume(started.id).id, 60)
    assert refused.error_kind == "gated" and "has not been granted it" in (refused.message or "")

    place = services.tokens.set(TOKEN)
    token_file = services.settings.data_dir / "hf-token"
    assert place == f"the file {token_file} (readable by you alone)"  # no credential store here
    assert token_file.stat().st_mode & 0o777 == 0o600
    done = services.downloads.wait(services.downloads.resume(started.id).id, 120)
    assert done.state == "done", done.message
    assert "gated-minilm" in [c.name for c in services.models.configs()]

    # The token went to the endpoint alone: not to the server the large file was redirected to.
    sent = [seen for seen in hub.seen if seen.authorization == f"Bearer {TOKEN}"]
    assert sent and {seen.host for seen in sent} == {f"127.0.0.1:{hub.port}"}
    redirected = [seen for seen in hub.seen if "/blobs/" in seen.path]
    assert redirected and not any(seen.authorization for seen in redirected)
    # Nowhere else is it kept: not in the database, the download records or the log.
    for path in services.settings.data_dir.rglob("*"):
        if path.is_file() and path != token_file:
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text


def test_a_repository_that_does_not_exist_is_said_so(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = offline_services(make_services, hub)
    with pytest.raises(HubError, match="has no repository acme/missing") as missing:
        services.downloads.inspect("acme/missing")
    assert missing.value.kind == "not_found"


def test_without_a_network_the_endpoint_is_named_and_nothing_changes(
    make_services: Callable[..., Services],
) -> None:
    services = make_services(hf_endpoint="http://127.0.0.1:9", load_models=False)  # nothing listens there
    with pytest.raises(HubError, match="cannot reach http://127.0.0.1:9") as offline:
        services.downloads.inspect(GGUF_REPO)
    assert offline.value.kind == "network" and "network connection" in offline.value.message
    assert services.downloads.statuses() == [] and not services.settings.models_folder.exists()
