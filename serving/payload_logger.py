"""Send inference payloads to the drift monitor as CloudEvents, the way KServe's logger does.

For each inference, two CloudEvents share one ``ce-id`` (the request id): type
``org.kubeflow.serving.inference.request`` with the V1 request body and
``org.kubeflow.serving.inference.response`` with the V1 response body, with KServe's extensions
(``inferenceservicename``, ``namespace``, ``component``, ``endpoint``) plus ``modelversion``.

With ``batch_size=1`` each event is one POST in binary mode, exactly as KServe's logger sends
them, for any KServe logger sink. With ``batch_size > 1`` (what ``aicrush serve --log-to`` uses)
the sender waits up to ``linger_s`` for more inferences and posts up to ``batch_size`` of them as
one CloudEvents batch (``application/cloudevents-batch+json``, structured events), which the drift
monitor accepts: the per-inference work of building and posting events, in the model server
and in the monitor, is what logging costs inference on a small machine.

:meth:`PayloadLogger.submit` never blocks the inference path: it puts the payload on a bounded
queue that one background thread drains. When the queue is full, the monitor is unreachable or
slow, or the logger is closed, the payload is dropped and counted in
``aicrush_payload_log_events_dropped_total{reason=...}``; inference results are unaffected.
"""

from __future__ import annotations

import json
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


def check_sink_url(url: str) -> str:
    """``url`` when it can be a payload-log sink: an ``http://`` or ``https://`` URL with a host;
    ValueError naming it and what to give otherwise. Checked when the logger is made, so a
    server with a bad ``--log-to`` stops at start instead of dropping every payload."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise ValueError(f"--log-to {url!r} is not a URL ({err})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"--log-to {url!r}: give an http:// or https:// URL with a host, e.g. "
            "http://127.0.0.1:8085/ (aicrush monitor's default port)"
        )
    return url


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
            "CloudEvents not delivered (reason: queue_full, unreachable, http_error, closed, "
            "encode_error, send_error).",
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
        batch_size: int = 1,
        linger_s: float = 0.0,
    ):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.url = check_sink_url(url)
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
        out = []
        for envelope in self.structured(request_id, model_name, model_version, inputs, outputs):
            data = envelope.pop("data")
            headers, body = to_binary(CloudEvent(envelope, data))
            out.append((dict(headers), body))
        return out

    def structured(
        self,
        request_id: str,
        model_name: str,
        model_version: str,
        inputs: list[str],
        outputs: list[dict],
    ) -> list[dict[str, Any]]:
        """The request and the response CloudEvent in structured form (for batched mode)."""
        common: dict[str, Any] = {
            "id": request_id,
            "source": self.source,
            "specversion": "1.0",
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "inferenceservicename": model_name,
            "namespace": self.namespace,
            "component": self.component,
            "endpoint": self.endpoint,
            "modelversion": model_version,
        }
        return [
            {**common, "type": REQUEST_TYPE, "data": {"instances": [{"text": t} for t in inputs]}},
            {**common, "type": RESPONSE_TYPE, "data": {"predictions": outputs}},
        ]

    def _run(self) -> None:
        while not (self._closed.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if self.batch_size == 1:
                self.metrics.queued.set(self._queue.qsize())
                self._guarded([item], batch=False)
                continue
            items = [item]
            # Linger by sleeping, not by waiting on the queue: a get() per submit would wake this
            # thread (and take the GIL from inference) once per inference. No lingering when a
            # batch is already queued or the logger is closing (close() ends the wait at once).
            if self._queue.qsize() < self.batch_size - 1:
                self._closed.wait(self.linger_s)
            while len(items) < self.batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.metrics.queued.set(self._queue.qsize())
            self._guarded(items, batch=True)

    def _guarded(self, items: list[tuple], batch: bool) -> None:
        """Send ``items`` (one CloudEvents batch, or one inference's events). An exception no
        send path expects is logged and the items are counted as dropped (``send_error``)
        instead of ending this thread, which would lose every later payload without a count."""
        try:
            if batch:
                self._send_batch(items)
            else:
                self._send(*items[0])
        except Exception:
            log.exception("payload log sender: could not send %d inference(s)", len(items))
            self._drop(items, "send_error")

    def _unreachable(self, exc: Exception) -> None:
        """A failed POST: drop without trying for ``backoff_s``, so a dead sink costs nothing."""
        log.warning(
            "payload log sink %s unreachable (%s); dropping for %.0f s",
            self.url,
            type(exc).__name__,
            self.backoff_s,
        )
        self._down_until = time.monotonic() + self.backoff_s

    def _drop(self, items: list[tuple], reason: str) -> None:
        for item in items:
            self.metrics.dropped.labels(item[1], item[2], reason).inc(2)

    def _send_batch(self, items: list[tuple[str, str, str, list[str], list[dict]]]) -> None:
        if time.monotonic() < self._down_until:
            self._drop(items, "unreachable")
            return
        fragments: list[str] = []
        encodable = []
        for item in items:
            try:  # one item at a time: an unserializable payload must not sink the whole batch
                fragments.append(json.dumps(self.structured(*item))[1:-1])
            except (TypeError, ValueError):
                log.exception("could not encode payload %s", item[0])
                self._drop([item], "encode_error")
                continue
            encodable.append(item)
        if not encodable:
            return
        try:
            response = self._client.post(
                self.url,
                content=("[" + ",".join(fragments) + "]").encode(),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
        except httpx.HTTPError as exc:
            self._unreachable(exc)
            self._drop(encodable, "unreachable")
            return
        if response.status_code >= 300:
            self._drop(encodable, "http_error")
            return
        for item in encodable:
            self.metrics.sent.labels(item[1], item[2]).inc(2)

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
                self._unreachable(exc)
                self.metrics.dropped.labels(model, version, "unreachable").inc(len(events) - i)
                return
            if response.status_code >= 300:
                self.metrics.dropped.labels(model, version, "http_error").inc()
            else:
                self.metrics.sent.labels(model, version).inc()
