"""The payload logger never slows inference: a dead or slow sink only drops and counts events."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry

from aicrush.model_folder import TextClassifier
from serving.monitor.app import MonitorServer
from serving.payload_logger import PayloadLogger
from tests.monitor.conftest import MODEL, VERSION, free_port, make_monitor

OUT = [{"label": "Python", "score": 0.9}]


def dropped(registry, reason: str) -> float:
    return (
        registry.get_sample_value(
            "aicrush_payload_log_events_dropped_total",
            {"model": MODEL, "version": VERSION, "reason": reason},
        )
        or 0.0
    )


def slowest_submit(logger: PayloadLogger, n: int) -> float:
    worst = 0.0
    for i in range(n):
        start = time.perf_counter()
        logger.submit(f"id-{i}", MODEL, VERSION, ["print(1)"], OUT)
        worst = max(worst, time.perf_counter() - start)
    return worst


def test_monitor_down_drops_and_counts_without_blocking(random_model_dir):
    registry = CollectorRegistry()
    logger = PayloadLogger(f"http://127.0.0.1:{free_port()}/", queue_size=50, registry=registry)
    classifier = TextClassifier.from_dir(random_model_dir, device="cpu")
    texts = ["def f():\n    return 1\n", "body { color: red }", "#include <stdio.h>"]
    baseline = classifier.predict(texts)
    try:
        with_logging = classifier.predict(texts)
        logger.submit(
            "r-0",
            MODEL,
            VERSION,
            texts,
            [{"label": p.label, "score": p.score} for p in with_logging],
        )
        worst = slowest_submit(logger, 200)
    finally:
        logger.close(timeout_s=5)
    assert with_logging == baseline  # inference results are unaffected
    assert worst < 0.05, f"submit blocked for {worst:.3f} s"
    total = (
        dropped(registry, "unreachable")
        + dropped(registry, "queue_full")
        + dropped(registry, "closed")
    )
    assert total == 2 * 201
    assert dropped(registry, "unreachable") >= 2
    assert (
        registry.get_sample_value(
            "aicrush_payload_log_events_sent_total", {"model": MODEL, "version": VERSION}
        )
        is None
    )


class SlowSink(BaseHTTPRequestHandler):
    delay_s = 1.0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay_s)
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_slow_monitor_fills_the_queue_and_drops():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = CollectorRegistry()
    logger = PayloadLogger(
        f"http://127.0.0.1:{server.server_address[1]}/",
        queue_size=5,
        timeout_s=3,
        registry=registry,
    )
    try:
        start = time.perf_counter()
        worst = slowest_submit(logger, 100)
        elapsed = time.perf_counter() - start
    finally:
        logger.close(timeout_s=0.5)
        server.shutdown()
        server.server_close()
    assert worst < 0.05 and elapsed < 1.0, (worst, elapsed)
    assert dropped(registry, "queue_full") >= 2 * 90


@pytest.mark.parametrize(
    "batching", [{}, {"batch_size": 8, "linger_s": 0.5}], ids=["single", "batched"]
)
def test_events_reach_a_real_monitor_and_pair(tmp_path, reference, batching):
    monitor = make_monitor(tmp_path / "state", reference, max_rows=1000)
    port = free_port()
    registry = CollectorRegistry()
    with MonitorServer(monitor, port=port):
        logger = PayloadLogger(f"http://127.0.0.1:{port}/", registry=registry, **batching)
        for i in range(20):
            logger.submit(
                f"req-{i}",
                MODEL,
                VERSION,
                ["let x = 1;", "x = 1"],
                [{"label": "JavaScript", "score": 0.8}, {"label": "Python", "score": 0.7}],
            )
        logger.close(timeout_s=10)
    monitor.close()
    mv = {"model": MODEL, "version": VERSION}
    assert registry.get_sample_value("aicrush_payload_log_events_sent_total", mv) == 40
    received = monitor.registry.get_sample_value(
        "aicrush_monitor_events_received_total", {**mv, "type": "request"}
    )
    assert received == 20
    # every text of every inference reached the window
    assert monitor.registry.get_sample_value("aicrush_monitor_records_total", mv) == 40


class CountingSink(BaseHTTPRequestHandler):
    """Accepts anything; records each POST's content type."""

    posts: ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        CountingSink.posts.append(self.headers.get("content-type", ""))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_batched_mode_posts_batches_and_single_mode_stays_kserve_binary():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CountingSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        CountingSink.posts = []
        batched = PayloadLogger(url, registry=CollectorRegistry(), batch_size=10, linger_s=1.0)
        slowest_submit(batched, 30)
        batched.close(timeout_s=10)
        assert CountingSink.posts and len(CountingSink.posts) <= 6  # 30 inferences, <= 10 a post
        assert set(CountingSink.posts) == {"application/cloudevents-batch+json"}

        CountingSink.posts = []
        single = PayloadLogger(url, registry=CollectorRegistry())
        slowest_submit(single, 3)
        single.close(timeout_s=10)
        assert len(CountingSink.posts) == 6  # a request and a response event per inference
        assert set(CountingSink.posts) == {"application/json"}
    finally:
        server.shutdown()
        server.server_close()


def test_bad_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        PayloadLogger("http://127.0.0.1:1/", registry=CollectorRegistry(), batch_size=0)
    with pytest.raises(ValueError, match="linger_s"):
        PayloadLogger("http://127.0.0.1:1/", registry=CollectorRegistry(), linger_s=-1)
