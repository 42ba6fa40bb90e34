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
import datetime
import json
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SPEC_VERSION = "1.0"
#: The CloudEvents versions read: 1.0, and 0.3 (older SDKs and event sources still send it;
#: the cloudevents library parses both).
SPEC_VERSIONS = (SPEC_VERSION, "0.3")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REQUIRED_ATTRIBUTES = ("id", "type", "source", "specversion")

# Why a half or a pair never reached a window (the ``reason`` label of the unpaired counter).
EXPIRED = "expired"  # no partner within the pairing TTL
OVERFLOW = "overflow"  # more halves waiting than max_pending
COUNT_MISMATCH = "count_mismatch"  # the only partner with this id has another number of rows


#: A model version number as the registry writes it (MLflow: decimal; no leading zeros, see
#: :func:`canonical_version`).
REGISTRY_VERSION = re.compile("[0-9]+")


def canonical_version(version: str) -> str:
    """``version`` as the registry spells it: a zero-padded number loses its zeros ("01" -> "1");
    anything else (an alias such as "challenger", "v1", "1.0") is returned as it is, and names
    no registry version (``serving.monitor.service.Monitor.route``)."""
    return (version.lstrip("0") or "0") if REGISTRY_VERSION.fullmatch(version) else version


class EventError(ValueError):
    """A malformed event (answered with HTTP 400)."""


class UnsupportedEncoding(EventError):
    """A body in a content coding the monitor does not decode (answered with HTTP 415, as the
    model server answers one: RFC 9110 15.5.16)."""

    def __init__(self, encoding: str) -> None:
        super().__init__(
            f"Content-Encoding {encoding!r:.60} is not supported: send the event body uncompressed"
        )
        self.encoding = encoding


def media_type(content_type: str) -> str:
    """The type/subtype of a Content-Type value, lower-cased: media types are case-insensitive
    and may carry parameters (RFC 9110 8.3.1)."""
    return content_type.split(";", 1)[0].strip().lower()


def _ce_headers(lower: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in lower if k.startswith("ce-"))


def _looks_like_event(value: Any) -> bool:
    """A JSON object with a CloudEvents attribute: what a structured-mode body holds."""
    return isinstance(value, dict) and any(n in value for n in REQUIRED_ATTRIBUTES)


def _mode_conflict(content_type: str, ce_headers: list[str], mode: str) -> EventError:
    """The content type says structured (or batched) mode, ce-* headers say binary mode, and
    the body holds no event: name the contradiction (the content type decides the mode)."""
    names = ", ".join(ce_headers[:4]) + (", ..." if len(ce_headers) > 4 else "")
    body = "a JSON array of events" if mode == "batched" else "the event, a JSON object"
    return EventError(
        f"the content type {content_type!r:.60} says {mode} mode (the body is {body}) while the "
        f"ce-* headers ({names}) say binary mode (attributes in headers, the body is the data), "
        "and the body holds no event: for binary mode send the body's own content type (e.g. "
        "application/json), else put the event in the body"
    )


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
    the ``cloudevents`` library) carrying a KServe request or response; EventError naming the
    field and what is wrong with it when it is not one (:func:`check_attributes`,
    :func:`structured_data`, :func:`decode_json`)."""
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http

    lower = {k.lower(): v for k, v in headers.items()}
    content_type = str(lower.get("content-type", ""))
    ce_headers = _ce_headers(lower)
    if media_type(content_type) == STRUCTURED_CONTENT_TYPE or not ce_headers:
        # structured mode (the content type decides it): the body is the event, a JSON object
        envelope = _envelope_of(body, content_type, ce_headers)
        return _structured_event(envelope, body)
    # Binary mode: attributes in ce-* headers (strings by construction), the body is the data.
    check_attributes({k[3:]: v for k, v in lower.items() if k.startswith("ce-")}, "ce-{} header")
    try:
        event = from_http(dict(lower), body, data_unmarshaller=_as_is)
    except GenericException as exc:
        raise EventError(f"not a CloudEvent (HTTP binding, binary mode): {exc}") from None
    data = decode_json(body, "the event body (binary mode)", content_type or None)
    return _event(dict(event.get_attributes()), data, "the body")


def parse_events(headers: Mapping[str, str], body: bytes) -> list[InferenceEvent]:
    """The events of one HTTP request in any mode (binary, structured, batched), all or nothing.

    Raises :class:`EventError` (answered with HTTP 400) for anything a client can send wrong,
    whatever the parsers underneath raise: bytes that are not UTF-8, JSON nested too deeply to
    read, a malformed attribute or body. A client's event never becomes a server error. A body
    in a content coding (``Content-Encoding: gzip``) is :class:`UnsupportedEncoding` (415).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    encoding = str(lower.get("content-encoding", "")).strip().lower()
    if encoding not in ("", "identity"):  # neither uvicorn nor the monitor decodes bodies
        raise UnsupportedEncoding(encoding)
    try:
        if is_batch(headers):
            return parse_batch(body, str(lower.get("content-type", "")), _ce_headers(lower))
        return [parse_event(headers, body)]
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
    return media_type(str(lower.get("content-type", ""))) == BATCH_CONTENT_TYPE


def parse_batch(
    body: bytes, content_type: str = BATCH_CONTENT_TYPE, ce_headers: list[str] | None = None
) -> list[InferenceEvent]:
    """Decode a batched-mode body (a JSON array of structured CloudEvents), all or nothing; each
    element is checked as a structured event is, and read by the ``cloudevents`` library's
    structured-mode parser. EventError names the index of the first bad event, or, when binary
    mode's ``ce_headers`` came along and the body holds no events, the contradiction."""
    try:
        envelopes = json.loads(body)
    except RecursionError:
        if ce_headers:
            raise _mode_conflict(content_type, ce_headers, "batched") from None
        raise EventError("CloudEvents batch is JSON nested too deeply to read") from None
    except ValueError as exc:
        if ce_headers:
            raise _mode_conflict(content_type, ce_headers, "batched") from None
        raise EventError(f"CloudEvents batch is not JSON: {exc}") from None
    if ce_headers and not (isinstance(envelopes, list) and any(map(_looks_like_event, envelopes))):
        raise _mode_conflict(content_type, ce_headers, "batched")
    if not isinstance(envelopes, list):
        raise EventError(
            f"a CloudEvents batch must be a JSON array of events, got {_json_type(envelopes)}"
        )
    events = []
    for i, envelope in enumerate(envelopes):
        try:
            events.append(_structured_event(envelope, None))
        except EventError as exc:
            raise EventError(f"batch event {i}: {exc}") from None
    return events


# The attributes CloudEvents 1.0 defines (https://github.com/cloudevents/spec, "Context
# Attributes"), and 0.3's schemaurl and datacontentencoding: all strings in the JSON format; time
# an RFC 3339 timestamp, datacontenttype an RFC 2046 media type.
OPTIONAL_ATTRIBUTES = (
    "datacontenttype", "dataschema", "subject", "time", "schemaurl", "datacontentencoding"
)  # fmt: skip
#: The extensions the monitor reads (model name, version, endpoint): strings, or integers.
READ_EXTENSIONS = ("inferenceservicename", "modelname", "modelversion", "endpoint")
_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(\.\d+)?"
    r"([Zz]|[+-](?P<offset_hour>\d{2}):(?P<offset_minute>\d{2}))",
    re.ASCII,
)
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+\s*(;.*)?", re.ASCII | re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)


def _json_type(value: Any) -> str:
    """A JSON value's type, as a sender reads it (object, array, string, number, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def check_attributes(attrs: Mapping[str, Any], where: str = '"{}" in the JSON event') -> None:
    """Raise EventError naming the first attribute that is missing, of the wrong type or
    malformed: ``id``, ``source``, ``type`` and ``specversion`` (required, non-empty strings;
    specversion "1.0" or "0.3"), ``time`` (RFC 3339), ``datacontenttype`` (a media type), the other
    CloudEvents attributes (strings) and the extensions the monitor reads (strings or integers).
    ``where`` spells an attribute's place in the message (``ce-{} header`` in binary mode)."""
    for name in REQUIRED_ATTRIBUTES:
        value = attrs.get(name)
        if value is None or value == "":
            raise EventError(
                f"CloudEvent lacks the '{name}' attribute ({where.format(name)}): it is required"
            )
    for name in (*REQUIRED_ATTRIBUTES, *OPTIONAL_ATTRIBUTES):
        value = attrs.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(
                f"CloudEvent attribute '{name}' must be a string, got {_json_type(value)}"
            )
    if attrs["specversion"] not in SPEC_VERSIONS:
        raise EventError(
            f"CloudEvent specversion {attrs['specversion']!r} is not supported: send "
            f"{SPEC_VERSION!r} (KServe's logger and aicrush's payload logger do) or '0.3'"
        )
    encoding = attrs.get("datacontentencoding")
    if encoding is not None and encoding.lower() != "base64":
        raise EventError(
            f"CloudEvent attribute 'datacontentencoding' (CloudEvents 0.3) must be 'base64', "
            f"got {encoding!r:.60}: send the body as JSON in 'data' without it"
        )
    if attrs["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(
            f"unexpected CloudEvent type {attrs['type']!r}: want {REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    time_ = attrs.get("time")
    problem = None if time_ is None else rfc3339_problem(time_)
    if problem is not None:
        raise EventError(
            f"CloudEvent attribute 'time' must be an RFC 3339 timestamp such as "
            f"2026-01-31T12:00:00Z, got {time_!r:.60} ({problem})"
        )
    media = attrs.get("datacontenttype")
    if media is not None and not _MEDIA_TYPE.fullmatch(media):
        raise EventError(
            f"CloudEvent attribute 'datacontenttype' must be a media type such as "
            f"application/json, got {media!r:.60}"
        )
    for name in READ_EXTENSIONS:
        _attribute(attrs, name)


def rfc3339_problem(value: str) -> str | None:
    """What keeps ``value`` from being an RFC 3339 timestamp (section 5.6; 5.7: a real date,
    hour 00-23, minute 00-59, second 00-60 for a leap second, offset up to 23:59), or None."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        return "not of the form YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or +HH:MM"
    f = {k: int(v) for k, v in match.groupdict("0").items()}
    if f["hour"] > 23 or f["minute"] > 59 or f["second"] > 60:
        return "no such time of day"
    if f["offset_hour"] > 23 or f["offset_minute"] > 59:
        return "no such offset"
    try:
        datetime.date(f["year"] or 2000, f["month"], f["day"])  # year 0000: leap, as 2000
    except ValueError as exc:
        return f"no such date: {exc}"
    return None


def _envelope_of(body: bytes, content_type: str, ce_headers: list[str]) -> Any:
    """The JSON object of a structured-mode event, or EventError saying why the body is not one
    (with ``ce_headers``, binary mode's, the contradiction with the content type)."""
    if ce_headers:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            envelope = None
        if not _looks_like_event(envelope):
            raise _mode_conflict(content_type, ce_headers, "structured")
        return envelope
    hint = "" if media_type(content_type) == STRUCTURED_CONTENT_TYPE else (
        " (no ce-* headers, so not binary mode either)"
    )  # fmt: skip
    try:
        return json.loads(body)
    except RecursionError:
        raise EventError(f"structured CloudEvent is JSON nested too deeply to read{hint}") from None
    except UnicodeDecodeError as exc:
        raise EventError(
            f"structured CloudEvent is not UTF-8 text (byte {exc.start}: {exc.reason}){hint}"
        ) from None
    except ValueError as exc:
        raise EventError(
            f"not a CloudEvent: the body of a structured CloudEvent must be a JSON object "
            f"({exc}){hint}"
        ) from None


def _structured_event(envelope: Any, raw: bytes | None) -> InferenceEvent:
    """One structured-mode event (alone, or an element of a batch): checked field by field,
    then read by the ``cloudevents`` library; ``raw`` is its JSON text when at hand."""
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_json

    if not isinstance(envelope, dict):
        raise EventError(
            f"not a CloudEvent: a structured CloudEvent is a JSON object, got "
            f"{_json_type(envelope)}"
        )
    if "specversion" not in envelope and not any(n in envelope for n in REQUIRED_ATTRIBUTES):
        raise EventError(
            "not a CloudEvent: no ce-* headers (binary mode) and no CloudEvents attributes "
            "(specversion, id, source, type) in the JSON body (structured mode)"
        )
    check_attributes(envelope)
    data, field_ = structured_data(envelope)
    try:
        event = from_json(raw if raw is not None else json.dumps(envelope), _as_is)
    except GenericException as exc:
        raise EventError(f"not a CloudEvent (structured mode): {exc}") from None
    return _event(dict(event.get_attributes()), data, field_)


def structured_data(envelope: Mapping[str, Any]) -> tuple[Any, str]:
    """The logged body of a structured event and the member that carried it (``data`` or
    ``data_base64``). ``data`` is the JSON value itself (or a string holding JSON);
    ``data_base64`` the body's bytes in base64 (RFC 4648), which must hold UTF-8 JSON; so is
    ``data`` under CloudEvents 0.3's ``"datacontentencoding": "base64"``.

    Raises EventError naming the member: both or neither present, ``data`` null, ``data_base64``
    not a string, not base64, empty, not UTF-8 or not JSON once decoded.
    """
    media = envelope.get("datacontenttype")
    if "data" in envelope and "data_base64" in envelope:
        raise EventError("the event carries both 'data' and 'data_base64': send one of them")
    if "data_base64" in envelope:
        return _base64_json(envelope["data_base64"], "data_base64", media), "data_base64"
    if envelope.get("datacontentencoding") is not None and "data" in envelope:
        # CloudEvents 0.3, JSON format: 'data' is a base64 string (check_attributes allows only
        # the encoding "base64").
        why = " (datacontentencoding base64)"
        return _base64_json(envelope["data"], "data", media, why), "data"
    if "data" not in envelope:
        raise EventError(
            "the event carries no data: put the logged request or response body in 'data' "
            "(JSON) or 'data_base64'"
        )
    data = envelope["data"]
    if data is None:
        raise EventError("'data' is null: it must hold the logged request or response body")
    if isinstance(data, str):  # JSON sent as a string (double-encoded), or a non-JSON body
        return decode_json(data.encode(), "'data' (a string)", media), "data"
    return data, "data"


def _base64_json(encoded: Any, member: str, media: str | None, why: str = "") -> Any:
    """The JSON body ``member`` carries in base64 (RFC 4648, checked strictly); EventError
    naming ``member`` and the problem otherwise."""
    if not isinstance(encoded, str):
        raise EventError(
            f"'{member}'{why} must be a base64 string, got {_json_type(encoded)}: put a JSON "
            "body in 'data', or its bytes base64-encoded in 'data_base64'"
        )
    if not _BASE64.fullmatch(encoded) or len(encoded) % 4:
        bad = next(
            (c for c in encoded if not (c.isascii() and c.isalnum()) and c not in "+/="), None
        )
        what = (
            f"character {bad!r} is not in the base64 alphabet (A-Z, a-z, 0-9, +, /)"
            if bad is not None
            else f"its length, {len(encoded)}, is not a multiple of 4 or '=' is misplaced"
        )
        raise EventError(f"'{member}'{why} is not valid base64: {what}")
    decoded = base64.b64decode(encoded, validate=True)
    return decode_json(decoded, f"'{member}' (decoded)", media)


def decode_json(raw: bytes, what: str, content_type: str | None) -> Any:
    """``raw`` read as UTF-8 JSON; EventError naming ``what`` and the problem otherwise (empty,
    not UTF-8, not JSON, nested too deeply). ``content_type`` is named when it is not JSON."""
    if not raw:
        raise EventError(f"{what} is empty: it must hold the logged request or response body")
    said = (
        f" (content type {content_type!r:.60})"
        if content_type and "json" not in content_type.lower()
        else ""
    )
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EventError(
            f"{what} is not UTF-8 text (byte {exc.start}: {exc.reason}){said}"
        ) from None
    except RecursionError:
        raise EventError(f"{what} is JSON nested too deeply to read") from None
    except ValueError as exc:
        raise EventError(
            f"{what} is not JSON ({exc}){said}: the monitor reads the JSON bodies of V1 and V2 "
            "requests and responses"
        ) from None


def _as_is(data: Any) -> Any:
    """The ``cloudevents`` library's data unmarshaller: none (the data was read and checked
    already; the library only reads the attributes)."""
    return data


def _event(attrs: Mapping[str, Any], data: Any, carrier: str) -> InferenceEvent:
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
        where = carrier if carrier == "the body" else f"'{carrier}'"
        raise EventError(f"{what} event {event.id} ({where}): {exc}") from None


def _attribute(attrs: Mapping[str, Any], name: str) -> str | None:
    """An extension attribute as a string (None when absent or empty). A structured event's
    JSON can carry any value there; the monitor reads these as names, so a string or an integer
    (CloudEvents' types in JSON) is one, and an object, a list, a fractional number or a
    boolean (which would break the metric labels and the window keys) is a 400."""
    value = attrs.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise EventError(f"CloudEvent attribute '{name}' must be a string, got {_json_type(value)}")
    return str(value)


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


def _score(value: Any, where: str, expected: str = "") -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(f"{where} must be a number, got {_json_type(value)}{expected}")
    return float(value)


#: A V1 prediction as the model server returns it (named in every error about one).
PREDICTION_SHAPE = 'a label string or {"label": "...", "score": ...}'


def v1_prediction(value: Any, where: str) -> tuple[str, float]:
    """(label, score) of one V1 prediction as the model server returns it: ``{"label": str,
    "score": number}`` (the score may be absent or null) or a bare label string. EventError
    naming ``where`` (``predictions[3]``), what it holds and what was expected otherwise: a
    null, a number, a list, an object without a string label."""
    expected = f": expected {PREDICTION_SHAPE}"
    if isinstance(value, str):
        return value, float("nan")
    if not isinstance(value, dict):
        raise EventError(f"{where} must be {PREDICTION_SHAPE}, got {_json_type(value)}")
    if "label" not in value:
        raise EventError(f"{where} has no 'label'{expected}")
    label = value["label"]
    if not isinstance(label, str):
        raise EventError(f"{where}.label must be a string, got {_json_type(label)}{expected}")
    return label, _score(value.get("score"), f"{where}.score", expected)


def response_labels(data: Any) -> list[tuple[str, float]]:
    """(label, score) per prediction of a V1 (``predictions``) or V2 (``outputs``) response;
    EventError naming what is malformed."""
    if isinstance(data, dict) and "predictions" in data:
        preds = data["predictions"]
        if not isinstance(preds, list):
            raise EventError(
                f"'predictions' must be a list, one prediction per input ({PREDICTION_SHAPE}), "
                f"got {_json_type(preds)}"
            )
        return [v1_prediction(p, f"predictions[{i}]") for i, p in enumerate(preds)]
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
