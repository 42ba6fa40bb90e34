"""The local rollout proxy refuses request bodies over the model server's limit, early, with 413.

A newcomer trial sent a 300 MB chunked upload: the proxy read all of it (building the body
quadratically), was busy for minutes, grew past 375 MB, and small requests slowed to 0.5 s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.http_guard import DEFAULT_MAX_BODY_BYTES
from serving.rollout.proxy import CONTROL, SplitProxy

MIB = 1024 * 1024
PREDICT = "/v1/models/m:predict"


class Upload:
    """An ASGI request whose body arrives in the given chunks; counts the chunks the app read."""

    def __init__(
        self,
        chunks: list[bytes],
        headers: list[tuple[bytes, bytes]] | None = None,
        complete: bool = True,
    ):
        """``complete=False``: the client disconnects after the last chunk instead of ending."""
        self.chunks = chunks
        self.headers = headers or []
        self.complete = complete
        self.read = 0
        self.status = 0
        self.body = b""

    async def receive(self) -> dict:
        if self.read >= len(self.chunks):
            return {"type": "http.disconnect"}
        self.read += 1
        return {
            "type": "http.request",
            "body": self.chunks[self.read - 1],
            "more_body": self.read < len(self.chunks) or not self.complete,
        }

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")

    def to(self, proxy: SplitProxy, method: str = "POST", path: str = PREDICT) -> Upload:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": self.headers,
        }
        asyncio.run(proxy(scope, self.receive, self.send))
        return self


def _proxy(**options: int) -> tuple[SplitProxy, list[bytes]]:
    """A proxy in front of an upstream double that records the bodies it received."""
    bodies: list[bytes] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"predictions": []})

    proxy = SplitProxy("m", control_token="t", **options)
    proxy._client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    proxy.routes = {"stable": {"version": "1", "url": "http://s:1"}, "canary": None, "percent": 0}
    return proxy, bodies


def _chunks(total: int, size: int) -> list[bytes]:
    return [b"x" * min(size, total - i) for i in range(0, total, size)]


def test_the_default_limit_is_the_model_servers() -> None:
    proxy, _ = _proxy()
    assert proxy.max_body_bytes == DEFAULT_MAX_BODY_BYTES


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    proxy, bodies = _proxy()
    over = DEFAULT_MAX_BODY_BYTES + 1
    up = Upload(_chunks(over, MIB), [(b"content-length", str(over).encode())]).to(proxy)
    assert up.status == 413 and up.read == 0 and bodies == []
    assert f"{DEFAULT_MAX_BODY_BYTES}-byte limit" in json.loads(up.body)["error"]


@pytest.mark.parametrize("chunk", [MIB, 64 * 1024, 3 * MIB + 7])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(chunk: int) -> None:
    proxy, bodies = _proxy()
    up = Upload(_chunks(4 * DEFAULT_MAX_BODY_BYTES, chunk)).to(proxy)
    assert up.status == 413 and bodies == []
    assert up.read == DEFAULT_MAX_BODY_BYTES // chunk + 1  # the chunk that passed it, no more
    assert "limit" in json.loads(up.body)["error"]


def test_a_body_at_the_limit_is_forwarded_whole() -> None:
    proxy, bodies = _proxy()
    chunks = _chunks(DEFAULT_MAX_BODY_BYTES, 100_000)
    up = Upload(chunks).to(proxy)
    assert up.status == 200 and up.read == len(chunks)
    assert bodies == [b"".join(chunks)]


def test_the_limit_is_a_proxy_option() -> None:
    proxy, bodies = _proxy(max_body_bytes=1000)
    assert Upload([b"x" * 600, b"x" * 400]).to(proxy).status == 200
    assert Upload([b"x" * 600, b"x" * 401]).to(proxy).status == 413
    assert Upload([b"x"], [(b"content-length", b"1001")]).to(proxy).status == 413
    assert len(bodies) == 1
    with pytest.raises(ValueError, match="max_body_bytes"):
        SplitProxy("m", control_token="t", max_body_bytes=0)


def test_the_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.rollout import proxy as module

    started: list[SplitProxy] = []
    monkeypatch.setenv(module.TOKEN_ENV, "t")
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: started.append(app))
    module.main(["--port", "1", "--max-body-bytes", "1234"])
    module.main(["--port", "1"])
    assert [p.max_body_bytes for p in started] == [1234, DEFAULT_MAX_BODY_BYTES]
    for bad in ("0", "-5", "8MiB"):
        with pytest.raises(SystemExit):
            module.main(["--port", "1", "--max-body-bytes", bad])


def test_control_bodies_are_limited_too() -> None:
    proxy, _ = _proxy(max_body_bytes=1000)
    before = dict(proxy.routes)
    headers = [(b"x-aicrush-rollout-token", b"t")]
    up = Upload([b" " * 2000], headers).to(proxy, "PUT", f"{CONTROL}/routes")
    assert up.status == 413 and proxy.routes == before


def test_a_client_gone_mid_upload_is_not_forwarded() -> None:
    """A disconnect ended the body as if complete: a truncated request reached the server."""
    proxy, bodies = _proxy()
    up = Upload([b'{"instances": [', b"]}"], complete=False).to(proxy)
    assert bodies == [] and up.status == 0 and up.read == 2


def _stream(total: int, size: int) -> Iterator[bytes]:
    yield from _chunks(total, size)  # a generator: httpx sends it chunked, with no length


@pytest.mark.integration
def test_the_running_proxy_answers_an_oversized_upload_with_413(tmp_path: Path) -> None:
    """Through uvicorn: the client sees the 413 (declared or chunked) and the proxy keeps
    serving; the rest of the upload is discarded, not collected."""
    from serving.rollout.local import LocalBackend
    from serving.rollout.machine import ModelRef
    from tests.rollout.fakes import make_launcher

    backend = LocalBackend(
        tmp_path / "rollout",
        model_name="m",
        launcher=make_launcher({"1": ("ok", 0.0)}),
        fetcher=lambda ref: Path(ref.uri),
    )
    try:
        backend.deploy(ModelRef("1", str(tmp_path)), None, 0)
        url = f"{backend.url}{PREDICT}"
        with httpx.Client(timeout=30) as client:
            over = DEFAULT_MAX_BODY_BYTES + MIB
            r = client.post(url, content=_stream(4 * DEFAULT_MAX_BODY_BYTES, 256 * 1024))
            assert r.status_code == 413, r.text
            r = client.post(url, content=b"x" * over)
            assert r.status_code == 413, r.text
            r = client.post(url, json={"instances": ["x"]})
            assert r.status_code == 200
    finally:
        backend.shutdown()
