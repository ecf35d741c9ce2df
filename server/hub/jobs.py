"""Downloads kept on disk, so that they survive closing the window and a restart: each job is a JSON
file in ``<models folder>/.downloads/`` beside a folder with its partial files.

A job's file says what is being downloaded (the repository, its commit, the chosen files with their
sizes and checksums, the served name), which files are already verified, and where the job stands:
``downloading`` (or ``verifying``, ``installing``) when a process was working on it, so a job found in
that state after a restart was interrupted and goes on by itself; ``paused`` and ``failed`` wait for
the operator. The access token is never in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from server.hub.errors import ErrorKind
from server.hub.library import STAGING
from server.hub.listing import RepoKind, RepoListing, safe_path

log = logging.getLogger(__name__)

JobState = Literal["downloading", "verifying", "installing", "paused", "failed", "done"]
WORKING: frozenset[JobState] = frozenset({"downloading", "verifying", "installing"})


def job_id(repo_id: str, paths: list[str] | tuple[str, ...]) -> str:
    """The same repository and files make the same job: asking again resumes it."""
    key = repo_id.lower() + "\n" + "\n".join(sorted(paths))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Job:
    id: str
    listing: RepoListing
    """The repository at its commit, with only the chosen files."""
    kind: RepoKind
    name: str
    """The name the model is served under once it is downloaded."""
    preset: str | None
    folder: Path
    """The models folder the download goes to."""
    state: JobState = "downloading"
    error_kind: ErrorKind | None = None
    message: str | None = None
    verified: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def staging(self) -> Path:
        return self.folder / STAGING / self.id

    @property
    def record(self) -> Path:
        return self.folder / STAGING / f"{self.id}.json"

    def staged_bytes(self) -> dict[str, int]:
        """The size of each file downloaded so far (whole or partial)."""
        sizes = {}
        for item in self.listing.files:
            with contextlib.suppress(OSError):
                sizes[item.path] = (self.staging / safe_path(item.path)).stat().st_size
        return sizes

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "listing": self.listing.as_dict(),
            "kind": self.kind,
            "name": self.name,
            "preset": self.preset,
            "state": self.state,
            "error_kind": self.error_kind,
            "message": self.message,
            "verified": self.verified,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path) -> Job:
        return cls(
            id=str(data["id"]),
            listing=RepoListing.from_dict(data["listing"]),
            kind=data["kind"],
            name=str(data["name"]),
            preset=data.get("preset"),
            folder=folder,
            state=data["state"],
            error_kind=data.get("error_kind"),
            message=data.get("message"),
            verified=list(data.get("verified") or []),
            created=float(data.get("created") or time.time()),
        )


def save(job: Job) -> None:
    """Write the job's file whole or not at all."""
    job.record.parent.mkdir(parents=True, exist_ok=True)
    partial = job.record.with_suffix(".json.tmp")
    partial.write_text(json.dumps(job.as_dict(), indent=1), encoding="utf-8")
    os.replace(partial, job.record)


def remove(job: Job) -> None:
    """Delete the job's file and everything it downloaded."""
    job.record.unlink(missing_ok=True)
    shutil.rmtree(job.staging, ignore_errors=True)
    lock_file(job).unlink(missing_ok=True)


def lock_file(job: Job) -> Path:
    return job.folder / STAGING / f"{job.id}.lock"


def lock(job: Job) -> FileLock:
    """Held while a process of this appliance works on the job (the window and ``models pull`` share the
    folder)."""
    return FileLock(lock_file(job), timeout=0, thread_local=False)  # taken by one thread, released by another


def load(folder: Path) -> list[Job]:
    """The jobs kept in the models folder, oldest first (an unreadable one is reported and left)."""
    found = []
    for path in sorted((folder / STAGING).glob("*.json")):
        try:
            found.append(Job.from_dict(json.loads(path.read_text(encoding="utf-8")), folder))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the download record %s: %s", path, exc)
    return sorted(found, key=lambda job: job.created)
