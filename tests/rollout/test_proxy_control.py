"""The local rollout proxy's control API (``/-/rollout/routes``) answers only the rollout machinery.

It shares the port clients call, so it needs a secret: a random token the backend generates,
hands to the proxy in its environment, keeps in ``local.json`` and sends as a header. A newcomer
trial PUT ``{}`` without one and every client got 503 while ``aicrush status`` said healthy.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from serving.rollout.local import LocalBackend
from serving.rollout.machine import ModelRef
from serving.rollout.processes import LocalProcesses
from serving.rollout.proxy import CONTROL, SplitProxy
from tests.rollout.fakes import make_launcher

TOKEN = "s3cret-token"
TOKEN_HEADER = "x-aicrush-rollout-token"  # part of the interface: the docs name it
ROUTES = {
    "stable": {"version": "1", "url": "http://127.0.0.1:9001"},
    "canary": {"version": "2", "url": "http://127.0.0.1:9002"},
    "percent": 10,
}


def _proxy() -> SplitProxy:
    proxy = SplitProxy(model_name="m", control_token=TOKEN)
    proxy.routes = json.loads(json.dumps(ROUTES))
    return proxy


def _call(
    proxy: SplitProxy, method: str, path: str, content: bytes = b"", headers: dict | None = None
) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=proxy), base_url="http://proxy"
        ) as client:
            return await client.request(method, path, content=content, headers=headers or {})

    return asyncio.run(call())


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize(
    "headers",
    [{}, {TOKEN_HEADER: "wrong"}, {TOKEN_HEADER: ""}, {TOKEN_HEADER: TOKEN + "x"}],
    ids=["no-token", "wrong-token", "empty-token", "longer-token"],
)
def test_routes_without_the_token_are_refused_and_change_nothing(
    method: str, headers: dict
) -> None:
    proxy = _proxy()
    body = json.dumps({"stable": {"version": "9", "url": "http://evil:80"}, "canary": None})
    r = _call(proxy, method, f"{CONTROL}/routes", body.encode(), headers)
    assert r.status_code == 403
    assert TOKEN_HEADER in r.json()["error"]
    assert proxy.routes == ROUTES


def test_routes_with_the_token_are_answered() -> None:
    proxy = _proxy()
    r = _call(proxy, "GET", f"{CONTROL}/routes", headers={TOKEN_HEADER: TOKEN})
    assert r.status_code == 200 and r.json()["percent"] == 10
    new = {**ROUTES, "percent": 25}
    r = _call(proxy, "PUT", f"{CONTROL}/routes", json.dumps(new).encode(), {TOKEN_HEADER: TOKEN})
    assert r.status_code == 200, r.text
    assert proxy.routes["percent"] == 25


def test_health_and_metrics_need_no_token() -> None:
    """The liveness check and the Prometheus scrape carry no secret (and change nothing)."""
    proxy = _proxy()
    assert _call(proxy, "GET", f"{CONTROL}/healthy").status_code == 200
    assert _call(proxy, "GET", "/metrics").status_code == 200


def test_a_proxy_needs_a_token() -> None:
    from serving.rollout.proxy import TOKEN_ENV, main

    with pytest.raises(ValueError, match="control_token"):
        SplitProxy(model_name="m", control_token="")
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        with pytest.raises(SystemExit, match=TOKEN_ENV):
            main(["--port", "1"])


@pytest.mark.integration
def test_local_backend_keeps_the_token_to_itself(tmp_path: Path) -> None:
    """End to end: an outsider's PUT is refused and clients keep being served; the backend's
    own route changes and status still work; local.json (holding the token) is private."""
    backend = LocalBackend(
        tmp_path / "rollout",
        model_name="aicrush",
        launcher=make_launcher({"1": ("ok", 0.0), "2": ("ok", 0.0)}),
        fetcher=lambda ref: Path(ref.uri),
    )
    try:
        backend.deploy(ModelRef("1", str(tmp_path)), ModelRef("2", str(tmp_path)), 10)
        predict = f"{backend.url}/v1/models/aicrush:predict"
        for body in ("{}", '{"stable": {"version": "x", "url": "http://example.com:80"}}'):
            r = httpx.put(f"{backend.url}{CONTROL}/routes", content=body)
            assert r.status_code == 403, r.text
        assert httpx.get(f"{backend.url}{CONTROL}/routes").status_code == 403
        assert httpx.post(predict, json={"instances": ["x"]}).status_code == 200
        status = backend.status()
        assert status["healthy"] and status["routes"]["percent"] == 10
        backend.set_traffic(50)
        assert backend.status()["routes"]["percent"] == 50
        assert LocalProcesses.load(backend._file).proxy_token
        assert stat.S_IMODE(backend._file.stat().st_mode) == 0o600
    finally:
        backend.shutdown()
