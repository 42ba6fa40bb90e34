"""Inference CloudEvents as the KServe payload logger sends them, and their pairing by id.

KServe's logger (``pkg/logger``) posts two CloudEvents per inference, in binary mode: type
``org.kubeflow.serving.inference.request`` with the request body and
``org.kubeflow.serving.inference.response`` with the response body, both with ``ce-id`` = the
request id, plus extensions ``inferenceservicename``, ``namespace``, ``component``, ``endpoint``.
:class:`serving.payload_logger.PayloadLogger` sends the same, plus ``modelversion``.
Structured mode (``application/cloudevents+json``) is accepted too, and batched mode
(``application/cloudevents-batch+json``: a JSON array of structured events, from the CloudEvents
HTTP binding), which the local model server's logger uses to send many inferences per request.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


class EventError(ValueError):
    """A malformed event (answered with HTTP 400)."""


@dataclass(frozen=True)
class InferenceEvent:
    id: str
    type: str
    model: str
    version: str | None
    endpoint: str
    data: Any


def parse_event(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """Decode one CloudEvent (binary or structured mode) carrying a KServe request or response."""
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    if content_type.startswith(STRUCTURED_CONTENT_TYPE):
        try:
            envelope = json.loads(body)
        except ValueError as exc:
            raise EventError(f"structured CloudEvent is not JSON: {exc}") from exc
        return _from_envelope(envelope)
    attrs = {k[3:]: v for k, v in lower.items() if k.startswith("ce-")}
    return _event(attrs, _json_body(body))


def is_batch(headers: Mapping[str, str]) -> bool:
    """Whether the request carries a batch of structured CloudEvents."""
    lower = {k.lower(): v for k, v in headers.items()}
    return str(lower.get("content-type", "")).startswith(BATCH_CONTENT_TYPE)


def parse_batch(body: bytes) -> list[InferenceEvent]:
    """Decode a batched-mode body (a JSON array of structured CloudEvents), all or nothing."""
    try:
        envelopes = json.loads(body)
    except ValueError as exc:
        raise EventError(f"CloudEvents batch is not JSON: {exc}") from exc
    if not isinstance(envelopes, list):
        raise EventError("a CloudEvents batch must be a JSON array of events")
    events = []
    for i, envelope in enumerate(envelopes):
        try:
            events.append(_from_envelope(envelope))
        except EventError as exc:
            raise EventError(f"batch event {i}: {exc}") from exc
    return events


def _from_envelope(envelope: Any) -> InferenceEvent:
    if not isinstance(envelope, dict):
        raise EventError("a structured CloudEvent must be a JSON object")
    attrs = {k.lower(): v for k, v in envelope.items() if k not in ("data", "data_base64")}
    if "data_base64" in envelope:
        data = _json_body(base64.b64decode(envelope["data_base64"]))
    else:
        data = envelope.get("data")
        if isinstance(data, str | bytes):
            data = _json_body(data.encode() if isinstance(data, str) else data)
    return _event(attrs, data)


def _event(attrs: Mapping[str, Any], data: Any) -> InferenceEvent:
    for required in ("id", "type", "source", "specversion"):
        if not attrs.get(required):
            raise EventError(f"CloudEvent lacks the '{required}' attribute (ce-{required} header)")
    if attrs["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(
            f"unexpected CloudEvent type {attrs['type']!r}: want {REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    model = attrs.get("inferenceservicename") or attrs.get("modelname") or "unknown"
    return InferenceEvent(
        id=str(attrs["id"]),
        type=str(attrs["type"]),
        model=str(model),
        version=attrs.get("modelversion") or None,
        endpoint=str(attrs.get("endpoint") or "default"),
        data=data,
    )


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise EventError(f"event data is not JSON: {exc}") from exc


def request_texts(data: Any) -> list[str]:
    """Texts of a V1 (``instances``) or V2 (``inputs``, BYTES) request body."""
    if isinstance(data, dict) and "instances" in data:
        return [i["text"] if isinstance(i, dict) else str(i) for i in data["instances"]]
    if isinstance(data, dict) and "inputs" in data:
        inputs = data["inputs"]
        chosen = next((i for i in inputs if i.get("name") == "text"), inputs[0] if inputs else None)
        if chosen is None:
            return []
        return [v if isinstance(v, str) else str(v) for v in chosen.get("data", [])]
    raise EventError("request body is neither V1 {'instances': [...]} nor V2 {'inputs': [...]}")


def response_labels(data: Any) -> list[tuple[str, float]]:
    """(label, score) per prediction of a V1 (``predictions``) or V2 (``outputs``) response."""
    if isinstance(data, dict) and "predictions" in data:
        out = []
        for p in data["predictions"]:
            if isinstance(p, dict):
                out.append((str(p.get("label")), float(p.get("score", float("nan")))))
            else:
                out.append((str(p), float("nan")))
        return out
    if isinstance(data, dict) and "outputs" in data:
        outputs = {o.get("name"): o for o in data["outputs"]}
        labels = outputs.get("label") or data["outputs"][0]
        scores = outputs.get("score")
        values = [str(v) for v in labels.get("data", [])]
        score_values = (
            [float(s) for s in scores["data"]] if scores else [float("nan")] * len(values)
        )
        return list(zip(values, score_values, strict=False))
    raise EventError("response body is neither V1 {'predictions': [...]} nor V2 {'outputs': [...]}")


@dataclass(frozen=True)
class PairedInference:
    id: str
    model: str
    version: str | None
    endpoint: str
    texts: list[str]
    predictions: list[tuple[str, float]]


class EventPairer:
    """Joins request and response events by id. Halves wait at most ``ttl_s`` and at most
    ``max_pending`` of them are kept; the rest are dropped as unpaired (and counted by the caller)."""

    def __init__(self, ttl_s: float = 120.0, max_pending: int = 100_000):
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[float, InferenceEvent]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, event: InferenceEvent, now: float | None = None
    ) -> tuple[PairedInference | None, int]:
        """Return the pair this event completes (or None) and how many halves expired meanwhile."""
        now = time.time() if now is None else now
        expired = self._expire(now)
        other = self._pending.pop(event.id, None)
        if other is None or other[1].type == event.type:
            self._pending[event.id] = (now, event)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                expired += 1
            return None, expired
        request, response = (event, other[1]) if event.type == REQUEST_TYPE else (other[1], event)
        texts = request_texts(request.data)
        predictions = response_labels(response.data)
        if len(texts) != len(predictions):
            raise EventError(
                f"event {event.id}: {len(texts)} inputs but {len(predictions)} predictions"
            )
        return (
            PairedInference(
                id=event.id,
                model=request.model,
                version=request.version or response.version,
                endpoint=request.endpoint,
                texts=texts,
                predictions=predictions,
            ),
            expired,
        )

    def _expire(self, now: float) -> int:
        n = 0
        while self._pending:
            first_ts = next(iter(self._pending.values()))[0]
            if now - first_ts < self.ttl_s:
                break
            self._pending.popitem(last=False)
            n += 1
        return n
