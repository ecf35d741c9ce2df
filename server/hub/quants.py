"""A GGUF repository's quantisations (Q4_K_M, Q8_0, …), each one file or a set of shards, and which one
suits this machine.

The recommendation follows the fit estimate's rule (``server.gpu``): a model whose every layer is on the
GPU needs its weights plus the KV cache and compute buffers in GPU memory; without GPU offload, in RAM.
Before the file is here its metadata is not, so the cache is reckoned from the size: 15 % of the weights,
at least 1 GiB (Qwen3-30B-A3B's cache for a 32K context is about 3 GiB next to 18 GB of Q4_K_M weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from server.gpu import GIB, Hardware, weights_budget
from server.hub.errors import HubError
from server.hub.listing import RepoFile, RepoListing, total_size

_QUANT = re.compile(
    r"(?i)(?:^|[-_.])(I?Q[1-8](?:_[0-9A-Z]{1,4}){0,2}|T?Q[1-2]_0|[BM]?F(?:P)?(?:16|32)|MXFP4(?:_MOE)?)(?=[-_.]|$)"
)
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")
FLOAT = ("F16", "BF16", "F32", "FP16", "FP32")
"""Unquantised weights: twice the size of Q8_0 for no quality a listener hears; never recommended."""
CACHE_SHARE = 0.15
CACHE_MIN = 1 * GIB
USUAL = "Q4_K_M"
"""The usual balance of size and quality, recommended when the hardware is not known."""


@dataclass(frozen=True)
class Quant:
    """One quantisation of the model: its file, or its shards in order."""

    label: str
    files: tuple[RepoFile, ...]

    @property
    def size(self) -> int:
        return total_size(self.files)

    @property
    def first(self) -> RepoFile:
        """The file llama.cpp opens (it finds the other shards beside it)."""
        return self.files[0]

    @property
    def needs(self) -> int:
        """Memory for the weights, the KV cache and the compute buffers, reckoned from the size."""
        return self.size + max(CACHE_MIN, int(self.size * CACHE_SHARE))


@dataclass(frozen=True)
class Recommendation:
    quant: Quant | None
    reason: str


def _label(stem: str) -> str | None:
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


def quants(listing: RepoListing) -> list[Quant]:
    """The repository's GGUF models, smallest first (multimodal projectors left out)."""
    groups: dict[str, list[tuple[int, RepoFile]]] = {}
    labels: dict[str, str] = {}
    for item in listing.files:
        if not item.path.lower().endswith(".gguf") or item.name.lower().startswith("mmproj"):
            continue
        pure = PurePosixPath(item.path)
        stem = pure.name[: -len(".gguf")]
        shard = _SHARD.search(stem)
        base = stem[: shard.start()] if shard else stem
        key = str(pure.parent / base)
        groups.setdefault(key, []).append((int(shard.group(1)) if shard else 1, item))
        labels[key] = _label(base) or base
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    found = [
        Quant(
            label=labels[key] if counts[labels[key]] == 1 else key,
            files=tuple(item for _, item in sorted(members, key=lambda pair: pair[0])),
        )
        for key, members in groups.items()
    ]
    return sorted(found, key=lambda q: (q.size, q.label))


def choose(found: list[Quant], wanted: str) -> Quant:
    """The quantisation named ``wanted`` (``Q4_K_M``, any case) or holding the file ``wanted``."""
    for quant in found:
        if quant.label.lower() == wanted.strip().lower() or any(f.path == wanted for f in quant.files):
            return quant
    offered = ", ".join(q.label for q in found) or "none"
    raise HubError("not_found", f"no quantisation {wanted!r} in this repository (it has: {offered})")


def recommend(found: list[Quant], hardware: Hardware | None) -> Recommendation:
    """The best quantisation that fits this machine: the largest (the most faithful) whose weights and
    cache fit where llama.cpp will keep them, unquantised ones aside."""
    candidates = [q for q in found if q.label not in FLOAT] or found
    if not candidates:
        return Recommendation(None, "this repository holds no GGUF model")
    if hardware is None:
        usual = next((q for q in candidates if q.label == USUAL), candidates[len(candidates) // 2])
        return Recommendation(usual, f"{usual.label}: the usual balance of size and quality")
    budget, where = weights_budget(hardware)
    if budget is None:
        usual = next((q for q in candidates if q.label == USUAL), candidates[len(candidates) // 2])
        return Recommendation(usual, f"{usual.label}: the memory is not known; the usual balance")
    fitting = [q for q in candidates if q.needs <= budget]
    if fitting:
        best = fitting[-1]
        return Recommendation(
            best,
            f"{best.label}: the largest that fits in {budget / GIB:.1f} GiB of {where} "
            f"(about {best.needs / GIB:.1f} GiB with its cache)",
        )
    smallest = candidates[0]
    return Recommendation(
        smallest,
        f"{smallest.label}, the smallest: none fits in {budget / GIB:.1f} GiB of {where} "
        f"(it needs about {smallest.needs / GIB:.1f} GiB); offload fewer layers or use a smaller context",
    )
