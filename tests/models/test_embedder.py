"""The sentence-transformers embedder on the real MiniLM model: the batch forward pass it calls gives
what ``SentenceTransformer.encode`` gives (exactly in one pass, to float32 rounding in groups), and it
keeps to ``encode`` when it would not."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.config import ModelConfig, default_models
from server.engines.embedder import BATCH, GROUP, SentenceTransformerEmbedder
from server.errors import InvalidRequest

TEXTS = [
    "A man is playing a guitar on stage.",
    "x",
    "The quarterly tax report is due next Tuesday, and the accountant has not yet replied to any email.",
    "Ünïcödé, emoji 🎸 and numbers 1234567890",
]


def embedding_config() -> ModelConfig:
    """The built-in embedding model's entry; the test is skipped where its package is not installed."""
    config = default_models()[1]
    if not config.source:
        pytest.skip("the embedding model's package is not installed")
    return config


@pytest.fixture(scope="module")
def embedder() -> Iterator[SentenceTransformerEmbedder]:
    config = embedding_config()
    loaded = SentenceTransformerEmbedder(config)
    yield loaded
    loaded.close()


def encoded(embedder: SentenceTransformerEmbedder, texts: list[str]) -> Any:
    return np.asarray(embedder._encode(texts, embedder.prompt(None)), dtype=np.float32)


def test_the_forward_pass_is_used_and_matches_encode(embedder: SentenceTransformerEmbedder) -> None:
    assert embedder.direct
    for texts in ([TEXTS[0]], TEXTS, TEXTS[::-1], [TEXTS[2]] * 3 + ["y"] * (BATCH - 3)):
        vectors = embedder.embed(texts).vectors
        assert isinstance(vectors, np.ndarray)
        assert vectors.dtype == np.float32 and vectors.shape == (len(texts), 384)
        if len(texts) <= GROUP:  # one forward pass, as encode's: the same numbers
            np.testing.assert_array_equal(vectors, encoded(embedder, texts))
        else:  # in groups: products over other shapes, the same vectors to float32 rounding
            np.testing.assert_allclose(vectors, encoded(embedder, texts), rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_a_batch_runs_in_groups_of_similar_length_with_the_same_vectors(
    embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert embedder.grouping
    model = embedder._model
    widths: list[tuple[int, int]] = []
    forward = type(model).__call__

    def spy(self: Any, features: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        widths.append(tuple(features["input_ids"].shape))
        return forward(self, features, *args, **kwargs)

    monkeypatch.setattr(type(model), "__call__", spy)
    # Interleaved long and short texts: one long text pads the whole batch; in groups only its own.
    texts = [TEXTS[2] if i % 4 == 0 else f"short {i}" for i in range(BATCH)]
    vectors = embedder.embed(texts).vectors
    assert len(widths) == BATCH // GROUP
    assert widths[0][0] == GROUP and widths[1][1] < widths[0][1]  # the second group: short texts only
    np.testing.assert_allclose(vectors, encoded(embedder, texts), rtol=0, atol=1e-6)
    widths.clear()
    embedder.embed(texts[:GROUP])
    assert len(widths) == 1  # up to a group, one pass


def test_grouping_that_disagrees_with_the_whole_batch_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    config = embedding_config()
    grouped = SentenceTransformerEmbedder._grouped

    def off_by_a_little(self: SentenceTransformerEmbedder, features: dict[str, Any], order: Any) -> Any:
        result = grouped(self, features, order)
        return None if result is None else (result[0] + 1e-3, result[1])

    monkeypatch.setattr(SentenceTransformerEmbedder, "_grouped", off_by_a_little)
    loaded = SentenceTransformerEmbedder(config)
    try:
        assert loaded.direct and not loaded.grouping
        texts = [f"text {i} " + "word " * (i % 9) for i in range(BATCH)]
        np.testing.assert_allclose(loaded.embed(texts).vectors, encoded(loaded, texts), rtol=0, atol=1e-6)
    finally:
        loaded.close()


def test_more_inputs_than_one_batch_go_through_encode(embedder: SentenceTransformerEmbedder) -> None:
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(BATCH + 9)]
    result = embedder.embed(texts)
    np.testing.assert_array_equal(result.vectors, encoded(embedder, texts))


def test_a_forward_pass_that_disagrees_with_encode_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    config = embedding_config()
    run = SentenceTransformerEmbedder._run

    def off_by_a_little(self: SentenceTransformerEmbedder, features: dict[str, Any], order: Any) -> Any:
        return run(self, features, order) + 1e-3

    monkeypatch.setattr(SentenceTransformerEmbedder, "_run", off_by_a_little)
    loaded = SentenceTransformerEmbedder(config)
    try:
        assert not loaded.direct
        np.testing.assert_array_equal(loaded.embed(TEXTS).vectors, encoded(loaded, TEXTS))
    finally:
        loaded.close()


def test_token_counts_come_from_the_batch_and_long_inputs_are_counted_whole(
    embedder: SentenceTransformerEmbedder,
) -> None:
    limit = int(embedder._model.max_seq_length)
    fits, over = "word " * (limit - 2), "word " * (limit + 40)
    assert embedder.count_tokens([fits]) == [limit]
    texts = [*TEXTS, fits]
    assert embedder.embed(texts).tokens == sum(embedder.count_tokens(texts))
    with pytest.raises(InvalidRequest) as refused:
        embedder.embed(["short", over])
    assert refused.value.code == "context_length_exceeded"
    assert f"input[1] has {limit + 42} tokens" in refused.value.message


class _Spy:
    """Counts the calls of a recorded forward pass."""

    def __init__(self, graph: Any) -> None:
        self.graph, self.calls = graph, 0

    def __call__(self, *tensors: Any) -> Any:
        self.calls += 1
        return self.graph(*tensors)


def test_one_input_runs_through_the_recorded_forward_pass_with_the_same_vectors(
    embedder: SentenceTransformerEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert embedder.traced
    single = embedder._single[""]
    spy = _Spy(single._graph)
    monkeypatch.setattr(single, "_graph", spy)
    limit = int(embedder._model.max_seq_length)
    for text in [*TEXTS, "word " * (limit - 2), "a, b; c. " * 9]:
        np.testing.assert_array_equal(embedder.embed([text]).vectors, encoded(embedder, [text]))
    assert spy.calls == len(TEXTS) + 2
    np.testing.assert_array_equal(embedder.embed(TEXTS[:2]).vectors, encoded(embedder, TEXTS[:2]))
    assert spy.calls == len(TEXTS) + 2  # a batch, even of two, takes the ordinary forward pass
    assert np.asarray(embedder.embed([[101, 7592, 2088, 102]]).vectors).shape == (
        1,
        384,
    )  # token ids, decoded first


def test_a_recording_that_disagrees_with_the_forward_pass_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = embedding_config()
    import torch  # noqa: PLC0415  (only with the model's package)

    trace: Callable[..., Any] = torch.jit.trace

    def off_by_a_little(*args: Any, **kwargs: Any) -> Any:
        graph = trace(*args, **kwargs)
        return lambda *tensors: graph(*tensors) + 1e-3

    monkeypatch.setattr(torch.jit, "trace", off_by_a_little)
    loaded = SentenceTransformerEmbedder(config)
    try:
        assert loaded.direct and not loaded.traced
        np.testing.assert_array_equal(loaded.embed([TEXTS[0]]).vectors, encoded(loaded, [TEXTS[0]]))
    finally:
        loaded.close()


def test_the_embedder_never_imports_code_from_the_hub() -> None:
    """transformers imports ``kernels`` (compute kernels fetched from the Hugging Face Hub) whenever it is
    installed, and would use them by default; the embedder loads and embeds without it ever being imported."""
    config = embedding_config()
    # (Asked of the installed distributions: an embedder loaded in this process has hidden the module.)
    assert importlib.metadata.distribution("kernels"), "kernels is not installed: the test shows nothing"
    probe = (
        "import sys\n"
        "from server.config import ModelConfig\n"
        "from server.engines.embedder import SentenceTransformerEmbedder\n"
        f"embedder = SentenceTransformerEmbedder(ModelConfig.model_validate_json({config.model_dump_json()!r}))\n"
        "assert embedder.embed(['hello']).vectors.shape == (1, 384)\n"
        "print(sorted(name for name, module in sys.modules.items() if name.split('.')[0] == 'kernels' and module))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
