"""What the local rollout proxy counts for the canary analysis: inference calls, nothing else.

A newcomer trial sent 20 POSTs to ``/v1/models/NAME:explain`` (KServe answers 501, no explainer):
the proxy counted every POST as a prediction, the canary's error rate became 0.32 and
``aicrush watch`` rolled a healthy canary back. Every other request is still proxied unchanged.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serving.rollout.metrics_source import Counters, parse_metrics
from serving.rollout.proxy import SplitProxy

MODEL = "m"
PREDICTION = {"predictions": [{"label": "Python", "score": 0.9}]}
V2_PREDICTION = {"model_name": MODEL, "outputs": [{"name": "label", "data": ["Python"]}]}


def _upstream(status_by_path: dict[str, int]) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A model server double: a status per path (200 otherwise), a prediction body on 200."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = status_by_path.get(request.url.path, 200)
        doc = V2_PREDICTION if request.url.path.startswith("/v2/") else PREDICTION
        return httpx.Response(status, json=doc if status == 200 else {"error": f"HTTP {status}"})

    return seen, httpx.MockTransport(answer)


def _proxy(
    transport: httpx.MockTransport, model_name: str = MODEL, mirror_fraction: float = 0.0
) -> SplitProxy:
    proxy = SplitProxy(model_name, mirror_fraction, control_token="t")
    proxy._client = httpx.AsyncClient(transport=transport)
    return proxy


def _send(proxy: SplitProxy, requests: list[tuple[str, str]]) -> tuple[list[int], dict]:
    """Send (method, path) requests in order; the statuses and the analysis' view of /metrics."""

    async def run() -> tuple[list[int], str]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=proxy), base_url="http://proxy"
        ) as client:
            statuses = [
                (
                    await client.request(
                        method, path, content=json.dumps({"instances": [{"text": "x"}]})
                    )
                ).status_code
                for method, path in requests
            ]
            await asyncio.sleep(0.05)  # mirrors run in the background
            return statuses, (await client.get("/metrics")).text

    statuses, text = asyncio.run(run())
    return statuses, parse_metrics(text)


def _routes(proxy: SplitProxy, percent: int) -> None:
    proxy.routes = {
        "stable": {"version": "1", "url": "http://stable:8080"},
        "canary": {"version": "2", "url": "http://canary:8080"},
        "percent": percent,
    }


#: Requests that are not inference calls of model "m": each kind is proxied, never counted.
NOT_INFERENCE = [
    ("POST", f"/v1/models/{MODEL}:explain"),
    ("POST", f"/v1/models/{MODEL}"),
    ("POST", f"/v1/models/{MODEL}:predictx"),
    ("POST", f"/v1/models/{MODEL}:predict/x"),
    ("POST", "/v1/models"),
    ("POST", f"/v2/models/{MODEL}"),
    ("POST", f"/v2/models/{MODEL}/ready"),
    ("POST", f"/v2/models/{MODEL}/generate"),
    ("POST", f"/v2/models/{MODEL}/infer/x"),
    ("POST", f"/v2/models/{MODEL}/versions/1/ready"),
    ("POST", f"/v2/models/{MODEL}/versions/infer"),
    ("POST", "/v2/health/live"),
    ("POST", "/v2"),
    ("POST", "/"),
    ("POST", "/anything"),
    ("POST", "/openai/v1/completions"),
    ("GET", f"/v1/models/{MODEL}:predict"),
    ("PUT", f"/v1/models/{MODEL}:predict"),
    ("DELETE", f"/v2/models/{MODEL}/infer"),
    ("GET", f"/v1/models/{MODEL}"),
    ("GET", f"/v2/models/{MODEL}/ready"),
    ("POST", "/v1/models/other:predict"),  # another model's name: not this model's traffic
    ("POST", "/v2/models/other/infer"),
]


@pytest.mark.parametrize(("method", "path"), NOT_INFERENCE)
def test_other_requests_are_proxied_but_not_counted_as_inference(method: str, path: str) -> None:
    seen, transport = _upstream({path: 501})
    proxy = _proxy(transport, mirror_fraction=1.0)
    _routes(proxy, percent=0)  # all to stable; every inference call would be mirrored
    statuses, snapshot = _send(proxy, [(method, path)] * 20)
    assert statuses == [501] * 20  # proxied, the upstream's answer passed on
    assert len(seen) == 20 and all(r.url.path == path for r in seen)  # none mirrored
    for version in ("1", "2"):
        c = snapshot.get(version, Counters())
        assert (c.requests, c.errors, sum(c.buckets.values()), c.mirrored) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        (f"/v1/models/{MODEL}:predict", "v1"),
        (f"/v2/models/{MODEL}/infer", "v2"),
        (f"/v2/models/{MODEL}/versions/2/infer", "v2"),
    ],
)
def test_inference_calls_are_counted(path: str, protocol: str) -> None:
    _, transport = _upstream({})
    proxy = _proxy(transport)
    _routes(proxy, percent=100)
    statuses, snapshot = _send(proxy, [("POST", path)] * 3)
    assert statuses == [200] * 3
    c = snapshot["2"]
    assert (c.requests, c.errors, c.labels) == (3, 0, {"Python": 3})
    labels = {"model": MODEL, "version": "2", "protocol": protocol, "status": "200"}
    assert (
        proxy.registry.get_sample_value("aicrush_requests_total", labels | {"role": "canary"}) == 3
    )


def test_a_proxy_without_a_model_name_counts_every_models_inference() -> None:
    _, transport = _upstream({})
    proxy = _proxy(transport, model_name="")
    _routes(proxy, percent=100)
    _, snapshot = _send(proxy, [("POST", "/v1/models/any:predict"), ("POST", "/v1/models/any")])
    assert snapshot["2"].requests == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 415, 422, 429])
def test_a_clients_4xx_is_never_a_server_error_of_the_version(status: int) -> None:
    path = f"/v1/models/{MODEL}:predict"
    _, transport = _upstream({path: status})
    proxy = _proxy(transport)
    _routes(proxy, percent=100)
    statuses, snapshot = _send(proxy, [("POST", path)] * 10)
    assert statuses == [status] * 10
    assert snapshot["2"].errors == 0 and snapshot["2"].error_rate == 0.0


def test_explain_calls_do_not_raise_the_canarys_error_rate() -> None:
    """The trial's case: a healthy canary, a client calling :explain; error rate stays 0."""
    explain = f"/v1/models/{MODEL}:explain"
    _, transport = _upstream({explain: 501})
    proxy = _proxy(transport)
    _routes(proxy, percent=100)
    predict = ("POST", f"/v1/models/{MODEL}:predict")
    _, snapshot = _send(proxy, [predict] * 43 + [("POST", explain)] * 20)
    assert snapshot["2"].requests == 43 and snapshot["2"].error_rate == 0.0


def test_a_failing_version_is_still_counted_as_failing() -> None:
    """5xx on inference calls (and an unreachable upstream, 502) stay server errors."""
    predict = f"/v1/models/{MODEL}:predict"
    _, transport = _upstream({predict: 500})
    proxy = _proxy(transport)
    _routes(proxy, percent=100)
    _, snapshot = _send(proxy, [("POST", predict)] * 4)
    assert snapshot["2"].error_rate == 1.0

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    proxy = _proxy(httpx.MockTransport(unreachable))
    _routes(proxy, percent=100)
    statuses, snapshot = _send(proxy, [("POST", predict)] * 4)
    assert statuses == [502] * 4 and snapshot["2"].error_rate == 1.0
