"""The real model server on loopback over REST: V1, V2, metadata, health, metrics, batching, SIGTERM."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from aicrush.model_folder import TextClassifier
from tests.serving import SNIPPETS, running_server, shared_server, stop_server, v2_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig):
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def test_v1_predict(server, random_model_dir):
    r = httpx.post(
        f"{server.url}/v1/models/{server.name}:predict",
        json={"instances": [{"text": SNIPPETS[0]}, SNIPPETS[1]]},
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    expected = TextClassifier.from_dir(random_model_dir, device="cpu").predict(SNIPPETS[:2])
    assert [p["label"] for p in preds] == [e.label for e in expected]
    assert all(set(p) == {"label", "score"} and 0 < p["score"] <= 1 for p in preds)


def test_v2_infer_with_and_without_probabilities(server):
    url = f"{server.url}/v2/models/{server.name}/infer"
    r = httpx.post(url, json=v2_body(SNIPPETS[:3]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == server.name and body["model_version"] == server.version
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"label", "score"}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [3]
    assert outputs["score"]["datatype"] == "FP32" and len(outputs["score"]["data"]) == 3

    r = httpx.post(url, json=v2_body(SNIPPETS[:3], return_probabilities=True))
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    probs = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs.max(1), outputs["score"]["data"])
    # the same through the versioned path, with a content type curl would send by default
    r = httpx.post(
        f"{server.url}/v2/models/{server.name}/versions/{server.version}/infer",
        content=r.request.content,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_metadata_and_health(server):
    meta = httpx.get(f"{server.url}/v2/models/{server.name}").json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "probabilities"]
    assert meta["parameters"]["labels"] == ["C", "CSS", "JavaScript", "Python", "Shell"]
    assert meta["versions"] == [server.version]
    versioned = httpx.get(f"{server.url}/v2/models/{server.name}/versions/{server.version}")
    assert versioned.json() == meta
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{server.name}/ready",
                 f"/v1/models/{server.name}"):  # fmt: skip
        assert httpx.get(server.url + path).status_code == 200, path


def test_concurrent_requests_get_exactly_the_serial_results(server):
    url = f"{server.url}/v2/models/{server.name}/infer"
    texts = [SNIPPETS[i % len(SNIPPETS)] + f"\n# {i % 4}" for i in range(64)]
    with httpx.Client() as client:
        serial = [
            client.post(url, json=v2_body([t], return_probabilities=True)).json() for t in texts
        ]
    barrier = threading.Barrier(64)

    def call(t: str) -> dict:
        with httpx.Client() as c:
            barrier.wait()
            return c.post(url, json=v2_body([t], return_probabilities=True), timeout=60).json()

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        together = list(pool.map(call, texts))
    ids = {r.pop("id") for r in together + serial}  # generated: one per response
    assert len(ids) == 2 * len(texts)
    assert together == serial  # labels, scores and probabilities bit-for-bit (JSON floats)
    metrics = httpx.get(f"{server.url}/metrics").text
    counts = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("aicrush_batch_size_bucket") and 'le="1.0"' in line
    ]
    total = [
        float(x.split()[-1])
        for x in metrics.splitlines()
        if x.startswith("aicrush_batch_size_count")
    ]
    assert total[0] > counts[0], "no forward pass held more than one request"


def test_metrics_exposition(server):
    httpx.post(f"{server.url}/v1/models/{server.name}:predict", json={"instances": ["x"]})
    httpx.post(f"{server.url}/v1/models/{server.name}:predict", content=b"{")
    text = httpx.get(f"{server.url}/metrics").text
    labels = f'model="{server.name}"'
    for family in (
        "aicrush_requests_total",
        "aicrush_request_duration_seconds_bucket",
        "aicrush_batch_size_bucket",
        "aicrush_predictions_total",
        "aicrush_input_length_tokens_bucket",
        "aicrush_input_length_chars_bucket",
    ):
        lines = [x for x in text.splitlines() if x.startswith(family) and labels in x]
        assert lines and all(f'version="{server.version}"' in x for x in lines), family
    assert any(
        'status="400"' in x for x in text.splitlines() if x.startswith("aicrush_requests_total")
    )
    assert any('status="200"' in x and 'protocol="v1"' in x for x in text.splitlines()
               if x.startswith("aicrush_requests_total"))  # fmt: skip


def test_sigterm_lets_in_flight_requests_finish(random_model_dir, tmp_path):
    big = v2_body([SNIPPETS[-1] + str(i) for i in range(1024)])  # seconds of work
    with running_server(random_model_dir, tmp_path, "--max_batch_size", "64") as s:
        result: dict = {}

        def call() -> None:
            result["response"] = httpx.post(
                f"{s.url}/v2/models/{s.name}/infer", json=big, timeout=120
            )
            result["done"] = time.monotonic()

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.5)  # the request is being computed
        sigterm_at = time.monotonic()
        code = stop_server(s.process)
        t.join()
        assert result["response"].status_code == 200
        assert len(result["response"].json()["outputs"][0]["data"]) == 1024
        assert result["done"] > sigterm_at, "the request finished before SIGTERM: make it longer"
        assert code == 0, s.log()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_kserve_tls_flags_serve_https(random_model_dir, tmp_path):
    """KServe's --ssl_certfile/--ssl_keyfile reach its REST server (KServe's own start)."""
    cert, key = _self_signed(tmp_path)
    args = ("--ssl_certfile", str(cert), "--ssl_keyfile", str(key), "--enable_grpc", "false")
    with running_server(random_model_dir, tmp_path, *args, scheme="https") as server:
        r = httpx.post(
            f"https://127.0.0.1:{server.http_port}/v1/models/{server.name}:predict",
            json={"instances": ["print(1)"]},
            verify=str(cert),
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["predictions"][0]["label"]
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/ready", timeout=5)
