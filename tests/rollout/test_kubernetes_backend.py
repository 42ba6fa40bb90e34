"""Kubernetes backend against a fake API server that validates bodies with the real CRD schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicrush.rollout_config import RolloutConfig
from serving.rollout.kubernetes import (
    CANARY_ANNOTATION,
    STABLE_ANNOTATION,
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
    kube, tmp_path: Path, champion: str | None = "1"
) -> tuple[Rollout, MemoryRegistry, KubernetesBackend]:
    cfg = RolloutConfig(namespace="ml", service_name="langid")
    backend = KubernetesBackend(cfg, image=IMAGE, api=kube.api())
    registry = MemoryRegistry(dict(VERSIONS), champion_version=champion)
    return Rollout(backend, registry, cfg, tmp_path / "state.json"), registry, backend


def test_bodies_validate_against_crd_and_carry_the_contract() -> None:
    from tests.rollout.fake_kube import crd_validator

    validator = crd_validator(CRD)
    cfg = RolloutConfig(namespace="ml")
    stable = build_inference_service(cfg, ModelRef("1", VERSIONS["1"]), IMAGE)
    canary = build_inference_service(
        cfg, ModelRef("2", VERSIONS["2"]), IMAGE, canary_percent=10, stable_version="1"
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
    assert pred["annotations"]["prometheus.io/scrape"] == "true"
    assert canary["metadata"]["annotations"][STABLE_ANNOTATION] == "1"
    assert canary["metadata"]["annotations"][CANARY_ANNOTATION] == "2"
    # A body the CRD forbids is caught by the same validator (the check is not vacuous).
    pred["canaryTrafficPercent"] = "ten"
    assert list(validator.iter_errors(canary))


def test_deploy_step_promote_rollback_call_sequence(kube, tmp_path: Path) -> None:
    rollout, registry, backend = _rollout(kube, tmp_path, champion=None)
    base = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices"

    def calls_since(n: int) -> list[tuple[str, str]]:
        return [(c.method, c.path.removeprefix(base)) for c in kube.kube.calls[n:]]

    rollout.deploy("1")  # no champion: create the service with version 1
    assert calls_since(0) == [("GET", "/langid"), ("POST", "")]
    assert registry.champion_version == "1"

    n = len(kube.kube.calls)
    rollout.deploy("2", percent=10)
    assert calls_since(n) == [("GET", "/langid"), ("PATCH", "/langid")]
    patch = kube.kube.calls[-1].body
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert patch["metadata"]["resourceVersion"]  # conditional on what was read
    st = backend.status()
    assert (
        st["stable_version"] == "1" and st["canary_version"] == "2" and st["canary_percent"] == 10
    )
    assert sorted(t["percent"] for t in st["traffic"]) == [10, 90] and st["healthy"]

    n = len(kube.kube.calls)
    rollout.set_traffic(25)
    assert calls_since(n) == [("GET", "/langid"), ("PATCH", "/langid")]
    assert kube.kube.calls[-1].body["spec"] == {"predictor": {"canaryTrafficPercent": 25}}

    n = len(kube.kube.calls)
    rollout.promote()
    assert calls_since(n) == [("GET", "/langid"), ("PATCH", "/langid")]
    assert kube.kube.calls[-1].body["spec"] == {"predictor": {"canaryTrafficPercent": None}}
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
    assert calls_since(n) == [("GET", "/langid"), ("PATCH", "/langid")]
    assert kube.kube.calls[-1].body["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    st = backend.status()
    assert (
        st["stable_version"] == "2" and st["canary_version"] is None and st["canary_percent"] == 0
    )
    rolled = {t["revision"]: t["percent"] for t in st["traffic"]}
    assert max(rolled.values()) == 100 and len([p for p in rolled.values() if p]) == 1
    assert registry.champion_version == "2" and registry.events[-1][:2] == ("rollback", "3")
    assert kube.kube.invalid == []  # every stored body validated against the CRD
    assert all(c.status < 300 for c in kube.kube.calls if c.method != "GET")


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
    assert rollout.status()["phase"] == "idle" and registry.events == []

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
