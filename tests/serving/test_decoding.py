"""Unit tests of serving/decoding.py: the one reader of every input layout (server and monitor)."""

from __future__ import annotations

import json
import struct

import pytest
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from serving.decoding import (
    decode_binary_body,
    deserialize_bytes,
    flatten_as_shape,
    output_plan,
    raw_contents,
    texts_from_v2,
    texts_of_logged_request,
)


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def test_kserve_keeps_raw_contents_where_we_read_them():
    """raw_contents reads KServe's private ``_raw_data``: this fails if an upgrade moves it."""
    raw = _bytes_tensor(b"a", b"bc")
    grpc_request = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2])],
        raw_input_contents=[raw],
    )
    request = InferRequest.from_grpc(grpc_request)
    assert raw_contents(request.inputs[0]) == raw
    assert texts_from_v2(request) == (["a", "bc"], False)


def test_deserialize_bytes_checks_every_length():
    assert deserialize_bytes(_bytes_tensor(b"", b"xyz"), "t") == [b"", b"xyz"]
    with pytest.raises(InvalidInput, match="declares 1000 bytes but only 26 remain"):
        deserialize_bytes(struct.pack("<I", 1000) + b"a" * 26, "t")
    with pytest.raises(InvalidInput, match="cannot hold the 4-byte length of element 1"):
        deserialize_bytes(_bytes_tensor(b"a") + b"\x01", "t")


def test_flatten_as_shape_accepts_flat_and_exact_nesting_only():
    assert flatten_as_shape(["a", "b"], [2, 1]) == ["a", "b"]
    assert flatten_as_shape([["a"], ["b"]], [2, 1]) == ["a", "b"]
    for data, shape in (([["a"], "b"], [2, 1]), ([["a", "b"]], [2, 1]), ([["a"]], [1])):
        with pytest.raises(InvalidInput, match="shape"):
            flatten_as_shape(data, shape)


def test_binary_body_becomes_the_equivalent_json_request():
    tail = _bytes_tensor("é".encode(), b"int x;")
    head = json.dumps(
        {
            "id": "7",
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": len(tail)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    decoded = decode_binary_body(head + tail, str(len(head)))
    assert decoded == {
        "id": "7",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["é", "int x;"]}],
        "parameters": {"binary_data_output": True},
    }


def test_output_plan_follows_the_request():
    def req(**kw):
        return InferRequest("m", [InferInput("text", [1], "BYTES", ["a"])], **kw)

    assert output_plan(req()).names == ("label", "score")
    assert output_plan(req(parameters={"return_probabilities": True})).probabilities
    plan = output_plan(
        req(
            parameters={"binary_data_output": True},
            request_outputs=[
                RequestedOutput("score"),
                RequestedOutput("label", {"binary_data": False}),
            ],
        )
    )
    assert plan.names == ("score", "label") and plan.binary == (True, False)
    with pytest.raises(InvalidInput, match="unsupported request parameter"):
        output_plan(req(parameters={"top_k": 3}))


def test_logged_requests_are_read_as_the_server_reads_them():
    nested = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2, 1],
                "data": [["print(1)"], ["int x;"]],
            }
        ]
    }
    assert texts_of_logged_request(nested) == ["print(1)", "int x;"]
    assert texts_of_logged_request({"instances": [{"text": "a"}, "b"]}) == ["a", "b"]
    with pytest.raises(InvalidInput, match="inputs"):
        texts_of_logged_request({"inputs": "print(1)"})
    with pytest.raises(InvalidInput, match="neither V1"):
        texts_of_logged_request({"text": "a"})
