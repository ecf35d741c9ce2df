"""Chat with llama.cpp (llama-cpp-python) from a GGUF file, one token at a time.

The model's own chat template (from the GGUF) renders the prompt; generation runs token by token so that
every piece carries its exact token count, a disconnect stops within one token, and the prompt prefix
cached from the previous request is reused (and reported as cached tokens).
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from server.config import ModelConfig
from server.engines import llama_backends
from server.engines.base import LoadError, Message, Piece, Prompt, Sampling, ShouldStop
from server.engines.grammar import JSON_OBJECT_GRAMMAR, SchemaError, json_schema_grammar
from server.engines.stops import StopScanner
from server.errors import InvalidRequest
from server.gpu import estimate, probe

log = logging.getLogger(__name__)


def _import_llama() -> Any:
    """llama-cpp-python, with the backends for this machine registered (see ``llama_backends``)."""
    try:
        import llama_cpp  # noqa: PLC0415  (optional at import time: the GUI must start without it)

        llama_backends.load()
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise LoadError(f"llama-cpp-python is not installed: {exc}") from exc
    except llama_backends.BackendError as exc:
        raise LoadError(str(exc)) from exc
    return llama_cpp


class LlamaChat:
    """A GGUF chat model. ``generate`` runs only on the model's worker thread."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        path = Path(config.source)
        if not config.source or not path.is_file():
            raise LoadError(f"no GGUF file at {config.source or '(unset)'}")
        fit = estimate(config, probe(with_torch=False))
        if fit.memory_short:
            # Refused up front: llama.cpp would try anyway and exhaust the machine or be killed.
            raise LoadError(f"{path.name} will not fit: {fit.memory_short}")
        llama_cpp = _import_llama()
        self._lib = llama_cpp
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=config.context_length,
                n_threads=config.threads,
                n_threads_batch=config.threads,
                n_gpu_layers=config.n_gpu_layers,
                n_batch=512,
                verbose=False,
            )
        except Exception as exc:
            raise LoadError(_explain_load_failure(exc, config)) from exc
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LoadError(f"{path.name} has no chat template in its metadata")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
            add_generation_prompt=True,
        )
        self._vocab = self._llm._model.vocab

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (
            bytes(self._llm._model.token_get_text(token)).decode("utf-8", errors="ignore")
            if isinstance(self._llm._model.token_get_text(token), bytes)
            else str(self._llm._model.token_get_text(token))
        )

    @property
    def context_length(self) -> int:
        return int(self._llm.n_ctx())

    def render(self, messages: Sequence[Message]) -> Prompt:
        turns: list[Any] = [
            {"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})} for m in messages
        ]
        rendered = self._formatter(messages=turns)
        tokens = self._llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return Prompt(tokens=tuple(tokens), text=rendered.prompt)

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse (InvalidRequest) what ``generate`` could not run: a JSON schema it cannot turn into a grammar."""
        self._grammar(sampling)

    def _grammar(self, sampling: Sampling) -> Any:
        if sampling.json_schema is None:
            return None
        try:
            text = json_schema_grammar(sampling.json_schema) if sampling.json_schema else JSON_OBJECT_GRAMMAR
        except SchemaError as exc:
            raise InvalidRequest(
                f"The JSON schema in response_format cannot be used: {str(exc)[:300]}",
                param="response_format",
            ) from exc
        # llama-cpp-python adds the grammar sampler without checking that llama.cpp could parse the grammar,
        # and a grammar it refuses (too many repetitions) crashes the process: try it on its own first.
        trial = self._lib.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
        if not trial:
            raise InvalidRequest(
                "The JSON schema in response_format is too complex for this model's grammar engine.",
                param="response_format",
            )
        self._lib.llama_sampler_free(trial)
        from llama_cpp.llama_grammar import LlamaGrammar  # noqa: PLC0415

        return LlamaGrammar.from_string(text, verbose=False)

    def _logits_processor(self, sampling: Sampling) -> Any:
        if not sampling.logit_bias:
            return None
        import numpy as np  # noqa: PLC0415

        n_vocab = self._llm.n_vocab()
        bias = {t: b for t, b in sampling.logit_bias.items() if 0 <= t < n_vocab}

        def apply(_ids: Any, scores: Any) -> Any:
            for token, value in bias.items():
                scores[token] = -np.inf if value <= -100 else scores[token] + value
            return scores

        return self._lib.LogitsProcessorList([apply])

    def generate(self, prompt: Prompt, sampling: Sampling, should_stop: ShouldStop) -> Iterator[Piece]:
        llm = self._llm
        cached = _common_prefix(llm._input_ids[: llm.n_tokens].tolist(), prompt.tokens)
        if cached >= len(prompt.tokens):
            cached = len(prompt.tokens) - 1  # the last prompt token is always evaluated again
        # The seed outlives the request inside Llama: set it every time, or one seeded request would make
        # every later unseeded one repeat it. LLAMA_DEFAULT_SEED asks llama.cpp for a fresh random seed.
        random_seed = self._lib.LLAMA_DEFAULT_SEED
        llm.set_seed(random_seed if sampling.seed is None else sampling.seed % random_seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        scanner = StopScanner(sampling.stop)
        generated: list[int] = []
        unsent = 0
        finish = "length"
        previous = list(prompt.tokens)
        first = True
        stream = llm.generate(
            list(prompt.tokens),
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0 if sampling.temperature > 0 else 40,
            min_p=0.0,
            repeat_penalty=1.0,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            grammar=self._grammar(sampling),
            logits_processor=self._logits_processor(sampling),
            reset=True,
        )
        try:
            for token in stream:
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                generated.append(token)
                unsent += 1
                text = decoder.decode(llm.detokenize([token], prev_tokens=previous))
                previous.append(token)
                safe = scanner.feed(text)
                if scanner.stopped:
                    finish = "stop"
                    if safe or unsent:
                        yield Piece(safe, unsent, cached_tokens=cached if first else 0)
                        unsent, first = 0, False
                    break
                if safe:
                    yield Piece(safe, unsent, cached_tokens=cached if first else 0)
                    unsent, first = 0, False
                if len(generated) >= sampling.max_tokens or should_stop():
                    break
        finally:
            stream.close()
        tail = scanner.flush() + decoder.decode(b"", final=True)
        yield Piece(tail, unsent, finish_reason=finish, cached_tokens=cached if first else 0)  # type: ignore[arg-type]

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _explain_load_failure(exc: BaseException, config: ModelConfig) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "memory" in lowered or "alloc" in lowered or "oom" in lowered:
        return (
            f"out of memory loading {Path(config.source).name}: try fewer GPU layers "
            f"(now {config.n_gpu_layers}) or a smaller context (now {config.context_length}) — {text}"
        )
    return f"cannot load {Path(config.source).name}: {text}"
