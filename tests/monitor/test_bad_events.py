"""Bad input from the real world, drift-monitor side: every layout the server accepts is read as
the server reads it, repeated event ids pair or are counted, malformed events get 400 with the
reason (never 500)."""

from __future__ import annotations

import base64
import json

import pytest
from cloudevents.conversion import to_binary, to_structured
from fastapi.testclient import TestClient

from serving.monitor.app import create_app
from tests.monitor.conftest import MODEL, VERSION, make_monitor
from tests.monitor.test_app import REQ, RESP, kserve_event


@pytest.fixture
def monitor(tmp_path, reference):
    m = make_monitor(tmp_path / "state", reference, max_rows=1000)
    yield m
    m.close()


def _post(client: TestClient, event, structured: bool = False):
    headers, body = to_structured(event) if structured else to_binary(event)
    return client.post("/", headers=dict(headers), content=body)


def _v1_request(event_id: str, texts: list[str]):
    return kserve_event(REQ, event_id, {"instances": [{"text": t} for t in texts]}, True)


def _v1_response(event_id: str, labels: list[str]):
    return kserve_event(
        RESP, event_id, {"predictions": [{"label": lb, "score": 0.5} for lb in labels]}, True
    )


def _texts(monitor) -> list[str]:
    return [r[1] for r in monitor.windows[(MODEL, VERSION)].records]


def _unpaired(monitor, reason: str) -> float:
    value = monitor.registry.get_sample_value(
        "aicrush_monitor_events_unpaired_total", {"reason": reason}
    )
    return value or 0.0


def test_nested_v2_shape_is_read_as_the_server_reads_it(monitor):
    client = TestClient(create_app(monitor))
    request = kserve_event(
        REQ,
        "n-1",
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "data": [["print(1)"], ["int x;"]],
                }
            ]
        },
        True,
    )
    response = kserve_event(
        RESP,
        "n-1",
        {
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["Python", "C"]}
            ]
        },
        True,
    )
    assert _post(client, request).status_code == 202
    assert _post(client, response).status_code == 202
    assert _texts(monitor) == ["print(1)", "int x;"]


def test_repeated_ids_interleaved_pair_by_row_count(monitor):
    client = TestClient(create_app(monitor))
    events = [
        _v1_request("dup", ["a = 1"]),
        _v1_request("dup", ["int b;", "int c;"]),
        _v1_response("dup", ["Python"]),
        _v1_response("dup", ["C", "C"]),
    ]
    assert [_post(client, e).status_code for e in events] == [202] * 4
    records = monitor.windows[(MODEL, VERSION)].records
    assert sorted((r[1], r[2]) for r in records) == [
        ("a = 1", "Python"),
        ("int b;", "C"),
        ("int c;", "C"),
    ]
    assert len(monitor.pairer) == 0


def test_repeated_ids_of_the_same_size_pair_in_arrival_order(monitor):
    client = TestClient(create_app(monitor))
    for e in (
        _v1_request("same", ["first"]),
        _v1_request("same", ["second"]),
        _v1_response("same", ["Python"]),
        _v1_response("same", ["C"]),
    ):
        assert _post(client, e).status_code == 202
    assert [(r[1], r[2]) for r in monitor.windows[(MODEL, VERSION)].records] == [
        ("first", "Python"),
        ("second", "C"),
    ]


def test_the_same_id_from_two_versions_pairs_within_each_version():
    """A client's x-request-id reused against the stable and the canary revision (their loggers
    send separate events): each response pairs with its own version's request, not the other's."""
    from serving.monitor.events import EventPairer, InferenceEvent

    def half(kind: str, version: str, text: str) -> InferenceEvent:
        return InferenceEvent(
            id="client-id", type=kind, model=MODEL, version=version, endpoint="", data=None,
            texts=(text,) if kind == REQ else (),
            predictions=((text.upper(), 0.9),) if kind == RESP else (),
        )  # fmt: skip

    pairer = EventPairer()
    assert pairer.add(half(REQ, "1", "stable text"))[0] is None
    assert pairer.add(half(REQ, "2", "canary text"))[0] is None
    pair, _ = pairer.add(half(RESP, "2", "canary text"))
    assert pair is not None and pair.version == "2" and pair.texts == ["canary text"]
    pair, _ = pairer.add(half(RESP, "1", "stable text"))
    assert pair is not None and pair.version == "1" and pair.texts == ["stable text"]
    assert len(pairer) == 0


def test_a_pair_whose_sizes_disagree_is_counted_not_refused(monitor):
    client = TestClient(create_app(monitor))
    assert _post(client, _v1_request("m-1", ["a", "b"])).status_code == 202
    r = _post(client, _v1_response("m-1", ["C"]))
    assert r.status_code == 202, r.text
    assert _unpaired(monitor, "count_mismatch") == 2
    assert _texts(monitor) == [] and len(monitor.pairer) == 0


def test_every_inference_lands_in_a_window_or_a_counter(monitor):
    """Reused ids, a lost response, a mismatched pair: every half is in a pair, a counter, or
    still waiting."""
    client = TestClient(create_app(monitor))
    sent = [
        _v1_request("r", ["x1"]),
        _v1_request("r", ["x2", "x3"]),
        _v1_response("r", ["C", "C"]),
        _v1_request("lost", ["y"]),
        _v1_request("mm", ["z1", "z2"]),
        _v1_response("mm", ["C"]),
        _v1_response("r", ["Python"]),
    ]
    for event in sent:
        assert _post(client, event).status_code == 202
    assert sorted(_texts(monitor)) == ["x1", "x2", "x3"]
    assert _unpaired(monitor, "count_mismatch") == 2 and len(monitor.pairer) == 1  # "lost" waits
    monitor.pairer.ttl_s = 0.0
    assert _post(client, _v1_request("late", ["w"])).status_code == 202  # "lost" expires
    assert _unpaired(monitor, "expired") == 1 and len(monitor.pairer) == 1  # "late" waits
    paired_halves = 4
    counted = _unpaired(monitor, "count_mismatch") + _unpaired(monitor, "expired")
    assert paired_halves + counted + len(monitor.pairer) == len(sent) + 1


def _structured(data_field: str, value, ce_type: str = REQ) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "bad-1",
            "type": ce_type,
            "source": "http://s/",
            "inferenceservicename": MODEL,
            data_field: value,
        }
    ).encode()


STRUCTURED = {"content-type": "application/cloudevents+json"}
BINARY = {
    "ce-id": "bad-2",
    "ce-type": REQ,
    "ce-source": "http://s/",
    "ce-specversion": "1.0",
    "content-type": "application/json",
}
BATCH = {"content-type": "application/cloudevents-batch+json"}
V2_TEXT = {"name": "text", "datatype": "BYTES"}

MALFORMED = [
    ("bad-base64", STRUCTURED, _structured("data_base64", "%%%not-base64"), "base64"),
    ("inputs-a-string", STRUCTURED, _structured("data", {"inputs": "print(1)"}), "inputs"),
    (
        "v2-shape-mismatch",
        STRUCTURED,
        _structured("data", {"inputs": [{**V2_TEXT, "shape": [3], "data": ["a"]}]}),
        "says 3 text(s) but the data holds 1",
    ),
    (
        "v2-ragged",
        STRUCTURED,
        _structured("data", {"inputs": [{**V2_TEXT, "shape": [2, 1], "data": [["a"], "b"]}]}),
        "does not match shape [2, 1]",
    ),
    ("instances-numbers", STRUCTURED, _structured("data", {"instances": [1]}), "got number"),
    ("neither-v1-nor-v2", STRUCTURED, _structured("data", {"text": "a"}), "neither V1"),
    (
        "outputs-not-a-list",
        STRUCTURED,
        _structured("data", {"outputs": "C"}, RESP),
        "'outputs' must be a non-empty list",
    ),
    (
        "score-not-a-number",
        STRUCTURED,
        _structured("data", {"predictions": [{"label": "C", "score": "high"}]}, RESP),
        "must be a number",
    ),
    ("structured-not-json", STRUCTURED, b"{nope", "not a CloudEvent"),
    ("binary-data-not-json", BINARY, b"{nope", "not JSON"),
    (
        "binary-missing-source",
        {k: v for k, v in BINARY.items() if k != "ce-source"},
        b"{}",
        "source",
    ),
    ("no-cloudevent-at-all", {"content-type": "application/json"}, b"{}", "not a CloudEvent"),
    (
        "batch-with-a-bad-event",
        {"content-type": "application/cloudevents-batch+json"},
        b"["
        + _structured("data", {"instances": ["a"]})
        + b","
        + _structured("data_base64", "%%%")
        + b"]",
        "batch event 1",
    ),
    ("batch-not-a-list", {"content-type": "application/cloudevents-batch+json"}, b"{}", "array"),
    # Whatever the parsers underneath raise on a client's bytes is a 400, in every mode.
    ("structured-not-utf8", STRUCTURED, bytes(range(128, 256)) * 4, "not UTF-8"),
    ("binary-not-utf8", BINARY, b"\xff\xfe{" + bytes(range(128, 256)), "not"),
    ("batch-not-utf8", BATCH, b"[\xff\xfe\x80]", "not"),
    ("structured-deep", STRUCTURED, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (
        "binary-deep",
        BINARY,
        b"[" * 100_000 + b"]" * 100_000,
        "body (binary mode) is JSON nested too",
    ),
    ("batch-deep", BATCH, b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    # A structured event's JSON may put any value in an extension attribute: an object or a
    # list there is the client's mistake (it once broke the metric labels: a 500).
    (
        "structured-version-an-object",
        STRUCTURED,
        _structured("modelversion", {"v": 1}),
        "attribute 'modelversion' must be a string, got object",
    ),
    (
        "batch-version-a-list",
        BATCH,
        b"[" + _structured("modelversion", [3]) + b"]",
        "batch event 0: CloudEvent attribute 'modelversion' must be a string, got array",
    ),
    (
        "structured-model-a-list",
        STRUCTURED,
        _structured("data", {"instances": ["a"]}).replace(
            b'"inferenceservicename": "' + MODEL.encode() + b'"', b'"inferenceservicename": [1]'
        ),
        "attribute 'inferenceservicename' must be a string, got array",
    ),
    (
        "structured-deep-data",
        STRUCTURED,
        _structured("data", {"instances": ["a"]}).replace(
            b'{"instances"', b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b', "instances"'
        ),
        "nested too deeply",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_events_get_400_with_the_reason(monitor, headers, body, message):
    client = TestClient(create_app(monitor), raise_server_exceptions=False)
    r = client.post("/", headers=headers, content=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()
    assert len(monitor.pairer) == 0 and _texts(monitor) == []


def _event(**fields) -> dict:
    """A structured request event; a field given as ... is left out."""
    event = {
        "specversion": "1.0",
        "id": "f-1",
        "type": REQ,
        "source": "http://s/",
        "inferenceservicename": MODEL,
        "data": {"instances": ["print(1)"]},
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not ...}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _as_structured(event: dict) -> tuple[dict, bytes]:
    return STRUCTURED, json.dumps(event).encode()


def _as_batch(event: dict) -> tuple[dict, bytes]:
    return BATCH, json.dumps([_event(id="ok-0"), event]).encode()


def _binary(body: bytes, **headers: str) -> tuple[dict, bytes]:
    return {**BINARY, **headers}, body


# Every field of an event that can be malformed, in the modes that carry it: the 400 names the
# field (first string) and the problem (second). "%%%not-base64" once decoded to nothing and was
# answered "request body is neither V1 ... got null".
NO_DATA = {"data": ...}
FIELD_ERRORS = [
    # data_base64: a string, base64 (RFC 4648), then UTF-8 JSON of the expected shape
    (
        "b64-not-base64",
        _event(**NO_DATA, data_base64="%%%not-base64"),
        "'data_base64'",
        "character '%' is not in the base64 alphabet",
    ),
    (
        "b64-url-safe",
        _event(**NO_DATA, data_base64="ab-_"),
        "'data_base64'",
        "character '-' is not in the base64 alphabet",
    ),
    (
        "b64-bad-padding",
        _event(**NO_DATA, data_base64="abc"),
        "'data_base64'",
        "not a multiple of 4",
    ),
    (
        "b64-a-number",
        _event(**NO_DATA, data_base64=12),
        "'data_base64'",
        "must be a base64 string, got number",
    ),
    (
        "b64-null",
        _event(**NO_DATA, data_base64=None),
        "'data_base64'",
        "must be a base64 string, got null",
    ),
    (
        "b64-an-object",
        _event(**NO_DATA, data_base64={"instances": []}),
        "'data_base64'",
        "got object",
    ),
    ("b64-empty", _event(**NO_DATA, data_base64=""), "'data_base64'", "is empty"),
    (
        "b64-not-utf8",
        _event(**NO_DATA, data_base64=_b64(b"\xff\xfe{")),
        "'data_base64'",
        "not UTF-8",
    ),
    ("b64-not-json", _event(**NO_DATA, data_base64=_b64(b"{nope")), "'data_base64'", "is not JSON"),
    (
        "b64-wrong-shape",
        _event(**NO_DATA, data_base64=_b64(b'{"text": "a"}')),
        "('data_base64')",
        "neither V1 {'instances': [...]} nor V2",
    ),
    (
        "b64-and-data",
        _event(data_base64=_b64(b'{"instances": ["a"]}')),
        "'data' and 'data_base64'",
        "send one of them",
    ),
    # data: present, not null, JSON (a string must hold JSON), the expected shape
    ("data-missing", _event(**NO_DATA), "'data'", "carries no data"),
    ("data-null", _event(data=None), "'data'", "is null"),
    ("data-a-string-not-json", _event(data="print(1)"), "'data'", "is not JSON"),
    ("data-an-array", _event(data=["print(1)"]), "('data')", "got array"),
    (
        "data-wrong-shape-response",
        _event(type=RESP, data={"labels": ["C"]}),
        "('data')",
        "neither V1 {'predictions': [...]}",
    ),
    # datacontenttype: a string and a media type; named when the data does not read as JSON
    (
        "datacontenttype-a-number",
        _event(datacontenttype=3),
        "'datacontenttype'",
        "must be a string, got number",
    ),
    (
        "datacontenttype-not-a-media-type",
        _event(datacontenttype="json"),
        "'datacontenttype'",
        "must be a media type",
    ),
    (
        "datacontenttype-xml-data",
        _event(datacontenttype="application/xml", data="<a/>"),
        "'application/xml'",
        "is not JSON",
    ),
    # required attributes: present, non-empty strings; specversion 1.0; type one of the two
    ("id-missing", _event(id=...), "'id'", "lacks"),
    ("id-empty", _event(id=""), "'id'", "lacks"),
    ("id-a-number", _event(id=7), "'id'", "must be a string, got number"),
    ("source-an-object", _event(source={"uri": "x"}), "'source'", "must be a string, got object"),
    ("type-a-number", _event(type=1), "'type'", "must be a string, got number"),
    (
        "type-unknown",
        _event(type="com.example.other"),
        "type 'com.example.other'",
        "want org.kubeflow",
    ),
    ("specversion-missing", _event(specversion=...), "'specversion'", "lacks"),
    (
        "specversion-a-number",
        _event(specversion=1.0),
        "'specversion'",
        "must be a string, got number",
    ),
    ("specversion-0.2", _event(specversion="0.2"), "specversion '0.2'", "not supported"),
    # CloudEvents 0.3's datacontentencoding: only base64, and then 'data' is a base64 string
    (
        "encoding-not-base64",
        _event(specversion="0.3", datacontentencoding="gzip"),
        "'datacontentencoding'",
        "must be 'base64', got 'gzip'",
    ),
    (
        "encoding-base64-data-an-object",
        _event(specversion="0.3", datacontentencoding="base64"),
        "'data' (datacontentencoding base64)",
        "must be a base64 string, got object",
    ),
    (
        "encoding-base64-data-not-base64",
        _event(specversion="0.3", datacontentencoding="base64", data="{}"),
        "'data' (datacontentencoding base64)",
        "character '{' is not in the base64 alphabet",
    ),
    # optional attributes and the extensions the monitor reads
    ("time-not-rfc3339", _event(time="yesterday"), "'time'", "RFC 3339"),
    # the pattern of a timestamp with fields no calendar or clock has (RFC 3339, 5.6 and 5.7)
    ("time-no-such-date", _event(time="2026-13-45T99:99:99Z"), "'time'", "RFC 3339"),
    ("time-february-30", _event(time="2026-02-30T00:00:00Z"), "'time'", "no such date"),
    ("time-hour-24", _event(time="2026-01-01T24:00:00Z"), "'time'", "RFC 3339"),
    ("time-minute-60", _event(time="2026-01-01T00:60:00Z"), "'time'", "RFC 3339"),
    ("time-second-61", _event(time="2026-01-01T00:00:61Z"), "'time'", "RFC 3339"),
    ("time-offset-25h", _event(time="2026-01-01T00:00:00+25:00"), "'time'", "RFC 3339"),
    ("time-offset-60min", _event(time="2026-01-01T00:00:00+01:60"), "'time'", "RFC 3339"),
    ("time-a-number", _event(time=1700000000), "'time'", "must be a string, got number"),
    ("subject-an-array", _event(subject=["a"]), "'subject'", "must be a string, got array"),
    (
        "modelversion-a-boolean",
        _event(modelversion=True),
        "'modelversion'",
        "must be a string, got boolean",
    ),
    ("endpoint-a-fraction", _event(endpoint=1.5), "'endpoint'", "must be a string, got number"),
]


@pytest.mark.parametrize("mode", [_as_structured, _as_batch], ids=["structured", "batch"])
@pytest.mark.parametrize(
    ("event", "field", "problem"), [f[1:] for f in FIELD_ERRORS], ids=[f[0] for f in FIELD_ERRORS]
)
def test_a_malformed_field_gets_400_naming_field_and_problem(monitor, mode, event, field, problem):
    client = TestClient(create_app(monitor), raise_server_exceptions=False)
    headers, body = mode(event)
    r = client.post("/", headers=headers, content=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert field in error and problem in error, error
    assert "got null" not in error or "null" in json.dumps(event), error
    if mode is _as_batch:
        assert error.startswith("batch event 1: "), error
    assert len(monitor.pairer) == 0 and _texts(monitor) == []


BINARY_FIELD_ERRORS = [
    ("body-empty", _binary(b""), "event body", "is empty"),
    (
        "body-not-json",
        _binary(b"<a/>", **{"content-type": "application/xml"}),
        "event body",
        "is not JSON",
    ),
    (
        "body-not-json-names-content-type",
        _binary(b"<a/>", **{"content-type": "application/xml"}),
        "'application/xml'",
        "is not JSON",
    ),
    ("body-wrong-shape", _binary(b'{"text": "a"}'), "(the body)", "neither V1"),
    ("ce-id-empty", _binary(b"{}", **{"ce-id": ""}), "ce-id header", "lacks"),
    (
        "ce-specversion-2.0",
        _binary(b"{}", **{"ce-specversion": "2.0"}),
        "specversion '2.0'",
        "not supported",
    ),
    ("ce-time-not-rfc3339", _binary(b"{}", **{"ce-time": "now"}), "'time'", "RFC 3339"),
    (
        "ce-time-no-such-date",
        _binary(b"{}", **{"ce-time": "2026-13-45T99:99:99Z"}),
        "'time'",
        "RFC 3339",
    ),
    ("ce-type-unknown", _binary(b"{}", **{"ce-type": "x"}), "type 'x'", "want org.kubeflow"),
]


@pytest.mark.parametrize(
    ("request_", "field", "problem"),
    [f[1:] for f in BINARY_FIELD_ERRORS],
    ids=[f[0] for f in BINARY_FIELD_ERRORS],
)
def test_a_malformed_binary_event_gets_400_naming_field_and_problem(
    monitor, request_, field, problem
):
    client = TestClient(create_app(monitor), raise_server_exceptions=False)
    headers, body = request_
    r = client.post("/", headers=headers, content=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"] and problem in r.json()["error"], r.json()


def test_well_formed_variants_are_read(monitor):
    """What the checks must let through: base64 data, JSON sent as a string, the Go SDK's
    nanosecond times (KServe's logger) and offsets, a media type with parameters, and a binary
    event whose content type is what curl -d sends (KServe's logger passes the client's on)."""
    client = TestClient(create_app(monitor))
    accepted = [
        _as_structured(_event(id="a", **NO_DATA, data_base64=_b64(b'{"instances": ["b64"]}'))),
        _as_structured(_event(id="b", data='{"instances": ["string"]}')),
        _as_structured(_event(id="c", time="2026-12-01T07:14:35.123456789Z")),
        _as_structured(_event(id="d", time="2026-12-01T09:14:35+02:00")),
        # RFC 3339: a leap second, lower-case t and z, February 29 of a leap year, -00:00
        _as_structured(_event(id="d2", time="2016-12-31T23:59:60Z")),
        _as_structured(_event(id="d3", time="2028-02-29t00:00:00.5z")),
        _as_structured(_event(id="d4", time="2026-01-01T00:00:00-00:00")),
        _as_structured(_event(id="e", datacontenttype="application/json; charset=utf-8")),
        _binary(
            b'{"instances": ["curl"]}',
            **{"ce-id": "f", "content-type": "application/x-www-form-urlencoded"},
        ),
        # CloudEvents 0.3 (older SDKs and sources): base64 data as the 0.3 JSON format writes
        # it, and as the Python SDK writes it (data_base64), JSON data, binary mode.
        _as_structured(
            _event(
                id="g",
                specversion="0.3",
                datacontentencoding="base64",
                schemaurl="http://s/schema",
                data=_b64(b'{"instances": ["v03"]}'),
            )
        ),
        _as_structured(
            _event(
                id="h", specversion="0.3", **NO_DATA, data_base64=_b64(b'{"instances": ["sdk"]}')
            )
        ),
        _as_structured(_event(id="i", specversion="0.3")),
        _binary(b'{"instances": ["v03"]}', **{"ce-id": "j", "ce-specversion": "0.3"}),
    ]
    for headers, body in accepted:
        r = client.post("/", headers=headers, content=body)
        assert r.status_code == 202, r.text
    assert len(monitor.pairer) == len(accepted)


def test_an_integer_model_version_in_structured_json_is_the_same_version(monitor):
    """CloudEvents allows integer attributes: ``"modelversion": 3`` is version "3"."""
    client = TestClient(create_app(monitor))
    for ce_type, data in (
        (REQ, {"instances": ["print(1)"]}),
        (RESP, {"predictions": [{"label": "Python", "score": 0.5}]}),
    ):
        body = json.loads(_structured("data", data, ce_type))
        body["modelversion"] = int(VERSION)
        r = client.post("/", headers=STRUCTURED, content=json.dumps(body))
        assert r.status_code == 202, r.text
    assert _texts(monitor) == ["print(1)"]


def test_a_body_over_the_limit_is_413_and_the_monitor_goes_on(tmp_path, reference):
    """A 60 MB event was accepted and took the monitor to about 900 MB. Over the limit it is a
    413 naming the limit and the flag, with or without a Content-Length (chunked)."""
    monitor = make_monitor(tmp_path / "state", reference, max_rows=1000)
    try:
        client = TestClient(create_app(monitor, max_body_bytes=10_000))
        headers, body = to_binary(_v1_request("big", ["x" * 20_000]))
        r = client.post("/", headers=dict(headers), content=body)
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]

        def chunks():
            for _ in range(5):
                yield b"x" * 4_000

        r = client.post("/", headers=dict(headers), content=chunks())
        assert r.status_code == 413
        assert _post(client, _v1_request("ok", ["a = 1"])).status_code == 202
        assert _post(client, _v1_response("ok", ["Python"])).json() == {"status": "paired"}
    finally:
        monitor.close()


# ----------------------------------------------------------------- content type and coding
def _request_event(event_id: str) -> dict:
    return _event(id=event_id, data={"instances": [f"text of {event_id}"]})


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/CloudEvents+JSON",
        "APPLICATION/CLOUDEVENTS+JSON; charset=UTF-8",
        "application/cloudevents+json ; charset=utf-8",
    ],
)
def test_the_structured_content_type_is_case_insensitive(monitor, content_type):
    """Media types are case-insensitive (RFC 9110 8.3.1)."""
    client = TestClient(create_app(monitor))
    r = client.post(
        "/", headers={"content-type": content_type}, content=json.dumps(_request_event("s1"))
    )
    assert r.status_code == 202, r.text
    assert len(monitor.pairer) == 1


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/CloudEvents-Batch+JSON",
        "APPLICATION/CLOUDEVENTS-BATCH+JSON",
        "application/cloudevents-batch+json; charset=utf-8",
    ],
)
def test_the_batch_content_type_is_case_insensitive(monitor, content_type):
    """`Application/CloudEvents-Batch+JSON` was read as one structured event: 400 "a structured
    CloudEvent is a JSON object, got array"."""
    client = TestClient(create_app(monitor))
    body = json.dumps([_request_event("b1"), _request_event("b2")])
    r = client.post("/", headers={"content-type": content_type}, content=body)
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "batch of 2"} and len(monitor.pairer) == 2


@pytest.mark.parametrize(
    "content_type", ["application/cloudevents+json", "Application/CloudEvents-Batch+JSON"]
)
def test_ce_headers_with_a_structured_content_type_name_the_contradiction(monitor, content_type):
    """Binary mode's ce-* headers with a structured (or batched) content type: the ce-* headers
    are there, so the answer says the two disagree, not "no ce-* headers"."""
    client = TestClient(create_app(monitor))
    headers = {**BINARY, "content-type": content_type}
    r = client.post("/", headers=headers, content=json.dumps({"instances": ["print(1)"]}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "no ce-* headers" not in error, error
    assert "says structured mode" in error or "says batched mode" in error, error
    assert "ce-* headers" in error and "binary mode" in error, error
    assert "application/json" in error, error  # what to send instead


def test_a_structured_event_with_stray_ce_headers_is_still_read(monitor):
    """The content type decides the mode (the CloudEvents HTTP binding, 3.1): a whole event in
    the body is read, whatever ce-* headers came along."""
    client = TestClient(create_app(monitor))
    headers = {**BINARY, "content-type": "application/cloudevents+json"}
    r = client.post("/", headers=headers, content=json.dumps(_request_event("stray")))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "br", "deflate"])
@pytest.mark.parametrize("mode", ["binary", "structured", "batch"])
def test_a_compressed_body_is_415_naming_the_encoding(monitor, encoding, mode):
    """A gzip body was a 400 "not UTF-8": the monitor does not decode content codings, so it
    answers 415 naming the encoding (RFC 9110 15.5.16), as the model server does."""
    import gzip

    client = TestClient(create_app(monitor), raise_server_exceptions=False)
    headers, body = {
        "binary": _binary(b'{"instances": ["a"]}'),
        "structured": _as_structured(_request_event("z")),
        "batch": (BATCH, json.dumps([_request_event("z")]).encode()),
    }[mode]
    r = client.post(
        "/", headers={**headers, "content-encoding": encoding}, content=gzip.compress(body)
    )
    assert r.status_code == 415, r.text
    assert f"Content-Encoding {encoding.lower()!r} is not supported" in r.json()["error"]
    assert r.headers["accept-encoding"] == "identity"
    assert len(monitor.pairer) == 0


def test_an_identity_content_encoding_is_no_encoding(monitor):
    client = TestClient(create_app(monitor))
    headers, body = _binary(b'{"instances": ["a"]}', **{"content-encoding": "identity"})
    assert client.post("/", headers=headers, content=body).status_code == 202
