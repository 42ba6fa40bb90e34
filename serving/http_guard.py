"""The HTTP layer aicrush adds on KServe's REST app: limits, strict decoding, bounded metrics.

ASGI middleware and handlers installed on ``kserve.model_server.app`` before the server starts
(:func:`install_http_extensions`):

- a body-size limit (413 before any parsing) and JSON checks (bad UTF-8, malformed or deeply
  nested JSON -> 400 ``{"error": ...}``), so a client's mistake never reaches the model as a 500;
- strict decoding of the binary data extension (``Inference-Header-Content-Length``) into the
  equivalent JSON request: a malformed length, size or shape is a 400 naming it;
- 400 instead of FastAPI's 422 for V2 bodies that do not match the Open Inference Protocol;
- ``/v2/models/{name}/versions/{version}/...`` for the served version (404 for any other);
- V2 model metadata that lists the labels;
- request counters and latency by model, version, protocol and status (serving/metrics.py); a
  model name this server does not serve is counted as ``_unknown`` (bounded label values).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

from serving import DEFAULT_MAX_BODY_BYTES
from serving.decoding import BINARY_HEADER, json_type  # the first: KServe's binary data extension

DEFAULT_MAX_JSON_DEPTH = 32
UNKNOWN_MODEL_LABEL = "_unknown"
"""The ``model`` label of requests for a model this server does not serve (bounded labels)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_VERSIONED = re.compile(r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/.*)?$")
_V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)/infer$")
_V1_PREDICT = re.compile(r"^/v1/models/(?P<name>[^/:]+):predict$")


# --------------------------------------------------------------------------- pure helpers


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars are 0), computed without recursion."""
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            depth = max(depth, d + 1)
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            depth = max(depth, d + 1)
            stack.extend((v, d + 1) for v in item)
    return depth


def check_json_body(body: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> str | None:
    """The reason a request body is not acceptable JSON, or None when it is.

    Bad UTF-8, malformed JSON and nesting deeper than ``max_depth`` are refused; a leading UTF-8
    byte-order mark is allowed (the caller strips it).
    """
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if not body.strip():
        return "request body is empty; send a JSON object"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
            return f"request body is nested too deeply (more than {max_depth} levels)"
        return f"request body is not valid JSON: {exc}"
    if json_depth(value) > max_depth:
        return f"request body is nested too deeply (more than {max_depth} levels)"
    if not isinstance(value, dict):
        return f"request body must be a JSON object, got {json_type(value)}"
    return None


#: The members of the union KServe's V2 route takes as its body (``InferenceRequest | bytes``,
#: the second for the binary data extension): pydantic names them in each error's location.
_BODY_UNION_MEMBERS = ("InferenceRequest", "bytes")


def _error_messages(errors: Sequence[Any]) -> str:
    """One line from FastAPI's validation errors of a V2 body: the JSON request's own errors,
    located from the body (``inputs.0.shape: Input should be a valid list``), without the
    union's other member (a JSON body is never the raw ``bytes`` one)."""
    located = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        member = loc[0] if loc and loc[0] in _BODY_UNION_MEMBERS else None
        located.append((member, ".".join(loc[1:] if member else loc), err.get("msg", "invalid")))
    own = [e for e in located if e[0] != "bytes"] or located
    parts = [f"{loc or 'body'}: {msg}" for _, loc, msg in own[:5]]
    return "invalid V2 inference request: " + "; ".join(parts)


# --------------------------------------------------------------------------- HTTP middleware


class RequestGuard:
    """ASGI middleware in front of KServe's app: size limit, JSON checks, versions, metrics."""

    def __init__(
        self,
        app: ASGIApp,
        versions: dict[str, str],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ):
        self.app = app
        self.versions = versions
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        m = _VERSIONED.match(path)
        if m:
            name, version, rest = m["name"], m["version"], m["rest"] or ""
            if name not in self.versions:
                await _json(send, 404, f"Model with name {name} does not exist.")
                return
            if version != self.versions[name]:
                await _json(
                    send,
                    404,
                    f"model {name} has no version {version}; this server serves version "
                    f"{self.versions[name]}",
                )
                return
            path = f"/v2/models/{name}{rest}"
            scope = dict(scope, path=path, raw_path=path.encode())
        infer = _V2_INFER.match(path) or _V1_PREDICT.match(path)
        if infer and scope["method"] != "POST":
            # KServe would read "NAME:predict" as a model name (GET /v1/models/{name}) and
            # answer 404 "does not exist"; the client used the wrong method (RFC 9110 15.5.6).
            await _json(
                send, 405, f"{scope['method']} is not allowed on {path}: send the request with POST",
                headers=[(b"allow", b"POST")],
            )  # fmt: skip
            return
        if not infer:
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send, infer["name"], "v2" if "/v2/" in path else "v1")

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, name: str, protocol: str
    ) -> None:
        from serving.metrics import serving_metrics

        start = time.perf_counter()
        # No response started: the client left before one (nginx's 499, "client closed
        # request"; counted as a 500 before, which the canary's error rate read as the
        # version's fault), unless an exception is on its way to Starlette's 500.
        status = {"code": CLIENT_CLOSED_REQUEST}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._check_and_forward(scope, receive, counting_send, protocol)
        except Exception:
            if status["code"] == CLIENT_CLOSED_REQUEST:
                status["code"] = 500
            raise
        finally:
            # Label values come from a bounded set: a model this server does not serve is
            # counted under one value, whatever name the client put in the path.
            label = name if name in self.versions else UNKNOWN_MODEL_LABEL
            version = self.versions.get(name, "")
            metrics = serving_metrics()
            metrics.requests.labels(label, version, protocol, str(status["code"])).inc()
            metrics.request_latency.labels(label, version, protocol).observe(
                time.perf_counter() - start
            )

    async def _check_and_forward(
        self, scope: Scope, receive: Receive, send: Send, protocol: str
    ) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            # Neither KServe nor uvicorn decodes bodies: a gzip body read as JSON was a 400
            # about invalid UTF-8 (RFC 9110 15.5.16: 415 for an unsupported content coding).
            await _json(
                send, 415, f"Content-Encoding {encoding!r} is not supported: send the request "
                "body uncompressed", headers=[(b"accept-encoding", b"identity")],
            )  # fmt: skip
            return
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _json(send, 400, f"invalid Content-Length header {declared!r}")
                return
            if int(declared) > limit:
                await _json(
                    send, 413, f"request body of {declared} bytes is over the {limit}-byte limit"
                )
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _json(send, 413, f"request body is over the {limit}-byte limit")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        binary_length = headers.get(BINARY_HEADER)
        if binary_length is not None:
            from kserve.errors import InvalidInput

            from serving.decoding import decode_binary_body

            # KServe decodes the binary data extension inside its endpoint, where a malformed
            # length or shape ends as a 500 (struct/reshape errors): decode it here, strictly,
            # into the equivalent JSON request, so every check below and the model see JSON.
            if protocol != "v2":
                await _json(send, 400, "the binary data extension is for V2 /infer requests only")
                return
            try:
                body = orjson.dumps(decode_binary_body(body, binary_length))
            except InvalidInput as exc:
                await _json(send, 400, str(exc))
                return
        reason = check_json_body(body, self.max_json_depth)
        if reason is not None:
            await _json(send, 400, reason)
            return
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]
        # The body is JSON (checked above): say so, whatever the client's Content-Type, so
        # KServe parses it as an inference request instead of refusing it as binary.
        scope = dict(scope)
        scope["headers"] = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in (b"content-length", b"content-type", BINARY_HEADER.encode())
        ] + [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


#: The status counted for a request whose client left before any response was started.
CLIENT_CLOSED_REQUEST = 499


#: The client errors this middleware answers itself, by status, named as in the log line
#: KServe's own are turned into (``serving.server.ClientErrorLogFilter``).
_CLIENT_ERROR_KINDS = {
    400: "InvalidInput",
    404: "ModelNotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}


#: The one log line of a client's mistake (``kind``, ``reason``), here and in
#: ``serving.server.ClientErrorLogFilter``.
CLIENT_ERROR_LINE = "client error (%s): %s"


def clip_reason(reason: str, limit: int = 300) -> str:
    """``reason`` cut to ``limit`` characters (then "..."), for one log line."""
    return reason if len(reason) <= limit else reason[:limit] + "..."


def log_client_error(status: int, error: str) -> None:
    """One INFO line on KServe's logger, :data:`CLIENT_ERROR_LINE`: the same line a client
    error answered inside KServe gets, so a request refused here is logged too (with the access
    log off it would leave no trace at all)."""
    kind = _CLIENT_ERROR_KINDS.get(status, f"HTTP {status}")
    logging.getLogger("kserve").info(CLIENT_ERROR_LINE, kind, clip_reason(error))


async def _json(
    send: Send, status: int, error: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    log_client_error(status, error)
    body = orjson.dumps({"error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_http_extensions(
    app: Any,
    registry: Any,
    versions: dict[str, str],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> None:
    """Add the guard middleware, the 400 handler and the labelled metadata route to KServe's app.

    Call before ``ModelServer`` starts (Starlette refuses middleware on a started app); routes
    added here come before KServe's, so they take precedence.
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import ORJSONResponse
    from kserve.errors import ModelNotFound

    from serving.predictor import TextClassifierModel

    async def validation_error(_: Any, exc: RequestValidationError) -> ORJSONResponse:
        error = _error_messages(exc.errors())
        log_client_error(400, error)
        return ORJSONResponse(status_code=400, content={"error": error})

    async def model_metadata(model_name: str) -> ORJSONResponse:
        model = registry.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        if isinstance(model, TextClassifierModel):
            return ORJSONResponse(model.metadata())
        raise ModelNotFound(model_name)

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_middleware(
        RequestGuard,
        versions=versions,
        max_body_bytes=max_body_bytes,
        max_json_depth=max_json_depth,
    )
