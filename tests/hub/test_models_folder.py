"""The models folder and the table around a download: what is on disk and who uses it, deleting it,
cancelling a download, a taken name refused up front, and a preset's repository served as the preset."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.hub.downloads import pick
from server.hub.errors import HubError
from server.model_presets import preset
from server.services import Services
from tests.conftest import FAKE_CHAT
from tests.support.fake_hub import FOLDER_REPO, GGUF_REPO, MINILM, SMOL, FakeHub, folder_repo

MB = 1024 * 1024


def test_what_is_on_disk_is_listed_and_deleted_once_no_model_uses_it(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = make_services(hf_endpoint=hub.url, load_models=False)
    downloads = services.downloads
    listing = downloads.inspect(GGUF_REPO)
    done = downloads.wait(downloads.start(listing, [SMOL.name], name="smol").id, 120)
    assert done.state == "done"
    [item] = downloads.stored()
    assert (item.path, item.size, item.used_by) == (
        services.settings.models_folder / GGUF_REPO / SMOL.name,
        SMOL.stat().st_size,
        ("smol",),
    )
    with pytest.raises(ValueError, match="used by smol: remove that model first"):
        downloads.delete(item.path)
    services.models.remove("smol")
    downloads.delete(item.path)
    assert downloads.stored() == [] and list(services.settings.models_folder.iterdir()) == [
        services.settings.models_folder / ".downloads"
    ]


def test_a_cancelled_download_leaves_nothing_behind(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = make_services(hf_endpoint=hub.url, load_models=False)
    downloads = services.downloads
    hub.rate = 10 * MB
    started = downloads.start(downloads.inspect(GGUF_REPO), [SMOL.name])
    downloads.wait(started.id, 60, until=lambda s: s.done_bytes >= 10 * MB)
    downloads.cancel(started.id)
    assert downloads.statuses() == []
    assert list((services.settings.models_folder / ".downloads").iterdir()) == []
    assert [c.name for c in services.models.configs()] == ["fake-chat", "fake-embed"]


def test_a_name_already_served_is_refused_before_downloading(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = make_services(hf_endpoint=hub.url, load_models=False)
    listing = services.downloads.inspect(FOLDER_REPO)
    with pytest.raises(HubError, match="a model named fake-embed is already in the table") as taken:
        services.downloads.start(listing, pick(listing, None, None)[0], name="fake-embed")
    assert taken.value.kind == "name_taken" and not any("/resolve/" in s.path for s in hub.seen)
    with pytest.raises(ValueError, match="cannot be served as 'two words'"):
        services.downloads.start(listing, pick(listing, None, None)[0], name="two words")


def test_a_presets_repository_is_downloaded_to_be_served_as_the_preset(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    hub.add(folder_repo("google/embeddinggemma-300m", MINILM))
    services = make_services(hf_endpoint=hub.url, load_models=False)
    listing = services.downloads.inspect("google/embeddinggemma-300m")
    started = services.downloads.start(listing, pick(listing, None, None)[0])
    assert started.name == "embeddinggemma-300m"
    assert services.downloads.wait(started.id, 120).state == "done"
    config = next(c for c in services.models.configs() if c.name == "embeddinggemma-300m")
    assert config.model_dump() == preset("embeddinggemma-300m").config(config.source).model_dump()
    assert config.source == str(services.settings.models_folder / "google" / "embeddinggemma-300m")


def test_a_name_taken_while_downloading_is_refused_at_the_end_and_the_download_can_finish_later(
    make_services: Callable[..., Services], hub: FakeHub
) -> None:
    services = make_services(hf_endpoint=hub.url, load_models=False)
    downloads = services.downloads
    hub.rate = 20 * MB
    started = downloads.start(downloads.inspect(GGUF_REPO), [SMOL.name], name="smol")
    services.models.add(
        FAKE_CHAT.model_copy(update={"name": "smol"})
    )  # someone else takes the name meanwhile
    refused = downloads.wait(started.id, 120)
    assert (refused.state, refused.error_kind) == ("failed", "name_taken")
    assert (refused.message or "").startswith(f"downloaded to {refused.target}, but not added to the table")
    assert next(c for c in services.models.configs() if c.name == "smol").engine == "fake"

    services.models.remove("smol")
    done = downloads.wait(downloads.resume(started.id).id, 60)
    assert done.state == "done", done.message
    assert next(c for c in services.models.configs() if c.name == "smol").source == refused.target
