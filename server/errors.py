"""The one error hierarchy. Each error knows its HTTP status and how OpenAI labels it; a single handler
in the HTTP layer renders every one of them as ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations


class APIError(Exception):
    """An error a client should see, rendered as the OpenAI error envelope."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after_s: int | None = None
    """For a failure that passes by itself: the seconds a client should wait, sent as ``Retry-After``."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}
        if self.retry_after_s is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after_s))

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(APIError):
    """400: the request is malformed or asks for something out of bounds."""

    status = 400
    type = "invalid_request_error"


class Unauthenticated(APIError):
    """401: no key, a malformed key, or a key that is unknown, revoked or expired."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(APIError):
    """403: the key is valid but may not do this."""

    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(APIError):
    """404: no such model, response or route."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, *, param: str | None = "model") -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param=param)


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(APIError):
    """408: the client sent its request too slowly."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(APIError):
    """413: the body is larger than the configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(APIError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(APIError):
    """429 ``rate_limit_exceeded``: try again after ``Retry-After`` seconds."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class QuotaExceeded(APIError):
    """429 ``insufficient_quota``: the budget is spent; retrying will not help."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class ModelUnavailable(APIError):
    """503: the model exists but is not loaded (still loading, or failed)."""

    status = 503
    type = "server_error"
    code = "model_not_ready"
    retry_after_s = 5


class EngineFailure(APIError):
    """500: the engine failed while running a request."""

    status = 500
    type = "server_error"
    code = "engine_error"


class EngineCrashed(APIError):
    """503: the model's engine process died while running the request (it restarts by itself), or it
    crashed so often that it stays down until the operator loads the model again."""

    status = 503
    type = "server_error"
    code = "engine_crashed"
    retry_after_s = 5

    def __init__(self, model: str, reason: str, *, down: bool = False) -> None:
        if down:
            message = (
                f"The model '{model}' is down: {reason}. The operator can load it again from the Models page."
            )
        else:
            message = (
                f"The engine running model '{model}' crashed ({reason}). What was generated before the crash "
                "was delivered and is billed; the engine restarts by itself, so the request can be retried."
            )
        super().__init__(message, param="model")


class UpstreamError(APIError):
    """502: the upstream engine failed or could not be reached."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class StorageFailure(APIError):
    """503: the store cannot be written (disk full, read-only data directory)."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"
    retry_after_s = 10


class ServerStopping(APIError):
    """503: the server stopped while the request ran; what was generated until then is billed."""

    status = 503
    type = "server_error"
    code = "server_stopped"
    retry_after_s = 5
