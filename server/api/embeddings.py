"""``POST /v1/embeddings``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from starlette.responses import Response

from server.access.keys import KeyRecord
from server.api.auth import Key
from server.api.billing import Intake
from server.api.body import read_json
from server.api.errors import JSON
from server.api.models import model_loaded
from server.api.request import services
from server.api.streaming import until_disconnected
from server.config import ModelConfig
from server.engines.base import EmbeddingBackend, Embeddings, EngineCrashedError, EngineFailureError
from server.engines.upstream import UpstreamFailure, UpstreamModel
from server.errors import APIError, EngineCrashed, EngineFailure, InvalidRequest, ModelNotFound, UpstreamError
from server.generation.events import Meter
from server.generation.remote import as_api_error
from server.protocol import embeddings as wire


async def create_embeddings(request: Request, key: Key) -> Response:
    """``POST /v1/embeddings``."""
    intake = Intake(request, key, "embeddings")
    try:
        return await _embed(request, key, intake)
    except APIError as error:
        intake.refused(error)
        raise


async def _embed(request: Request, key: KeyRecord, intake: Intake) -> Response:
    req = await read_json(request, wire.EmbeddingRequest)
    intake.model = req.model
    if not key.may_use(req.model):
        raise ModelNotFound(req.model)
    await model_loaded(request, req.model)
    backend, worker, config = services(request).models.get(req.model, "embedding")
    if isinstance(backend, UpstreamModel):
        return await _embed_upstream(request, intake, req, backend, config)
    assert worker is not None
    embedder: EmbeddingBackend = backend  # type: ignore[assignment]
    inputs = req.inputs()
    if len(inputs) > config.max_batch:
        raise InvalidRequest(
            f"At most {config.max_batch} inputs can be embedded in one request with '{config.name}', "
            f"not {len(inputs)}.",
            param="input",
        )
    if inputs and isinstance(inputs[0], list):
        vocabulary = embedder.vocabulary_size
        for index, ids in enumerate(inputs):
            if max(ids) >= vocabulary:
                raise InvalidRequest(
                    f"input[{index}] holds token ids outside this model's vocabulary of {vocabulary} tokens.",
                    param="input",
                )
    dimensions = _dimensions(req.dimensions, config, embedder.dimensions)
    meter = Meter()
    # Tokens are counted by the model itself; reserve an upper bound (a token covers at least one
    # character or one id, plus the two special tokens each input gets, plus its prompt).
    prompt = len(embedder.prompt(req.input_type))
    bound = sum(len(i) + 2 + prompt for i in inputs)
    bill = intake.admit(config, stream=False, meter=meter, input_tokens=bound, max_output=0)

    def work(_should_stop: Any) -> Any:
        return iter([embedder.embed(inputs, req.input_type, dimensions)])

    made: list[Embeddings] = []  # delivered, or finished after the client left: either way it is billed

    async def run() -> Embeddings:
        async for item in worker.run(key.id, work, made.append):
            made.append(item)
        return made[0]

    try:
        result = await until_disconnected(request, run())
    except EngineCrashedError as exc:
        bill.abandon(disconnected=False, http_status=EngineCrashed.status)
        raise EngineCrashed(exc.model, exc.reason, down=exc.down) from exc
    except EngineFailureError as exc:
        bill.abandon(disconnected=False, http_status=EngineFailure.status)
        raise EngineFailure(f"The model failed while embedding: {exc}") from exc
    except BaseException as exc:
        bill.abandon(
            disconnected=isinstance(exc, asyncio.CancelledError), http_status=getattr(exc, "status", 500)
        )
        raise
    if result is None:
        meter.input_tokens = made[0].tokens if made else 0
        bill.abandon(disconnected=True)
        return Response(status_code=499)  # nobody is listening
    meter.input_tokens = result.tokens
    await bill.settle()
    encoding = req.encoding_format or "float"
    vectors = [wire.encode_vector(v, encoding) for v in result.vectors]
    return JSON(wire.embedding_list(config.name, vectors, result.tokens))


def _dimensions(asked: int | None, config: ModelConfig, native: int) -> int | None:
    """The size a request's vectors are cut to (None: the model's own), or a 400 naming the sizes allowed:
    the model's own, and the shorter ones the model table declares it was trained for (Matryoshka)."""
    if asked is None or asked == native:
        return None
    if asked in config.matryoshka_dimensions and asked < native:
        return asked
    sizes = sorted({native, *config.matryoshka_dimensions}, reverse=True)
    if len(sizes) == 1:
        allowed = (
            f"makes {native}-dimensional embeddings and cannot shorten them: dimensions must be {native}"
        )
    else:
        allowed = f"makes embeddings of {', '.join(map(str, sizes[:-1]))} or {sizes[-1]} dimensions"
    raise InvalidRequest(f"'{config.name}' {allowed}, not {asked}.", param="dimensions")


async def _embed_upstream(
    request: Request, intake: Intake, req: wire.EmbeddingRequest, model: UpstreamModel, config: ModelConfig
) -> Response:
    """Embeddings from an upstream engine, metered by the usage it reports."""
    inputs = req.inputs()
    meter = Meter(exact=False)
    bound = sum(len(i.encode("utf-8")) if isinstance(i, str) else len(i) for i in inputs) + 2 * len(inputs)
    bill = intake.admit(config, stream=False, meter=meter, input_tokens=bound, max_output=0)
    body: dict[str, Any] = {"model": model.remote_name, "input": inputs, "encoding_format": "float"}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.input_type is not None:
        body["input_type"] = req.input_type
    try:
        result = await services(request).upstream.post_json(model, "/embeddings", body)
        data = sorted(result["data"], key=lambda item: item["index"])
        vectors = [list(map(float, item["embedding"])) for item in data]
        if len(vectors) != len(inputs):
            raise UpstreamFailure(f"the upstream returned {len(vectors)} embeddings for {len(inputs)} inputs")
        usage = result.get("usage") or {}
        meter.input_tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or bound)
        meter.exact = "prompt_tokens" in usage or "total_tokens" in usage
    except UpstreamFailure as failure:
        bill.abandon(disconnected=False, http_status=502)
        raise as_api_error(failure) from failure
    except (KeyError, TypeError, ValueError) as exc:
        bill.abandon(disconnected=False, http_status=502)
        raise UpstreamError(f"The upstream engine sent a malformed embeddings response: {exc}") from exc
    except BaseException as exc:
        bill.abandon(
            disconnected=isinstance(exc, asyncio.CancelledError), http_status=getattr(exc, "status", 500)
        )
        raise
    await bill.settle()
    encoding = req.encoding_format or "float"
    return JSON(
        wire.embedding_list(
            config.name, [wire.encode_vector(v, encoding) for v in vectors], meter.input_tokens
        )
    )
