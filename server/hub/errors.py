"""Why a download failed, in words the operator can act on."""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal[
    "network",
    "gated",
    "unauthorized",
    "not_found",
    "disk_full",
    "checksum",
    "unsupported",
    "name_taken",
    "busy",
    "failed",
]
"""``network``: the endpoint cannot be reached. ``gated``: the repository needs an access token (401) or the
token's account has not accepted its licence (403). ``unauthorized``: the token was refused. ``not_found``:
no such repository, revision or file (or a private one). ``disk_full``: not enough space, found before
starting or while writing. ``checksum``: a file's SHA-256 differs from the repository's. ``unsupported``:
neither a GGUF nor a sentence-transformers repository. ``name_taken``: the served name is in use.
``busy``: the download runs in another process of this appliance. ``failed``: anything else."""

RETRYABLE: frozenset[ErrorKind] = frozenset(
    {"network", "gated", "unauthorized", "disk_full", "checksum", "failed"}
)
"""Failures a later attempt can get past (with a token, more space, a network): the job is kept."""


class HubError(Exception):
    """A download or a look-up that failed; ``kind`` says why, the message what to do."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
