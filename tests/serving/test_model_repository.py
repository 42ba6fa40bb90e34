"""The model repository extension's load and unload are refused (REST 501, gRPC UNIMPLEMENTED):
one unauthenticated request used to unload the model for good while readiness still said
ready. Its own server: a regression would unload the shared one."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.serving import SNIPPETS, running_server, v2_body

pytestmark = pytest.mark.integration


def _still_serving(server) -> None:
    r = httpx.post(f"{server.url}/v2/models/{server.name}/infer", json=v2_body(SNIPPETS[:2]))
    assert r.status_code == 200, r.text
    assert httpx.get(f"{server.url}/v2/models/{server.name}/ready").status_code == 200


def test_load_and_unload_are_refused_and_the_model_stays(random_model_dir: Path, tmp_path: Path):
    with running_server(random_model_dir, tmp_path) as server:
        for action in ("unload", "load"):
            for name in (server.name, "other-model"):
                url = f"{server.url}/v2/repository/models/{name}/{action}"
                r = httpx.post(url, json={})
                assert r.status_code == 501, r.text
                assert "refused" in r.json()["error"] and name in r.json()["error"]
                _still_serving(server)
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = GRPCInferenceServiceStub(channel)
            calls = [
                (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest),
                (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest),
            ]
            for call, message in calls:
                with pytest.raises(grpc.RpcError) as err:
                    call(message(model_name=server.name), timeout=30)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "refused" in (err.value.details() or "")
                _still_serving(server)
        log = server.log()
    # a client's request to an extension this server does not offer: one line, no traceback
    assert "Traceback" not in log, log
