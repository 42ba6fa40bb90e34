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

import json
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REQUIRED_ATTRIBUTES = ("id", "type", "source", "specversion")

# Why a half or a pair never reached a window (the ``reason`` label of the unpaired counter).
EXPIRED = "expired"  # no partner within the pairing TTL
OVERFLOW = "overflow"  # more halves waiting than max_pending
COUNT_MISMATCH = "count_mismatch"  # the only partner with this id has another number of rows


class EventError(ValueError):
    """A malformed event (answered with HTTP 400)."""


@dataclass(frozen=True)
class InferenceEvent:
    """One parsed half of an inference: the request's texts, or the response's predictions,
    read when the event arrives (a malformed body is refused then, with the reason)."""

    id: str
    type: str
    model: str
    version: str | None
    endpoint: str
    data: Any
    texts: tuple[str, ...] = ()
    predictions: tuple[tuple[str, float], ...] = ()

    @property
    def is_request(self) -> bool:
        return self.type == REQUEST_TYPE

    @property
    def rows(self) -> int:
        return len(self.texts) if self.is_request else len(self.predictions)


def parse_event(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """Decode one CloudEvent (binary or structured mode of the CloudEvents HTTP binding, read by
    the ``cloudevents`` library) carrying a KServe request or response; EventError with the
    reason when it is not one."""
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http

    lower = {k.lower(): v for k, v in headers.items()}
    content_type = str(lower.get("content-type", ""))
    if not content_type.startswith(STRUCTURED_CONTENT_TYPE) and any(
        k.startswith("ce-") for k in lower
    ):
        # Binary mode: the library reports a missing attribute as "no specversion"; name it.
        for required in REQUIRED_ATTRIBUTES:
            if not lower.get(f"ce-{required}"):
                raise EventError(
                    f"CloudEvent lacks the '{required}' attribute (ce-{required} header)"
                )
    try:
        event = from_http(dict(lower), body)
    except GenericException as exc:
        raise EventError(f"not a CloudEvent (HTTP binding, binary or structured): {exc}") from None
    return _event(dict(event.get_attributes()), event.get_data())


def parse_events(headers: Mapping[str, str], body: bytes) -> list[InferenceEvent]:
    """The events of one HTTP request in any mode (binary, structured, batched), all or nothing.

    Raises :class:`EventError` (answered with HTTP 400) for anything a client can send wrong,
    whatever the parsers underneath raise: bytes that are not UTF-8, JSON nested too deeply to
    read, a malformed attribute or body. A client's event never becomes a server error.
    """
    try:
        return parse_batch(body) if is_batch(headers) else [parse_event(headers, body)]
    except EventError:
        raise
    except RecursionError:
        raise EventError("event body is nested too deeply to read (JSON depth)") from None
    except UnicodeDecodeError as exc:
        raise EventError(
            f"event body is not UTF-8 text (byte {exc.start}: {exc.reason}): send JSON"
        ) from None
    except Exception as exc:  # any parser failure on client bytes is a 400
        raise EventError(f"unreadable CloudEvent: {type(exc).__name__}: {exc}") from None


def is_batch(headers: Mapping[str, str]) -> bool:
    """Whether the request carries a batch of structured CloudEvents."""
    lower = {k.lower(): v for k, v in headers.items()}
    return str(lower.get("content-type", "")).startswith(BATCH_CONTENT_TYPE)


def parse_batch(body: bytes) -> list[InferenceEvent]:
    """Decode a batched-mode body (a JSON array of structured CloudEvents), all or nothing; each
    element is read by the ``cloudevents`` library's structured-mode parser."""
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_json

    try:
        envelopes = json.loads(body)
    except ValueError as exc:
        raise EventError(f"CloudEvents batch is not JSON: {exc}") from None
    if not isinstance(envelopes, list):
        raise EventError("a CloudEvents batch must be a JSON array of events")
    events = []
    for i, envelope in enumerate(envelopes):
        if not isinstance(envelope, dict):
            raise EventError(f"batch event {i}: a structured CloudEvent must be a JSON object")
        try:
            event = from_json(json.dumps(envelope))
            events.append(_event(dict(event.get_attributes()), event.get_data()))
        except GenericException as exc:
            raise EventError(f"batch event {i}: not a CloudEvent: {exc}") from None
        except EventError as exc:
            raise EventError(f"batch event {i}: {exc}") from None
    return events


def _event(attrs: Mapping[str, Any], data: Any) -> InferenceEvent:
    for required in REQUIRED_ATTRIBUTES:
        if not attrs.get(required):
            raise EventError(f"CloudEvent lacks the '{required}' attribute (ce-{required} header)")
    if attrs["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(
            f"unexpected CloudEvent type {attrs['type']!r}: want {REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    if isinstance(data, bytes | str):
        data = _json_body(data.encode() if isinstance(data, str) else data)
    model = _attribute(attrs, "inferenceservicename") or _attribute(attrs, "modelname") or "unknown"
    event = InferenceEvent(
        id=str(attrs["id"]),
        type=str(attrs["type"]),
        model=model,
        version=_attribute(attrs, "modelversion"),
        endpoint=_attribute(attrs, "endpoint") or "default",
        data=data,
    )
    what = "request" if event.is_request else "response"
    try:
        if event.is_request:
            return replace(event, texts=tuple(request_texts(data)))
        return replace(event, predictions=tuple(response_labels(data)))
    except EventError as exc:
        raise EventError(f"{what} event {event.id}: {exc}") from None


def _attribute(attrs: Mapping[str, Any], name: str) -> str | None:
    """An extension attribute as a string (None when absent or empty). A structured event's
    JSON can carry any value there; CloudEvents allows strings, integers and booleans, and an
    object or a list (which would break the metric labels and the window keys) is a 400."""
    value = attrs.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, dict | list | float):
        raise EventError(
            f"CloudEvent attribute '{name}' must be a string, got {type(value).__name__}"
        )
    return str(value)


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise EventError(f"event data is not JSON: {exc}") from None


def request_texts(data: Any) -> list[str]:
    """Texts of a logged V1 (``instances``) or V2 (``inputs``) request body, read by the model
    server's own decoder (serving/decoding.py), so every layout it accepts (e.g. V2 shape
    ``[N, 1]`` with nested data) gives the texts the model saw; EventError otherwise."""
    from kserve.errors import InvalidInput

    from serving.decoding import texts_of_logged_request

    try:
        return texts_of_logged_request(data)
    except InvalidInput as exc:
        raise EventError(str(exc)) from None


def _score(value: Any, where: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"{where} must be a number, got {type(value).__name__}")
    return float(value)


def response_labels(data: Any) -> list[tuple[str, float]]:
    """(label, score) per prediction of a V1 (``predictions``) or V2 (``outputs``) response;
    EventError naming what is malformed."""
    if isinstance(data, dict) and "predictions" in data:
        preds = data["predictions"]
        if not isinstance(preds, list):
            raise EventError(f"'predictions' must be a list, got {type(preds).__name__}")
        out = []
        for i, p in enumerate(preds):
            if isinstance(p, dict):
                if not isinstance(p.get("label"), str):
                    raise EventError(f"predictions[{i}] has no string 'label'")
                out.append((p["label"], _score(p.get("score"), f"predictions[{i}].score")))
            elif isinstance(p, str):
                out.append((p, float("nan")))
            else:
                raise EventError(
                    f"predictions[{i}] must be a label or {{label, score}}, got {type(p).__name__}"
                )
        return out
    if isinstance(data, dict) and "outputs" in data:
        outputs = data["outputs"]
        if not isinstance(outputs, list) or not outputs:
            raise EventError("'outputs' must be a non-empty list of tensors")
        if not all(isinstance(o, dict) for o in outputs):
            raise EventError("every element of 'outputs' must be a tensor object")
        by_name = {o.get("name"): o for o in outputs}
        labels = by_name.get("label") or outputs[0]
        values = labels.get("data")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise EventError(f"output '{labels.get('name')}' data must be a list of labels")
        scores = by_name.get("score")
        if scores is None:
            return [(v, float("nan")) for v in values]
        score_values = scores.get("data")
        if not isinstance(score_values, list) or len(score_values) != len(values):
            raise EventError(
                f"output 'score' must hold one number per label ({len(values)}), got "
                f"{score_values!r:.60}"
            )
        return [
            (v, _score(s, f"score[{i}]"))
            for i, (v, s) in enumerate(zip(values, score_values, strict=True))
        ]
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
    """Joins request and response events by id (within one model and version: two revisions'
    loggers may see the same client-chosen ``x-request-id``), also when clients reuse ids.

    Halves with the same id queue in arrival order; a new half pairs with the oldest waiting
    opposite half of its id **with the same number of rows** (so interleaved inferences that
    share an id pair correctly whenever their sizes tell them apart; two same-sized inferences
    whose answers arrive out of order are indistinguishable by construction). When the only
    waiting partner has another row count, both halves are dropped as ``count_mismatch``.
    Halves wait at most ``ttl_s`` (then ``expired``) and at most ``max_pending`` of them are
    kept (the oldest beyond go as ``overflow``). Every dropped half is returned to the caller,
    by reason, to be counted.
    """

    def __init__(self, ttl_s: float = 120.0, max_pending: int = 100_000):
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._seq = 0
        self._pending: OrderedDict[int, tuple[float, InferenceEvent]] = OrderedDict()
        self._by_key: dict[tuple[str, str | None, str, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self, event: InferenceEvent, now: float | None = None
    ) -> tuple[PairedInference | None, Counter[str]]:
        """Return the pair this event completes (or None) and the halves dropped meanwhile, by
        reason (``expired``, ``overflow``, ``count_mismatch``)."""
        now = time.time() if now is None else now
        dropped: Counter[str] = Counter()
        dropped[EXPIRED] += self._expire(now)
        other_type = RESPONSE_TYPE if event.is_request else REQUEST_TYPE
        candidates = self._by_key.get(self._key(event, other_type), [])
        match = next((s for s in candidates if self._pending[s][1].rows == event.rows), None)
        if match is None and len(candidates) == 1 and not self._by_key.get(self._key(event)):
            self._remove(candidates[0])
            dropped[COUNT_MISMATCH] += 2
            return None, +dropped
        if match is None:
            self._seq += 1
            self._pending[self._seq] = (now, event)
            self._by_key.setdefault(self._key(event), []).append(self._seq)
            while len(self._pending) > self.max_pending:
                self._remove(next(iter(self._pending)))
                dropped[OVERFLOW] += 1
            return None, +dropped
        other = self._remove(match)
        request, response = (event, other) if event.is_request else (other, event)
        return (
            PairedInference(
                id=event.id,
                model=request.model,
                version=request.version or response.version,
                endpoint=request.endpoint,
                texts=list(request.texts),
                predictions=list(response.predictions),
            ),
            +dropped,
        )

    @staticmethod
    def _key(event: InferenceEvent, type_: str | None = None) -> tuple[str, str | None, str, str]:
        return (event.model, event.version, event.id, type_ or event.type)

    def _remove(self, seq: int) -> InferenceEvent:
        _, event = self._pending.pop(seq)
        key = self._key(event)
        queue = self._by_key[key]
        queue.remove(seq)
        if not queue:
            del self._by_key[key]
        return event

    def expire(self, now: float | None = None) -> int:
        """Drop the halves that waited longer than ``ttl_s``; how many (also called between
        events: the monitor's tick, so the pending gauge is right when traffic stops)."""
        return self._expire(time.time() if now is None else now)

    def _expire(self, now: float) -> int:
        n = 0
        while self._pending:
            seq, (first_ts, _) = next(iter(self._pending.items()))
            if now - first_ts < self.ttl_s:
                break
            self._remove(seq)
            n += 1
        return n
