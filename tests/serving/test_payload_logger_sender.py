"""The payload logger's sink URL is checked when it is made, and its sender thread outlives an
exception no send path expects (an invalid URL's ``httpx.InvalidURL`` ended the thread, and every
later payload was lost without a count)."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from serving.payload_logger import PayloadLogger, check_sink_url

OUT = [{"label": "Python", "score": 0.9}]


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "not-a-url", "ftp://127.0.0.1/", "http://", "/relative/path", "127.0.0.1:8085"],
)
def test_urls_that_cannot_be_a_sink_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="--log-to"):
        check_sink_url(url)
    with pytest.raises(ValueError, match="--log-to"):
        PayloadLogger(url, registry=CollectorRegistry())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8085/", "https://monitor.ns.svc/events", "http://[::1]:8085/"]
)
def test_sink_urls_pass(url: str) -> None:
    assert check_sink_url(url) == url


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"model": "m", "version": "1", **labels}) or 0.0


@pytest.mark.parametrize("batch_size", [1, 8])
def test_an_unexpected_send_error_is_counted_and_the_sender_goes_on(batch_size: int) -> None:
    registry = CollectorRegistry()
    logger = PayloadLogger(
        "http://127.0.0.1:9/", registry=registry, batch_size=batch_size, linger_s=0.0
    )
    calls = {"n": 0}

    def post(url: str, **kwargs: object) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("something no send path expects")
        return httpx.Response(202)

    logger._client.post = post  # type: ignore[method-assign]
    logger.submit("first", "m", "1", ["print(1)"], OUT)
    deadline = time.monotonic() + 10
    while not _sample(registry, "aicrush_payload_log_events_dropped_total", reason="send_error"):
        assert time.monotonic() < deadline, "the failed send was not counted"
        time.sleep(0.02)
    logger.submit("second", "m", "1", ["print(2)"], OUT)
    logger.close(timeout_s=10)
    assert _sample(registry, "aicrush_payload_log_events_dropped_total", reason="send_error") == 2
    assert _sample(registry, "aicrush_payload_log_events_sent_total") == 2  # request + response
