"""A Hugging Face endpoint on loopback, for the download tests: what ``huggingface_hub`` asks of the Hub,
answered the way the Hub answers.

* ``GET /api/models/{owner}/{name}[/revision/{rev}]``: the model's info with ``siblings`` (size, ``blobId``,
  and ``lfs.sha256`` for LFS files), ``sha`` (the commit) and ``gated``.
* ``GET|HEAD /{owner}/{name}/resolve/{rev}/{path}``: a file stored in git is answered here with ``ETag``
  (its git object id), ``X-Repo-Commit`` and ``Content-Length``; an LFS file is a 302 to a second server
  (another origin, as the Hub's CDN is) with ``X-Linked-Etag`` and ``X-Linked-Size``.
* Byte ranges (``Range: bytes=N-``) are answered 206 with ``Content-Range``.
* A gated repository answers 401 (``X-Error-Code: GatedRepo``) without a token, 403 with a token it has not
  granted, and the file with one in ``tokens``.

Faults: ``cut_after[path] = n`` closes the connection after ``n`` bytes of that file, once; ``rate``
slows every transfer to so many bytes a second; ``corrupt`` serves those files with one byte changed (the
listing keeps the true checksum). Every request is kept in ``seen``.

The fixture ``hub`` serves the embedded models as repositories: the SmolLM2 GGUF (``GGUF_REPO``), the
MiniLM folder (``FOLDER_REPO``) and the same folder behind a gate (``GATED_REPO``, granted to ``TOKEN``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from server.config import default_models

COMMIT = "7d3b2c1a0f9e8d7c6b5a49382716051a2b3c4d5e"
CHUNK = 256 * 1024


@dataclass(frozen=True)
class FakeFile:
    path: str
    source: Path
    lfs: bool
    size: int
    sha256: str
    blob_id: str


def fake_file(path: str, source: Path, lfs: bool | None = None) -> FakeFile:
    data_hash, blob = hashlib.sha256(), hashlib.sha1(usedforsecurity=False)
    size = source.stat().st_size
    blob.update(f"blob {size}\0".encode())
    with source.open("rb") as handle:
        while block := handle.read(1 << 20):
            data_hash.update(block)
            blob.update(block)
    is_lfs = size > 1_000_000 if lfs is None else lfs
    return FakeFile(path, source, is_lfs, size, data_hash.hexdigest(), blob.hexdigest())


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FakeFile]
    gated: bool = False


def folder_repo(repo_id: str, folder: Path, gated: bool = False) -> FakeRepo:
    """A repository holding every file of ``folder``, as its paths."""
    files = {
        str(p.relative_to(folder).as_posix()): fake_file(str(p.relative_to(folder).as_posix()), p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    return FakeRepo(repo_id, files, gated)


@dataclass(frozen=True)
class Seen:
    method: str
    host: str
    path: str
    authorization: str | None
    range: str | None


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    cut_after: dict[str, int] = field(default_factory=dict)
    rate: float | None = None
    corrupt: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)
    """Bytes of each file's content sent so far, over every request."""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-hub")
        self._runners: list[web.AppRunner] = []
        self._stopping = False
        self.port = self.cdn_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def start(self) -> FakeHub:
        self._thread.start()
        assert self._ready.wait(10), "the fake Hub did not start"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._stopping = True  # ends the transfers still running
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def requests_for(self, path: str) -> Iterator[Seen]:
        return (seen for seen in self.seen if seen.path.endswith(path))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        hub = web.Application()
        hub.router.add_get("/api/models/{owner}/{name}", self._info)
        hub.router.add_get("/api/models/{owner}/{name}/revision/{revision}", self._info)
        hub.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{path:.+}", self._resolve)
        cdn = web.Application()
        cdn.router.add_route("*", "/blobs/{owner}/{name}/{path:.+}", self._blob)
        ports = []
        for app in (hub, cdn):
            runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self._runners.append(runner)
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.port, self.cdn_port = ports
        self._ready.set()
        self._loop.run_forever()

    def _note(self, request: web.Request) -> None:
        self.seen.append(
            Seen(
                request.method,
                request.host,
                request.path,
                request.headers.get("Authorization"),
                request.headers.get("Range"),
            )
        )

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(
            {"error": message}, status=status, headers={"X-Error-Code": code, "X-Error-Message": message}
        )

    def _repo(self, request: web.Request) -> FakeRepo | None:
        return self.repos.get(f"{request.match_info['owner']}/{request.match_info['name']}")

    async def _info(self, request: web.Request) -> web.Response:
        self._note(request)
        repo = self._repo(request)
        revision = request.match_info.get("revision", "main")
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        siblings = []
        for item in repo.files.values():
            sibling: dict[str, object] = {"rfilename": item.path, "size": item.size, "blobId": item.blob_id}
            if item.lfs:
                sibling["lfs"] = {"size": item.size, "sha256": item.sha256, "pointerSize": 134}
            siblings.append(sibling)
        return web.json_response(
            {
                "_id": "fake",
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": COMMIT,
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _refused(self, request: web.Request, repo: FakeRepo) -> web.Response | None:
        if not repo.gated:
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given:
            return self._error(
                401,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )
        if given not in self.tokens:
            return self._error(
                403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list.",
            )
        return None

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        refused = self._refused(request, repo)
        if refused is not None:
            return refused
        if request.match_info["revision"] not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        item = repo.files.get(request.match_info["path"])
        if item is None:
            return self._error(404, "EntryNotFound", "Entry not found")
        if item.lfs:
            headers = {
                "Location": f"http://127.0.0.1:{self.cdn_port}/blobs/{repo.repo_id}/{item.path}",
                "X-Repo-Commit": COMMIT,
                "X-Linked-Etag": f'"{item.sha256}"',
                "X-Linked-Size": str(item.size),
                "ETag": f'"{item.blob_id}"',
            }
            return web.Response(status=302, headers=headers)
        return await self._send(request, item, {"ETag": f'"{item.blob_id}"', "X-Repo-Commit": COMMIT})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        repo = self._repo(request)
        item = repo.files.get(request.match_info["path"]) if repo is not None else None
        if item is None:
            return web.Response(status=404)
        return await self._send(request, item, {"ETag": f'"{item.sha256}"'})

    async def _send(
        self, request: web.Request, item: FakeFile, headers: dict[str, str]
    ) -> web.StreamResponse:
        try:
            return await self._stream(request, item, headers)
        except ConnectionResetError:  # the client went away (a paused download): nothing to answer
            return web.Response(status=499)

    async def _stream(
        self, request: web.Request, item: FakeFile, headers: dict[str, str]
    ) -> web.StreamResponse:
        start = 0
        asked = request.headers.get("Range", "")
        if asked.startswith("bytes="):
            start = int(asked.removeprefix("bytes=").split("-")[0])
        length = item.size - start
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        response.headers["Accept-Ranges"] = "bytes"
        response.content_length = length
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{item.size - 1}/{item.size}"
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        cut = self.cut_after.pop(item.path, None)
        sent = 0
        with item.source.open("rb") as handle:
            handle.seek(start)
            while block := handle.read(CHUNK):
                if start == 0 and sent == 0 and item.path in self.corrupt:
                    block = bytes([block[0] ^ 0xFF]) + block[1:]
                if cut is not None and start + sent + len(block) > cut:
                    block = block[: max(0, cut - start - sent)]
                    await response.write(block)
                    self.served[item.path] = self.served.get(item.path, 0) + len(block)
                    assert request.transport is not None
                    request.transport.abort()  # the connection drops in the middle of the file
                    return response
                if self._stopping:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(block)
                sent += len(block)
                self.served[item.path] = self.served.get(item.path, 0) + len(block)
                if self.rate:
                    await asyncio.sleep(len(block) / self.rate)
        await response.write_eof()
        return response


GGUF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FOLDER_REPO = "sentence-transformers/all-MiniLM-L6-v2"
GATED_REPO = "acme/gated-minilm"
TOKEN = "hf_" + "Q" * 34
SMOL = Path(default_models()[0].source)
MINILM = Path(default_models()[1].source)


@pytest.fixture(scope="session")
def repositories() -> dict[str, FakeRepo]:
    """The repositories, their checksums computed once."""
    readme = MINILM / "README.md"
    gguf = FakeRepo(
        GGUF_REPO,
        {
            SMOL.name: fake_file(SMOL.name, SMOL, lfs=True),
            "README.md": fake_file("README.md", readme, lfs=False),
        },
    )
    return {
        GGUF_REPO: gguf,
        FOLDER_REPO: folder_repo(FOLDER_REPO, MINILM),
        GATED_REPO: folder_repo(GATED_REPO, MINILM, gated=True),
    }


@pytest.fixture
def hub(repositories: dict[str, FakeRepo]) -> Iterator[FakeHub]:
    """A fake Hugging Face endpoint on loopback serving ``repositories``."""
    fake = FakeHub(repos=dict(repositories), tokens={TOKEN}).start()
    yield fake
    fake.stop()
