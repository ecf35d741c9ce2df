"""Embeddings with sentence-transformers, from a model directory on disk (never a hub)."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.config import InputType, ModelConfig
from server.engines.base import Embeddings, LoadError
from server.errors import InvalidRequest
from server.tuning import apply_to_engine

BATCH = 32
"""Texts per call of ``encode``, as it batches them by default."""
BLOCKED_MODULES = ("kernels",)
"""Packages the embedder must never import, though transformers would: ``kernels`` fetches compute kernels
from the Hugging Face Hub and runs them (transformers imports it whenever it is installed, and it is a
dependency of transformers 5). Nothing here may download code at run time, and the bundle leaves it out."""
GROUP = 16
"""On the CPU, at most this many texts per forward pass (see ``_grouped``)."""
INPUT_TYPES: tuple[InputType, ...] = ("query", "document")
NO_FLOAT16 = ("gemma3",)
"""Architectures (``model_type`` prefixes in the model's ``config.json``) whose activations overflow in
float16: EmbeddingGemma's model card says they do not support it and asks for float32 or bfloat16."""
PROBE_TEXTS = [
    "A short one.",
    "A longer text, so that the batch is padded: the quick brown fox jumps over the lazy dog twice.",
    "Ünïcödé and numbers 1234567890",
]


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from its own directory, offline."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        directory = Path(config.source)
        if not config.source or not (directory / "modules.json").is_file():
            raise LoadError(f"no sentence-transformers model directory at {config.source or '(unset)'}")
        # Never reach for a hub: the weights are on disk or the load fails.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ["USE_HUB_KERNELS"] = "0"  # transformers' own switch; by default it would ask for them
        for module in BLOCKED_MODULES:
            # None in sys.modules: `import` fails and importlib.util.find_spec() reports it absent.
            sys.modules.setdefault(module, None)  # type: ignore[arg-type]
        apply_to_engine(os.environ)  # before torch loads
        try:
            import torch  # noqa: PLC0415  (seconds to import: only when an embedding model loads)
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        except ImportError as exc:
            raise LoadError(f"sentence-transformers is not installed: {exc}") from exc
        if config.threads:
            torch.set_num_threads(config.threads)
        architecture = _architecture(directory)
        if config.dtype == "float16":
            _refuse_float16(config.name, architecture)
        device = "cuda" if config.n_gpu_layers != 0 and torch.cuda.is_available() else "cpu"
        weights = {"dtype": getattr(torch, config.dtype)} if config.dtype else None
        try:
            self._model: Any = SentenceTransformer(
                str(directory), device=device, local_files_only=True, model_kwargs=weights
            )
        except Exception as exc:  # any failure to read the directory is the operator's to see
            raise LoadError(f"cannot load {directory}: {exc}") from exc
        if getattr(self._model, "dtype", None) == torch.float16:  # stored in float16, loaded as stored
            _refuse_float16(config.name, architecture)
        self._model.max_seq_length = min(
            self._model.max_seq_length or config.context_length, config.context_length
        )
        self.device = device
        self._torch = torch
        measure = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dims = measure()
        self._dims = int(dims) if dims else len(self._model.encode(["x"])[0])
        if config.matryoshka_dimensions and config.matryoshka_dimensions[0] > self._dims:
            raise LoadError(
                f"{directory} makes {self._dims}-dimensional embeddings: they cannot be cut to "
                f"{config.matryoshka_dimensions[0]} (matryoshka_dimensions)"
            )
        self._model.eval()
        self._prompts = self._resolve_prompts()
        """The text put before each input, by ``input_type`` (None: a request that names none)."""
        self._grouping = False
        self.direct = self._direct_matches_encode()
        """Whether a batch's forward pass is called directly (see ``_run``): only when it gives the
        vectors ``encode`` gives (with each prompt, and cut to each Matryoshka size) and its attention
        mask the token counts the tokenizer gives, checked on probe texts at load."""
        self._single = (
            _TracedSingle.build(self, self._prompts_in_use()) if self.direct and device == "cpu" else {}
        )
        """The forward pass for one input as a traced graph (see ``_TracedSingle``), by prompt."""
        self._grouping = self.direct and device == "cpu" and self._grouping_matches()
        """Whether a batch of more than ``GROUP`` texts runs as several forward passes (``_grouped``)."""

    @property
    def grouping(self) -> bool:
        """Whether a batch of more than ``GROUP`` texts runs in groups of similar length."""
        return self._grouping

    @property
    def traced(self) -> bool:
        """Whether one input at a time runs through a traced forward pass, whatever its ``input_type``."""
        return all(prompt in self._single for prompt in self._prompts_in_use())

    def _resolve_prompts(self) -> dict[InputType | None, str]:
        """Each input type's prompt: the model table's, else the one of that name the model declares (its
        ``prompts``, as ``encode_query`` and ``encode_document`` take them). A request that names no type
        gets the configured default type's, else the prompt ``encode`` would apply by default."""
        declared = dict(getattr(self._model, "prompts", None) or {})
        configured = self.config.prompts or {}
        prompts: dict[InputType | None, str] = {
            kind: configured.get(kind, declared.get(kind) or "") for kind in INPUT_TYPES
        }
        default = self.config.default_input_type
        name = getattr(self._model, "default_prompt_name", None)
        prompts[None] = prompts[default] if default else ((declared.get(name) or "") if name else "")
        return prompts

    def _prompts_in_use(self) -> list[str]:
        """The distinct prompts a request can get ("" for none), the default's first."""
        return list(dict.fromkeys([self._prompts[None], *self._prompts.values()]))

    def prompt(self, input_type: InputType | None) -> str:
        """The text put before each input of this type (None: of a request that names none); "" if none."""
        return self._prompts[input_type]

    def _encode(self, texts: list[str], prompt: str, dimensions: int | None = None) -> Any:
        with self._torch.inference_mode():
            return self._model.encode(
                texts,
                prompt=prompt,  # "" is no prompt: encode falls back to the default only for None
                truncate_dim=dimensions,
                batch_size=BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    def _prepare(self, texts: list[str], prompt: str) -> tuple[dict[str, Any], Any]:
        """The model's own preprocessing (prompt, tokenizer, truncation) of the texts ordered longest
        first, as ``encode`` orders a batch; with that order."""
        order = np.argsort([-len(text) for text in texts])
        return self._model.preprocess([texts[index] for index in order], prompt=prompt or None), order

    def _finish(self, vectors: Any, order: Any, dimensions: int | None = None) -> Any:
        """The optional dimension truncation (``dimensions``, else the model's own ``truncate_dim``),
        then L2 normalisation; rows back in the caller's order, as float32."""
        torch = self._torch
        truncate = dimensions or getattr(self._model, "truncate_dim", None)
        if truncate:
            vectors = vectors[..., :truncate]
        # .float(): numpy has no bfloat16 (a float32 tensor is returned as it is, uncopied)
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1).float().cpu().numpy()
        return vectors[np.argsort(order)]

    def _run(self, features: dict[str, Any], order: Any, dimensions: int | None = None) -> Any:
        """What ``encode`` computes for one prepared batch, without its per-call bookkeeping.

        ``encode`` puts the model in eval mode and looks up its device by walking every module and
        parameter on each call: about a millisecond, which is a tenth of a short text's whole forward
        pass on a small model. Here: the forward pass, the optional dimension truncation, then L2
        normalisation, rows back in the caller's order."""
        torch = self._torch
        with torch.inference_mode():
            if self.device != "cpu":
                features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
            elif self._grouping and len(order) > GROUP:
                grouped = self._grouped(features, order)
                if grouped is not None:
                    return self._finish(*grouped, dimensions)
            return self._finish(self._model(features)["sentence_embedding"], order, dimensions)

    def _grouped(self, features: dict[str, Any], order: Any) -> tuple[Any, Any] | None:
        """The batch's forward pass as passes of at most ``GROUP`` texts, longest first by tokens, each
        group padded only to its own longest text; None if the batch is not padded on the right.

        A batch is padded to its longest text, and every padding position goes through every layer's
        matrix products. In groups of similar length less of the work is padding, and on the CPU a
        group's activations stay in the caches: about 10% less time for 32 short texts of uneven length.
        The padding is masked out of the attention and the pooling, so each text's vector is the same
        (checked at load, ``_grouping_matches``)."""
        torch = self._torch
        mask = features["attention_mask"]
        width = mask.shape[1]
        lengths = mask.sum(dim=1)
        ranked = torch.argsort(lengths, descending=True, stable=True)
        groups = [ranked[start : start + GROUP] for start in range(0, len(ranked), GROUP)]
        parts = []
        for rows in groups:
            longest = int(lengths[rows[0]])
            if int(mask[rows, :longest].sum()) != int(lengths[rows].sum()):
                return None  # padded on the left (or holes): the columns past the longest are not padding
            part = {
                name: value[rows, :longest]
                if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == width
                else value
                for name, value in features.items()
            }
            parts.append(self._model(part)["sentence_embedding"])
        return torch.cat(parts), order[ranked.numpy()]

    def _grouping_matches(self) -> bool:
        """Whether forward passes in groups give the whole batch's vectors, on probe texts of uneven
        length, with each prompt."""
        texts = [
            f"{PROBE_TEXTS[i % len(PROBE_TEXTS)]} {'and more ' * (i % 5)}({i})" for i in range(2 * GROUP + 3)
        ]
        try:
            for prompt in self._prompts_in_use():
                features, order = self._prepare(texts, prompt)
                whole = self._run(features, order)  # one pass: grouping is not on yet
                with self._torch.inference_mode():
                    grouped = self._grouped(features, order)
                    if grouped is None or not np.allclose(self._finish(*grouped), whole, rtol=0, atol=1e-6):
                        return False
        except Exception:  # any surprise from the library's structure: keep to whole batches
            return False
        return True

    def _counts(
        self, texts: list[str], features: dict[str, Any], order: Any, limit: int, prompt: str
    ) -> list[int]:
        """Each text's tokens as the model reads them, its prompt's included, read from the batch's
        attention mask rather than from a second pass of the tokenizer; a text that fills the model's
        window may have been cut, so it is counted whole."""
        mask = features.get("attention_mask")
        if mask is None:
            return self.count_tokens(texts, prompt)
        counts = [0] * len(texts)
        for position, count in zip(order.tolist(), mask.sum(dim=1).tolist(), strict=True):
            counts[position] = int(count)
        full = [index for index, count in enumerate(counts) if count >= limit]
        for index, count in zip(
            full, self.count_tokens([texts[i] for i in full], prompt) if full else [], strict=True
        ):
            counts[index] = count
        return counts

    def _direct_matches_encode(self) -> bool:
        if not hasattr(self._model, "preprocess"):
            return False
        limit = int(self._model.max_seq_length)
        cases: list[tuple[str, list[str], int | None]] = [
            (prompt, texts, None) for prompt in self._prompts_in_use() for texts in (["x"], PROBE_TEXTS)
        ]
        cases += [
            (self._prompts[None], PROBE_TEXTS, size)
            for size in self.config.matryoshka_dimensions
            if size < self._dims
        ]
        try:
            for prompt, texts, size in cases:
                features, order = self._prepare(texts, prompt)
                if self._counts(texts, features, order, limit, prompt) != self.count_tokens(texts, prompt):
                    return False
                expected = self._encode(texts, prompt, size)
                if not np.allclose(self._run(features, order, size), expected, rtol=0, atol=1e-6):
                    return False
        except Exception:  # any surprise from the library's structure: keep to encode
            return False
        return True

    @property
    def dimensions(self) -> int:
        return self._dims

    @property
    def vocabulary_size(self) -> int:
        return int(self._model.tokenizer.vocab_size)

    def _texts(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> list[str]:
        if all(isinstance(i, str) for i in inputs):
            return list(inputs)  # type: ignore[arg-type]
        tokenizer = self._model.tokenizer
        return [tokenizer.decode(list(ids), skip_special_tokens=True) for ids in inputs]

    def count_tokens(self, texts: list[str], prompt: str = "") -> list[int]:
        """Each text's tokens after ``prompt``, special ones and the prompt's included, as the model would
        read them untruncated."""
        prompted = [prompt + text for text in texts] if prompt else texts
        encoded = self._model.tokenizer(prompted, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        texts = self._texts(inputs)
        prompt = self._prompts[input_type]
        size = None if dimensions == self._dims else dimensions
        limit = int(self._model.max_seq_length)
        if self.direct and len(texts) <= BATCH:
            features, order = self._prepare(texts, prompt)
            counts = self._counts(texts, features, order, limit, prompt)
            _refuse_longer_than(limit, counts, prompt)
            single = self._single.get(prompt)
            if single is not None and len(texts) == 1 and single.takes(features):
                vectors = single.run(features, order, size)
            else:
                vectors = self._run(features, order, size)
        else:
            counts = self.count_tokens(texts, prompt)
            _refuse_longer_than(limit, counts, prompt)
            vectors = self._encode(texts, prompt, size)
        # Kept as a float32 matrix: turning it into Python floats costs more than the JSON writing it.
        return Embeddings(vectors=vectors.astype("float32", copy=False), tokens=sum(counts))

    def close(self) -> None:
        self._model = None


class _TracedSingle:
    """The model's forward pass for one input, recorded once as a TorchScript graph.

    For a short text the forward pass of a small model is dominated by the Python around its kernels
    (the library's modules, masks and checks): replaying the recorded kernels instead runs the same
    kernels in the same order, about 15% faster for one short input on MiniLM, with the same vectors
    bit for bit. A recording fixes every branch its code took, so it is used only where those branches
    cannot differ: one input (no padding, an attention mask of ones, the length alone varying), on the
    CPU, with the non-tensor features it was recorded with; and only if, at load, it gives exactly the
    vectors of the ordinary forward pass on probe texts of several lengths, up to the model's window.
    Batches always take the ordinary path.

    Inputs after another prompt differ only in their tokens and in the prompt's length (a non-tensor
    feature, which only a pooling that leaves the prompt out reads): they replay the same recording if it
    gives their ordinary vectors too, checked on the short probe texts after that prompt.
    """

    def __init__(
        self, owner: SentenceTransformerEmbedder, graph: Any, keys: list[str], fixed: dict[str, Any]
    ):
        self._owner = owner
        self._graph = graph
        self._keys = keys
        self._fixed = fixed

    @classmethod
    def build(cls, owner: SentenceTransformerEmbedder, prompts: list[str]) -> dict[str, _TracedSingle]:
        """The recording by prompt, for the prompts it gives the ordinary vectors for (recorded after the
        first one)."""
        recorded = cls._record(owner, prompts[0])
        if recorded is None:
            return {}
        found = {prompts[0]: recorded}
        for prompt in prompts[1:]:
            try:
                features, _ = owner._prepare(["x"], prompt)
            except Exception:  # any surprise from the library: the ordinary path serves this prompt
                continue
            fixed = {name: value for name, value in features.items() if name not in recorded._keys}
            other = cls(owner, recorded._graph, recorded._keys, fixed)
            if other._replays(prompt, ["x", *PROBE_TEXTS]):
                found[prompt] = other
        return found

    @classmethod
    def _record(cls, owner: SentenceTransformerEmbedder, prompt: str) -> _TracedSingle | None:
        """The recording for inputs after ``prompt``, or None if it does not give the same vectors."""
        torch = owner._torch
        try:
            example, _ = owner._prepare(["The quick brown fox jumps over the lazy dog."], prompt)
            keys = [name for name, value in example.items() if isinstance(value, torch.Tensor)]
            fixed = {name: value for name, value in example.items() if name not in keys}
            model = owner._model
            module: Any = torch.nn.Module

            class Forward(module):  # type: ignore[misc]
                def __init__(self) -> None:
                    super().__init__()
                    self.model = model

                def forward(self, *tensors: Any) -> Any:
                    return self.model({**fixed, **dict(zip(keys, tensors, strict=True))})[
                        "sentence_embedding"
                    ]

            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # the tracer's notes on the branches it fixed, and deprecations
                graph = torch.jit.trace(Forward().eval(), tuple(example[k] for k in keys), check_trace=False)
            traced = cls(owner, graph, keys, fixed)
        except Exception:  # any surprise from the tracer or the library: the ordinary path serves
            return None
        limit = int(model.max_seq_length)
        probes = ["x", *PROBE_TEXTS, " ".join(["word"] * limit)]  # the last one fills the window
        return traced if traced._replays(prompt, probes) else None

    def _replays(self, prompt: str, probes: list[str]) -> bool:
        """Whether the recording gives the ordinary forward pass's vectors for each probe after ``prompt``."""
        owner = self._owner
        try:
            for text in probes:
                features, order = owner._prepare([text], prompt)
                if not self.takes(features):
                    return False
                if not np.array_equal(self.run(features, order), owner._run(features, order)):
                    return False
        except Exception:  # any surprise from the library: the ordinary path serves
            return False
        return True

    def takes(self, features: dict[str, Any]) -> bool:
        """Whether ``features`` (of one input) are what the recording was made for."""
        return features.keys() == {*self._keys, *self._fixed} and all(
            features[name] == value for name, value in self._fixed.items()
        )

    def run(self, features: dict[str, Any], order: Any, dimensions: int | None = None) -> Any:
        with self._owner._torch.inference_mode():
            vectors = self._graph(*(features[name] for name in self._keys))
            return self._owner._finish(vectors, order, dimensions)


def _refuse_longer_than(limit: int, counts: list[int], prompt: str) -> None:
    """The model would silently embed only the first tokens of a longer input; OpenAI refuses instead."""
    for index, count in enumerate(counts):
        if count > limit:
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens, however input[{index}] has "
                f"{count} tokens{' (its prompt included)' if prompt else ''}. Please reduce the length "
                "of the input.",
                param="input",
                code="context_length_exceeded",
            )


def _architecture(directory: Path) -> str:
    """The ``model_type`` in the transformer's ``config.json`` (in the first module's folder); "" if unread."""
    try:
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
        folder = directory / str(modules[0].get("path", ""))
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError, LookupError, AttributeError):
        return ""


def _refuse_float16(name: str, architecture: str) -> None:
    if architecture.startswith(NO_FLOAT16):
        raise LoadError(
            f"{name} cannot run in float16: the activations of {architecture} models do not support it; "
            "set dtype to float32 or bfloat16"
        )
