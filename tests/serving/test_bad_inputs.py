"""The error contract: every client mistake gets a 4xx with a message saying what is wrong.

A corpus of bad requests (each with its expected status and message), unicode edge cases that
must be answered, and a good request after all of them: the server never answers 500 to a
client's mistake and never falls over. REST JSON, REST binary data extension and gRPC (contents
and raw_input_contents) alike.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.serving import REPO_ROOT, running_server, shared_server, v2_body

pytestmark = pytest.mark.integration

V1 = "/v1/models/aicrush:predict"
V2 = "/v2/models/aicrush/infer"


@pytest.fixture(scope="module")
def server(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig):
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def _v2(name="text", datatype="BYTES", shape=(1,), data=("x",)) -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": list(data)}]}
    ).encode()


# (id, path, body bytes, expected status, expected message fragment)
BAD = [
    ("v1-malformed-json", V1, b'{"instances": [', 400, "not valid JSON"),
    ("v2-malformed-json", V2, b'{"inputs": [}', 400, "not valid JSON"),
    ("non-utf8-body", V1, b'{"instances": ["\xff\xfe"]}', 400, "not valid UTF-8"),
    ("empty-body", V1, b"", 400, "empty"),
    ("top-level-array", V1, b'["a"]', 400, "must be a JSON object, got array"),
    ("top-level-string", V1, b'"a"', 400, "must be a JSON object, got string"),
    ("top-level-null", V2, b"null", 400, "must be a JSON object, got null"),
    ("v1-missing-instances", V1, b'{"inputs": ["a"]}', 400, "unexpected key(s) ['inputs']"),
    ("v1-no-keys", V1, b"{}", 400, 'missing "instances"'),
    ("v1-instances-not-list", V1, b'{"instances": "a"}', 400, '"instances" must be a list'),
    ("v1-empty-batch", V1, b'{"instances": []}', 400, "empty batch"),
    ("v1-number-item", V1, b'{"instances": [1]}', 400, "must be a string, got number"),
    ("v1-null-item", V1, b'{"instances": [null]}', 400, "got null"),
    ("v1-object-text", V1, b'{"instances": [{"text": {"a": 1}}]}', 400, "got object"),
    ("v1-missing-text-key", V1, b'{"instances": [{"code": "a"}]}', 400, "missing key 'text'"),
    ("v1-extra-key", V1, b'{"instances": [{"text": "a", "x": 1}]}', 400, "unexpected key(s) ['x']"),
    ("v2-missing-inputs", V2, b'{"id": "1"}', 400, "inputs"),
    ("v2-inputs-not-list", V2, b'{"inputs": {"name": "text"}}', 400, "inputs"),
    (
        "v2-missing-field",
        V2,
        b'{"inputs": [{"name": "text", "shape": [1], "data": ["a"]}]}',
        400,
        "datatype",
    ),
    ("v2-missing-text-input", V2, _v2(name="code"), 400, "missing input 'text'"),
    ("v2-no-inputs", V2, b'{"inputs": []}', 400, "missing input 'text'"),
    (
        "v2-extra-input",
        V2,
        b'{"inputs": [' + _v2()[12:-2] + b", " + _v2(name="x")[12:-2] + b"]}",
        400,
        "unexpected input(s) ['x']",
    ),
    ("v2-wrong-datatype", V2, _v2(datatype="FP32", data=(1.0,)), 400, "datatype BYTES, got FP32"),
    ("v2-int-datatype", V2, _v2(datatype="INT64", data=(1,)), 400, "datatype BYTES, got INT64"),
    (
        "v2-shape-mismatch",
        V2,
        _v2(shape=(3,), data=("a", "b")),
        400,
        "says 3 text(s) but the data holds 2",
    ),
    ("v2-negative-dim", V2, _v2(shape=(-1,)), 400, "invalid dimension -1"),
    ("v2-huge-dim", V2, _v2(shape=(10**12,)), 400, "too large"),
    ("v2-huge-2d", V2, _v2(shape=(2**62, 1)), 400, "too large"),
    ("v2-bad-rank", V2, _v2(shape=(1, 1, 1)), 400, "shape [N] or [N, 1]"),
    (
        "v2-shape-not-list",
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": "1", "data": ["a"]}]}',
        400,
        "shape",
    ),
    ("v2-empty-batch", V2, _v2(shape=(0,), data=()), 400, "empty batch"),
    ("v2-number-item", V2, _v2(data=(5,)), 400, "must be a string, got number"),
    (
        "v2-bool-param",
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "parameters": {"return_probabilities": "yes"}}',
        400,
        "must be a boolean",
    ),
    (
        "v2-unknown-output",
        V2,
        b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}], "outputs": [{"name": "logits"}]}',
        400,
        "unknown output 'logits'",
    ),
    ("lone-surrogate", V1, b'{"instances": ["\\ud800"]}', 400, "surrogate"),
    (
        "deeply-nested",
        V1,
        b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "nested too deeply",
    ),
    (
        "nested-under-limit-of-parser",
        V2,
        b'{"inputs": [{"x": ' + b"[" * 100 + b"]" * 100 + b"}]}",
        400,
        "nested too deeply",
    ),
    (
        "unknown-model-v1",
        "/v1/models/nope:predict",
        b'{"instances": ["a"]}',
        404,
        "nope does not exist",
    ),
    ("unknown-model-v2", "/v2/models/nope/infer", _v2(), 404, "nope does not exist"),
    ("unknown-version", "/v2/models/aicrush/versions/999/infer", _v2(), 404, "no version 999"),
    (
        "unknown-model-versioned",
        "/v2/models/nope/versions/1/infer",
        _v2(),
        404,
        "nope does not exist",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_request_gets_4xx_with_a_message(server, path, body, status, message):
    r = httpx.post(
        server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()


def test_body_over_the_limit_is_413_before_parsing(server):
    body = b'{"instances": ["' + b"a" * (9 * 1024 * 1024) + b'"]}'  # default limit 8 MiB
    r = httpx.post(server.url + V1, content=body, timeout=60)
    assert r.status_code == 413 and "8388608-byte limit" in r.json()["error"]
    r = httpx.post(server.url + V2, content=b"{" * (9 * 1024 * 1024), timeout=60)
    assert r.status_code == 413


UNICODE = {
    "emoji": "def 🐍():\n    return '👍🏽👨‍👩‍👧'",
    "rtl-override": "x = 1 # \u202egnirts\u202c\nprint(x)",
    "combining-marks": "e\u0301\u0301\u0301 = 'Z\u0351\u0352\u0353\u0354'",
    "nul": "int main() {\x00 return 0; }",
    "bom-in-text": "\ufeffimport os",
    "zero-width": "a\u200b\u200c\u200d = 1",
    "cjk-and-arabic": "# 你好 مرحبا\nprint('hi')",
    "control-chars": "\x01\x02\x1b[31m red \x7f",
    "only-whitespace": "   \n\t  ",
    "empty-string": "",
    "over-long": "import os\n" * 20000,  # truncated to the model's max_length
}


@pytest.mark.parametrize("text", list(UNICODE.values()), ids=list(UNICODE))
def test_unicode_edge_cases_are_answered(server, text):
    r = httpx.post(server.url + V1, json={"instances": [text]}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.post(server.url + V2, json=v2_body([text]), timeout=30)
    assert r.status_code == 200, r.text


def test_leading_bom_on_the_body_is_accepted(server):
    body = "\ufeff" + json.dumps({"instances": ["print(1)"]})
    r = httpx.post(server.url + V1, content=body.encode("utf-8"), timeout=30)
    assert r.status_code == 200, r.text


def test_server_still_answers_after_the_corpus(server):
    r = httpx.post(server.url + V1, json={"instances": ["def f(): pass"]}, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["label"]
    metrics = httpx.get(server.url + "/metrics").text
    server_errors = [  # the series exist from start-up, at 0 (serving.metrics.START_STATUSES)
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("aicrush_requests_total{") and 'status="5' in line
    ]
    assert server_errors and not any(server_errors)


# --------------------------------------------------------------------------- JSON tensors

TEXT = {"name": "text", "datatype": "BYTES"}


def _req(**fields: object) -> bytes:
    body: dict[str, object] = {"inputs": [{**TEXT, "shape": [1], "data": ["x"]}]}
    body.update(fields)
    return json.dumps(body).encode()


# Every length/shape/datatype mismatch of a JSON tensor, and every request field of the Open
# Inference Protocol that this model does not honour: 400 with the reason.
BAD_V2_FIELDS = [
    (
        "ragged-nesting",
        _req(inputs=[{**TEXT, "shape": [2, 1], "data": [["a"], "b"]}]),
        "data[1] does not match shape [2, 1]",
    ),
    (
        "nested-deeper-than-shape",
        _req(inputs=[{**TEXT, "shape": [2, 1], "data": [[["a"]], [["b"]]]}]),
        "nested deeper than shape [2, 1]",
    ),
    (
        "nested-wrong-length",
        _req(inputs=[{**TEXT, "shape": [2], "data": [["a", "b"]]}]),
        "dimension 0 wants 2 element(s), got 1",
    ),
    (
        "unknown-datatype",
        _req(inputs=[{**TEXT, "datatype": "STRING", "shape": [1], "data": ["x"]}]),
        "got STRING",
    ),
    (
        "unknown-request-parameter",
        _req(parameters={"temperature": 0.5}),
        "unsupported request parameter(s) ['temperature']",
    ),
    (
        "unknown-input-parameter",
        _req(inputs=[{**TEXT, "shape": [1], "data": ["x"], "parameters": {"scale": 2}}]),
        "unsupported input 'text' parameter(s) ['scale']",
    ),
    (
        "output-twice",
        _req(outputs=[{"name": "label"}, {"name": "label"}]),
        "output 'label' is requested twice",
    ),
    (
        "unknown-output-parameter",
        _req(outputs=[{"name": "label", "parameters": {"classification": 3}}]),
        "unsupported output 'label' parameter(s) ['classification']",
    ),
    (
        "binary-data-not-boolean",
        _req(outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}]),
        "'binary_data' must be a boolean",
    ),
    (
        "probabilities-parameter-against-outputs",
        _req(parameters={"return_probabilities": True}, outputs=[{"name": "label"}]),
        "does not list 'probabilities'",
    ),
]


# Bodies the protocol's schema itself refuses (KServe's pydantic InferenceRequest): the message
# locates the field from the body, and only the JSON request's errors are listed (the route's
# body is InferenceRequest | bytes; pydantic also reported the bytes member, which a JSON body
# never is).
BAD_V2_SCHEMA = [
    ("shape-not-a-list", _req(inputs=[{**TEXT, "shape": "x", "data": ["a"]}]),
     "invalid V2 inference request: inputs.0.shape: Input should be a valid list"),
    ("inputs-not-a-list", _req(inputs="x"),
     "invalid V2 inference request: inputs: Input should be a valid list"),
    ("no-data", _req(inputs=[{**TEXT, "shape": [1]}]),
     "invalid V2 inference request: inputs.0.data: Field required"),
    ("id-not-a-string", _req(id=5),
     "invalid V2 inference request: id: Input should be a valid string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"), [b[1:] for b in BAD_V2_SCHEMA], ids=[b[0] for b in BAD_V2_SCHEMA]
)
def test_v2_schema_errors_name_the_field_and_nothing_else(server, body, message):
    r = httpx.post(server.url + V2, content=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == message


@pytest.mark.parametrize(
    ("body", "message"), [b[1:] for b in BAD_V2_FIELDS], ids=[b[0] for b in BAD_V2_FIELDS]
)
def test_v2_request_fields_are_honoured_or_refused(server, body, message):
    r = httpx.post(server.url + V2, content=body, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()


def test_v2_requested_outputs_come_back_exactly_in_their_order(server):
    for names in (["score", "label"], ["probabilities"], ["label", "probabilities", "score"]):
        r = httpx.post(
            server.url + V2, content=_req(outputs=[{"name": n} for n in names]), timeout=30
        )
        assert r.status_code == 200, r.text
        assert [o["name"] for o in r.json()["outputs"]] == names


def test_v2_nested_shape_is_read_as_rows(server):
    texts = ["print(1)", "int x;"]
    nested = _req(inputs=[{**TEXT, "shape": [2, 1], "data": [[t] for t in texts]}])
    flat = _req(inputs=[{**TEXT, "shape": [2], "data": texts}])
    a = httpx.post(server.url + V2, content=nested, timeout=30).json()
    b = httpx.post(server.url + V2, content=flat, timeout=30).json()
    assert a["outputs"] == b["outputs"] and len(a["outputs"][0]["data"]) == 2


def test_v2_response_id_is_echoed_or_generated(server):
    given = httpx.post(server.url + V2, content=_req(id="client-42"), timeout=30).json()
    assert given["id"] == "client-42"
    ids = {httpx.post(server.url + V2, content=_req(), timeout=30).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    for value in ids:
        assert uuid.UUID(value).version == 4


# --------------------------------------------------------------------------- binary extension


def bytes_tensor(*items: bytes) -> bytes:
    """A BYTES tensor in KServe's binary form: per element, 4-byte little-endian length + bytes."""
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def binary_request(
    tail: bytes,
    size: int | None = None,
    shape: tuple[int, ...] = (1,),
    datatype: str = "BYTES",
    header: str | None = None,
    **fields: object,
) -> tuple[bytes, dict[str, str]]:
    params = {} if size is None else {"binary_data_size": size}
    inp = {"name": "text", "datatype": datatype, "shape": list(shape), "parameters": params}
    head = json.dumps({"inputs": [inp], **fields}).encode()
    headers = {
        "inference-header-content-length": header if header is not None else str(len(head)),
        "content-type": "application/octet-stream",
    }
    return head + tail, headers


_LIE = struct.pack("<I", 1000) + b"a" * 26  # says 1000 bytes, carries 26
_THREE = bytes_tensor(b"abcd", b"efgh", b"ijkl")
BAD_BINARY = [
    (
        "length-1000-carries-26",
        binary_request(_LIE, 30),
        "element 0 declares 1000 bytes but only 26",
    ),
    (
        "three-elements-shape-1",
        binary_request(_THREE, 24),
        "shape [1] says 1 element(s) but its 24 bytes of binary data hold 3",
    ),
    (
        "three-int32-shape-1",
        binary_request(b"\x01\x00\x00\x00" * 3, 12, datatype="INT32"),
        "shape [1] says 1 element(s) but its 12 bytes of binary data hold 3",
    ),
    ("cut-length-prefix", binary_request(b"\x05\x00", 2), "cannot hold the 4-byte length"),
    ("size-past-the-end", binary_request(bytes_tensor(b"x"), 100), "binary_data_size is 100"),
    (
        "unclaimed-bytes",
        binary_request(bytes_tensor(b"x") + b"zzz", 5),
        "3 byte(s) after the last binary input",
    ),
    ("negative-size", binary_request(b"", -1), "non-negative integer"),
    ("no-data-no-size", binary_request(b""), "neither 'data' nor parameters.binary_data_size"),
    (
        "header-not-a-number",
        binary_request(bytes_tensor(b"x"), 5, header="ten"),
        "Inference-Header-Content-Length must be",
    ),
    (
        "header-past-the-end",
        binary_request(bytes_tensor(b"x"), 5, header="99999"),
        "but the body has only",
    ),
    ("header-cuts-the-json", binary_request(bytes_tensor(b"x"), 5, header="10"), "not valid JSON"),
    ("fp32-partial-element", binary_request(b"\x00" * 6, 6, datatype="FP32"), "whole number"),
    ("fp32-tensor", binary_request(b"\x00" * 4, 4, datatype="FP32"), "datatype BYTES, got FP32"),
    ("element-not-utf8", binary_request(bytes_tensor(b"\xff"), 5), "not valid UTF-8"),
    (
        "binary-shape-mismatch-2d",
        binary_request(bytes_tensor(b"a", b"b"), 10, shape=(1, 1)),
        "says 1 element(s)",
    ),
]


@pytest.mark.parametrize(
    ("request_", "message"), [b[1:] for b in BAD_BINARY], ids=[b[0] for b in BAD_BINARY]
)
def test_malformed_binary_tensors_get_400_with_the_reason(server, request_, message):
    body, headers = request_
    r = httpx.post(server.url + V2, content=body, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()


def test_binary_extension_on_v1_is_refused(server):
    body, headers = binary_request(bytes_tensor(b"x"), 5)
    r = httpx.post(server.url + V1, content=body, headers=headers, timeout=30)
    assert r.status_code == 400 and "V2 /infer requests only" in r.json()["error"]


def test_binary_request_and_binary_outputs_answer_like_json(server):
    texts = [b"def f():\n    return 1\n", b"int main(void) { return 0; }"]
    tail = bytes_tensor(*texts)
    body, headers = binary_request(
        tail, len(tail), shape=(2,), parameters={"binary_data_output": True}
    )
    r = httpx.post(server.url + V2, content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    json_length = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:json_length])
    label_size = head["outputs"][0]["parameters"]["binary_data_size"]
    raw_labels = r.content[json_length : json_length + label_size]
    labels, offset = [], 0
    while offset < len(raw_labels):
        (n,) = struct.unpack_from("<I", raw_labels, offset)
        labels.append(raw_labels[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    plain = httpx.post(server.url + V2, json=v2_body([t.decode() for t in texts]), timeout=30)
    assert labels == plain.json()["outputs"][0]["data"]


# --------------------------------------------------------------------------- metric labels


def _series(metrics: str, family: str) -> set[str]:
    return {line.split(" ")[0] for line in metrics.splitlines() if line.startswith(family + "{")}


def test_unknown_model_names_do_not_grow_metric_series(server):
    for i in range(40):
        httpx.post(f"{server.url}/v2/models/random-{i}-{uuid.uuid4().hex}/infer", content=_req())
        httpx.post(f"{server.url}/v1/models/random{i}:predict", json={"instances": ["x"]})
    metrics = httpx.get(server.url + "/metrics").text
    models = {
        s.split('model="')[1].split('"')[0] for s in _series(metrics, "aicrush_requests_total")
    }
    assert models <= {server.name, "_unknown"}
    assert "_unknown" in models
    assert 'model="random' not in metrics


# --------------------------------------------------------------------------- gRPC


def _grpc_text_tensor(shape=(1,), datatype="BYTES"):
    return pb.ModelInferRequest.InferInputTensor(name="text", datatype=datatype, shape=list(shape))


def _grpc_call(server, request):
    with grpc.insecure_channel(server.grpc_url) as channel:
        return GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


BAD_RAW = [
    ("length-1000-carries-26", _LIE, (1,), "BYTES", "element 0 declares 1000 bytes but only 26"),
    ("three-elements-shape-1", _THREE, (1,), "BYTES", "says 1 text(s) but the raw contents hold 3"),
    ("cut-length-prefix", b"\x05\x00", (1,), "BYTES", "cannot hold the 4-byte length"),
    ("not-utf8", bytes_tensor(b"\xff\xfe"), (1,), "BYTES", "not valid UTF-8"),
    ("fp32", b"\x00" * 4, (1,), "FP32", "datatype BYTES, got FP32"),
    ("bad-rank", bytes_tensor(b"a"), (1, 1, 1), "BYTES", "shape [N] or [N, 1]"),
]


@pytest.mark.parametrize(
    ("raw", "shape", "datatype", "message"), [b[1:] for b in BAD_RAW], ids=[b[0] for b in BAD_RAW]
)
def test_grpc_malformed_raw_contents_are_invalid_argument(server, raw, shape, datatype, message):
    request = pb.ModelInferRequest(
        model_name=server.name,
        inputs=[_grpc_text_tensor(shape, datatype)],
        raw_input_contents=[raw],
    )
    with pytest.raises(grpc.RpcError) as err:
        _grpc_call(server, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert message in err.value.details()


def test_grpc_raw_contents_and_ids(server):
    texts = [b"print(1)", b"int x;"]
    raw = pb.ModelInferRequest(
        model_name=server.name,
        inputs=[_grpc_text_tensor((2,))],
        raw_input_contents=[bytes_tensor(*texts)],
    )
    response = _grpc_call(server, raw)
    assert uuid.UUID(response.id).version == 4  # generated: the request had none
    rest = httpx.post(server.url + V2, json=v2_body([t.decode() for t in texts]), timeout=30).json()
    labels = [x.decode() for x in response.outputs[0].contents.bytes_contents]
    if not labels:  # KServe answers raw requests with raw outputs
        labels = [x.decode() for x in _split(response.raw_output_contents[0])]
    assert labels == rest["outputs"][0]["data"]
    raw.id = "grpc-client-7"
    assert _grpc_call(server, raw).id == "grpc-client-7"


def _split(raw: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(raw):
        (n,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return out


def test_grpc_unknown_parameter_is_invalid_argument(server):
    request = pb.ModelInferRequest(model_name=server.name, inputs=[_grpc_text_tensor()])
    request.inputs[0].contents.bytes_contents.append(b"x")
    request.parameters["temperature"].int64_param = 2
    with pytest.raises(grpc.RpcError) as err:
        _grpc_call(server, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unsupported request parameter(s) ['temperature']" in err.value.details()


def test_grpc_model_version_other_than_the_served_one_is_not_found(server):
    # docs/serving.md: `model_version` / `/versions/{v}`: the served version; any other is 404.
    request = pb.ModelInferRequest(model_name=server.name, inputs=[_grpc_text_tensor()])
    request.inputs[0].contents.bytes_contents.append(b"x")
    request.model_version = "999"
    with pytest.raises(grpc.RpcError) as err:
        _grpc_call(server, request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    assert "has no version 999" in err.value.details()
    request.model_version = ""  # none: the served one
    assert [o.name for o in _grpc_call(server, request).outputs][:2] == ["label", "score"]


def test_grpc_message_over_the_default_limit_is_refused(server):
    request = pb.ModelInferRequest(model_name=server.name, inputs=[_grpc_text_tensor()])
    request.inputs[0].contents.bytes_contents.append(b"a" * (9 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as err:
        _grpc_call(server, request)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8388608" in err.value.details()


# --------------------------------------------------------------------------- one size limit


def test_one_size_limit_governs_rest_and_grpc(random_model_dir: Path, tmp_path: Path):
    """``--max_body_bytes 16777216``: a 6 MiB text is answered over REST and gRPC (KServe's own
    gRPC server, given the limit), and 17 MiB is refused over both."""
    limit = 16 * 1024 * 1024
    six_mib = "x = 1\n" * (6 * 1024 * 1024 // 6)
    with running_server(random_model_dir, tmp_path, "--max_body_bytes", str(limit)) as big:
        r = httpx.post(big.url + V1, json={"instances": [six_mib]}, timeout=120)
        assert r.status_code == 200, r.text
        request = pb.ModelInferRequest(model_name=big.name, inputs=[_grpc_text_tensor()])
        request.inputs[0].contents.bytes_contents.append(six_mib.encode())
        response = _grpc_call(big, request)
        assert response.outputs[0].name == "label"
        assert response.outputs[0].contents.bytes_contents == [
            r.json()["predictions"][0]["label"].encode()
        ]
        over = "a" * (17 * 1024 * 1024)
        r = httpx.post(big.url + V1, json={"instances": [over]}, timeout=120)
        assert r.status_code == 413 and f"{limit}-byte limit" in r.json()["error"]
        request.inputs[0].contents.bytes_contents[0] = over.encode()
        with pytest.raises(grpc.RpcError) as err:
            _grpc_call(big, request)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2"], "--workers > 1 is not supported"),
        (["--batch_workers", "-1"], "--batch_workers must be 0 (auto) or more"),
        (["--threads", "-1"], "--threads must be 0 (the library's default) or more"),
        (["--max_batch_size", "0"], "--max_batch_size must be 1 or more"),
        (["--max_batch_wait_ms", "-5"], "--max_batch_wait_ms must be 0 or more"),
        (["--log_batch_size", "0"], "--log_batch_size must be 1 or more"),
        (["--log_linger_ms", "-1"], "--log_linger_ms must be 0 or more"),
        (
            ["--max_body_bytes", "1000", "--grpc_max_receive_message_length", "2000"],
            "one limit governs REST and gRPC",
        ),
        (["--access_log_format", "%(h)s"], "asgi-logger"),
        (["--enable_access_log", "maybe"], "invalid true/false value: 'maybe'"),
        (["--enable_access_log", "false", "--access_log_format", "%(h)s"], "contradict"),
        # no abbreviations: the flag's first name was read as KServe's --access_log_format
        (["--access_log", "false"], "unrecognized arguments: --access_log false"),
    ],
)
def test_server_flags_it_cannot_honour_are_refused_at_start(args, message, tmp_path):
    import importlib.util

    if "--access_log_format" in args and importlib.util.find_spec("asgi_logger") is not None:
        pytest.skip("asgi-logger is installed: the access-log format works")
    proc = subprocess.run(
        [sys.executable, "-m", "serving.server", "--model_dir", str(tmp_path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [V1, V2, "/v2/models/aicrush/versions/7/infer"])
def test_a_method_other_than_post_on_an_inference_path_is_405(server, method, path):
    """KServe alone answered GET /v1/models/NAME:predict with 404 'Model with name
    NAME:predict does not exist' (it read the path as a model name)."""
    r = httpx.request(method, server.url + path, timeout=30)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert f"{method} is not allowed" in r.json()["error"] and "POST" in r.json()["error"]


@pytest.mark.parametrize("path", [V1, V2])
def test_a_compressed_body_is_415_naming_the_encoding(server, path):
    import gzip

    body = gzip.compress(b'{"instances": ["def f(): pass"]}')
    r = httpx.post(
        server.url + path, content=body, timeout=30,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )  # fmt: skip
    assert r.status_code == 415, r.text
    assert "Content-Encoding 'gzip' is not supported" in r.json()["error"]
    assert r.headers["accept-encoding"] == "identity"
    plain = httpx.post(
        server.url + V1, json={"instances": ["def f(): pass"]}, timeout=30,
        headers={"Content-Encoding": "identity"},
    )  # fmt: skip
    assert plain.status_code == 200


def test_every_flag_in_the_docs_flags_table_is_accepted() -> None:
    """docs/serving.md's table of ``python -m serving.server`` flags names each flag as the parser
    spells it (KServe mixes ``--event-loop`` with ``--enable_grpc``): a row written
    ``--event_loop`` was refused as an unrecognized argument."""
    import re

    from serving.server import build_parser

    text = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    section = text.split("`python -m serving.server` takes every flag")[1].split("\n## ")[0]
    first_cells = [row.split(" | ")[0] for row in section.splitlines() if row.startswith("| `")]
    documented = {f for cell in first_cells for f in re.findall(r"--[A-Za-z0-9_-]+", cell)}
    accepted = {s for action in build_parser()._actions for s in action.option_strings}
    assert len(documented) > 30, documented
    assert documented <= accepted, sorted(documented - accepted)


@pytest.mark.parametrize("case", ["no model folder", "no ONNX file"])
def test_a_model_the_server_cannot_load_is_one_line_and_exit_2(case, random_model_dir, tmp_path):
    """`python -m serving.server` (the container's entrypoint) printed a traceback and exited 1
    where `aicrush serve` says one line and exits 2."""
    import shutil

    folder = tmp_path / "absent"
    args = ["--model_dir", str(folder)]
    if case == "no ONNX file":
        shutil.copytree(random_model_dir, folder)
        for onnx in folder.glob("*.onnx"):
            onnx.unlink()
        args += ["--backend", "onnx-int8"]
    proc = subprocess.run(
        [sys.executable, "-m", "serving.server", *args, "--http_port", "0", "--grpc_port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    expected = "no aicrush model in" if case == "no model folder" else "onnx"
    assert last.startswith("python -m serving.server: error: ") and expected in last.lower(), last
