"""A client's mistake is logged in one line, without a traceback (the access line already shows
the status); a server error keeps its ERROR record and traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import httpx
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.serving import running_server, v2_body


def test_bad_requests_log_one_line_each_and_no_traceback(random_model_dir: Path, tmp_path):
    mismatched = v2_body(["a"])
    mismatched["inputs"][0]["shape"] = [3]  # type: ignore[index]
    with running_server(random_model_dir, tmp_path) as server:
        bad = [
            ("/v1/models/aicrush:predict", {"instances": [1, 2]}, 400),
            ("/v1/models/aicrush:predict", {"instances": [{"txt": "x"}]}, 400),
            ("/v2/models/aicrush/infer", mismatched, 400),
            ("/v1/models/nope:predict", {"instances": [{"text": "x"}]}, 404),
        ]
        for path, body, status in bad:
            r = httpx.post(server.url + path, json=body, timeout=30)
            assert r.status_code == status, (path, r.text)
        tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[3])
        tensor.contents.bytes_contents.append(b"x")
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = GRPCInferenceServiceStub(channel)
            try:
                stub.ModelInfer(pb.ModelInferRequest(model_name="aicrush", inputs=[tensor]))
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            else:
                raise AssertionError("a shape that does not match the data was accepted")
        ok = httpx.post(
            server.url + "/v1/models/aicrush:predict",
            json={"instances": [{"text": "x"}]},
            timeout=30,
        )
        assert ok.status_code == 200
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert not [line for line in log.splitlines() if " ERROR " in line], log[-4000:]
    client_lines = [line for line in log.splitlines() if "client error (" in line]
    assert len(client_lines) == len(bad) + 1, log[-4000:]
    assert any("InvalidInput" in line and "says 3 text(s)" in line for line in client_lines)
    assert any("ModelNotFound" in line and "nope" in line for line in client_lines)


def test_server_errors_keep_their_traceback():
    from kserve.errors import InvalidInput

    from serving.server import ClientErrorLogFilter

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException as caught:
            return logging.LogRecord(
                "kserve", logging.ERROR, __file__, 1, "Exception:", (), (type(caught), caught, None)
            )

    server_error = record(RuntimeError("boom"))
    assert ClientErrorLogFilter().filter(server_error)
    assert server_error.levelno == logging.ERROR and server_error.exc_info is not None

    client_error = record(InvalidInput("bad shape"))
    assert ClientErrorLogFilter().filter(client_error)
    assert client_error.levelno == logging.INFO and client_error.exc_info is None
    assert client_error.getMessage() == "client error (InvalidInput): bad shape"


def test_access_log_flag_turns_the_per_request_line_off(random_model_dir: Path, tmp_path):
    """``--enable_access_log false`` (KServe's boolean flag syntax): no line per request, where
    ``--enable_access_log true`` (the default) writes one per request. Start-up says once that it
    registers the model (it said so twice)."""
    body = {"instances": [{"text": "def f(): pass"}]}
    logs = {}
    for flag in ("true", "false"):
        with running_server(random_model_dir, tmp_path, "--enable_access_log", flag) as server:
            for _ in range(3):
                r = httpx.post(server.url + "/v1/models/aicrush:predict", json=body, timeout=30)
                assert r.status_code == 200, r.text
        logs[flag] = server.log_path.read_text(errors="replace")
    lines = {k: [x for x in v.splitlines() if "uvicorn.access" in x] for k, v in logs.items()}
    posts = [x for x in lines["true"] if '"POST /v1/models/aicrush' in x]
    assert len(posts) == 3, lines["true"]
    assert lines["false"] == [], logs["false"][-4000:]
    assert [log.count("Registering model: aicrush") for log in logs.values()] == [1, 1]


def test_requests_the_guard_refuses_log_a_client_error_line(random_model_dir: Path, tmp_path):
    """What the request guard answers itself (bad JSON, wrong method, size, encoding, an invalid
    V2 body, an unknown version) logs the same one line as KServe's client errors: with the
    access log off it is the only trace such a request leaves."""
    predict, infer = "/v1/models/aicrush:predict", "/v2/models/aicrush/infer"
    with running_server(
        random_model_dir, tmp_path, "--enable_access_log", "false", "--max_body_bytes", "2000"
    ) as server:
        sent = [
            httpx.post(server.url + predict, content=b'{"instances": ', timeout=30),
            httpx.get(server.url + predict, timeout=30),
            httpx.post(server.url + predict, content=b"x" * 3000, timeout=30),
            httpx.post(
                server.url + predict,
                content=b"x",
                headers={"Content-Encoding": "gzip"},
                timeout=30,
            ),
            httpx.post(server.url + infer, json={"inputs": "x"}, timeout=30),
            httpx.post(server.url + "/v2/models/aicrush/versions/99/infer", json={}, timeout=30),
        ]
    assert [r.status_code for r in sent] == [400, 405, 413, 415, 400, 404]
    log = server.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "client error (" in line]
    kinds = ["InvalidInput", "MethodNotAllowed", "PayloadTooLarge", "UnsupportedMediaType",
             "InvalidInput", "ModelNotFound"]  # fmt: skip
    assert len(lines) == len(sent), log[-4000:]
    for line, kind, r in zip(lines, kinds, sent, strict=True):
        assert f"client error ({kind}): {r.json()['error']}" in line, (line, r.text)
    assert "Traceback" not in log, log[-4000:]
