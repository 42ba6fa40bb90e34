"""V2 over the server's own gRPC port, through KServe's InferenceGRPCClient."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest

from tests.serving import SNIPPETS, shared_server, v2_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig):
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def _request(name: str, texts: list[str], **parameters) -> InferRequest:
    inp = InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
    return InferRequest(name, [inp], parameters=parameters or None)


async def _infer(server, request: InferRequest):
    client = InferenceGRPCClient(server.grpc_url, timeout=30, retries=2)
    try:
        return await client.infer(request)
    finally:
        await client.close()


def test_grpc_infer_matches_rest(server):
    texts = SNIPPETS[:4]
    response = asyncio.run(_infer(server, _request(server.name, texts, return_probabilities=True)))
    outputs = {o.name: o for o in response.outputs}
    assert set(outputs) == {"label", "score", "probabilities"}
    labels = [
        x.decode() if isinstance(x, bytes) else x for x in outputs["label"].as_numpy().tolist()
    ]
    rest = httpx.post(
        f"{server.url}/v2/models/{server.name}/infer",
        json=v2_body(texts, return_probabilities=True),
    ).json()
    rest_out = {o["name"]: o for o in rest["outputs"]}
    assert labels == rest_out["label"]["data"]
    assert np.allclose(outputs["score"].as_numpy(), rest_out["score"]["data"])
    assert outputs["probabilities"].shape == [4, 5]


def _call(server, request: pb.ModelInferRequest):
    with grpc.insecure_channel(server.grpc_url) as channel:
        return GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


def test_grpc_metadata_and_readiness(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=server.name), timeout=30)
        assert [t.name for t in meta.inputs] == ["text"] and meta.inputs[0].datatype == "BYTES"
        assert [t.name for t in meta.outputs] == ["label", "score", "probabilities"]
        assert stub.ModelReady(pb.ModelReadyRequest(name=server.name), timeout=30).ready


def _tensor(name="text", datatype="BYTES", shape=(1,), data=(b"x",)):
    t = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))
    if datatype == "BYTES":
        t.contents.bytes_contents.extend(data)
    else:
        t.contents.fp32_contents.extend(data)
    return t


@pytest.mark.parametrize(
    ("tensors", "code", "message"),
    [
        (
            [_tensor(datatype="FP32", data=(1.0,))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "datatype BYTES",
        ),
        ([_tensor(name="txt")], grpc.StatusCode.INVALID_ARGUMENT, "missing input 'text'"),
        ([_tensor(shape=(3,))], grpc.StatusCode.INVALID_ARGUMENT, "says 3 text(s)"),
        ([_tensor(shape=(0,), data=())], grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
        ([_tensor(data=(b"\xff\xfe",))], grpc.StatusCode.INVALID_ARGUMENT, "not valid UTF-8"),
        ([_tensor(), _tensor(name="x")], grpc.StatusCode.INVALID_ARGUMENT, "unexpected input"),
    ],
)
def test_grpc_bad_requests(server, tensors, code, message):
    request = pb.ModelInferRequest(model_name=server.name, inputs=tensors)
    with pytest.raises(grpc.RpcError) as err:
        _call(server, request)
    assert err.value.code() == code
    assert message in err.value.details()
    ok = _call(server, pb.ModelInferRequest(model_name=server.name, inputs=[_tensor()]))
    assert ok.outputs[0].name == "label"


def test_grpc_unknown_model_is_not_found(server):
    with pytest.raises(grpc.RpcError) as err:
        _call(server, pb.ModelInferRequest(model_name="nope", inputs=[_tensor()]))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_documented_grpc_example_runs(server):
    """docs/serving.md's Python gRPC example, pointed at this server, prints the outputs."""
    import re
    import subprocess
    import sys

    from tests.serving import REPO_ROOT

    doc = (REPO_ROOT / "docs" / "serving.md").read_text()
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S)
        if "InferenceGRPCClient(" in b
    )
    code = "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())
    code = code.replace("127.0.0.1:8081", server.grpc_url).replace(
        '"aicrush-code-language"', repr(server.name)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'label'" in out.stdout and "'score'" in out.stdout, out.stdout
