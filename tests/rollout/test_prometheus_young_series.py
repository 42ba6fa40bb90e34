"""The cluster analysis counts what a real Prometheus scraped, young series included.

A labelled counter series is born at its first increment: the canary's first 5xx makes
``aicrush_requests_total{status="500"}`` (or Knative's
``revision_request_count{response_code_class="5xx"}``) appear already at 1, so Prometheus'
``increase()`` never sees those errors. Here small exporters on loopback count requests the way
the model server (``serving.metrics.ServingMetrics``, its series created at the first
increment) and Knative's queue-proxy do, a real Prometheus scrapes them every second, and
:class:`PrometheusMetricsSource` must return exact counts for a series born in the window, a
series older than the window and counters reset within the window (a container restart, with and
without a failed scrape in between).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter as Tally
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock, Thread

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from serving.metrics import ServingMetrics
from serving.rollout.metrics_source import LATENCY, PREDICTIONS, REQUESTS, PrometheusMetricsSource
from tests.cluster.emulator import start_prometheus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus binary not installed (Debian package prometheus; .ci/run installs it)",
    ),
]

MODEL = "langid"
KNATIVE_BUCKETS_MS = (5, 50, 500)  # a few of Knative's request-latency buckets


class Exporter:
    """One pod's ``/metrics``: our model server's families and, optionally, a queue-proxy's.

    ``restart()`` replaces every counter with a fresh one, as a restarted container does.
    """

    def __init__(self) -> None:
        self.down = False
        self.lock = Lock()  # held by each scrape: what happens under it, a scrape sees at once
        self._fresh()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if exporter.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                with exporter.lock:
                    body = generate_latest(exporter.registry) + exporter.knative_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def _fresh(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)
        self.revision_counts: Tally[tuple[str, str]] = Tally()
        self.revision_buckets: Tally[tuple[str, str]] = Tally()

    restart = _fresh

    def request(self, version: str, status: int, seconds: float, label: str = "Python") -> None:
        """Count one REST request as the model server does (series created on first use)."""
        m = self.metrics
        m.requests.labels(MODEL, version, "v1", str(status)).inc()
        m.request_latency.labels(MODEL, version, "v1").observe(seconds)
        if status == 200:
            m.predictions.labels(MODEL, version, label).inc()

    def revision_request(self, revision: str, status: int, ms: float) -> None:
        """Count one request as Knative's queue-proxy does (series created on first use)."""
        self.revision_counts[(revision, f"{str(status)[0]}xx")] += 1
        for le in (*KNATIVE_BUCKETS_MS, math.inf):
            if ms <= le:
                self.revision_buckets[(revision, "+Inf" if math.isinf(le) else str(le))] += 1

    def knative_text(self) -> str:
        lines = ["# TYPE revision_request_count counter"]
        lines += [
            f'revision_request_count{{revision_name="{r}",response_code_class="{c}"}} {n}'
            for (r, c), n in sorted(self.revision_counts.items())
        ]
        lines.append("# TYPE revision_request_latencies histogram")
        lines += [
            f'revision_request_latencies_bucket{{revision_name="{r}",le="{le}"}} {n}'
            for (r, le), n in sorted(self.revision_buckets.items())
        ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _query(url: str, promql: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus did not show {what} within {timeout_s:.0f} s")
        time.sleep(0.2)


def _scraped(url: str, exporters: list[Exporter]) -> Callable[[], bool]:
    """True once Prometheus holds a successful scrape of every exporter taken after now."""
    after = time.time()

    def check() -> bool:
        # timestamp() of a plain selector is the sample's (of an expression, the query's time).
        at = {
            row["metric"]["instance"]: float(row["value"][1])
            for row in _query(url, "timestamp(up)")
        }
        up = {row["metric"]["instance"]: row["value"][1] for row in _query(url, "up")}
        return all(at.get(e.target, 0.0) > after and up.get(e.target) == "1" for e in exporters)

    return check


def _down(url: str, exporter: Exporter) -> Callable[[], bool]:
    def check() -> bool:
        rows = _query(url, f'up{{instance="{exporter.target}"}}')
        return bool(rows) and float(rows[0]["value"][1]) == 0.0

    return check


def test_counts_young_old_and_reset_series_exactly(tmp_path) -> None:
    pod, restarted, reset, flaky = Exporter(), Exporter(), Exporter(), Exporter()
    exporters = [pod, restarted, reset, flaky]
    prom, url, _ = start_prometheus(tmp_path / "prometheus", [e.target for e in exporters])
    try:
        # Before the window: version 1 (the stable one) has served on `pod`; versions 3 and 4
        # on the pods that will restart. Version 2 (the canary) has no series at all.
        for _ in range(5):
            pod.request("1", 200, 0.003)
            pod.revision_request("rev-1", 200, 3)
        pod.request("1", 500, 0.003)
        pod.revision_request("rev-1", 500, 3)
        for _ in range(7):
            restarted.request("3", 200, 0.003)
            reset.request("4", 200, 0.003)
            flaky.request("5", 200, 0.003)
        _wait_for("the exporters' first values", _scraped(url, exporters))
        # The window starts once those values are a few scrapes old.
        time.sleep(3)
        since = time.time()
        time.sleep(1.5)  # a scrape reads the values a little after its timestamp

        # (b) older than the window: 3 successes and 2 errors more.
        for _ in range(3):
            pod.request("1", 200, 0.003)
            pod.revision_request("rev-1", 200, 3)
        for _ in range(2):
            pod.request("1", 500, 0.2)
            pod.revision_request("rev-1", 500, 200)
        # (a) born in the window: the canary's first requests, 3 of 7 failing.
        for _ in range(4):
            pod.request("2", 200, 0.003, label="C")
            pod.revision_request("rev-2", 200, 3)
        for _ in range(3):
            pod.request("2", 500, 0.2)
            pod.revision_request("rev-2", 500, 200)
        # (c) reset in the window: 2 requests, the container restarts, then 2 more (1 failing).
        for e, v in ((restarted, "3"), (reset, "4")):
            e.request(v, 200, 0.003)
            e.request(v, 200, 0.003)
        _wait_for("the requests before the restarts", _scraped(url, exporters))
        restarted.down = True  # a restart that Prometheus sees fail a scrape
        _wait_for("the restarting pod down", _down(url, restarted))
        restarted.restart()
        restarted.down = False
        restarted.request("3", 200, 0.003)
        restarted.request("3", 500, 0.003)
        # (d) a failed scrape without a restart (a timeout): Prometheus marks the series stale
        # for a moment; when they are back at 9 and then 11, only the 4 of the window count.
        flaky.request("5", 200, 0.003)
        flaky.request("5", 200, 0.003)
        _wait_for("the flaky pod's first requests", _scraped(url, [flaky]))
        flaky.down = True
        _wait_for("the flaky pod down", _down(url, flaky))
        flaky.down = False
        _wait_for("the flaky pod back", _scraped(url, [flaky]))
        flaky.request("5", 200, 0.003)
        flaky.request("5", 500, 0.003)
        with reset.lock:  # a restart between two scrapes: the next one sees 9 drop to 1
            reset.restart()
            reset.request("4", 200, 0.003)
            reset.request("4", 500, 0.003)
        _wait_for("the last requests", _scraped(url, exporters))
        time.sleep(1.5)  # the last values are a whole step old

        versions = ["1", "2", "3", "4", "5"]
        got = PrometheusMetricsSource(url).window(versions, since)
        by_version = {v: (c.requests, c.errors) for v, c in got.items()}
        assert by_version == {"1": (5, 2), "2": (7, 3), "3": (4, 1), "4": (4, 1), "5": (4, 1)}
        assert got["2"].labels == {"C": 4} and got["1"].labels == {"Python": 3}
        le_5ms, le_250ms = 0.005, 0.25
        assert (got["2"].buckets[le_5ms], got["2"].buckets[le_250ms]) == (4, 7)
        assert got["2"].buckets[math.inf] == 7 and got["1"].buckets[le_5ms] == 3

        # The same through Knative's per-revision series.
        knative = PrometheusMetricsSource(url, revisions=lambda: {"1": "rev-1", "2": "rev-2"})
        via_revisions = knative.window(["1", "2"], since)
        assert (via_revisions["1"].requests, via_revisions["1"].errors) == (5, 2)
        assert (via_revisions["2"].requests, via_revisions["2"].errors) == (7, 3)
        assert via_revisions["2"].buckets == {0.005: 4, 0.05: 4, 0.5: 7, math.inf: 7}
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=15)
        except Exception:
            prom.kill()
            prom.wait()
        for e in exporters:
            e.close()


def test_the_model_server_starts_its_series_at_zero(random_model_dir, tmp_path) -> None:
    """Our own server does not wait for the first request: a canary's first 5xx then moves a
    series Prometheus already holds at 0, so ``increase()`` in alerts and dashboards sees it."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.model_factory import DEFAULT_LABELS
    from tests.serving import MODEL_NAME, MODEL_VERSION, running_server

    Key = tuple[str, frozenset[tuple[str, str]]]

    def key(name: str, **labels: str) -> Key:
        return name, frozenset(dict(labels, model=MODEL_NAME, version=MODEL_VERSION).items())

    def samples(url: str) -> dict[Key, float]:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    with running_server(random_model_dir, tmp_path) as server:
        before = samples(server.url)
        for protocol in ("v1", "v2"):
            for status in ("200", "500", "503"):
                assert before.get(key(REQUESTS, protocol=protocol, status=status)) == 0
            assert before.get(key(f"{LATENCY}_bucket", protocol=protocol, le="+Inf")) == 0
        assert before.get(key(REQUESTS, protocol="grpc", status="INTERNAL")) == 0
        predictions = {lb: before.get(key(PREDICTIONS, label=lb)) for lb in DEFAULT_LABELS}
        assert predictions == dict.fromkeys(DEFAULT_LABELS, 0)

        r = httpx.post(f"{server.url}/v1/models/{MODEL_NAME}:predict", json={"instances": ["x=1"]})
        assert r.status_code == 200, r.text
        ok = key(REQUESTS, protocol="v1", status="200")
        assert (before[ok], samples(server.url)[ok]) == (0, 1)
