"""The calls to the Hub, made inside the download process (``process.py``) once its environment is set:
listing a repository and fetching its files with ``huggingface_hub``.

A file is fetched with ``http_get`` into a partial file that grows across attempts: after a cut connection
it asks for the rest with a byte range (``http_get`` retries by itself), and after a pause or a restart the
next attempt starts where the file ends. Files are asked for at the commit they were listed at, so a
resumed file is the same file. Each one is then checked against the repository's own checksum: the SHA-256
of an LFS file, the git object id of any other.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

from server.hub.errors import HubError
from server.hub.listing import RepoFile, RepoListing, safe_path

LIBRARY = "ai-service-platform"
REPORT_EVERY_S = 0.2
HASH_BLOCK = 8 * 1024 * 1024
Send = Callable[[tuple[Any, ...]], None]


def inspect(endpoint: str, token: str | None, repo_id: str, revision: str | None) -> RepoListing:
    """The repository's files with their sizes and checksums, at ``revision`` (default: its main branch)."""
    api = HfApi(endpoint=endpoint, token=token or False, library_name=LIBRARY)
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    files = tuple(
        RepoFile(
            path=s.rfilename,
            size=int(s.size or (s.lfs.size if s.lfs else 0)),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or ()
    )
    if not info.sha:
        raise HubError("failed", f"{endpoint} did not say which commit {repo_id} is at")
    return RepoListing(repo_id=info.id or repo_id, revision=info.sha, gated=bool(info.gated), files=files)


def _meter(send: Send, index: int) -> type[hub_tqdm]:
    """A progress bar that draws nothing and reports the file's size on disk to the parent instead."""

    class Meter(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            self.done = int(kwargs.get("initial") or 0)
            self.last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            now = time.monotonic()
            if now - self.last >= REPORT_EVERY_S:
                self.last = now
                send(("progress", index, self.done))
            return None

    return Meter


def _digest(path: Path, item: RepoFile, send: Send, index: int) -> tuple[str, str] | None:
    """(expected, actual) checksums of the file as the repository states them; None if it states none."""
    if item.sha256:
        hasher, expected = hashlib.sha256(), item.sha256.lower()
    elif item.blob_id:
        hasher, expected = hashlib.sha1(usedforsecurity=False), item.blob_id.lower()
        hasher.update(f"blob {item.size}\0".encode())
    else:
        return None
    done, last = 0, 0.0
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            hasher.update(block)
            done += len(block)
            if time.monotonic() - last >= REPORT_EVERY_S:
                last = time.monotonic()
                send(("verifying", index, done))
    return expected, hasher.hexdigest()


def fetch(endpoint: str, token: str | None, listing: RepoListing, staging: Path, send: Send) -> None:
    """Fetch and check every file of ``listing`` into ``staging`` (keeping what is already there), telling
    ``send`` about each step: ``("progress", i, bytes)``, ``("verifying", i, bytes)``, ``("verified", i)``."""
    headers = build_hf_headers(token=token or False, library_name=LIBRARY)
    headers["Accept-Encoding"] = "identity"  # the bytes as stored, so that a byte range means what it says
    for index, item in enumerate(listing.files):
        target = staging / safe_path(item.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        have = target.stat().st_size if target.exists() else 0
        if have > item.size:  # not this file: start it again
            target.unlink()
            have = 0
        if have < item.size or not target.exists():
            url = hf_hub_url(listing.repo_id, item.path, revision=listing.revision, endpoint=endpoint)
            with target.open("r+b" if target.exists() else "wb") as out:
                out.seek(0, 2)
                send(("progress", index, have))
                http_get(
                    url,
                    out,
                    resume_size=have,
                    headers=headers,
                    expected_size=item.size,
                    displayed_filename=item.name,
                    tqdm_class=_meter(send, index),
                )
        send(("progress", index, item.size))
        send(("verifying", index, 0))
        checked = _digest(target, item, send, index)
        if checked is not None and checked[0] != checked[1]:
            target.unlink()  # the next attempt fetches it whole
            raise HubError(
                "checksum",
                f"{item.path} arrived damaged: its checksum is {checked[1]}, the repository's is {checked[0]}. "
                "It was deleted; downloading again fetches it anew.",
            )
        send(("verified", index))


def classify(exc: BaseException, endpoint: str, repo_id: str, token: bool) -> HubError:
    """What went wrong, as the operator can act on it."""
    page = f"{endpoint}/{repo_id}"
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, GatedRepoError):
        if exc.response is not None and exc.response.status_code == 403:
            return HubError(
                "gated",
                f"{repo_id} is gated and the access token's account has not been granted it: accept its "
                f"licence at {page} while signed in with that account (some authors approve requests by "
                "hand), then try again.",
            )
        return HubError(
            "gated",
            f"{repo_id} is gated: accept its licence at {page} while signed in to Hugging Face, then give "
            "an access token of that account (huggingface.co → Settings → Access Tokens; read access is "
            "enough).",
        )
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | EntryNotFoundError):
        private = (
            "or the access token has no access to it" if token else "or it is private: give an access token"
        )
        return HubError("not_found", f"{endpoint} has no repository {repo_id} ({private}).")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            return HubError(
                "unauthorized",
                "Hugging Face refused the access token (it is wrong or expired): give a new one.",
            )
        if status == 429 or status >= 500:
            return HubError(
                "network", f"{endpoint} answered {status}: try again later (the download resumes)."
            )
        return HubError("failed", f"{endpoint} answered {status}: {exc}")
    if isinstance(exc, OfflineModeIsEnabled | httpx2.TransportError):
        return HubError(
            "network",
            f"cannot reach {endpoint} ({type(exc).__name__}: {exc}). Check the network connection; the "
            "download resumes where it stopped.",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return HubError(
            "disk_full",
            f"the disk is full ({exc.filename or 'writing the download'}): free some space, then resume.",
        )
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return HubError(
            "network", "the connection ended before the file did; the download resumes where it stopped."
        )
    if isinstance(exc, OSError):
        return HubError("failed", f"cannot write the download: {exc}")
    return HubError("failed", f"{type(exc).__name__}: {exc}")
