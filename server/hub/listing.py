"""What a Hugging Face repository holds, as the downloads need it: each file's path, size and checksum
(the SHA-256 of an LFS file, the git object id of any other), the commit they were listed at, and
whether the repository is gated; what kind of model it is, and which of its files a model needs.

Plain data that crosses the process boundary as dicts; nothing here talks to the network.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from server.hub.errors import HubError

RepoKind = Literal["gguf", "sentence-transformers"]

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")

SKIPPED_SUFFIXES = (".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".tflite", ".mlmodel", ".gguf")
"""Files of other runtimes (ONNX, TensorFlow, Flax, Rust, Core ML, llama.cpp) that sentence-transformers
never reads: a repository that ships its model in every format would otherwise cost several times over."""
SKIPPED_FOLDERS = ("onnx", "openvino", "coreml", "tf", "flax")
SKIPPED_NAMES = (".gitattributes",)


def parse_repo_id(text: str) -> str:
    """A repository id from what the operator typed: ``owner/name``, or the repository's page address."""
    value = text.strip()
    if value.startswith(("http://", "https://")):
        parts = [p for p in urlsplit(value).path.split("/") if p]
        value = "/".join(parts[:2])
    if not _REPO_ID.match(value) or ".." in value:
        raise HubError("not_found", f"{text.strip()!r} is not a Hugging Face repository id (owner/name)")
    return value


def safe_path(path: str) -> PurePosixPath:
    """A repository file's path, refused if it could land outside the folder it is downloaded to."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise HubError("failed", f"the repository lists a file with an unsafe path: {path!r}")
    return pure


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository at one commit."""

    path: str
    size: int
    sha256: str | None = None
    """The SHA-256 of the file's content, for a file stored with Git LFS (every weights file)."""
    blob_id: str | None = None
    """The git object id (SHA-1 of ``blob <size>\\0`` and the content), for a file stored in git itself."""

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class RepoListing:
    """A repository's files at one commit."""

    repo_id: str
    revision: str
    """The commit the files were listed at; downloads ask for exactly this one, so a resumed file is the
    same file."""
    gated: bool
    files: tuple[RepoFile, ...]

    @property
    def kind(self) -> RepoKind | None:
        """A sentence-transformers model directory (``modules.json`` at its top), GGUF files, or neither."""
        paths = {f.path for f in self.files}
        if "modules.json" in paths:
            return "sentence-transformers"
        if any(path.lower().endswith(".gguf") for path in paths):
            return "gguf"
        return None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    def file(self, path: str) -> RepoFile:
        for found in self.files:
            if found.path == path:
                return found
        raise HubError("not_found", f"{self.repo_id} has no file {path}")

    def directory_files(self) -> tuple[RepoFile, ...]:
        """The files a sentence-transformers model loads: everything but other runtimes' copies of the
        weights (and PyTorch pickles where safetensors are there)."""
        with_safetensors = {
            str(PurePosixPath(f.path).parent) for f in self.files if f.path.endswith(".safetensors")
        }
        chosen = []
        for item in self.files:
            folder = PurePosixPath(item.path).parent
            if item.name in SKIPPED_NAMES or item.path.lower().endswith(SKIPPED_SUFFIXES):
                continue
            if any(part in SKIPPED_FOLDERS for part in folder.parts):
                continue
            if (
                str(folder) in with_safetensors
                and item.name.startswith("pytorch_model")
                and item.name.endswith(".bin")
            ):
                continue
            chosen.append(item)
        return tuple(chosen)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepoListing:
        return cls(
            repo_id=str(data["repo_id"]),
            revision=str(data["revision"]),
            gated=bool(data["gated"]),
            files=tuple(RepoFile(**item) for item in data["files"]),
        )


def total_size(files: tuple[RepoFile, ...] | list[RepoFile]) -> int:
    return sum(f.size for f in files)
