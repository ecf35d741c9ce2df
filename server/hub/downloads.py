"""Downloads from Hugging Face into the models folder, and into the model table.

A download is a job (``jobs.py``) worked on by a download process (``process.py``); one thread per
running job follows what the process says. Free space is checked before a job starts or resumes. Every
file is verified against the repository's checksum before anything moves into the models folder; then
the model is added to the table, saved, and loaded. A job that fails keeps what it downloaded and says
why; the table is touched only by a download that finished whole.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from pydantic import ValidationError

from server.engines.manager import ModelManager
from server.engines.supervisor import describe_exit
from server.gpu import Hardware
from server.hub import jobs, library
from server.hub.errors import RETRYABLE, ErrorKind, HubError
from server.hub.jobs import WORKING, Job, JobState
from server.hub.listing import RepoListing, total_size
from server.hub.process import Hub, Transfer
from server.hub.quants import choose, quants, recommend
from server.model_presets import preset_for_repository

log = logging.getLogger(__name__)

FreeSpace = Callable[[Path], int]
SPACE_MARGIN = 64 * 1024 * 1024
"""Room left free beyond the download itself (the database and its log live on the same disk, often)."""
SPEED_WINDOW_S = 8.0


def free_space(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class DownloadStatus:
    """One download as the window and the command line show it."""

    id: str
    repo_id: str
    name: str
    files: tuple[str, ...]
    state: JobState
    done_bytes: int
    total_bytes: int
    speed: float | None
    """Bytes per second over the last few seconds, while downloading."""
    eta_s: float | None
    error_kind: ErrorKind | None
    message: str | None
    target: str
    gated: bool

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0

    @property
    def working(self) -> bool:
        return self.state in WORKING

    @property
    def resumable(self) -> bool:
        return self.state == "paused" or (self.state == "failed" and self.error_kind in RETRYABLE)


def pick(listing: RepoListing, wanted: str | None, hardware: Hardware | None) -> tuple[list[str], str]:
    """The files to download: a sentence-transformers model's folder, or one GGUF quantisation (``wanted``:
    a label such as ``Q4_K_M`` or a file; unset: the one recommended for ``hardware``); and why."""
    kind = listing.kind
    if kind == "sentence-transformers":
        return [f.path for f in listing.directory_files()], "the sentence-transformers model folder"
    if kind != "gguf":
        raise HubError(
            "unsupported",
            f"{listing.repo_id} holds neither GGUF files nor a sentence-transformers model (modules.json)",
        )
    found = quants(listing)
    if wanted:
        chosen = choose(found, wanted)
        return [f.path for f in chosen.files], chosen.label
    recommendation = recommend(found, hardware)
    if recommendation.quant is None:
        raise HubError("unsupported", recommendation.reason)
    return [f.path for f in recommendation.quant.files], recommendation.reason


class _Run:
    """A job and what the service knows of its current attempt."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.bytes: dict[str, int] = job.staged_bytes()
        self.transfer: Transfer | None = None
        self.thread: threading.Thread | None = None
        self.stopping: Literal["pause", "cancel", "close"] | None = None
        self.samples: deque[tuple[float, int]] = deque()
        self.detail: str | None = None

    def done_bytes(self) -> int:
        sizes = {f.path: f.size for f in self.job.listing.files}
        return sum(sizes[p] if p in self.job.verified else min(self.bytes.get(p, 0), sizes[p]) for p in sizes)

    def remaining(self) -> int:
        return max(0, total_size(self.job.listing.files) - self.done_bytes())


class DownloadService:
    """Starts, follows, pauses, resumes and cancels downloads; adds finished ones to the model table."""

    def __init__(
        self,
        folder: Path,
        hub: Hub,
        models: ModelManager,
        save: Callable[[], None],
        *,
        space: FreeSpace = free_space,
        load: bool = True,
    ) -> None:
        """``save`` keeps the model table (``Services.save_models``); ``space`` tells the free bytes where a
        path is; ``load``: load a finished model (off for ``models pull``, whose process serves nothing)."""
        self._folder = folder.resolve()
        self.hub = hub
        self._models = models
        self._save = save
        self._space = space
        self._load = load
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._runs: dict[str, _Run] = {job.id: _Run(job) for job in jobs.load(self._folder)}

    # -- the folder ------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self._folder

    def set_folder(self, folder: Path) -> None:
        """Download to ``folder`` from now on; refused while downloads are unfinished (they stay where they
        began, and would be lost to the next start)."""
        with self._lock:
            if any(run.job.state != "done" for run in self._runs.values()):
                raise ValueError(
                    "finish or cancel the unfinished downloads before changing the models folder"
                )
            self._folder = folder.resolve()
            self._runs = {job.id: _Run(job) for job in jobs.load(self._folder)}

    def stored(self) -> list[library.StoredModel]:
        """The models in the models folder, with the table's models that use each."""
        return library.stored(self._folder, self._models.configs())

    def delete(self, path: Path) -> None:
        """Delete a stored model (refused while a model in the table uses it)."""
        for item in self.stored():
            if item.path == path:
                library.delete(self._folder, item)
                return
        raise ValueError(f"{path} is not a model in {self._folder}")

    # -- looking -----------------------------------------------------------------------------------
    def inspect(self, repo_id: str) -> RepoListing:
        """The repository's files (blocking: a download process asks the Hub)."""
        return self.hub.inspect(repo_id)

    # -- starting ----------------------------------------------------------------------------------
    def start(
        self, listing: RepoListing, paths: list[str], name: str | None = None, preset: str | None = None
    ) -> DownloadStatus:
        """Start downloading ``paths`` of ``listing`` (the same files again: resume that download).

        ``name``: the served name (default: the preset's, else the file's or repository's); ``preset``: the
        settings it is served with (default: the preset whose repository this is). Raises :class:`HubError`
        when the name is taken or the disk cannot hold it, ``ValueError`` for a name the table refuses."""
        kind = listing.kind
        if kind is None:
            raise HubError(
                "unsupported", f"{listing.repo_id} holds neither GGUF files nor a sentence-transformers model"
            )
        if not paths:
            raise ValueError("choose at least one file to download")
        chosen = RepoListing(
            listing.repo_id, listing.revision, listing.gated, tuple(listing.file(p) for p in paths)
        )
        ident = jobs.job_id(listing.repo_id, paths)
        with self._lock:
            if ident in self._runs and self._runs[ident].job.state != "done":
                existing = self._runs[ident]
                if existing.job.state in WORKING:
                    return self._status(existing)
                return self._resume(existing)
            known = preset_for_repository(listing.repo_id)
            if preset is None and known is not None and known.settings["kind"] == _table_kind(kind):
                preset = known.name
            if name is None:
                name = preset or library.default_name(chosen, kind)
            job = Job(id=ident, listing=chosen, kind=kind, name=name, preset=preset, folder=self._folder)
            destination = library.target(self._folder, chosen, kind)
            try:
                library.model_config(name, preset, kind, destination)
            except ValidationError as exc:
                raise ValueError(f"the model cannot be served as {name!r}: {exc.errors()[0]['msg']}") from exc
            self._check_name(job, destination)
            run = _Run(job)
            self._check_space(run)
            self._runs[ident] = run
            return self._spawn(run)

    def _check_name(self, job: Job, destination: Path) -> None:
        for config in self._models.configs():
            if config.name == job.name and Path(config.source) != destination:
                raise HubError(
                    "name_taken", f"a model named {job.name} is already in the table: choose another name"
                )
        for run in self._runs.values():
            if run.job.name == job.name and run.job.id != job.id and run.job.state != "done":
                raise HubError(
                    "name_taken", f"another download will be served as {job.name}: choose another name"
                )

    def _check_space(self, run: _Run) -> None:
        """Refuse a download the disk cannot hold, counting what the other running downloads still need."""
        self._folder.mkdir(parents=True, exist_ok=True)
        needed = run.remaining()
        others = sum(r.remaining() for r in self._runs.values() if r is not run and r.job.state in WORKING)
        free = self._space(self._folder)
        if needed + others + SPACE_MARGIN > free:
            gib = 1024**3
            raise HubError(
                "disk_full",
                f"not enough disk space: {run.job.listing.repo_id} needs {needed / gib:.2f} GiB more"
                + (f" (and other downloads {others / gib:.2f} GiB)" if others else "")
                + f", {free / gib:.2f} GiB are free in {self._folder}. Free some space or choose another "
                "models folder.",
            )

    def _spawn(self, run: _Run) -> DownloadStatus:
        """Start a download process for the job (under the service's lock)."""
        job = run.job
        holder = jobs.lock(job)
        try:
            job.record.parent.mkdir(parents=True, exist_ok=True)
            holder.acquire()
        except Timeout as exc:
            raise HubError(
                "busy", f"{job.listing.repo_id} is being downloaded by another process of this appliance"
            ) from exc
        job.state, job.error_kind, job.message = "downloading", None, None
        run.stopping, run.detail = None, None
        run.bytes = job.staged_bytes()
        run.samples.clear()
        jobs.save(job)
        remaining = RepoListing(
            job.listing.repo_id,
            job.listing.revision,
            job.listing.gated,
            tuple(f for f in job.listing.files if f.path not in job.verified),
        )
        job.staging.mkdir(parents=True, exist_ok=True)
        try:
            run.transfer = self.hub.fetch(remaining, job.staging)
        except BaseException:
            holder.release()
            raise
        run.thread = threading.Thread(
            target=self._follow,
            args=(run, run.transfer, remaining, holder),
            name=f"download:{job.id}",
            daemon=True,
        )
        run.thread.start()
        self._changed.notify_all()
        return self._status(run)

    # -- following ---------------------------------------------------------------------------------
    def _follow(self, run: _Run, transfer: Transfer, listing: RepoListing, holder: FileLock) -> None:
        outcome: HubError | Literal["done"] | None = None
        try:
            for message in transfer.messages():
                with self._lock:
                    self._note(run, listing, message)
                    if message[0] == "done":
                        outcome = "done"
                    elif message[0] == "error":
                        outcome = HubError(message[1], message[2])
                    self._changed.notify_all()
        finally:
            holder.release()
        with self._lock:
            run.transfer = None
            stopping = run.stopping
            job = run.job
            run.bytes = job.staged_bytes()  # what reached the disk (a chunk is counted before it is written)
            if stopping == "cancel":
                jobs.remove(job)
                self._runs.pop(job.id, None)
            elif stopping == "close":
                pass  # left "downloading" on disk: the next start goes on with it
            elif stopping == "pause":
                job.state, run.detail = "paused", None
                jobs.save(job)
            elif isinstance(outcome, HubError):
                self._fail(run, outcome.kind, outcome.message)
            elif outcome is None:
                self._fail(
                    run,
                    "failed",
                    f"the download process ended unexpectedly ({describe_exit(transfer.exitcode)})",
                )
            else:
                job.state, run.detail = "installing", None
                jobs.save(job)
            self._changed.notify_all()
        if outcome == "done" and stopping is None:
            self._install(run)

    def _note(self, run: _Run, listing: RepoListing, message: tuple[object, ...]) -> None:
        kind = message[0]
        if kind in ("progress", "verifying", "verified"):
            item = listing.files[int(message[1])]  # type: ignore[call-overload]
            if kind == "progress":
                run.bytes[item.path] = int(message[2])  # type: ignore[call-overload]
                run.job.state, run.detail = "downloading", item.path
                now = time.monotonic()
                run.samples.append((now, run.done_bytes()))
                while run.samples and now - run.samples[0][0] > SPEED_WINDOW_S:
                    run.samples.popleft()
            elif kind == "verifying":
                run.job.state = "verifying"
                share = int(message[2]) / item.size if item.size else 1.0  # type: ignore[call-overload]
                run.detail = f"checking {item.path} ({share:.0%})"
            else:
                run.job.verified.append(item.path)
                run.job.state = "downloading"
                jobs.save(run.job)

    def _fail(self, run: _Run, kind: ErrorKind, message: str) -> None:
        run.job.state, run.job.error_kind, run.job.message, run.detail = "failed", kind, message, None
        jobs.save(run.job)
        log.warning("download of %s failed: %s", run.job.listing.repo_id, message)

    def _install(self, run: _Run) -> None:
        """Move the verified files into the models folder, add the model to the table, save it, load it."""
        job = run.job
        destination = library.target(job.folder, job.listing, job.kind)
        try:
            library.place(job.staging, job.folder, job.listing)
            config = library.model_config(job.name, job.preset, job.kind, destination)
            with self._lock:
                self._check_name(job, destination)
            if job.name not in {c.name for c in self._models.configs()}:
                self._models.add(config)
                self._save()
        except (HubError, OSError, ValueError) as exc:
            with self._lock:
                kind: ErrorKind = exc.kind if isinstance(exc, HubError) else "failed"
                self._fail(run, kind, f"downloaded to {destination}, but not added to the table: {exc}")
                self._changed.notify_all()
            return
        with self._lock:
            jobs.remove(job)
            job.message = f"added to the model table as {job.name} ({destination})"
            if self._load:
                job.message += "; loading"
            self._changed.notify_all()
        if self._load:
            status = self._models.load(job.name)
            if status.state == "failed":
                job.message = f"added to the model table as {job.name}, but it did not load: {status.error}"
            else:
                job.message = f"added to the model table as {job.name} and loaded ({destination})"
        with self._lock:
            job.state = "done"
            self._changed.notify_all()
        log.info("downloaded %s: %s", job.listing.repo_id, job.message)

    # -- controlling ---------------------------------------------------------------------------------
    def _run(self, ident: str) -> _Run:
        run = self._runs.get(ident)
        if run is None:
            raise KeyError(ident)
        return run

    def pause(self, ident: str) -> DownloadStatus:
        """Stop the download now, keeping what it downloaded."""
        return self._stop(ident, "pause")

    def cancel(self, ident: str) -> None:
        """Stop the download and delete what it downloaded."""
        with self._lock:
            run = self._run(ident)
            if run.job.state == "installing":
                raise ValueError(f"{run.job.name} is being added to the model table")
            if run.transfer is None:
                if run.job.state != "done":
                    jobs.remove(run.job)
                self._runs.pop(ident, None)
                self._changed.notify_all()
                return
        self._stop(ident, "cancel")

    def _stop(self, ident: str, how: Literal["pause", "cancel", "close"]) -> DownloadStatus:
        with self._lock:
            run = self._run(ident)
            transfer, thread = run.transfer, run.thread
            if transfer is None:
                return self._status(run)
            run.stopping = how
        transfer.stop()
        if thread is not None:
            thread.join(30)
        with self._lock:
            return self._status(run)

    def resume(self, ident: str) -> DownloadStatus:
        """Go on with a paused or failed download, with the access token as it is now."""
        with self._lock:
            return self._resume(self._run(ident))

    def _resume(self, run: _Run) -> DownloadStatus:
        if run.job.state in WORKING or run.job.state == "done":
            return self._status(run)
        run.bytes = run.job.staged_bytes()
        self._check_space(run)
        return self._spawn(run)

    def resume_interrupted(self) -> list[DownloadStatus]:
        """Go on with the downloads a previous run was working on when it ended (not the paused ones)."""
        resumed = []
        with self._lock:
            for run in list(self._runs.values()):
                if run.job.state in WORKING and run.transfer is None:
                    try:
                        run.bytes = run.job.staged_bytes()
                        self._check_space(run)
                        resumed.append(self._spawn(run))
                    except HubError as exc:
                        self._fail(run, exc.kind, exc.message)
        return resumed

    def dismiss(self, ident: str) -> None:
        """Forget a finished download."""
        with self._lock:
            run = self._runs.get(ident)
            if run is not None and run.job.state == "done":
                self._runs.pop(ident)
                self._changed.notify_all()

    def close(self) -> None:
        """Stop every running download, leaving each to go on at the next start."""
        for ident in [i for i, run in list(self._runs.items()) if run.transfer is not None]:
            self._stop(ident, "close")

    # -- reading -----------------------------------------------------------------------------------
    def _status(self, run: _Run) -> DownloadStatus:
        job = run.job
        done = run.done_bytes()
        total = total_size(job.listing.files)
        speed = eta = None
        if job.state == "downloading" and len(run.samples) >= 2:
            (t0, b0), (t1, b1) = run.samples[0], run.samples[-1]
            if t1 - t0 >= 0.5:
                speed = max(0.0, (b1 - b0) / (t1 - t0))
                eta = (total - done) / speed if speed > 0 else None
        message = job.message or run.detail
        return DownloadStatus(
            id=job.id,
            repo_id=job.listing.repo_id,
            name=job.name,
            files=tuple(f.path for f in job.listing.files),
            state=job.state,
            done_bytes=done,
            total_bytes=total,
            speed=speed,
            eta_s=eta,
            error_kind=job.error_kind,
            message=message,
            target=str(library.target(job.folder, job.listing, job.kind)),
            gated=job.listing.gated,
        )

    def statuses(self) -> list[DownloadStatus]:
        with self._lock:
            return [self._status(run) for run in sorted(self._runs.values(), key=lambda r: r.job.created)]

    def status(self, ident: str) -> DownloadStatus:
        with self._lock:
            return self._status(self._run(ident))

    def wait(
        self, ident: str, timeout: float | None = None, until: Callable[[DownloadStatus], bool] | None = None
    ) -> DownloadStatus:
        """Block until the download stops working (or ``until`` says so), or ``timeout`` passes."""
        done = until or (lambda s: not s.working)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                run = self._runs.get(ident)
                if run is None:
                    raise KeyError(ident)
                status = self._status(run)
                left = None if deadline is None else deadline - time.monotonic()
                if done(status) or (left is not None and left <= 0):
                    return status
                self._changed.wait(0.5 if left is None else min(left, 0.5))


def _table_kind(kind: str) -> str:
    return "embedding" if kind == "sentence-transformers" else "chat"
