"""Every overlay renders with kubectl's kustomize, and the rendered objects hold what the cluster
path needs: the InferenceService wired to the drift monitor, MLflow on PostgreSQL with GCS
artifacts behind basic auth, Feast on Redis, least-privilege RBAC, and one source of image names."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.manifests import (
    MANIFESTS,
    NAMESPACE,
    OVERLAYS,
    TARGETS,
    base_images,
    by_kind,
    compiled_pipeline,
    images_in,
    pod_spec,
    render,
    workload_pod,
)

AICRUSH_IMAGES = ("aicrush-pipeline", "aicrush-train", "aicrush-serve", "aicrush-monitor")


@pytest.mark.parametrize("target", TARGETS)
def test_renders_into_one_restricted_namespace(target: str) -> None:
    objects = render(target)
    namespaces = by_kind(objects, "Namespace")
    assert list(namespaces) == [NAMESPACE]
    labels = namespaces[NAMESPACE]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, (
                f"{obj['kind']}/{obj['metadata']['name']}"
            )
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "no cluster-scoped RBAC"


@pytest.mark.parametrize("target", TARGETS)
def test_expected_objects_exist(target: str) -> None:
    objects = render(target)
    assert set(by_kind(objects, "Deployment")) == {
        "aicrush-drift-monitor",
        "aicrush-mlflow",
        "aicrush-feast",
    }
    assert set(by_kind(objects, "StatefulSet")) == {"aicrush-postgres", "aicrush-redis"}
    assert set(by_kind(objects, "InferenceService")) == {"aicrush-code-language"}
    assert set(by_kind(objects, "ServingRuntime")) == {"aicrush-serve"}
    assert set(by_kind(objects, "ServiceMonitor")) == {"aicrush-drift-monitor"}
    services = by_kind(objects, "Service")
    assert {
        "aicrush-drift-monitor",
        "aicrush-mlflow",
        "aicrush-feast",
        "aicrush-postgres",
        "aicrush-redis",
    } <= set(services)


@pytest.mark.parametrize("target", TARGETS)
def test_workloads_have_probes_and_a_disruption_budget(target: str) -> None:
    objects = render(target)
    pdbs = by_kind(objects, "PodDisruptionBudget").values()
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for c in spec["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, (
                f"{name}/{c['name']} lacks probes"
            )
        pod_labels = obj["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert covering, f"no PodDisruptionBudget selects {name}"
    runtime = by_kind(objects, "ServingRuntime")["aicrush-serve"]
    for c in runtime["spec"]["containers"]:
        assert "readinessProbe" in c and "livenessProbe" in c


@pytest.mark.parametrize("target", TARGETS)
def test_inference_service_logs_payloads_to_the_drift_monitor(target: str) -> None:
    objects = render(target)
    isvc = by_kind(objects, "InferenceService")["aicrush-code-language"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"].startswith("gs://")
    assert predictor["model"]["runtime"] in by_kind(objects, "ServingRuntime")
    assert predictor["maxReplicas"] >= max(predictor["minReplicas"], 1)
    logger = predictor["logger"]
    assert logger["mode"] == "all"
    match = re.fullmatch(
        r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(/.*)?", logger["url"]
    )
    assert match, logger["url"]
    service_name, namespace = match.group(1), match.group(2)
    assert namespace == NAMESPACE
    service = by_kind(objects, "Service")[service_name]
    port = next(p for p in service["spec"]["ports"] if p["port"] == 80)
    monitor = by_kind(objects, "Deployment")["aicrush-drift-monitor"]
    container = workload_pod(monitor)["containers"][0]
    assert {"name": port["targetPort"], "containerPort": 8080} in container["ports"]
    assert (
        service["spec"]["selector"].items()
        <= monitor["spec"]["template"]["metadata"]["labels"].items()
    )
    endpoint = by_kind(objects, "ServiceMonitor")["aicrush-drift-monitor"]["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


@pytest.mark.parametrize("target", TARGETS)
def test_the_predictor_pods_are_scraped(target: str) -> None:
    """kube-prometheus-stack reads PodMonitors, not the prometheus.io/* annotations KServe sets:
    without one the canary analysis' per-revision series never reach Prometheus. The ports are
    the names Knative gives every revision pod (knative.dev/serving: UserPortName "user-port",
    the queue-proxy's "http-usermetric")."""
    objects = render(target)
    isvc = by_kind(objects, "InferenceService")["aicrush-code-language"]
    monitor = by_kind(objects, "PodMonitor")["aicrush-code-language"]["spec"]
    assert monitor["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]
    }
    assert {(e["port"], e["path"]) for e in monitor["podMetricsEndpoints"]} == {
        ("http-usermetric", "/metrics"),  # queue-proxy: revision_request_count, ...
        ("user-port", "/metrics"),  # the model server: aicrush_* series
    }
    runtime = by_kind(objects, "ServingRuntime")["aicrush-serve"]
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/path"] == "/metrics"


def test_local_overlay_scales_to_zero_and_gke_keeps_a_warm_replica() -> None:
    local = by_kind(render("overlays/local"), "InferenceService")["aicrush-code-language"]
    gke = by_kind(render("overlays/gke"), "InferenceService")["aicrush-code-language"]
    assert local["spec"]["predictor"]["minReplicas"] == 0
    assert gke["spec"]["predictor"]["minReplicas"] >= 1
    # the overlay patch merges: the restricted securityContext survives it
    assert local["spec"]["predictor"]["model"]["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_runs_on_postgres_with_gcs_artifacts_behind_basic_auth(target: str) -> None:
    objects = render(target)
    mlflow = workload_pod(by_kind(objects, "Deployment")["aicrush-mlflow"])["containers"][0]
    args = mlflow["args"]
    assert mlflow["command"] == ["mlflow", "server"]
    assert "--serve-artifacts" in args
    assert "--app-name=basic-auth" in args
    [backend] = [a for a in args if a.startswith("--backend-store-uri=")]
    assert (
        backend.startswith("--backend-store-uri=postgresql://") and "@aicrush-postgres." in backend
    )
    assert ":" not in backend.split("://", 1)[1].split("@", 1)[0], "no password in the store URI"
    [artifacts] = [a for a in args if a.startswith("--artifacts-destination=")]
    assert artifacts.startswith("--artifacts-destination=gs://")
    env = {e["name"]: e for e in mlflow["env"]}
    for name in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    auth_ini = by_kind(objects, "ConfigMap")
    [ini] = [
        cm["data"]["basic_auth.ini"]
        for n, cm in auth_ini.items()
        if n.startswith("aicrush-mlflow-auth-config")
    ]
    assert "database_uri = postgresql://mlflow@aicrush-postgres." in ini
    assert "admin_password" not in ini
    postgres = workload_pod(by_kind(objects, "StatefulSet")["aicrush-postgres"])["containers"][0]
    assert {e["name"] for e in postgres["env"] if "valueFrom" in e} == {"POSTGRES_PASSWORD"}


@pytest.mark.parametrize("target", TARGETS)
def test_feast_serves_from_redis_with_config_from_a_configmap(target: str) -> None:
    objects = render(target)
    feast = by_kind(objects, "Deployment")["aicrush-feast"]
    container = workload_pod(feast)["containers"][0]
    assert container["command"][0] == "feast" and "serve" in container["command"]
    volumes = {v["name"]: v for v in workload_pod(feast)["volumes"]}
    repo_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/feature_repo")
    configmap_name = volumes[repo_mount["name"]]["configMap"]["name"]
    store = yaml.safe_load(
        by_kind(objects, "ConfigMap")[configmap_name]["data"]["feature_store.yaml"]
    )
    assert store["online_store"]["type"] == "redis"
    host = store["online_store"]["connection_string"].split(":", 1)[0]
    assert host == f"aicrush-redis.{NAMESPACE}.svc.cluster.local"
    assert "aicrush-redis" in by_kind(objects, "Service")
    assert "${REDIS_PASSWORD}" in store["online_store"]["connection_string"]
    assert any(
        e["name"] == "REDIS_PASSWORD" and "secretKeyRef" in e["valueFrom"] for e in container["env"]
    )


@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_runner_role_is_namespaced_and_minimal(target: str) -> None:
    objects = render(target)
    [role] = by_kind(objects, "Role").values()
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "list", "watch", "create", "patch"],
        },
        # The rollout's state ConfigMap (serving/rollout/kubernetes.py): read and replaced by
        # name only; created once (create cannot be limited by name).
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["aicrush-code-language-rollout"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        # components/trainjob.py: create, poll (get), delete on cancel/timeout/failed retry.
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["get", "create", "delete"],
        },
    ]
    [binding] = by_kind(objects, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert {
        "kind": "ServiceAccount",
        "name": "aicrush-pipeline-runner",
        "namespace": NAMESPACE,
    } in binding["subjects"]
    # every other service account gets no API token
    for name, sa in by_kind(objects, "ServiceAccount").items():
        if name != "aicrush-pipeline-runner":
            assert sa.get("automountServiceAccountToken") is False, name


def test_gke_overlay_uses_workload_identity_and_ssd_volumes() -> None:
    objects = render("overlays/gke")
    accounts = by_kind(objects, "ServiceAccount")
    for name in (
        "aicrush-serve",
        "aicrush-mlflow",
        "aicrush-feast",
        "aicrush-pipeline-runner",
        "aicrush-trainer",
    ):
        gsa = accounts[name]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert gsa.endswith(".iam.gserviceaccount.com"), name
    for sts in by_kind(objects, "StatefulSet").values():
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "premium-rwo"
    assert not any(s.get("secrets") for s in accounts.values()), "no key Secrets on GKE"


@pytest.mark.parametrize("target", TARGETS)
def test_every_image_comes_from_the_one_images_list(target: str) -> None:
    pinned = set(base_images().values())
    for image in images_in(render(target)):
        assert image in pinned, (
            f"{image} is not rewritten by manifests/base/kustomization.yaml images:"
        )
        assert not image.endswith(":latest")


def test_overlays_do_not_override_images() -> None:
    for overlay in OVERLAYS:
        doc = yaml.safe_load((MANIFESTS / overlay / "kustomization.yaml").read_text())
        assert "images" not in doc, f"{overlay} must take image names and tags from the base"


def test_base_keeps_the_four_runtime_image_names() -> None:
    assert set(AICRUSH_IMAGES) <= set(base_images())


def test_compiled_pipeline_and_manifests_name_the_same_images() -> None:
    from aicrush.images import default_images

    refs = base_images()
    images = default_images()
    for runtime in ("pipeline", "train", "serve", "monitor"):
        assert images[runtime] == refs[f"aicrush-{runtime}"]
    rendered = images_in(render("overlays/gke"))
    assert {refs["aicrush-serve"], refs["aicrush-monitor"], refs["aicrush-pipeline"]} <= rendered
    compiled = next(yaml.safe_load_all(compiled_pipeline()))  # pipeline spec, then platform spec
    executors = compiled["deploymentSpec"]["executors"].values()
    used = {e["container"]["image"] for e in executors if "container" in e}
    assert used, "the compiled pipeline names no container images"
    ours = {refs[name] for name in AICRUSH_IMAGES}
    assert used <= ours, f"compiled pipeline uses images outside the images: list: {used - ours}"


@pytest.mark.parametrize("target", TARGETS)
def test_includes_the_alerting_rules_and_dashboards_that_exist(target: str) -> None:
    objects = render(target)
    if (MANIFESTS / "rules" / "kustomization.yaml").is_file():
        assert by_kind(objects, "PrometheusRule"), "manifests/rules is not included"
    if (MANIFESTS / "dashboards" / "kustomization.yaml").is_file():
        base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text())
        assert "../dashboards" in base["resources"], "add ../dashboards to the base resources"


@pytest.mark.parametrize("target", TARGETS)
def test_trainjob_pods_have_their_own_service_account_without_api_token(target: str) -> None:
    from aicrush.config import DistributedConfig

    accounts = by_kind(render(target), "ServiceAccount")
    sa = accounts[DistributedConfig().service_account]
    assert sa["automountServiceAccountToken"] is False
