"""Kubernetes backend against a fake API server that validates bodies with the real CRD schema.

The machine's state lives beside the InferenceService (its ConfigMap, no local file): each test
opens the rollout afresh, as a separate pipeline pod or CLI call on another machine would.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from aicrush.rollout_config import RolloutConfig
from serving.rollout.kubernetes import (
    CANARY_ANNOTATION,
    STABLE_ANNOTATION,
    STATE_ANNOTATION,
    STATE_KEY,
    STATE_MAX_CHARS,
    KubernetesBackend,
    build_inference_service,
)
from serving.rollout.machine import ModelRef, Rollout, RolloutError
from tests.rollout.fakes import MemoryRegistry

CRD = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "schemas"
    / "kserve"
    / "serving.kserve.io_inferenceservices.yaml"
)
pytestmark = pytest.mark.skipif(
    not CRD.is_file(), reason=f"InferenceService CRD schema not found at {CRD}"
)

VERSIONS = {v: f"gs://aicrush-models/mlartifacts/1/models/m-{v}/artifacts" for v in ("1", "2", "3")}
IMAGE = "europe-docker.pkg.dev/aicrush/aicrush/aicrush-serve:0.1.0"


@pytest.fixture
def kube():
    from tests.rollout.fake_kube import FakeKubeServer

    with FakeKubeServer(CRD) as server:
        yield server


def _rollout(
    kube,
    tmp_path: Path,
    champion: str | None = "1",
    registry: MemoryRegistry | None = None,
    cfg: RolloutConfig | None = None,
) -> tuple[Rollout, MemoryRegistry, KubernetesBackend]:
    """A rollout as a fresh process opens it: state from the InferenceService, never a file."""
    cfg = cfg or RolloutConfig(namespace="ml", ready_poll_s=0.05)
    backend = KubernetesBackend(cfg, "langid", image=IMAGE, api=kube.api())
    registry = registry or MemoryRegistry(dict(VERSIONS), champion_version=champion)
    rollout = Rollout(backend, registry, cfg, backend.state_store())
    return rollout, registry, backend


def _writes(kube, n: int = 0) -> list[tuple[str, object]]:
    """InferenceService writes since call ``n`` (state saves go to the state ConfigMap)."""
    out = []
    for c in kube.kube.calls[n:]:
        if c.method == "GET" or "/configmaps" in c.path:
            continue
        out.append((c.method, c.body.get("spec") if c.method == "PATCH" else "create"))
    return out


def _state(kube, namespace: str = "ml", service: str = "langid") -> str:
    """The rollout state JSON as stored in the state ConfigMap."""
    return kube.kube.configmaps[(namespace, f"{service}-rollout")]["data"][STATE_KEY]


def test_bodies_validate_against_crd_and_carry_the_contract() -> None:
    from tests.rollout.fake_kube import crd_validator

    validator = crd_validator(CRD)
    cfg = RolloutConfig(namespace="ml")
    stable = build_inference_service(cfg, "langid", ModelRef("1", VERSIONS["1"]), IMAGE)
    canary = build_inference_service(
        cfg, "langid", ModelRef("2", VERSIONS["2"]), IMAGE, canary_percent=10, stable_version="1"
    )
    for body in (stable, canary):
        assert not [e.message for e in validator.iter_errors(body)]
    pred = canary["spec"]["predictor"]
    assert (
        pred["canaryTrafficPercent"] == 10
        and "canaryTrafficPercent" not in stable["spec"]["predictor"]
    )
    container = pred["containers"][0]
    assert container["image"] == IMAGE
    assert {"name": "STORAGE_URI", "value": VERSIONS["2"]} in container["env"]
    assert pred["logger"] == {
        "mode": "all",
        "url": "http://aicrush-drift-monitor.ml.svc.cluster.local/?modelversion=2",
    }
    assert stable["spec"]["predictor"]["logger"]["url"].endswith("/?modelversion=1")
    # The queue-proxy's per-revision series (what the analysis reads) must be scraped: KServe's
    # metric aggregation, with the model server's port in KServe's own keys, as the manifests.
    assert pred["annotations"] == {
        "prometheus.kserve.io/port": "8080",
        "prometheus.kserve.io/path": "/metrics",
    }
    meta = canary["metadata"]["annotations"]
    assert meta["serving.kserve.io/enable-metric-aggregation"] == "true"
    assert meta["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert canary["metadata"]["annotations"][STABLE_ANNOTATION] == "1"
    assert canary["metadata"]["annotations"][CANARY_ANNOTATION] == "2"
    # A body the CRD forbids is caught by the same validator (the check is not vacuous).
    pred["canaryTrafficPercent"] = "ten"
    assert list(validator.iter_errors(canary))


def test_the_rollouts_container_keeps_what_the_manifests_give_the_model_server() -> None:
    """The rollout replaces spec.predictor.model (the ServingRuntime's container) with a custom
    container: it dropped the runtime's restricted securityContext, read-only root with its /tmp
    and cache volumes, probes and HF_HUB_OFFLINE, and a service it created had no service
    account (no Workload Identity to read the model's gs:// folder)."""
    from tests.manifests import by_kind, render

    objects = render("overlays/gke")
    runtime = by_kind(objects, "ServingRuntime")["aicrush-serve"]["spec"]
    (served,) = runtime["containers"]
    manifest = by_kind(objects, "InferenceService")["aicrush-code-language"]["spec"]["predictor"]
    body = build_inference_service(
        RolloutConfig(), "aicrush-code-language", ModelRef("1", VERSIONS["1"]), IMAGE
    )
    predictor = body["spec"]["predictor"]
    (container,) = predictor["containers"]
    for key in ("securityContext", "readinessProbe", "livenessProbe", "volumeMounts", "ports"):
        assert container[key] == served[key], key
    assert {e["name"]: e["value"] for e in served["env"]}.items() <= {
        e["name"]: e.get("value") for e in container["env"]
    }.items()
    assert predictor["volumes"] == runtime["volumes"]
    assert predictor["securityContext"] == manifest["securityContext"]
    assert predictor["serviceAccountName"] == manifest["serviceAccountName"]


def test_deploy_step_promote_rollback_call_sequence(kube, tmp_path: Path) -> None:
    rollout, registry, backend = _rollout(kube, tmp_path, champion=None)

    rollout.deploy("1")  # no champion: create the service with version 1
    assert _writes(kube) == [("POST", "create")]
    assert registry.champion_version == "1"

    n = len(kube.kube.calls)
    rollout.deploy("2", percent=10)
    [(method, spec)] = _writes(kube, n)
    patch = next(c.body for c in kube.kube.calls[n:] if c.method == "PATCH")
    assert method == "PATCH" and spec["predictor"]["canaryTrafficPercent"] == 10
    assert patch["metadata"]["resourceVersion"]  # conditional on what was read
    st = backend.status()
    assert (
        st["stable_version"] == "1" and st["canary_version"] == "2" and st["canary_percent"] == 10
    )
    assert sorted(t["percent"] for t in st["traffic"]) == [10, 90] and st["healthy"]

    n = len(kube.kube.calls)
    rollout.set_traffic(25)
    assert _writes(kube, n) == [("PATCH", {"predictor": {"canaryTrafficPercent": 25}})]

    n = len(kube.kube.calls)
    rollout.promote()
    assert _writes(kube, n) == [("PATCH", {"predictor": {"canaryTrafficPercent": None}})]
    st = backend.status()
    assert (
        st["stable_version"] == "2"
        and st["canary_version"] is None
        and st["canary_percent"] is None
    )
    assert [t["percent"] for t in st["traffic"]] == [100]
    assert registry.champion_version == "2"

    rollout.deploy("3", percent=10)
    n = len(kube.kube.calls)
    rollout.rollback()
    # The traffic first, alone; then the annotations (their own patch: KServe copies them onto
    # the revision template, so they must not ride with the traffic).
    assert _writes(kube, n) == [
        ("PATCH", {"predictor": {"canaryTrafficPercent": 0}}),
        ("PATCH", None),
    ]
    st = backend.status()
    assert (
        st["stable_version"] == "2" and st["canary_version"] is None and st["canary_percent"] == 0
    )
    rolled = {t["revision"]: t["percent"] for t in st["traffic"]}
    assert max(rolled.values()) == 100 and len([p for p in rolled.values() if p]) == 1
    assert registry.champion_version == "2" and registry.events[-1][:2] == ("rollback", "3")
    assert kube.kube.invalid == []  # every stored body validated against the CRD
    assert all(c.status < 300 for c in kube.kube.calls if c.method != "GET")


def test_every_step_reads_the_state_back_from_the_inference_service(kube, tmp_path: Path) -> None:
    """deploy, analyse and promote as separate processes (pods) with separate empty folders."""
    registry = MemoryRegistry(dict(VERSIONS), champion_version="1")
    deployer, _, _ = _rollout(kube, tmp_path / "pod-a", registry=registry)
    deployer.deploy("2", percent=10)

    analyser, _, _ = _rollout(kube, tmp_path / "pod-b", registry=registry)
    st = analyser.status()
    assert (st["phase"], st["stable"], st["canary"], st["canary_percent"]) == (
        "canary",
        "1",
        "2",
        10,
    )
    analyser.set_traffic(50)

    promoter, _, backend = _rollout(kube, tmp_path / "pod-c", registry=registry)
    assert promoter.status()["canary_percent"] == 50
    promoter.promote(reason="analysis passed")
    assert registry.champion_version == "2"

    record = json.loads(_state(kube))
    assert STATE_ANNOTATION not in backend.get()["metadata"]["annotations"]
    assert record["phase"] == "promoted" and record["stable"] == "2"
    assert [e["event"] for e in record["history"]] == ["deploy", "traffic", "promote"]
    later, _, _ = _rollout(kube, tmp_path / "cli", registry=registry)
    assert later.status()["phase"] == "promoted" and later.status()["stable"] == "2"
    assert not any(tmp_path.rglob("*.json")), "no step may keep rollout state in a local file"


def test_state_annotation_history_stays_valid_json_within_budget(kube, tmp_path: Path) -> None:
    rollout, _registry, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    store = backend.state_store()
    st = store.load()
    for i in range(400):  # long reasons: far more than the annotation budget holds
        st.event("traffic", canary="2", percent=10, note="x" * 500 + str(i))
    store.save(st)
    value = _state(kube)
    assert len(value) <= STATE_MAX_CHARS
    history = json.loads(value)["history"]  # parses: trimmed by whole events, never cut
    assert history and history[-1]["note"].endswith("399")
    assert store.load().phase == "canary" and kube.kube.invalid == []


def test_transitions_wait_for_the_revision_to_be_ready(kube, tmp_path: Path) -> None:
    kube.kube.auto_ready = False
    rollout, _, backend = _rollout(kube, tmp_path, champion="1")
    marked: list[float] = []
    stop = threading.Event()

    def controller() -> None:  # each new revision becomes ready 0.3 s after it was created
        while not stop.is_set():
            if kube.kube.pending:
                time.sleep(0.3)
                if kube.kube.mark_ready("ml", "langid"):
                    marked.append(time.monotonic())
            time.sleep(0.02)

    threading.Thread(target=controller, daemon=True).start()
    try:
        rollout.deploy("2", percent=10)  # creates the stable service, then adds the canary
        returned = time.monotonic()
        assert len(marked) == 2 and returned >= marked[-1]  # returned only once both were ready
        assert backend.status()["settled"]
        rollout.set_traffic(50)
        assert len(marked) == 3 and time.monotonic() >= marked[-1]
        assert sorted(t["percent"] for t in backend.status()["traffic"]) == [50, 50]
    finally:
        stop.set()


def test_readiness_wait_times_out_naming_what_it_waits_for(kube, tmp_path: Path) -> None:
    kube.kube.auto_ready = True
    cfg = RolloutConfig(namespace="ml", ready_timeout_s=0.5, ready_poll_s=0.05)
    rollout, _registry, backend = _rollout(kube, tmp_path, champion="1", cfg=cfg)
    rollout.deploy("2", percent=10)
    kube.kube.auto_ready = False  # the next revision never becomes ready
    with pytest.raises(
        RolloutError, match=r"not ready after 0s: condition Ready is Unknown: RevisionMissing"
    ):
        rollout.set_traffic(50)
    assert backend.status()["settled"] is False


def test_api_error_halfway_leaves_a_consistent_state(kube, tmp_path: Path) -> None:
    rollout, registry, backend = _rollout(kube, tmp_path, champion="1")
    kube.kube.fail_next.append(("PATCH", 500))
    with pytest.raises(RolloutError, match=r"HTTP 500.*still serves version 1 with all traffic"):
        rollout.deploy("2", percent=10)  # created the stable service, then the canary patch failed
    st = backend.status()
    assert (
        st["stable_version"] == "1"
        and st["canary_version"] is None
        and st["canary_percent"] is None
    )
    # The state is what the InferenceService serves: version 1, no canary.
    status = rollout.status()
    assert (status["phase"], status["stable"], status["canary"]) == ("promoted", "1", None)
    assert registry.events == []

    rollout.deploy("2", percent=10)  # a retry completes it
    kube.kube.fail_next.append(("PATCH", 500))
    with pytest.raises(RolloutError, match="setting the canary traffic to 50 % failed: HTTP 500"):
        rollout.set_traffic(50)
    assert backend.status()["canary_percent"] == 10 and rollout.status()["canary_percent"] == 10

    kube.kube.fail_next.append(("PATCH", 403))
    with pytest.raises(RolloutError, match="lacks RBAC"):
        rollout.promote()
    assert registry.champion_version == "1" and backend.status()["stable_version"] == "1"
    rollout.promote()  # idempotent retry
    assert registry.champion_version == "2" and backend.status()["stable_version"] == "2"
    assert kube.kube.invalid == []


def test_stale_resource_version_is_a_conflict_not_an_overwrite(kube, tmp_path: Path) -> None:
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    isvc = backend.get()
    backend.set_traffic(25)  # someone else changes the object after `isvc` was read
    with pytest.raises(RolloutError, match="409"):
        backend._patch(
            isvc, {"spec": {"predictor": {"canaryTrafficPercent": 50}}}, "a stale update"
        )
    assert backend.status()["canary_percent"] == 25


def test_rollback_of_a_canary_that_never_gets_ready_does_not_wait_for_it(
    kube, tmp_path: Path
) -> None:
    cfg = RolloutConfig(namespace="ml", ready_timeout_s=2, ready_poll_s=0.05)
    rollout, registry, backend = _rollout(kube, tmp_path, champion="1", cfg=cfg)
    rollout.deploy("2", percent=10)
    isvc = backend.get()
    # The canary crashes: KServe reports it not ready, yet the route can leave it.
    from serving.rollout.kubernetes import rollout_progress

    isvc["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "RevisionFailed"}
    ]
    assert rollout_progress(isvc)[0] is False
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 0
    isvc["status"]["components"]["predictor"]["traffic"] = [
        {"revisionName": "langid-predictor-00001", "percent": 100, "latestRevision": False},
        {"revisionName": "langid-predictor-00002", "percent": 0, "latestRevision": True},
    ]
    assert rollout_progress(isvc, latest_ready=False) == (True, "ready")
    rollout.rollback(reason="crashed")
    assert registry.champion_version == "1" and backend.status()["canary_version"] is None


def test_takes_over_the_inference_service_the_manifests_created(kube, tmp_path: Path) -> None:
    """`kubectl apply -k manifests/...` creates the service (same name, `model` form); the
    backend's first deploy replaces the model spec with its container, in one valid object."""
    import yaml

    manifest = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "manifests/base/inferenceservice.yaml").read_text()
    )
    manifest["metadata"]["namespace"] = "ml"
    cfg = RolloutConfig(namespace="ml", ready_poll_s=0.05)
    backend = KubernetesBackend(cfg, manifest["metadata"]["name"], image=IMAGE, api=kube.api())
    backend._create(manifest)
    registry = MemoryRegistry(dict(VERSIONS), champion_version="1")
    rollout = Rollout(backend, registry, cfg, backend.state_store())
    rollout.deploy("2", percent=10)
    predictor = backend.get()["spec"]["predictor"]
    assert "model" not in predictor and predictor["containers"][0]["image"] == IMAGE
    assert predictor["canaryTrafficPercent"] == 10 and kube.kube.invalid == []


def test_state_saves_leave_the_inference_service_and_its_revisions_alone(
    kube, tmp_path: Path
) -> None:
    """KServe copies the InferenceService's annotations onto the revision template (the fake
    does too), so a state annotation written every analysis poll made a new canary revision each
    time, cold and without traffic. The state lives in a ConfigMap owned by the service."""
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    before = backend.get()
    canary_revision = before["status"]["components"]["predictor"]["latestCreatedRevision"]
    store = backend.state_store()
    for i in range(5):  # what five analysis polls write
        st = store.load()
        st.last_analysis = {"poll": i}
        store.save(st)
    after = backend.get()
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert after["status"]["components"]["predictor"]["latestCreatedRevision"] == canary_revision
    assert store.load().last_analysis == {"poll": 4}
    cm = kube.kube.configmaps[("ml", "langid-rollout")]
    [owner] = cm["metadata"]["ownerReferences"]
    assert owner["kind"] == "InferenceService" and owner["uid"] == after["metadata"]["uid"]
    assert kube.kube.invalid == []


def test_the_full_traffic_step_keeps_both_versions_measurable(kube, tmp_path: Path) -> None:
    """At canaryTrafficPercent 100 KServe records the canary's revision as rolled out; the
    stable version's revision is then the previous rolled-out one (the analysis of the 100 %
    step failed with 'no Knative revision serves version 1')."""
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    revisions = backend.revisions()
    rollout.set_traffic(100)
    predictor = backend.get()["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == revisions["2"]
    assert backend.revisions() == revisions  # version 1 still maps to its revision
    rollout.set_traffic(50)  # and back below 100 %: KServe restores the previous one
    assert backend.revisions() == revisions
    rollout.promote()
    assert set(backend.revisions()) == {"2"}


def test_reads_the_state_an_earlier_version_kept_in_an_annotation(kube, tmp_path: Path) -> None:
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    kube.kube.configmaps.clear()
    legacy = {"phase": "canary", "last_analysis": {"outcome": "wait"}, "history": [{"event": "x"}]}
    isvc = backend.get()
    backend._patch(
        isvc, {"metadata": {"annotations": {STATE_ANNOTATION: json.dumps(legacy)}}}, "legacy"
    )
    later, _, _ = _rollout(kube, tmp_path / "later")
    st = later.store.load()
    assert st.last_analysis == {"outcome": "wait"} and st.history == [{"event": "x"}]
    later.set_traffic(25)  # the next save goes to the ConfigMap
    assert json.loads(_state(kube))["percent"] == 25


def test_a_conflict_is_read_again_and_retried_not_a_failed_step(kube, tmp_path: Path) -> None:
    """KServe's own status updates change the resourceVersion: a 409 between the read and the
    patch is read again and retried (the canary checks too), up to 3 tries."""
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    kube.kube.fail_next.append(("PATCH", 409))
    rollout.set_traffic(25)
    assert backend.status()["canary_percent"] == 25
    kube.kube.fail_next.extend([("PATCH", 409)] * 3)
    with pytest.raises(RolloutError, match="HTTP 409"):
        rollout.set_traffic(50)
    assert backend.status()["canary_percent"] == 25 and rollout.status()["canary_percent"] == 25
    kube.kube.fail_next.append(("PATCH", 409))
    rollout.rollback(reason="test")
    assert backend.status()["canary_version"] is None and kube.kube.invalid == []


def test_a_canary_that_never_gets_ready_is_rolled_back_not_left_in_the_spec(
    kube, tmp_path: Path
) -> None:
    """deploy timed out waiting for the canary and left it in the spec with its annotation: the
    next run refused to deploy ('already a canary'). Now the canary is rolled back at once."""
    cfg = RolloutConfig(namespace="ml", ready_timeout_s=0.5, ready_poll_s=0.05)
    rollout, registry, backend = _rollout(kube, tmp_path, champion=None, cfg=cfg)
    rollout.deploy("1")  # no champion yet: the service with version 1, champion 1
    kube.kube.auto_ready = False  # the canary's revision never becomes ready
    with pytest.raises(RolloutError, match=r"not ready after.*The canary was rolled back"):
        rollout.deploy("2", percent=10)
    st = backend.status()
    assert st["canary_version"] is None and st["stable_version"] == "1"
    assert st["canary_percent"] == 0
    assert rollout.status()["phase"] != "canary" and registry.champion_version == "1"
    assert [e for e in registry.events if e[0] == "traffic" and e[1] == "2"] == []
    kube.kube.auto_ready = True
    rollout.deploy("2", percent=10)  # a later run deploys it
    assert backend.status()["canary_version"] == "2" and kube.kube.invalid == []


def test_rollback_after_the_full_traffic_step_returns_the_traffic_to_the_stable_version(
    kube, tmp_path: Path
) -> None:
    """At 100 % KServe records the canary's revision as rolled out. A rollback whose patch also
    changed the annotations made a new revision, so KServe's fix-up did not apply and the
    remaining 100 % stayed on the canary. The traffic moves first, alone, and is waited for."""
    rollout, registry, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    revisions = backend.revisions()
    rollout.set_traffic(100)
    rollout.rollback(reason="the 100 % step failed")
    traffic = {t["revision"]: t["percent"] for t in backend.status()["traffic"] if t["percent"]}
    assert traffic == {revisions["1"]: 100}
    assert backend.revisions() == {"1": revisions["1"]}
    assert backend.status()["canary_version"] is None and registry.champion_version == "1"
    # The traffic patch changed no annotation (no new revision before the traffic moved).
    patches = [c.body for c in kube.kube.calls if c.method == "PATCH"]
    traffic_patch = next(p for p in patches if p.get("spec", {}).get("predictor", {}).get(
        "canaryTrafficPercent") == 0)  # fmt: skip
    assert "annotations" not in traffic_patch.get("metadata", {})


def test_a_step_acts_only_on_the_canary_it_was_asked_about(kube, tmp_path: Path) -> None:
    """A 409 retry re-reads the object: when another canary was deployed meanwhile (a person
    rolled back and deployed version 3), promoting 'the canary' must not promote version 3."""
    rollout, registry, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    backend.rollback()
    kube.kube.auto_ready = True
    registry.challenger = "3"
    person, _, _ = _rollout(kube, tmp_path / "person", registry=registry)
    person.deploy("3", percent=10)
    for act in (lambda: backend.promote(canary="2"), lambda: backend.set_traffic(50, canary="2"),
                lambda: backend.rollback(canary="2")):  # fmt: skip
        with pytest.raises(RolloutError, match="now version 3, not 2"):
            act()
    st = backend.status()
    assert st["canary_version"] == "3" and st["canary_percent"] == 10


def test_a_state_written_meanwhile_keeps_its_events(kube, tmp_path: Path) -> None:
    """The analysis loaded the state; a person's `aicrush rollback` wrote it before the analysis
    saved its poll. The analysis' write was a replace without a resourceVersion and dropped the
    person's rollback from the history; now it is a 409, read again and merged: both stay."""
    registry = MemoryRegistry(dict(VERSIONS), champion_version="1")
    analysis, _, backend = _rollout(kube, tmp_path / "pod", registry=registry)
    analysis.deploy("2", percent=10)
    store = backend.state_store()
    st = store.load()  # the analysis' poll reads the state...
    person, _, _ = _rollout(kube, tmp_path / "cli", registry=registry)
    person.rollback(reason="a person")  # ...a person rolls back meanwhile...
    st.last_analysis = {"outcome": "wait", "percent": 10}
    st.event("traffic", canary="2", percent=10, note="the analysis' own event")
    store.save(st)  # ...and the analysis saves what it read
    conflicts = [c for c in kube.kube.calls if "/configmaps" in c.path and c.status == 409]
    assert conflicts, "the stale write must be refused by its resourceVersion"
    record = json.loads(_state(kube))
    events = [(e["event"], e.get("reason") or e.get("note")) for e in record["history"]]
    assert ("rollback", "a person") in events
    assert ("traffic", "the analysis' own event") in events
    assert [e["time"] for e in record["history"]] == sorted(e["time"] for e in record["history"])
    assert record["last_analysis"] == {"outcome": "wait", "percent": 10}
    # What serves decides the phase: the person's rollback holds, and reads as recorded though
    # the analysis' event landed after it (a retried analysis must not record it again).
    assert person.status()["phase"] == "rolled_back" and person.status()["canary"] is None
    assert not person.store.load().rollback_unrecorded
    assert kube.kube.invalid == []


def test_a_state_that_keeps_changing_is_an_error_not_an_overwrite(kube, tmp_path: Path) -> None:
    rollout, _, backend = _rollout(kube, tmp_path)
    rollout.deploy("2", percent=10)
    store = backend.state_store()
    st = store.load()
    kube.kube.fail_next[:] = [("PUT", 409)] * 3
    with pytest.raises(
        RolloutError, match=r"changed under each of 3 writes.*run the command again"
    ):
        store.save(st)


def test_the_exit_handler_owner_survives_a_stale_write_and_a_failed_deploy_save(
    kube, tmp_path: Path
) -> None:
    """Review findings. (1) Run A's analysis saved a state it loaded before a person rolled back
    and deployed v3: the merge kept run A's owner field, and A's exit handler rolled back the
    person's canary. (2) The same merge put the analysis' event after the person's rollback,
    which then read as unrecorded. (3) A deploy step whose state save failed after the backend
    change left a canary with no owner, which the exit handler ignored. The owner and the
    rollback's record now come from the events since the last deploy."""
    registry = MemoryRegistry(dict(VERSIONS), champion_version="1")
    run_a, _, backend = _rollout(kube, tmp_path / "pod", registry=registry)
    run_a.deploy("2", percent=10, owner="run-a")
    store = backend.state_store()
    stale = store.load()
    person, _, _ = _rollout(kube, tmp_path / "cli", registry=registry)
    person.rollback(reason="a person")
    person.deploy("3", percent=10)
    stale.event("traffic", canary="2", percent=25)  # the analysis' own event, saved late
    store.save(stale)
    st = person.store.load()
    assert st.canary == "3" and st.owner is None  # the person's deploy owns it
    fresh, _, _ = _rollout(kube, tmp_path / "exit", registry=registry)
    assert fresh.recover("run-a", reason="run A failed") == "not_owner"
    assert person.store.load().canary == "3"
    person.rollback(reason="a person again")
    merged = person.store.load()
    assert merged.phase == "rolled_back" and not merged.rollback_unrecorded

    class SecondSaveFails:
        def __init__(self, inner) -> None:
            self.inner, self.saves = inner, 0

        def load(self):
            return self.inner.load()

        def save(self, state) -> None:
            self.saves += 1
            if self.saves == 2:
                raise RolloutError("saving the rollout state failed: HTTP 500")
            self.inner.save(state)

    failing = Rollout(backend, registry, RolloutConfig(namespace="ml", ready_poll_s=0.05),
                      SecondSaveFails(backend.state_store()))  # fmt: skip
    with pytest.raises(RolloutError, match="HTTP 500"):
        failing.deploy("3", percent=10, owner="run-b")  # the patch landed, its record did not
    exit_task, _, _ = _rollout(kube, tmp_path / "exit-b", registry=registry)
    assert exit_task.store.load().canary == "3"
    assert exit_task.recover("run-b", reason="run B failed") == "rolled_back"
    assert backend.get()["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert registry.champion_version == "1" and kube.kube.invalid == []


def test_kubernetes_commands_without_a_reachable_cluster_say_so_in_one_line(
    tmp_path: Path,
) -> None:
    """`aicrush status --backend kubernetes` with no kubeconfig, or one whose API server does
    not answer, ended in a 64-line traceback (kubernetes' ConfigException, urllib3's
    MaxRetryError). Run as a user runs it: the kubernetes client reads KUBECONFIG at import."""
    import os
    import subprocess
    import sys

    import yaml

    from serving.rollout.processes import free_port

    def status(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env.update(HOME=str(tmp_path), KUBECONFIG=str(kubeconfig))
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "status", "--backend", "kubernetes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    result = status(tmp_path / "none")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no Kubernetes cluster to talk to" in result.stderr

    dead = tmp_path / "dead-config"
    dead.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
                ],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "current-context": "dead",
                "users": [{"name": "u", "user": {"token": "x"}}],
            }
        )
    )
    result = status(dead)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the Kubernetes API server at 127.0.0.1" in result.stderr
