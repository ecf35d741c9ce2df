"""Continuous batching: several requests decoded together in one llama.cpp context, as llama-server does.

The context holds ``slots`` sequences, each with its own region of the KV cache (``context_length`` tokens).
Each step builds one ``llama_batch``: the next token of every sequence that is generating, then as many prompt
tokens of newly arrived requests as the batch has room for, so a long prompt is evaluated in chunks between
the running streams' steps instead of pausing them for its whole length. One ``llama_decode`` runs the step;
then each sequence that produced logits samples its next token with its own sampler chain (temperature,
top-p, penalties, logit bias, grammar, seed). A request joins at the next step and leaves at once when it
finishes or is cancelled; its slot keeps its tokens in the KV cache, and a later request goes to the free slot
whose cached tokens share the longest prefix with its prompt, so the next turn of a conversation evaluates
only its new tokens; among slots that would save about as much, the one beside the running requests, which
llama.cpp then decodes in one pass.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.engines.base import EngineFailureError, Event, FinishReason, Piece, Prompt, Sampling, TokenLogprob
from server.engines.stops import StopScanner

PENALTY_WINDOW = 64
"""Tokens back that the presence and frequency penalties look at (llama-cpp-python's default)."""
RUN_COST_TOKENS = 8
"""How many more cached tokens a free slot must offer to be chosen over one that keeps the running requests
together. Each slot has its own KV stream, and llama.cpp decodes together only sequences whose ids follow one
another (its ``split_equal`` for streams): every run of consecutive busy slots is a decode of its own, a pass
over all the weights, at every step. Four requests in slots 1, 3, 5 and 7 took 47–49 ms a step (SmolLM2-135M,
one thread of a 2-core AMD EPYC) where slots 0–3 took 39–41 ms; on a GPU, where a step's cost is reading the
weights, four runs cost nearly four times one. Prompts that share only a template's opening differ from
every slot's cache by a token or two, and go beside the running ones; a conversation's next turn, whose
history is its slot's cache, still finds its slot."""


@dataclass
class _Request:
    request_id: str
    prompt: tuple[int, ...]
    sampling: Sampling
    grammar: tuple[str, str] | None
    """The grammar's text and root rule, if the output is constrained."""


@dataclass
class _Slot:
    """One sequence of the context: its cached tokens, and the request it runs (if any)."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    """What the KV cache holds for this sequence, in order."""
    used_at: float = 0.0
    request: _Request | None = None
    pending: list[int] = field(default_factory=list)
    """Prompt tokens still to evaluate."""
    sampler: Any = None
    decoder: Any = None
    scanner: StopScanner | None = None
    generated: int = 0
    unsent: int = 0
    cached: int = 0
    first: bool = True
    cancelled: bool = False
    logits_index: int = -1
    admitted_at: float = 0.0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """Log probabilities of the tokens generated since the last piece (when the request asked)."""


class Scheduler:
    """The slots of one context and the step that advances them all. Used by one thread only."""

    def __init__(self, lib: Any, ctx: Any, vocab: Any, slots: int, n_batch: int, context_length: int) -> None:
        self._lib = lib
        self._ctx = ctx
        self._vocab = vocab
        self._memory = lib.llama_get_memory(ctx)
        self._n_batch = n_batch
        self.context_length = context_length
        self.slots = [_Slot(seq) for seq in range(slots)]
        self._waiting: deque[_Request] = deque()
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._text = ctypes.create_string_buffer(256)
        self._n_vocab = lib.llama_vocab_n_tokens(vocab)
        self._order = 0.0
        self._cancelled_before_start: list[str] = []

    # -- requests ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._waiting) or any(slot.request is not None for slot in self.slots)

    def progress(self) -> dict[str, tuple[int, int]]:
        """Each running request's tokens generated so far and prompt tokens still to evaluate."""
        return {
            slot.request.request_id: (slot.generated, len(slot.pending))
            for slot in self.slots
            if slot.request is not None
        }

    def placement(self) -> dict[str, int]:
        """The slot (sequence id) each running request holds."""
        return {slot.request.request_id: slot.seq for slot in self.slots if slot.request is not None}

    def start(
        self, request_id: str, prompt: Prompt, sampling: Sampling, grammar: tuple[str, str] | None
    ) -> None:
        """Queue a request; it joins a slot at the next step that has one free."""
        if not prompt.tokens:
            raise EngineFailureError("the prompt is empty")
        self._waiting.append(_Request(request_id, prompt.tokens, sampling, grammar))

    def cancel(self, request_id: str) -> None:
        """Stop a request at the next step (its last piece then carries what it had not yet sent)."""
        for request in self._waiting:
            if request.request_id == request_id:
                self._waiting.remove(request)
                self._cancelled_before_start.append(request_id)
                return
        for slot in self.slots:
            if slot.request is not None and slot.request.request_id == request_id:
                slot.cancelled = True

    def _admit(self) -> list[Event]:
        """Requests waiting go to free slots: the one whose cache shares the longest prefix with the prompt."""
        events: list[Event] = []
        while self._waiting:
            free = [slot for slot in self.slots if slot.request is None]
            if not free:
                break
            request = self._waiting.popleft()
            busy = {s.seq for s in self.slots if s.request is not None}
            slot = max(free, key=lambda s: (_fit(s, request.prompt, busy), -s.used_at))
            try:
                self._begin(slot, request)
            except EngineFailureError as exc:
                events.append((request.request_id, exc))
        return events

    def _begin(self, slot: _Slot, request: _Request) -> None:
        keep = _common_prefix(slot.tokens, request.prompt)
        if keep >= len(request.prompt):
            keep = len(request.prompt) - 1  # the last prompt token is evaluated again, for its logits
        sampler = self._sampler(request)
        self._lib.llama_memory_seq_rm(self._memory, slot.seq, keep, -1)
        del slot.tokens[keep:]
        slot.request = request
        slot.pending = list(request.prompt[keep:])
        slot.sampler = sampler
        slot.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        slot.scanner = StopScanner(request.sampling.stop)
        slot.generated = slot.unsent = 0
        slot.cached = keep
        slot.first = True
        slot.cancelled = False
        slot.admitted_at = self._tick()

    def _sampler(self, request: _Request) -> Any:
        lib, sampling = self._lib, request.sampling
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib.llama_sampler_chain_init(params)
        if sampling.logit_bias:
            valid = [(t, b) for t, b in sampling.logit_bias.items() if 0 <= t < self._n_vocab]
            biases = (lib.llama_logit_bias * len(valid))()
            for i, (token, bias) in enumerate(valid):
                biases[i].token = token
                biases[i].bias = -float("inf") if bias <= -100 else bias
            lib.llama_sampler_chain_add(
                chain, lib.llama_sampler_init_logit_bias(self._n_vocab, len(valid), biases)
            )
        if sampling.presence_penalty or sampling.frequency_penalty:
            lib.llama_sampler_chain_add(
                chain,
                lib.llama_sampler_init_penalties(
                    PENALTY_WINDOW, 1.0, sampling.frequency_penalty, sampling.presence_penalty
                ),
            )
        if request.grammar is not None:
            text, root = request.grammar
            grammar = lib.llama_sampler_init_grammar(self._vocab, text.encode(), root.encode())
            if not grammar:
                lib.llama_sampler_free(chain)
                raise EngineFailureError("llama.cpp could not use the output's grammar")
            lib.llama_sampler_chain_add(chain, grammar)
        if sampling.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            # In llama.cpp's own order: top-k, top-p, min-p, then the temperature.
            if sampling.top_k > 0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(sampling.top_k))
            if sampling.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(sampling.min_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
            seed = lib.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed % lib.LLAMA_DEFAULT_SEED
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    # -- the step ---------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        """Advance every running request by one decode; what each produced (a piece whose
        ``finish_reason`` is set ends its request; an error ends it too)."""
        events = self._drop_cancelled_waiting()
        events += self._finish_cancelled()
        events += self._admit()
        batch, n = self._batch, 0
        decoding = [s for s in self.slots if s.request is not None and not s.pending]
        for slot in decoding:
            n = self._add(n, slot.tokens[-1], len(slot.tokens) - 1, slot.seq, True)
            slot.logits_index = n - 1
        room = self._n_batch - n
        # Prompts in the order their requests arrived, as much of each as the batch has room for.
        for slot in sorted(
            (s for s in self.slots if s.request is not None and s.pending), key=lambda s: s.admitted_at
        ):
            if room <= 0:
                slot.logits_index = -1
                continue
            chunk, slot.pending = slot.pending[:room], slot.pending[room:]
            for index, token in enumerate(chunk):
                last = not slot.pending and index == len(chunk) - 1
                n = self._add(n, token, len(slot.tokens), slot.seq, last)
                slot.tokens.append(token)
            slot.logits_index = n - 1 if not slot.pending else -1
            room -= len(chunk)
        if n == 0:
            return events
        batch.n_tokens = n
        status = self._lib.llama_decode(self._ctx, batch)
        if status != 0:
            return events + self._fail_running(f"llama_decode failed (status {status})")
        for slot in self.slots:
            if slot.request is not None and slot.logits_index >= 0 and not slot.pending:
                events += self._sample(slot)
        return events

    def _tick(self) -> float:
        self._order = max(self._order + 1e-6, time.monotonic())
        return self._order

    def _add(self, n: int, token: int, pos: int, seq: int, logits: bool) -> int:
        batch = self._batch
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq
        batch.logits[n] = logits
        return n + 1

    def _sample(self, slot: _Slot) -> list[Event]:
        request = slot.request
        assert request is not None and slot.scanner is not None
        token = self._lib.llama_sampler_sample(slot.sampler, self._ctx, slot.logits_index)
        slot.used_at = self._tick()
        if request.sampling.logprobs is not None:
            slot.logprobs.append(self._logprob(slot.logits_index, token, request.sampling.logprobs))
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return [self._end(slot, "stop")]
        slot.tokens.append(token)  # evaluated at the next step (its KV entry is written then)
        slot.generated += 1
        slot.unsent += 1
        text = slot.decoder.decode(self._token_bytes(token))
        safe = slot.scanner.feed(text)
        events: list[Event] = []
        if slot.scanner.stopped:
            if safe or slot.unsent:
                events.append((request.request_id, self._piece(slot, safe)))
            return events + [self._end(slot, "stop")]
        if safe:
            events.append((request.request_id, self._piece(slot, safe)))
        if slot.generated >= request.sampling.max_tokens or len(slot.tokens) >= self.context_length:
            events.append(self._end(slot, "length"))
        return events

    def _piece(self, slot: _Slot, text: str, finish: FinishReason | None = None) -> Piece:
        piece = Piece(
            text,
            slot.unsent,
            finish_reason=finish,
            cached_tokens=slot.cached if slot.first else 0,
            logprobs=tuple(slot.logprobs),
        )
        slot.unsent, slot.first = 0, False
        slot.logprobs.clear()
        return piece

    def _logprob(self, index: int, token: int, alternatives: int) -> TokenLogprob:
        """The model's log probability of ``token`` at batch position ``index`` (before any sampler changed
        the distribution, as OpenAI reports them), and the likeliest ``alternatives``."""
        row = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
        peak = float(row.max())
        total = peak + math.log(float(np.exp(row - peak).sum()))

        def entry(tok: int) -> tuple[str, tuple[int, ...], float]:
            raw = self._token_bytes(tok)
            return raw.decode("utf-8", errors="replace"), tuple(raw), float(row[tok]) - total

        top: tuple[tuple[str, tuple[int, ...], float], ...] = ()
        if alternatives:
            best = np.argpartition(-row, alternatives)[:alternatives]
            top = tuple(entry(int(t)) for t in best[np.argsort(-row[best])])
        text, raw, logprob = entry(token)
        return TokenLogprob(text, raw, logprob, top)

    def _end(self, slot: _Slot, finish: FinishReason) -> Event:
        """The request's last piece (what was held back, and the tokens not yet counted); the slot is free."""
        request = slot.request
        assert request is not None and slot.scanner is not None
        tail = slot.scanner.flush() + slot.decoder.decode(b"", final=True)
        piece = self._piece(slot, tail, finish)
        self._release(slot)
        return request.request_id, piece

    def _release(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            self._lib.llama_sampler_free(slot.sampler)
        if slot.pending:
            # A prompt cut short: its cache holds only what was evaluated.
            slot.pending = []
        # The last sampled token was never evaluated: the cache ends before it.
        del slot.tokens[self._lib.llama_memory_seq_pos_max(self._memory, slot.seq) + 1 :]
        slot.request, slot.sampler, slot.decoder, slot.scanner = None, None, None, None
        slot.used_at = self._tick()

    def _finish_cancelled(self) -> list[Event]:
        return [
            self._end(slot, "length") for slot in self.slots if slot.request is not None and slot.cancelled
        ]

    def _drop_cancelled_waiting(self) -> list[Event]:
        dropped, self._cancelled_before_start = self._cancelled_before_start, []
        return [(request_id, Piece("", 0, finish_reason="length")) for request_id in dropped]

    def _fail_running(self, reason: str) -> list[Event]:
        events: list[Event] = []
        for slot in self.slots:
            if slot.request is not None:
                events.append((slot.request.request_id, EngineFailureError(reason)))
                self._lib.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                slot.tokens.clear()
                slot.request = None  # the cache was cleared above: nothing to keep
                if slot.sampler is not None:
                    self._lib.llama_sampler_free(slot.sampler)
                slot.sampler = None
        return events

    def _token_bytes(self, token: int) -> bytes:
        size = self._lib.llama_token_to_piece(self._vocab, token, self._text, len(self._text), 0, False)
        if size < 0:
            self._text = ctypes.create_string_buffer(-size)
            size = self._lib.llama_token_to_piece(self._vocab, token, self._text, -size, 0, False)
        return bytes(self._text.raw[:size])

    def close(self) -> None:
        for slot in self.slots:
            if slot.sampler is not None:
                self._lib.llama_sampler_free(slot.sampler)
                slot.sampler = None
        self._lib.llama_batch_free(self._batch)


def _fit(slot: _Slot, prompt: tuple[int, ...], busy: set[int]) -> int:
    """How good a free slot is for ``prompt`` beside the ``busy`` ones: the cached tokens it saves, less
    ``RUN_COST_TOKENS`` for each run of consecutive busy slots it adds (a slot beside a running one adds none;
    one between two running ones joins them). The caller breaks ties by the least recently used slot."""
    added_runs = 1 - ((slot.seq - 1) in busy) - ((slot.seq + 1) in busy)
    return _common_prefix(slot.tokens, prompt) - RUN_COST_TOKENS * added_runs


def _common_prefix(a: list[int] | tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
