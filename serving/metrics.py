"""Prometheus metrics of the aicrush model server, served on ``/metrics`` by KServe's REST app.

Every series carries ``model`` and ``version`` labels, so the stable and the canary revision of
one model can be told apart in the same Prometheus (version from aicrush.json or ``--version``).
Names follow the Prometheus conventions: ``aicrush_`` prefix, base units, ``_total`` counters.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LENGTH_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
#: Statuses whose series exist from start-up, per protocol: success and the server errors
#: KServe's handlers answer (kserve/errors.py: 500, 501, 503; gRPC: what the predictor records).
START_STATUSES = {
    "v1": ("200", "500", "501", "503"),
    "v2": ("200", "500", "501", "503"),
    "grpc": ("OK", "INTERNAL"),
}


class ServingMetrics:
    """The server's metric families; created once per process (the default registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.requests = Counter(
            "aicrush_requests",
            "Inference requests by model, version, protocol and HTTP status code.",
            ["model", "version", "protocol", "status"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "aicrush_request_duration_seconds",
            "Inference request latency, from the first byte read to the response.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "aicrush_batch_size",
            "Texts per forward pass of the dynamic batcher.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "aicrush_predictions",
            "Predicted labels.",
            ["model", "version", "label"],
            registry=registry,
        )
        self.input_tokens = Histogram(
            "aicrush_input_length_tokens",
            "Tokens per input text after truncation to the model's max_length.",
            ["model", "version"],
            buckets=LENGTH_BUCKETS,
            registry=registry,
        )
        self.input_chars = Histogram(
            "aicrush_input_length_chars",
            "Characters per input text, before truncation.",
            ["model", "version"],
            buckets=(64, 256, 1024, 4096, 16384, 65536, 262144),
            registry=registry,
        )

    def start_series(self, model: str, version: str, labels: Iterable[str]) -> None:
        """Create the series of one served (model, version) at 0, before its first request.

        A labelled series otherwise appears at its first increment, already at 1, and
        Prometheus' ``increase()``/``rate()`` read a series from its first sample on: the first
        5xx of a new canary would never count in an alert or a dashboard. Created here: the
        request counter for each protocol and :data:`START_STATUSES` (the success and server
        error codes; client errors and unexpected codes still appear at first use, the set of
        HTTP codes being too large to list), the latency, batch and input histograms, and one
        prediction series per label of the model (``labels``: the model's label names).
        """
        for protocol, statuses in START_STATUSES.items():
            for status in statuses:
                self.requests.labels(model, version, protocol, status)
            self.request_latency.labels(model, version, protocol)
        self.batch_size.labels(model, version)
        self.input_tokens.labels(model, version)
        self.input_chars.labels(model, version)
        for label in labels:
            self.predictions.labels(model, version, label)


_METRICS: ServingMetrics | None = None


def serving_metrics() -> ServingMetrics:
    """The process-wide metrics (registered on first use, never at import)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = ServingMetrics()
    return _METRICS
