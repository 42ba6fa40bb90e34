"""A client that leaves before its request is answered is counted as 499 (client closed
request), not as a server error: the canary analysis and AicrushCanaryHighServerErrorRate read
the 5xx series, and such a count made a healthy version look broken."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.serving import RunningServer, shared_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> RunningServer:
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def _count(server: RunningServer, status: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("aicrush_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("path", ["/v1/models/{name}:predict", "/v2/models/{name}/infer"])
def test_a_client_that_leaves_mid_body_is_499_not_500(server: RunningServer, path: str) -> None:
    before_499, before_500 = _count(server, "499"), _count(server, "500")
    target = path.format(name=server.name)
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 40\r\n\r\n".encode()
            + b'{"instances": ["pri'
        )
        time.sleep(0.3)  # the server is now waiting for the rest of the body
    _wait_for(lambda: _count(server, "499") == before_499 + 1)
    assert _count(server, "500") == before_500
