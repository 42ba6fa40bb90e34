"""Send inference payloads to the drift monitor as CloudEvents, the way KServe's logger does.

For each inference, two CloudEvents in binary mode share one ``ce-id`` (the request id): type
``org.kubeflow.serving.inference.request`` with the V1 request body and
``org.kubeflow.serving.inference.response`` with the V1 response body, with KServe's extensions
(``inferenceservicename``, ``namespace``, ``component``, ``endpoint``) plus ``modelversion``.

:meth:`PayloadLogger.submit` never blocks the inference path: it puts the payload on a bounded
queue that one background thread drains. When the queue is full, the monitor is unreachable or
slow, or the logger is closed, the payload is dropped and counted in
``aicrush_payload_log_events_dropped_total{reason=...}``; inference results are unaffected.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


class PayloadLoggerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.sent = Counter(
            "aicrush_payload_log_events_sent",
            "CloudEvents delivered to the payload-log sink.",
            ["model", "version"],
            registry=registry,
        )
        self.dropped = Counter(
            "aicrush_payload_log_events_dropped",
            "CloudEvents not delivered (reason: queue_full, unreachable, http_error, closed).",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.queued = Gauge(
            "aicrush_payload_log_queue_depth", "Inferences waiting to be sent.", registry=registry
        )


_DEFAULT_METRICS: PayloadLoggerMetrics | None = None
_DEFAULT_LOCK = threading.Lock()


def _default_metrics() -> PayloadLoggerMetrics:
    global _DEFAULT_METRICS
    with _DEFAULT_LOCK:
        if _DEFAULT_METRICS is None:
            _DEFAULT_METRICS = PayloadLoggerMetrics(REGISTRY)
        return _DEFAULT_METRICS


class PayloadLogger:
    """A non-blocking CloudEvents payload logger.

    ``url``: the sink (the drift monitor, or any KServe logger sink). ``queue_size``: inferences
    held while the sink is slow; beyond it they are dropped. ``timeout_s``: per-event HTTP
    timeout. ``backoff_s``: after a failed send, drop without trying for this long, so a dead
    sink costs nothing. ``source``/``namespace``/``endpoint``/``component``: CloudEvent attributes
    as KServe sets them (``endpoint`` is ``default`` or ``canary``). ``registry``: where the
    counters live (the process default registry, i.e. the model server's ``/metrics``).
    """

    def __init__(
        self,
        url: str,
        queue_size: int = 1000,
        *,
        timeout_s: float = 2.0,
        backoff_s: float = 5.0,
        source: str = "http://localhost:8080/",
        namespace: str = "default",
        endpoint: str = "default",
        component: str = "predictor",
        registry: CollectorRegistry | None = None,
    ):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.url = url
        self.source = source
        self.namespace = namespace
        self.endpoint = endpoint
        self.component = component
        self.backoff_s = backoff_s
        self.metrics = PayloadLoggerMetrics(registry) if registry else _default_metrics()
        self._queue: queue.Queue[tuple[str, str, str, list[str], list[dict]]] = queue.Queue(
            maxsize=queue_size
        )
        self._closed = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 0.5)))
        self._down_until = 0.0
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()

    def submit(
        self,
        request_id: str,
        model_name: str,
        model_version: str,
        inputs: list[str],
        outputs: list[dict],
    ) -> None:
        """Queue one inference (texts in, ``{"label", "score"}`` out) for logging; never blocks."""
        if self._closed.is_set():
            self.metrics.dropped.labels(model_name, model_version, "closed").inc(2)
            return
        request_id = request_id or uuid.uuid4().hex  # CloudEvents need an id to pair by
        try:
            self._queue.put_nowait((request_id, model_name, model_version, inputs, outputs))
        except queue.Full:
            self.metrics.dropped.labels(model_name, model_version, "queue_full").inc(2)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting payloads, send what is queued for up to ``timeout_s``, drop the rest."""
        self._closed.set()
        self._thread.join(timeout=timeout_s)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self.metrics.dropped.labels(item[1], item[2], "closed").inc(2)
        self._client.close()

    def __enter__(self) -> PayloadLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(
        self,
        request_id: str,
        model_name: str,
        model_version: str,
        inputs: list[str],
        outputs: list[dict],
    ) -> list[tuple[dict[str, str], bytes]]:
        """The (headers, body) of the request and the response CloudEvent, binary mode."""
        now = datetime.now(UTC).isoformat()
        common: dict[str, Any] = {
            "id": request_id,
            "source": self.source,
            "specversion": "1.0",
            "time": now,
            "datacontenttype": "application/json",
            "inferenceservicename": model_name,
            "namespace": self.namespace,
            "component": self.component,
            "endpoint": self.endpoint,
            "modelversion": model_version,
        }
        out = []
        for ce_type, data in (
            (REQUEST_TYPE, {"instances": [{"text": t} for t in inputs]}),
            (RESPONSE_TYPE, {"predictions": outputs}),
        ):
            headers, body = to_binary(CloudEvent({**common, "type": ce_type}, data))
            out.append((dict(headers), body))
        return out

    def _run(self) -> None:
        while not (self._closed.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self.metrics.queued.set(self._queue.qsize())
            self._send(*item)

    def _send(
        self, request_id: str, model: str, version: str, inputs: list[str], outputs: list[dict]
    ) -> None:
        if time.monotonic() < self._down_until:
            self.metrics.dropped.labels(model, version, "unreachable").inc(2)
            return
        try:
            events = self.events(request_id, model, version, inputs, outputs)
        except Exception:  # an unserializable payload must not kill the sender
            log.exception("could not encode payload %s", request_id)
            self.metrics.dropped.labels(model, version, "encode_error").inc(2)
            return
        for i, (headers, body) in enumerate(events):
            try:
                response = self._client.post(self.url, headers=headers, content=body)
            except httpx.HTTPError as exc:
                log.warning(
                    "payload log sink %s unreachable (%s); dropping for %.0f s",
                    self.url,
                    type(exc).__name__,
                    self.backoff_s,
                )
                self._down_until = time.monotonic() + self.backoff_s
                self.metrics.dropped.labels(model, version, "unreachable").inc(len(events) - i)
                return
            if response.status_code >= 300:
                self.metrics.dropped.labels(model, version, "http_error").inc()
            else:
                self.metrics.sent.labels(model, version).inc()
