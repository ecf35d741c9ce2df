"""The models folder: where a finished download is put, the model-table row it becomes, what is on disk,
and deleting it.

A repository's files go to ``<folder>/<owner>/<name>/`` as the repository lays them out: a GGUF model is
its file there (llama.cpp finds a split model's other shards beside the first), a sentence-transformers
model is that whole folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from server.config import ModelConfig
from server.gguf import GGUFError, architecture, read_metadata
from server.hub.listing import RepoKind, RepoListing, safe_path
from server.model_presets import preset

STAGING = ".downloads"
"""The folder inside the models folder where unfinished downloads wait."""
_SHARD = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")
GGUF_CONTEXT = 8192
"""The context a downloaded GGUF gets without a preset: what it was trained for, at most this."""


def repository_folder(folder: Path, repo_id: str) -> Path:
    return folder.joinpath(*repo_id.split("/"))


def target(folder: Path, listing: RepoListing, kind: RepoKind) -> Path:
    """What the model table will point at: the (first) GGUF file, or the model's folder."""
    base = repository_folder(folder, listing.repo_id)
    return base / safe_path(listing.files[0].path) if kind == "gguf" else base


def place(staging: Path, folder: Path, listing: RepoListing) -> None:
    """Move every downloaded file from ``staging`` to its place in the models folder."""
    base = repository_folder(folder, listing.repo_id)
    for item in listing.files:
        destination = base / safe_path(item.path)
        source = staging / safe_path(item.path)
        if not source.exists() and destination.is_file() and destination.stat().st_size == item.size:
            continue  # moved by an attempt that ended before the model was added
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)


def default_name(listing: RepoListing, kind: RepoKind) -> str:
    """A served name for a model downloaded without a preset: its file's or its repository's name."""
    if kind == "sentence-transformers":
        return listing.repo_id.split("/")[-1].lower()
    stem = listing.files[0].name[: -len(".gguf")]
    return stem.split("-00001-of-")[0].lower()


def model_config(name: str, preset_name: str | None, kind: RepoKind, source: Path) -> ModelConfig:
    """The model-table row for a download: the preset's settings, or an engine's defaults for its kind
    (a GGUF's context from its metadata, a sentence-transformers model's from its own configuration).
    Raises pydantic's ValidationError for a name the table cannot take."""
    if preset_name is not None:
        return preset(preset_name).config(str(source), name=name)
    if kind == "gguf":
        context = 4096
        try:
            trained = architecture(read_metadata(source))["trained_context"]
            context = min(trained, GGUF_CONTEXT) if trained >= 256 else context
        except (GGUFError, OSError):
            pass  # not downloaded yet (the name is being checked), or unreadable: the load will say
        return ModelConfig(
            name=name,
            kind="chat",
            engine="llama.cpp",
            source=str(source),
            n_gpu_layers=-1,
            context_length=context,
        )
    context = 512
    try:
        declared = json.loads((source / "sentence_bert_config.json").read_text(encoding="utf-8"))
        context = max(256, int(declared.get("max_seq_length") or context))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return ModelConfig(
        name=name,
        kind="embedding",
        engine="sentence-transformers",
        source=str(source),
        n_gpu_layers=-1,
        context_length=context,
    )


@dataclass(frozen=True)
class StoredModel:
    """A model in the models folder: a GGUF file (or a split one's first shard), or a model folder."""

    path: Path
    files: tuple[Path, ...]
    size: int
    used_by: tuple[str, ...]
    """The models in the table served from it."""


def _inside(path: str, place: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(place.resolve())
    except (OSError, ValueError):
        return False


def stored(folder: Path, models: Iterable[ModelConfig]) -> list[StoredModel]:
    """What the models folder holds, with the models that use each one."""
    if not folder.is_dir():
        return []
    configs = list(models)
    found: list[StoredModel] = []
    for owner in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != STAGING):
        for repository in sorted(p for p in owner.iterdir() if p.is_dir()):
            if (repository / "modules.json").is_file():
                groups = {repository: sorted(p for p in repository.rglob("*") if p.is_file())}
            else:
                groups = {}
                for gguf in sorted(repository.rglob("*.gguf")):
                    first = gguf.with_name(_SHARD.sub(lambda m: f"-00001-of-{m.group(1)}.gguf", gguf.name))
                    groups.setdefault(first, []).append(gguf)
            for path, files in groups.items():
                users = tuple(m.name for m in configs if m.source and _inside(m.source, path))
                size = sum(f.stat().st_size for f in files)
                found.append(StoredModel(path, tuple(files), size, users))
    return found


def delete(folder: Path, item: StoredModel) -> None:
    """Delete a stored model's files (and folders left empty); refused while a model uses it."""
    if item.used_by:
        raise ValueError(f"{item.path.name} is used by {', '.join(item.used_by)}: remove that model first")
    if not _inside(str(item.path), folder) or STAGING in item.path.relative_to(folder).parts:
        raise ValueError(f"{item.path} is not in the models folder")
    if item.path.is_dir():
        shutil.rmtree(item.path)
    else:
        for path in item.files:
            path.unlink(missing_ok=True)
    emptied = item.path.parent  # the repository's folder and its owner's, once nothing is left in them
    while (
        emptied != folder
        and emptied.is_relative_to(folder)
        and emptied.is_dir()
        and not any(emptied.iterdir())
    ):
        emptied.rmdir()
        emptied = emptied.parent
