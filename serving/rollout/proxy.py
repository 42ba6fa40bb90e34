"""The local rollout's traffic-splitting proxy: one endpoint in front of a stable and a canary server.

```
client -> proxy :PORT --(100-p) %--> model server (stable version)  :P1
                     '----- p % --> model server (canary version)  :P2
```

:class:`SplitProxy` (an ASGI app under uvicorn) forwards every request unchanged to one upstream,
chosen by smooth weighted round robin, so the observed split matches the percentage exactly over
any 100 consecutive requests. A route change is one in-memory swap that returns once the retired
upstream's in-flight requests finished, so no request is dropped. The proxy counts the inference
calls it forwards (:func:`inference_protocol`; ``aicrush_requests_total`` by status, latency
histogram, predicted labels, by model version) and mirrors a share of stable ones to the canary
to measure agreement: the analysis reads these from the proxy's ``/metrics``. Other requests
(metadata, readiness, ``:explain``) are forwarded the same way but not counted. Control API
under ``/-/rollout`` (``healthy``, ``routes``).

The control API shares the port clients call, so ``routes`` (GET and PUT) answers only requests
that carry the proxy's token in :data:`TOKEN_HEADER`; everyone else gets 403. The token is a
random secret the starter generates and hands over in :data:`TOKEN_ENV` (the environment, not
argv, which every local user can read in ``ps``). ``healthy`` and ``/metrics`` change nothing
and stay open for liveness checks and scrapes.

It runs in its own process: ``AICRUSH_ROLLOUT_PROXY_TOKEN=... python -m serving.rollout.proxy
--port P`` (started by :class:`serving.rollout.local.LocalBackend`, which keeps the token in
``local.json``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from serving import DEFAULT_MAX_BODY_BYTES
from serving.rollout.metrics_source import LATENCY

CONTROL = "/-/rollout"
#: The environment variable that hands the proxy its control token.
TOKEN_ENV = "AICRUSH_ROLLOUT_PROXY_TOKEN"
#: The request header that carries the control token to ``/-/rollout/routes``.
TOKEN_HEADER = "x-aicrush-rollout-token"


#: An upstream is an origin, nothing more: the request path is appended to it.
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")


class Route(BaseModel):
    """One upstream of a routes update: the model version it serves and its origin URL."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    version: str = Field(min_length=1)
    url: str

    @field_validator("url")
    @classmethod
    def _origin(cls, url: str) -> str:
        m = _ORIGIN.fullmatch(url)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise ValueError(
                f"must be http(s)://HOST:PORT with no path, query or credentials, got {url[:100]!r}"
            )
        return url


class RoutesUpdate(BaseModel):
    """The body of ``PUT /-/rollout/routes``: all of it is checked before any of it is applied."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    stable: Route
    canary: Route | None
    percent: int = Field(ge=0, le=100, description="the canary's share of requests")
    drain_timeout_s: float = Field(default=60.0, ge=0, le=600)

    @field_validator("percent")
    @classmethod
    def _no_share_without_canary(cls, percent: int, info: ValidationInfo) -> int:
        if percent and "canary" in info.data and info.data["canary"] is None:
            raise ValueError(f"must be 0 without a canary, got {percent}")
        return percent


def _validation_error(err: ValidationError) -> str:
    """One line naming every bad field (``stable.url: ...``; ``body`` for the document itself)."""
    reasons = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            model = RoutesUpdate if len(e["loc"]) == 1 else Route
            msg = f"unknown field; allowed: {', '.join(model.model_fields)}"
        reasons.append(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {msg}")
    return "; ".join(reasons)


#: The inference calls of KServe's two REST protocols: V1 ``:predict`` and V2 ``/infer``.
_INFERENCE = re.compile(
    r"/v1/models/(?P<v1>[^/:]+):predict|/v2/models/(?P<v2>[^/]+)(?:/versions/[^/]+)?/infer"
)


def inference_protocol(method: str, path: str, model_name: str = "") -> str | None:
    """``"v1"`` or ``"v2"`` for an inference call of ``model_name`` (of any model when empty),
    None for every other request (metadata, readiness, ``:explain``, another model's name).

    Only inference calls enter the per-version series the canary analysis reads: a client
    calling ``:explain`` (KServe answers 501 without an explainer) must not fail a healthy canary.
    """
    m = _INFERENCE.fullmatch(path) if method == "POST" else None
    if m is None:
        return None
    protocol = "v1" if m.group("v1") else "v2"
    if model_name and m.group(protocol) != model_name:
        return None
    return protocol


def _labels(body: bytes) -> list[str]:
    """Predicted labels of a V1 (``predictions``) or V2 (output named ``label``) response."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if isinstance(doc, dict) and isinstance(doc.get("predictions"), list):
        return [str(p.get("label")) if isinstance(p, dict) else str(p) for p in doc["predictions"]]
    if isinstance(doc, dict) and isinstance(doc.get("outputs"), list):
        for out in doc["outputs"]:
            if isinstance(out, dict) and out.get("name") == "label":
                return [str(x) for x in out.get("data", [])]
    return []


#: Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself; every other header of a
#: request or response is end-to-end and passes the proxy unchanged.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip


#: Response headers the proxy's own server writes (uvicorn: date, server) or sets itself
#: (content-type): the upstream's copies would be duplicates (two Date headers are invalid).
SET_BY_THE_PROXY = frozenset({b"content-type", b"date", b"server"})


def end_to_end_headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The end-to-end headers of raw ``(name, value)`` pairs, as a dict for httpx."""
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in pairs
        if k.decode("latin-1").lower() not in HOP_BY_HOP
    }


class BodyTooLarge(Exception):
    """A request body over the proxy's limit (answered with 413)."""


async def _respond(
    send: Callable,
    status: int,
    payload: bytes,
    ctype: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    start = [(b"content-type", ctype.encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": payload})


class SplitProxy:
    """ASGI app: forwards to the stable or the canary upstream; control API under ``/-/rollout``."""

    def __init__(
        self,
        model_name: str = "",
        mirror_fraction: float = 0.0,
        timeout_s: float = 60.0,
        *,
        control_token: str,
        max_body_bytes: int | None = None,
    ):
        """``max_body_bytes``: larger request bodies get 413 (None: the model server's limit)."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        from serving.metrics import LATENCY_BUCKETS

        if max_body_bytes is None:
            max_body_bytes = DEFAULT_MAX_BODY_BYTES
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        if not control_token:
            raise ValueError(
                "control_token is empty: the control API would be open to every client; pass "
                f"the secret the rollout machinery sends in {TOKEN_HEADER}"
            )
        self._token = control_token.encode()
        self.model_name = model_name
        self.mirror_fraction = mirror_fraction
        self.timeout_s = timeout_s
        self.routes: dict[str, Any] = {"stable": None, "canary": None, "percent": 0}
        self._acc = 0
        self.inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx.AsyncClient | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aicrush_requests",
            "Requests forwarded by the rollout proxy.",
            ["model", "version", "protocol", "status", "role"],
            registry=self.registry,
        )
        self.latency = Histogram(
            LATENCY,
            "Latency through the rollout proxy.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "aicrush_predictions",
            "Predicted labels seen by the proxy.",
            ["model", "version", "label"],
            registry=self.registry,
        )
        self.mirrored = Counter(
            "aicrush_rollout_mirrored",
            "Stable requests mirrored to the canary.",
            ["model", "version", "agree"],
            registry=self.registry,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    def pick(self) -> tuple[str, dict[str, str]] | None:
        """Smooth weighted round robin: exactly p of every 100 consecutive requests go to the canary."""
        stable, canary, percent = (
            self.routes["stable"],
            self.routes["canary"],
            int(self.routes["percent"]),
        )
        if canary is None or percent <= 0:
            return ("stable", stable) if stable else None
        if stable is None or percent >= 100:
            return "canary", canary
        self._acc += percent
        if self._acc >= 100:
            self._acc -= 100
            return "canary", canary
        return "stable", stable

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            body = await self._read_body(scope, receive)
        except BodyTooLarge as err:
            await _respond(send, 413, json.dumps({"error": str(err)}).encode(), "application/json")
            return
        if body is None:  # the client went away mid-upload: nothing to forward
            return
        path: str = scope["path"]
        version, extra = "", dict[str, str]()
        if path.startswith(CONTROL) or path == "/metrics":
            status, payload, ctype = await self._control(scope, body)
        else:
            status, payload, ctype, version, extra = await self._forward(scope, body)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        if version:
            headers.append((b"x-aicrush-model-version", version.encode()))
        await _respond(send, status, payload, ctype, headers)

    async def _read_body(self, scope: dict, receive: Callable) -> bytes | None:
        """The request body (None if the client disconnected first). Raises :class:`BodyTooLarge`
        for a declared length over the limit before reading any of it, and for an undeclared one
        (chunked) as soon as it passes the limit: no more of it is read, the server discards it.
        """
        limit = self.max_body_bytes
        declared = next((v for k, v in scope["headers"] if k.lower() == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(
                f"request body of {int(declared)} bytes is over the {limit}-byte limit"
            )
        chunks: list[bytes] = []  # joined once: `body += chunk` copied the body at every chunk
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _forward(
        self, scope: dict, body: bytes
    ) -> tuple[int, bytes, str, str, dict[str, str]]:
        """(status, body, content type, version, the upstream's other end-to-end headers)."""
        choice = self.pick()
        extra: dict[str, str] = {}
        if choice is None:
            return (
                503,
                b'{"error": "no model deployed behind the rollout proxy"}',
                "application/json",
                "",
                extra,
            )
        role, upstream = choice
        url = upstream["url"]
        self.inflight[url] = (
            self.inflight.get(url, 0) + 1
        )  # counted before the first await: drains are exact
        version = upstream["version"]
        started = time.perf_counter()
        try:
            target = (
                url
                + scope["path"]
                + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
            )
            headers = end_to_end_headers(scope["headers"])
            try:
                r = await self.client.request(
                    scope["method"], target, content=body, headers=headers
                )
                status, payload, ctype = (
                    r.status_code,
                    r.content,
                    r.headers.get("content-type", "application/json"),
                )
                # e.g. inference-header-content-length of a binary V2 response, x-request-id
                extra = end_to_end_headers(
                    (k, v) for k, v in r.headers.raw if k.lower() not in SET_BY_THE_PROXY
                )
            except httpx.HTTPError as err:
                status, payload, ctype = (
                    502,
                    json.dumps({"error": f"upstream {version}: {err!r}"}).encode(),
                    "application/json",
                )
        finally:
            self.inflight[url] -= 1
        protocol = inference_protocol(scope["method"], scope["path"], self.model_name)
        if protocol is not None:  # a client's 4xx counts as a request, not as a server error
            self.requests.labels(self.model_name, version, protocol, str(status), role).inc()
            self.latency.labels(self.model_name, version, protocol).observe(
                time.perf_counter() - started
            )
            if status == 200:
                labels = _labels(payload)
                for label in labels:
                    self.predictions.labels(self.model_name, version, label).inc()
                canary = self.routes["canary"]
                if (
                    role == "stable"
                    and canary
                    and labels
                    and random.random() < self.mirror_fraction
                ):
                    task = asyncio.create_task(self._mirror(canary, scope, body, headers, labels))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        return status, payload, ctype, version, extra

    async def _mirror(
        self, canary: dict, scope: dict, body: bytes, headers: dict, labels: list[str]
    ) -> None:
        url = canary["url"]
        self.inflight[url] = self.inflight.get(url, 0) + 1
        try:
            r = await self.client.request(
                scope["method"], url + scope["path"], content=body, headers=headers
            )
            if r.status_code == 200:
                other = _labels(r.content)
                agree = "true" if other == labels else "false"
                self.mirrored.labels(self.model_name, canary["version"], agree).inc()
        except httpx.HTTPError:
            pass  # a failing canary shows in its own requests; mirrors only measure agreement
        finally:
            self.inflight[url] -= 1

    def _authorized(self, scope: dict) -> bool:
        """Whether the request carries the control token (compared in constant time)."""
        sent = [v for k, v in scope["headers"] if k.lower() == TOKEN_HEADER.encode()]
        return len(sent) == 1 and hmac.compare_digest(sent[0], self._token)

    async def _control(self, scope: dict, body: bytes) -> tuple[int, bytes, str]:
        from prometheus_client import generate_latest

        method, path = scope["method"], scope["path"]
        if path == "/metrics":
            return 200, generate_latest(self.registry), "text/plain; version=0.0.4"
        if path == f"{CONTROL}/healthy":
            return 200, b'{"healthy": true}', "application/json"
        if path == f"{CONTROL}/routes" and not self._authorized(scope):
            return (
                403,
                json.dumps(
                    {
                        "error": f"the rollout control API needs the {TOKEN_HEADER} header of the "
                        "aicrush process that started this proxy; change traffic with `aicrush "
                        "deploy`, `aicrush promote` or `aicrush rollback`"
                    }
                ).encode(),
                "application/json",
            )
        if path == f"{CONTROL}/routes" and method == "GET":
            return (
                200,
                json.dumps({**self.routes, "inflight": self.inflight}).encode(),
                "application/json",
            )
        if path == f"{CONTROL}/routes" and method == "PUT":
            try:
                new = RoutesUpdate.model_validate_json(body)
            except ValidationError as err:
                return (
                    400,
                    json.dumps({"error": f"invalid routes: {_validation_error(err)}"}).encode(),
                    "application/json",
                )
            old_urls = {r["url"] for r in (self.routes["stable"], self.routes["canary"]) if r}
            self.routes = new.model_dump(include={"stable", "canary", "percent"})
            self._acc = 0
            new_urls = {r["url"] for r in (self.routes["stable"], self.routes["canary"]) if r}
            retired = old_urls - new_urls
            deadline = time.monotonic() + new.drain_timeout_s
            while any(self.inflight.get(u, 0) for u in retired) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            drained = not any(self.inflight.get(u, 0) for u in retired)
            return (
                200,
                json.dumps({"routes": self.routes, "drained": drained}).encode(),
                "application/json",
            )
        if path == f"{CONTROL}/routes":
            return 405, b'{"error": "use GET or PUT on the routes"}', "application/json"
        return 404, b'{"error": "unknown control path"}', "application/json"


def run_proxy(
    port: int,
    model_name: str,
    mirror_fraction: float,
    control_token: str,
    host: str = "127.0.0.1",
    max_body_bytes: int | None = None,
) -> None:
    import uvicorn

    uvicorn.run(
        SplitProxy(
            model_name, mirror_fraction, control_token=control_token, max_body_bytes=max_body_bytes
        ),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m serving.rollout.proxy", description="run the traffic-splitting proxy"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model-name", default="")
    parser.add_argument("--mirror-fraction", type=float, default=0.0)
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=None,
        help="refuse request bodies over this size with 413 (default: the model server's, "
        "serving.DEFAULT_MAX_BODY_BYTES)",
    )
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise SystemExit(
            f"{parser.prog}: {TOKEN_ENV} is not set: the control API needs a secret; set it to a "
            f"random string and send it in the {TOKEN_HEADER} header (LocalBackend does both)"
        )
    run_proxy(
        args.port,
        args.model_name,
        args.mirror_fraction,
        token,
        host=args.host,
        max_body_bytes=args.max_body_bytes,
    )


if __name__ == "__main__":
    main()
