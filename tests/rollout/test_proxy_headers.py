"""The local rollout proxy passes every end-to-end header both ways (binary V2, request ids)."""

from __future__ import annotations

import asyncio

import httpx

from serving.rollout.proxy import SplitProxy


def test_proxy_forwards_every_end_to_end_header_both_ways() -> None:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=b'{"model_name":"m","outputs":[]}' + b"\x00\x01",
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": "31",
                "x-request-id": request.headers.get("x-request-id", ""),
                "connection": "keep-alive",
                # the model server's uvicorn writes these; the proxy's uvicorn writes its own
                "date": "Tue, 01 Dec 2026 05:00:00 GMT",
                "server": "uvicorn",
            },
        )

    proxy = SplitProxy(model_name="m", control_token="t")
    proxy._client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    proxy.routes = {
        "stable": {"url": "http://stable", "version": "1"},
        "canary": None,
        "percent": 0,
    }

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=proxy), base_url="http://proxy"
        ) as client:
            return await client.post(
                "/v2/models/m/infer",
                content=b'{"inputs":[]}' + b"\x00" * 8,
                headers={
                    "content-type": "application/octet-stream",
                    "inference-header-content-length": "13",
                    "x-request-id": "req-42",
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "authorization": "Bearer t",
                    "connection": "close",
                },
            )

    r = asyncio.run(call())
    [sent] = seen
    for name, value in (
        ("inference-header-content-length", "13"),
        ("x-request-id", "req-42"),
        ("authorization", "Bearer t"),
        ("content-type", "application/octet-stream"),
    ):
        assert sent.headers.get(name) == value, name
    assert sent.headers["traceparent"].startswith("00-0af7")
    assert sent.headers.get("connection") != "close"  # hop-by-hop: not forwarded
    assert r.status_code == 200 and r.headers["x-aicrush-model-version"] == "1"
    assert r.headers["inference-header-content-length"] == "31"
    assert r.headers["x-request-id"] == "req-42"
    assert r.headers["content-type"] == "application/octet-stream"
    # Not passed on: the proxy's own server writes them (two Date headers are invalid).
    assert "date" not in r.headers and "server" not in r.headers
