"""The error contract: every client mistake gets a 4xx with a message saying what is wrong.

A corpus of bad requests (each with its expected status and message), unicode edge cases that
must be answered, and a good request after all of them: the server never answers 500 to a
client's mistake and never falls over.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.serving import shared_server, v2_body

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
    ("top-level-array", V1, b'["a"]', 400, "must be a JSON object"),
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
    body = b'{"instances": ["' + b"a" * (5 * 1024 * 1024) + b'"]}'  # default limit 4 MiB
    r = httpx.post(server.url + V1, content=body, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = httpx.post(server.url + V2, content=b"{" * (5 * 1024 * 1024), timeout=60)
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
    assert 'status="500"' not in metrics
