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


def _stable(**change: object) -> dict:
    return {**ROUTES, "stable": {**ROUTES["stable"], **change}}


def _canary(**change: object) -> dict:
    return {**ROUTES, "canary": {**ROUTES["canary"], **change}}


def _without(key: str) -> dict:
    return {k: v for k, v in ROUTES.items() if k != key}


BAD_URLS = [
    "ftp://127.0.0.1:9001",  # not http(s)
    "127.0.0.1:9001",  # no scheme
    "http://127.0.0.1",  # no port
    "http://:9001",  # no host
    "http://127.0.0.1:0",
    "http://127.0.0.1:65536",
    "http://127.0.0.1:port",
    "http://127.0.0.1:9001/v1",  # a path: requests would go to /v1/v1/...
    "http://127.0.0.1:9001/",
    "http://127.0.0.1:9001?x=1",
    "http://127.0.0.1:9001#x",
    "http://user:pw@127.0.0.1:9001",
    "http://127.0.0.1 :9001",
    "",
]

#: (request body, the field its 400 must name): every kind of malformed routes body.
BAD_BODIES: list[tuple[bytes, str]] = [
    (b"garbage", "body"),
    (b"", "body"),
    (b"\xff\xfe", "body"),
    (b'{"stable":', "body"),
    (b"[]", "body"),
    (b'"routes"', "body"),
    (b"null", "body"),
    (b"{}", "stable"),
    (json.dumps(_without("stable")).encode(), "stable"),
    (json.dumps(_without("canary")).encode(), "canary"),
    (json.dumps(_without("percent")).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": "abc"}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": "10"}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": 10.5}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": True}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": None}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": -1}).encode(), "percent"),
    (json.dumps({**ROUTES, "percent": 101}).encode(), "percent"),
    (json.dumps({**ROUTES, "canary": None, "percent": 10}).encode(), "percent"),
    (json.dumps({**ROUTES, "stable": None}).encode(), "stable"),
    (json.dumps({**ROUTES, "stable": "http://127.0.0.1:9001"}).encode(), "stable"),
    (json.dumps({**ROUTES, "canary": ["2", "http://127.0.0.1:9002"]}).encode(), "canary"),
    (json.dumps(_stable(url=None)).encode(), "stable.url"),
    (json.dumps(_stable(url=9001)).encode(), "stable.url"),
    (json.dumps({**ROUTES, "stable": {"version": "1"}}).encode(), "stable.url"),
    (json.dumps({**ROUTES, "stable": {"url": "http://127.0.0.1:9001"}}).encode(), "stable.version"),
    (json.dumps(_stable(version="")).encode(), "stable.version"),
    (json.dumps(_stable(version=1)).encode(), "stable.version"),
    (json.dumps(_canary(version=None)).encode(), "canary.version"),
    (json.dumps(_stable(weight=5)).encode(), "stable.weight"),
    (json.dumps({**ROUTES, "percnt": 10}).encode(), "percnt"),
    (json.dumps({**ROUTES, "drain_timeout_s": "soon"}).encode(), "drain_timeout_s"),
    (json.dumps({**ROUTES, "drain_timeout_s": -1}).encode(), "drain_timeout_s"),
    (json.dumps({**ROUTES, "drain_timeout_s": 1e9}).encode(), "drain_timeout_s"),
    *[(json.dumps(_stable(url=u)).encode(), "stable.url") for u in BAD_URLS],
    *[(json.dumps(_canary(url=u)).encode(), "canary.url") for u in BAD_URLS],
]


@pytest.mark.parametrize(
    ("body", "field"), BAD_BODIES, ids=[f"{i}-{field}" for i, (_, field) in enumerate(BAD_BODIES)]
)
def test_a_malformed_routes_body_is_a_400_naming_the_field_and_changes_nothing(
    body: bytes, field: str
) -> None:
    """Not JSON, wrong types, percent outside 0-100, a url that is not http(s)://host:port:
    these were 500s with a traceback, or half-applied routes (a newcomer trial)."""
    proxy = _proxy()
    proxy._acc = 40
    r = _call(proxy, "PUT", f"{CONTROL}/routes", body, {TOKEN_HEADER: TOKEN})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert f"{field}:" in error, error
    assert proxy.routes == ROUTES and proxy._acc == 40


@pytest.mark.parametrize(
    "routes",
    [
        ROUTES,
        {**ROUTES, "canary": None, "percent": 0},
        {**ROUTES, "percent": 0},
        {**ROUTES, "percent": 100},
        {**ROUTES, "drain_timeout_s": 0.5},
        {**ROUTES, "drain_timeout_s": 2},
        _stable(url="https://model.internal:8443"),
        _stable(url="http://[::1]:9001"),
        _stable(url="http://localhost:9001"),
    ],
)
def test_a_well_formed_routes_body_is_applied(routes: dict) -> None:
    proxy = _proxy()
    r = _call(proxy, "PUT", f"{CONTROL}/routes", json.dumps(routes).encode(), {TOKEN_HEADER: TOKEN})
    assert r.status_code == 200, r.text
    expected = {k: routes[k] for k in ("stable", "canary", "percent")}
    assert proxy.routes == expected and r.json()["routes"] == expected


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH"])
def test_other_methods_on_routes_are_a_405(method: str) -> None:
    proxy = _proxy()
    r = _call(proxy, method, f"{CONTROL}/routes", b"{}", {TOKEN_HEADER: TOKEN})
    assert r.status_code == 405 and "GET or PUT" in r.json()["error"]
    assert proxy.routes == ROUTES


def _backend(tmp_path: Path) -> LocalBackend:
    """A local rollout backend over two stub model servers (versions 1 and 2)."""
    return LocalBackend(
        tmp_path / "rollout",
        model_name="aicrush",
        launcher=make_launcher({"1": ("ok", 0.0), "2": ("ok", 0.0)}),
        fetcher=lambda ref: Path(ref.uri),
    )


@pytest.mark.integration
def test_local_backend_keeps_the_token_to_itself(tmp_path: Path) -> None:
    """End to end: an outsider's PUT is refused and clients keep being served; the backend's
    own route changes and status still work; local.json (holding the token) is private."""
    backend = _backend(tmp_path)
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


@pytest.mark.integration
def test_a_restarted_proxy_gets_its_routes_back_when_the_canary_died(tmp_path: Path) -> None:
    """The backend re-applies the kept routes to a proxy it restarts; with the canary gone it
    must send percent 0 (the proxy refuses a share without a canary)."""
    from serving.rollout.processes import stop

    backend = _backend(tmp_path)
    try:
        backend.deploy(ModelRef("1", str(tmp_path)), ModelRef("2", str(tmp_path)), 10)
        procs = LocalProcesses.load(backend._file)
        assert procs.canary is not None
        stop(procs.proxy_pid)
        stop(procs.canary.pid)
        backend.deploy(ModelRef("1", str(tmp_path)), None, 0)
        routes = backend.status()["routes"]
        assert routes["stable"]["version"] == "1" and routes["canary"] is None
        assert (
            httpx.post(
                f"{backend.url}/v1/models/aicrush:predict", json={"instances": ["x"]}
            ).status_code
            == 200
        )
    finally:
        backend.shutdown()
