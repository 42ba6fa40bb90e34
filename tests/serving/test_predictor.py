"""Unit tests of the predictor's pure parts, the batcher, and the 503 path (in-process app)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from aicrush.model_folder import TextClassifier
from serving.batching import DynamicBatcher, bucket_by_length
from serving.http_guard import check_json_body, json_depth
from serving.predictor import (
    TextClassifierModel,
    request_features,
    texts_from_v1,
    texts_from_v2,
)
from serving.torch_backend import load_torch_model, predict_proba_unpadded
from tests.serving import SNIPPETS


def _v2(data, shape=None, datatype="BYTES", name="text", **kw) -> InferRequest:
    shape = [len(data)] if shape is None else shape
    return InferRequest("m", [InferInput(name, shape, datatype, data=data)], **kw)


def test_v1_accepts_objects_and_plain_strings():
    assert texts_from_v1({"instances": [{"text": "a"}, "b"]}) == ["a", "b"]
    assert texts_from_v1(b'{"instances": ["\\u00e9"]}') == ["é"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, 'missing "instances"'),
        ({"instances": []}, "empty batch"),
        ({"instances": "x"}, '"instances" must be a list'),
        ({"instances": [1]}, "instances[0] must be a string, got number"),
        ({"instances": [{"txt": "a"}]}, "missing key 'text'"),
        ({"instances": [{"text": "a", "lang": "C"}]}, "unexpected key(s) ['lang']"),
        ({"instances": ["a"], "extra": 1}, "unexpected key(s) ['extra']"),
        ([1, 2], "must be a JSON object"),
        ({"instances": ["\ud800"]}, "lone surrogate"),
    ],
)
def test_v1_refuses_with_a_message(payload, message):
    with pytest.raises(InvalidInput, match=None) as err:
        texts_from_v1(payload)
    assert message in str(err.value)


def test_v2_decodes_texts_and_probability_requests():
    assert texts_from_v2(_v2(["a", "b"])) == (["a", "b"], False)
    assert texts_from_v2(_v2([["a"], ["b"]], shape=[2, 1])) == (["a", "b"], False)
    assert texts_from_v2(_v2(["a"], parameters={"return_probabilities": True}))[1] is True
    req = _v2(["a"], request_outputs=[RequestedOutput("probabilities")])
    assert texts_from_v2(req)[1] is True
    assert texts_from_v2(_v2([b"\xc3\xa9"])) == (["é"], False)  # gRPC bytes


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (InferRequest("m", []), "missing input 'text'"),
        (_v2(["a"], name="txt"), "missing input 'text'"),
        (_v2(["a"], datatype="FP32"), "datatype BYTES, got FP32"),
        (_v2(["a", "b"], shape=[3]), "says 3 text(s) but the data holds 2"),
        (_v2(["a"], shape=[-1]), "invalid dimension -1"),
        (_v2(["a"], shape=[10**12]), "too large"),
        (_v2([], shape=[0]), "empty batch"),
        (_v2([1]), "must be a string, got number"),
        (_v2([b"\xff"]), "not valid UTF-8"),
        (_v2(["a"], shape=[1, 2]), "shape [N] or [N, 1]"),
        (_v2(["a"], parameters={"return_probabilities": "yes"}), "must be a boolean"),
        (_v2(["a"], request_outputs=[RequestedOutput("logits")]), "unknown output 'logits'"),
    ],
)
def test_v2_refuses_with_a_message(request_, message):
    with pytest.raises(InvalidInput) as err:
        texts_from_v2(request_)
    assert message in str(err.value)


def test_v2_refuses_extra_inputs():
    req = InferRequest(
        "m", [InferInput("text", [1], "BYTES", ["a"]), InferInput("x", [1], "FP32", [1.0])]
    )
    with pytest.raises(InvalidInput, match=r"unexpected input\(s\) \['x'\]"):
        texts_from_v2(req)


def test_json_checks():
    assert check_json_body(b'{"a": 1}') is None
    assert check_json_body(b'\xef\xbb\xbf{"a": 1}') is None
    assert "not valid UTF-8" in check_json_body(b'{"a": "\xff"}')
    assert "not valid JSON" in check_json_body(b'{"a": ')
    assert "nested too deeply" in check_json_body(b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}")
    assert "nested too deeply" in check_json_body(b"[" * 100000)
    assert json_depth({"a": [[1]]}) == 3


def test_bucket_by_length_never_mixes_lengths():
    lengths = [3, 5, 3, 3, 5, 9]
    chunks = bucket_by_length(lengths, max_batch_size=2)
    assert sorted(i for c in chunks for i in c) == list(range(6))
    assert all(len({lengths[i] for i in c}) == 1 and len(c) <= 2 for c in chunks)


@pytest.fixture(scope="module")
def loaded(random_model_dir: Path):
    return load_torch_model(random_model_dir)


def test_unpadded_batches_are_bitwise_equal_to_single_calls(loaded):
    model, tok, meta = loaded
    texts = SNIPPETS * 3
    batched, lengths = predict_proba_unpadded(model, tok, texts, meta["max_length"], 64)
    single = np.concatenate(
        [predict_proba_unpadded(model, tok, [t], meta["max_length"], 1)[0] for t in texts]
    )
    assert np.array_equal(batched, single)  # bit-for-bit
    assert max(lengths) == meta["max_length"]  # the long text was truncated, and answered


def test_labels_agree_with_the_fp32_eager_classifier(loaded, random_model_dir):
    model, tok, meta = loaded
    reference = TextClassifier.from_dir(random_model_dir, device="cpu").predict_proba(SNIPPETS)
    ours, _ = predict_proba_unpadded(model, tok, SNIPPETS, meta["max_length"])
    assert (reference.argmax(1) == ours.argmax(1)).all()
    assert np.abs(reference - ours).max() < 1e-5


def test_dynamic_batcher_gives_serial_results_under_concurrency(loaded):
    model, tok, meta = loaded
    sizes: list[int] = []

    def fn(texts):
        return predict_proba_unpadded(model, tok, texts, meta["max_length"], 16)

    batcher = DynamicBatcher(fn, max_batch_size=16, max_wait_ms=20, on_batch=sizes.append)
    texts = [SNIPPETS[i % len(SNIPPETS)] + str(i % 3) for i in range(64)]

    async def run():
        serial = [await batcher.submit([t]) for t in texts]
        sizes.clear()
        together = await asyncio.gather(*(batcher.submit([t]) for t in texts))
        return serial, together

    try:
        serial, together = asyncio.run(run())
    finally:
        batcher.stop()
    for s, c in zip(serial, together, strict=True):
        assert np.array_equal(s.probabilities, c.probabilities)
    assert max(sizes) > 1 and max(sizes) <= 16 and sum(sizes) == 64


def test_batch_workers_run_forward_passes_at_once_and_answer_each_caller():
    """``workers=2``: two batches are in ``fn`` at the same time (the barrier would time out
    with one worker), and every caller gets the rows of its own texts."""
    import threading

    barrier = threading.Barrier(2, timeout=10)
    inside: list[int] = []

    def fn(texts):
        inside.append(len(texts))
        if len(inside) <= 2:
            barrier.wait()  # both workers must be here together
        return np.array([[float(t)] for t in texts]), [1] * len(texts)

    batcher = DynamicBatcher(fn, max_batch_size=1, workers=2)

    async def run():
        return await asyncio.gather(*(batcher.submit([str(i)]) for i in range(6)))

    try:
        results = asyncio.run(run())
    finally:
        batcher.stop()
    assert [float(r.probabilities[0][0]) for r in results] == [float(i) for i in range(6)]
    assert len(batcher._threads) == 0 and sum(inside) == 6
    with pytest.raises(ValueError, match="workers"):
        DynamicBatcher(fn, workers=0)


def test_a_worker_takes_its_fair_share_of_the_queue_not_all_of_it():
    """With 2 workers, 12 queued texts make a batch of 6, not 12: one batch that took the whole
    queue left the other worker idle (856 vs 1,100+ rps at c=32, docs/serving.md)."""
    import threading

    gate = threading.Event()
    inside: list[int] = []

    def fn(texts):
        inside.append(len(texts))
        if len(inside) == 1:
            gate.wait(10)  # the first worker stays busy with its batch
        return np.array([[1.0] for _ in texts]), [1] * len(texts)

    batcher = DynamicBatcher(fn, max_batch_size=12, max_wait_ms=1000, workers=2)

    async def run():
        first = asyncio.ensure_future(batcher.submit([str(i) for i in range(12)]))
        while not inside:
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit([str(i)])) for i in range(12)]
        while len(inside) < 2:
            await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(first, *rest)

    try:
        results = asyncio.run(run())
    finally:
        gate.set()
        batcher.stop()
    assert len(results) == 13 and inside[0] == 12
    assert inside[1] == 6, inside  # ceil(12 queued / 2 workers)
    assert sum(inside) == 24


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # a Kubernetes limit of 2 CPUs, cgroup v2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no limit: the affinity
        ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_available_cpus_reads_the_cgroup_cpu_limit(tmp_path: Path, files, expected) -> None:
    import os

    from serving.batching import available_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (min(expected, affinity) if expected else affinity)


def test_batcher_passes_errors_to_every_caller():
    def fn(texts):
        raise RuntimeError("boom")

    batcher = DynamicBatcher(fn, max_batch_size=4, max_wait_ms=1)

    async def run():
        return await asyncio.gather(
            *(batcher.submit(["a"]) for _ in range(3)), return_exceptions=True
        )

    try:
        results = asyncio.run(run())
    finally:
        batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


def test_request_features_are_the_shared_feature_function():
    from features.file_features import FEATURE_NAMES

    rows = request_features(["def f():\n    return 1\n"])
    assert list(rows[0]) == list(FEATURE_NAMES)


def test_unloaded_model_answers_503(random_model_dir):
    """A registered model that is not loaded yet: 503 with a message, not 500."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from kserve.errors import ModelNotReady, model_not_ready_handler
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    from serving.http_guard import install_http_extensions

    registry = ModelRepository()
    registry.update(TextClassifierModel("m", random_model_dir))  # never loaded
    app = FastAPI()
    install_http_extensions(app, registry, {"m": "1"})
    dataplane = DataPlane(model_registry=registry)
    register_v1_endpoints(app, dataplane, None)
    register_v2_endpoints(app, dataplane, None)
    app.add_exception_handler(ModelNotReady, model_not_ready_handler)
    client = TestClient(app)
    r = client.post("/v2/models/m/infer", json={"inputs": []})
    assert r.status_code == 503 and "not ready" in r.json()["error"]
    r = client.post("/v1/models/m:predict", json={"instances": ["a"]})
    assert r.status_code == 503 and "not ready" in r.json()["error"]


def test_cli_model_source_picks_one_model(tmp_path):
    import typer
    from mlflow import MlflowClient

    from aicrush.registry import ModelVersionNotFound
    from serving.cli_serve import model_source

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    # No alias: the latest version; then the challenger; then the champion.
    assert model_source("m", None, None, None, uri)[0] == "models:/m/3"
    client.set_registered_model_alias("m", "challenger", "2")
    assert model_source("m", None, None, None, uri)[0] == "models:/m/2"
    client.set_registered_model_alias("m", "champion", "1")
    assert model_source("m", None, None, None, uri)[0] == "models:/m/1"
    assert model_source("m", "challenger", None, None, uri)[0] == "models:/m/2"
    assert model_source("m", None, 3, None, uri)[0] == "models:/m/3"
    assert model_source("m", None, None, Path("/x"))[0] == "/x"
    with pytest.raises(typer.BadParameter):
        model_source("m", "champion", 3, None, uri)
    with pytest.raises(
        ModelVersionNotFound, match="versions 1, 2, 3; aliases challenger -> v2, champion -> v1"
    ):
        model_source("m", "staging", None, None, uri)
    with pytest.raises(ModelVersionNotFound, match=r"no registered model 'other'.*models there: m"):
        model_source("other", None, None, None, uri)


def test_server_resolves_a_local_folder(random_model_dir):
    from serving.server import resolve_model_source

    assert resolve_model_source(random_model_dir) == (random_model_dir, None)
    with pytest.raises(FileNotFoundError, match="no aicrush model"):
        resolve_model_source(random_model_dir.parent / "missing")


def test_payload_logger_gets_texts_and_outputs(random_model_dir):
    class Recorder:
        def __init__(self):
            self.calls = []

        def submit(self, request_id, model_name, model_version, inputs, outputs):
            self.calls.append((request_id, model_name, model_version, inputs, outputs))

    from serving.predictor import DecodedRequest

    recorder = Recorder()
    model = TextClassifierModel("m", random_model_dir, version="3", payload_logger=recorder)
    model.load()
    try:
        out = asyncio.run(model.predict(DecodedRequest(["print(1)"], "v1", request_id="r1")))
    finally:
        model.stop()
    assert recorder.calls == [("r1", "m", "3", ["print(1)"], out["predictions"])]


def test_one_size_limit_from_either_flag():
    from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH

    from serving.server import body_limit

    mib = 1024 * 1024
    assert body_limit(None, MAX_GRPC_MESSAGE_LENGTH) == 8 * mib  # KServe's default governs both
    assert body_limit(None, 20 * mib) == 20 * mib  # KServe's flag alone: REST follows it
    assert body_limit(16 * mib, MAX_GRPC_MESSAGE_LENGTH) == 16 * mib  # ours alone: gRPC follows
    assert body_limit(16 * mib, 16 * mib) == 16 * mib
    with pytest.raises(ValueError, match="one limit governs REST and gRPC"):
        body_limit(16 * mib, 20 * mib)


def test_a_crops_model_serves_what_the_classifier_predicts(tmp_path: Path):
    """A model that reads several windows per text: the server's unpadded path averages the same
    windows as TextClassifier (evaluation), so both give the same probabilities."""
    import json

    from aicrush.model_folder import MODEL_META_FILE
    from tests.model_factory import build_random_model

    model_dir = build_random_model(tmp_path / "crops", max_length=32, seed=5)
    meta = json.loads((model_dir / MODEL_META_FILE).read_text())
    meta.update(text_window="crops", crops=3)
    (model_dir / MODEL_META_FILE).write_text(json.dumps(meta))
    texts = [*SNIPPETS, "\n".join(SNIPPETS * 8)]  # short ones (one window) and a long one
    model, tok, _ = load_torch_model(model_dir)
    ours, lengths = predict_proba_unpadded(model, tok, texts, 32, 64, "crops", 3)
    clf = TextClassifier.from_dir(model_dir, device="cpu")
    assert clf.crops == 3 and clf.text_window == "crops"
    reference = clf.predict_proba(texts)
    assert ours.shape == reference.shape == (len(texts), 5)
    assert np.abs(reference - ours).max() < 1e-5
    assert lengths[-1] == 3 * 32  # the long text was read as three full windows


@pytest.mark.parametrize(
    ("batch_workers", "threads", "cpus", "expected"),
    [(0, 1, 2, 2), (0, 2, 2, 1), (0, 2, 8, 4), (0, 3, 2, 1), (0, 0, 8, 1), (3, 1, 2, 3)],
)
def test_batch_workers_default_to_the_cpus_over_the_threads(
    monkeypatch, batch_workers, threads, cpus, expected
):
    """Auto (0): one forward pass per ``threads`` CPUs of the process, at least one; with the
    library's default threads (0: every core) one pass at a time; an explicit value is kept."""
    import serving.predictor as predictor

    monkeypatch.setattr(predictor, "available_cpus", lambda: cpus)
    model = predictor.TextClassifierModel(
        "m", Path("."), threads=threads, batch_workers=batch_workers
    )
    assert model.batch_workers == expected


@pytest.mark.parametrize(
    ("batch_workers", "threads", "cpus", "warns"),
    [(0, 1, 2, False), (0, 3, 2, True), (0, 0, 8, False), (3, 1, 2, True), (2, 2, 2, True),
     (2, 0, 8, True), (4, 2, 8, False)],
)  # fmt: skip
def test_more_worker_threads_than_cpus_is_warned_about(
    monkeypatch, batch_workers, threads, cpus, warns
):
    """Workers x threads above the process's CPUs: the start log says they contend. Auto workers
    never cause it; more --threads than CPUs (3 on 2) does, with one worker."""
    import serving.predictor as predictor

    monkeypatch.setattr(predictor, "available_cpus", lambda: cpus)
    model = predictor.TextClassifierModel(
        "m", Path("."), threads=threads, batch_workers=batch_workers
    )
    message = model.oversubscription()
    assert (message is not None) == warns
    if message is not None:
        assert f"on the {cpus} CPU(s)" in message and "--batch_workers" in message
