"""Whether llama.cpp's own grammar engine lets a model write a text: the text is tokenized with the embedded
model's vocabulary and fed to llama.cpp's grammar sampler token by token, then the end of text, exactly as
generation would. A test can then pin what a grammar accepts and refuses, not only how it is written."""

from __future__ import annotations

import ctypes
import math
from typing import Any

from server.config import default_models
from server.engines import llama_backends


class GrammarCheck:
    """llama.cpp's grammar sampler over the SmolLM2 vocabulary (loaded without its weights)."""

    def __init__(self) -> None:
        import llama_cpp  # noqa: PLC0415  (the tests that need it load it; others never import it)

        llama_backends.load()
        self._lib: Any = llama_cpp
        source = default_models()[0].source
        self._llm: Any = llama_cpp.Llama(model_path=source, vocab_only=True, verbose=False)
        self._vocab = self._llm._model.vocab
        self._eos = self._llm.token_eos()

    def parses(self, grammar: str) -> bool:
        """Whether llama.cpp takes the grammar (its parser refuses, say, left recursion)."""
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if sampler:
            self._lib.llama_sampler_free(sampler)
        return bool(sampler)

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether the grammar lets a model write exactly ``text`` and then stop."""
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        assert sampler, f"llama.cpp refused the grammar:\n{grammar}"
        try:
            tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            for token in [*tokens, self._eos]:
                if not self._allowed(sampler, token):
                    return False
                if token != self._eos:
                    # only after the check: accepting a token the grammar refuses aborts in llama.cpp
                    self._lib.llama_sampler_accept(sampler, token)
            return True
        finally:
            self._lib.llama_sampler_free(sampler)

    def _allowed(self, sampler: Any, token: int) -> bool:
        lib = self._lib
        data = (lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0))
        candidates = lib.llama_token_data_array(data, 1, -1, False)
        lib.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return not math.isinf(data[0].logit)

    def close(self) -> None:
        self._llm.close()
