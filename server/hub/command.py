"""``ai-service-platform models …``: download models from Hugging Face on a machine without the window.

``models pull REPO`` lists the repository, picks what to download (a sentence-transformers model's folder,
or one GGUF quantisation: ``--quant``, ``--file``, or the one recommended for this machine), downloads
it with its progress on standard error, and adds it to the model table; the server loads it at its next
start. Interrupted (Ctrl+C, a lost connection, a restart), the same command goes on where it stopped.
``models list-files REPO`` shows what a repository offers; ``models token set|clear|show`` keeps the
access token gated repositories need.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time

from server import gpu
from server.config import Settings
from server.hub.downloads import DownloadService, DownloadStatus, pick
from server.hub.errors import HubError
from server.hub.listing import RepoListing, parse_repo_id
from server.hub.progress import describe, size
from server.hub.quants import quants, recommend
from server.model_presets import PRESETS
from server.services import Services

PROGRESS_EVERY_S = 5.0
"""How often a progress line is printed when standard error is not a terminal (a log file)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="download models from Hugging Face").add_subparsers(
        dest="models_command", metavar="ACTION"
    )
    models.required = True
    presets = ", ".join(p.name for p in PRESETS if p.repository)
    pull = models.add_parser(
        "pull", help="download a model from Hugging Face and add it to the model table (resumes if run again)"
    )
    pull.add_argument(
        "repo", help=f"a repository id such as Qwen/Qwen3-30B-A3B-GGUF, or a preset ({presets})"
    )
    which = pull.add_mutually_exclusive_group()
    which.add_argument("--file", help="the GGUF file to download")
    which.add_argument(
        "--quant", help="the quantisation, such as Q4_K_M (default: the one this machine suits)"
    )
    pull.add_argument("--name", help="the name clients use (default: the preset's, or the file's)")
    listing = models.add_parser("list-files", help="list a repository's files, sizes and quantisations")
    listing.add_argument("repo", help=f"a repository id, or a preset ({presets})")
    listing.add_argument("--json", action="store_true", help="print JSON")
    token = models.add_parser("token", help="the Hugging Face access token for gated models")
    token.add_argument(
        "action",
        choices=("set", "clear", "show"),
        help="set (read from standard input), clear, or show where it is",
    )


def _repository(text: str) -> str:
    for item in PRESETS:
        if item.repository and text.strip() == item.name:
            return item.repository
    return parse_repo_id(text)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a ``models`` action; the exit status."""
    # Nothing is loaded: this process only downloads. The server loads the model at its next start.
    services = Services.open(settings.model_copy(update={"load_models": False}))
    try:
        if args.models_command == "token":
            return _token(args.action, services)
        listing = services.downloads.inspect(_repository(args.repo))
        if args.models_command == "list-files":
            return _list(listing, args.json)
        return _pull(services.downloads, listing, args)
    except HubError as exc:
        sys.stderr.write(f"ai-service-platform: {exc.message}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    finally:
        services.close()


def _token(action: str, services: Services) -> int:
    tokens = services.tokens
    if action == "clear":
        tokens.clear()
        sys.stderr.write("the access token is forgotten\n")
    elif action == "show":
        source = tokens.source
        sys.stdout.write(f"an access token is kept in {source}\n" if source else "no access token is kept\n")
    else:
        given = getpass.getpass("Hugging Face access token: ") if sys.stdin.isatty() else sys.stdin.readline()
        place = tokens.set(given)
        sys.stderr.write(f"the access token is kept in {place}\n")
    return 0


def _list(listing: RepoListing, as_json: bool) -> int:
    hardware = gpu.probe(with_torch=False) if listing.kind == "gguf" else None
    found = quants(listing) if listing.kind == "gguf" else []
    advice = recommend(found, hardware) if found else None
    if as_json:
        data = listing.as_dict() | {
            "kind": listing.kind,
            "quantisations": [
                {"label": q.label, "size": q.size, "files": [f.path for f in q.files]} for q in found
            ],
            "recommended": advice.quant.label if advice and advice.quant else None,
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    sys.stdout.write(
        f"{listing.repo_id} at {listing.revision[:12]} ({listing.kind or 'not a model this server runs'})"
    )
    sys.stdout.write(", gated: needs an access token\n" if listing.gated else "\n")
    if found:
        sys.stdout.write(f"{'QUANTISATION':<24} {'SIZE':>12}  FILES\n")
        for quant in found:
            mark = "  (recommended)" if advice and advice.quant == quant else ""
            sys.stdout.write(f"{quant.label:<24} {size(quant.size):>12}  {len(quant.files)}{mark}\n")
        if advice:
            sys.stdout.write(f"recommended: {advice.reason}\n")
        return 0
    for item in listing.directory_files() if listing.kind == "sentence-transformers" else listing.files:
        sys.stdout.write(f"{item.path:<60} {size(item.size):>12}\n")
    return 0


def _pull(downloads: DownloadService, listing: RepoListing, args: argparse.Namespace) -> int:
    wanted = args.file or args.quant
    hardware = gpu.probe(with_torch=False) if listing.kind == "gguf" and not wanted else None
    paths, why = pick(listing, wanted, hardware)
    total = sum(listing.file(p).size for p in paths)
    sys.stderr.write(
        f"{listing.repo_id}: {len(paths)} file{'s' if len(paths) > 1 else ''}, {size(total)}, into "
        f"{downloads.folder}\n  {why}\n"
    )
    status = downloads.start(listing, paths, name=args.name)
    try:
        status = _follow(downloads, status)
    except KeyboardInterrupt:
        status = downloads.pause(status.id)
        sys.stderr.write(f"\npaused at {status.fraction:.0%}: run the same command again to go on\n")
        return 130
    if status.state != "done":
        sys.stderr.write(f"ai-service-platform: {status.message}\n")
        return 1
    sys.stderr.write(f"{status.message}; the server loads it at its next start\n")
    sys.stdout.write(status.name + "\n")
    return 0


def _follow(downloads: DownloadService, status: DownloadStatus) -> DownloadStatus:
    """Print the download's progress until it ends; its last status."""
    live = sys.stderr.isatty()
    printed = 0.0
    while status.working:
        now = time.monotonic()
        if live:
            sys.stderr.write("\r\033[K" + describe(status))
            sys.stderr.flush()
        elif now - printed >= PROGRESS_EVERY_S:
            printed = now
            sys.stderr.write(describe(status) + "\n")
        status = downloads.wait(status.id, timeout=0.5 if live else PROGRESS_EVERY_S)
    if live:
        sys.stderr.write("\r\033[K")
    return status
