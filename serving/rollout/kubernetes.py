"""Kubernetes canary backend: one KServe ``InferenceService`` (serving.kserve.io/v1beta1).

KServe (serverless mode) keeps the previously rolled-out Knative revision serving while a new
predictor spec gets ``canaryTrafficPercent`` of the traffic. So:

- deploy: the predictor's container points at the canary's model (``STORAGE_URI`` = the model
  version's artifact location, gs://...), ``canaryTrafficPercent: p``;
- step: only ``canaryTrafficPercent`` changes;
- promote: ``canaryTrafficPercent`` is removed, the latest revision takes 100 %;
- rollback: ``canaryTrafficPercent: 0``, the previous revision keeps all traffic.

Every transition is one request (a create or one JSON merge patch carrying the object's
``resourceVersion``), so the API server applies all of it or nothing, and a concurrent edit fails
with 409 instead of being overwritten. The versions being served are kept on the object itself
(annotations ``aicrush.dev/stable-version``, ``aicrush.dev/canary-version``) in the same patch.
After each transition the backend waits (``rollout.ready_timeout_s``) until KServe reports it
done: ``Ready`` condition true for the current generation, the latest revision ready, and the
traffic split the spec asks for.

The rollout's own state (phase, last analysis, history) is the ConfigMap ``<service>-rollout``
beside it, owned by the InferenceService (deleted with it; :class:`InferenceServiceStateStore`),
so every pipeline step (its own pod) and every CLI call (any machine) reads where the last one
left off; no local file is involved. Not an annotation of the InferenceService: KServe copies
those onto the Knative revision template (all but its ``serviceAnnotationDisallowedList``), so
each save, one per analysis poll, would make a new revision of the canary that starts cold with
no traffic. The version annotations change only with the spec (deploy, rollback) or at promote,
which therefore starts one more revision of the promoted model before it takes all traffic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aicrush.rollout_config import RolloutConfig
from serving.rollout.machine import (
    HISTORY_EVENTS,
    ModelRef,
    RolloutError,
    RolloutState,
    fit_json_list,
)
from serving.rollout.metrics_source import PrometheusDriftVerdict, PrometheusMetricsSource

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
STABLE_ANNOTATION = "aicrush.dev/stable-version"
CANARY_ANNOTATION = "aicrush.dev/canary-version"
ROLLED_BACK_ANNOTATION = "aicrush.dev/rolled-back-version"
#: Where earlier versions kept the rollout state (read when there is no state ConfigMap yet).
STATE_ANNOTATION = "aicrush.dev/rollout"
#: The state ConfigMap is ``<service><STATE_CONFIGMAP_SUFFIX>``; its key ``state`` holds the JSON.
STATE_CONFIGMAP_SUFFIX = "-rollout"
STATE_KEY = "state"
#: Budget of the state JSON (a ConfigMap holds at most 1 MiB).
STATE_MAX_CHARS = 64_000
#: Writes of the state tried when another command writes it at the same time (409 Conflict).
STATE_WRITE_ATTEMPTS = 3
HTTP_PORT = 8080
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "hf://", "oci://")


def logger_url(monitor_url: str, version: str) -> str:
    """The drift monitor's ingest URL for one revision: ``?modelversion=N`` names its version."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(monitor_url)
    query = "&".join(q for q in (parts.query, urlencode({"modelversion": version})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))


#: The model server image's user (docker/serve.Dockerfile), as the manifests run it.
SERVER_UID = 10001


def build_inference_service(
    cfg: RolloutConfig,
    name: str,
    ref: ModelRef,
    image: str,
    *,
    canary_percent: int | None = None,
    stable_version: str | None = None,
) -> dict[str, Any]:
    """The InferenceService ``name`` serving ``ref`` (as canary with ``canary_percent``, else as
    the whole service). ``name`` is also the model name on its endpoints (``registry.model_name``)."""
    annotations = {STABLE_ANNOTATION: stable_version or ref.version}
    predictor: dict[str, Any] = {
        "minReplicas": cfg.min_replicas,
        "maxReplicas": cfg.max_replicas,
        # What the manifests' ServingRuntime and InferenceService give the model server, which a
        # custom container replaces: the identity that reads the model's gs:// folder, the
        # restricted Pod Security settings (the namespace enforces them), the writable /tmp and
        # cache of a read-only root file system, probes and the offline hub
        # (tests/rollout/test_kubernetes_backend.py compares both).
        "serviceAccountName": cfg.service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_UID,
            "runAsGroup": SERVER_UID,
            "fsGroup": SERVER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "cache", "emptyDir": {"sizeLimit": "2Gi"}},
        ],
        # Where the model server exports its metrics (KServe's keys, as the manifests'
        # ServingRuntime sets them). With metric aggregation (below) KServe's queue-proxy
        # extension merges them with Knative's per-revision series (revision_request_count,
        # which the analysis reads) on one port and sets the pod's prometheus.io/* scrape
        # annotations to it; pinning prometheus.io/port to the model server's port would leave
        # the queue-proxy's series unscraped.
        "annotations": {
            "prometheus.kserve.io/port": str(HTTP_PORT),
            "prometheus.kserve.io/path": "/metrics",
        },
        "labels": {"aicrush.dev/model-version": ref.version},
        # KServe's logger sends no model version; the URL tells the monitor which revision this is.
        "logger": {"mode": "all", "url": logger_url(cfg.monitor_url(), ref.version)},
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                "args": [
                    "--model_name",
                    name,
                    "--model_dir",
                    "/mnt/models",
                    "--model_version",
                    ref.version,
                    "--http_port",
                    str(HTTP_PORT),
                ],
                # KServe's storage initializer downloads STORAGE_URI into /mnt/models.
                "env": [
                    {"name": "STORAGE_URI", "value": ref.uri},
                    {"name": "HF_HUB_OFFLINE", "value": "1"},
                ],
                "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                "readinessProbe": {
                    "httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT},
                    "periodSeconds": 10,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
                    "initialDelaySeconds": 30,
                    "periodSeconds": 20,
                },
                "resources": {
                    "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
                    "limits": {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": SERVER_UID,
                    "runAsGroup": SERVER_UID,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "cache", "mountPath": "/home/aicrush/.cache"},
                ],
            }
        ],
    }
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = int(canary_percent)
        annotations[CANARY_ANNOTATION] = ref.version
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "aicrush",
                "app.kubernetes.io/component": "predictor",
            },
            "annotations": {
                "serving.kserve.io/enable-prometheus-scraping": "true",
                # As manifests/base/inferenceservice.yaml: one scrape target per pod, the
                # queue-proxy's and the model server's metrics merged.
                "serving.kserve.io/enable-metric-aggregation": "true",
                **annotations,
            },
        },
        "spec": {"predictor": predictor},
    }


class NotReady(RolloutError):
    """KServe did not carry out the spec within ``rollout.ready_timeout_s``."""


class Conflict(RolloutError):
    """HTTP 409: the InferenceService changed between the read and the conditional patch."""


#: Reads and conditional patches tried per transition: KServe's own status updates change the
#: object's resourceVersion too, so a patch can meet a 409 during any rollout.
CONFLICT_TRIES = 3


def _api_error(err: Exception, doing: str) -> RolloutError:
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", "") or ""
    message = ""
    body = getattr(err, "body", None)
    if body:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = str(body)[:500]
    hint = {
        403: "the service account lacks RBAC on inferenceservices or configmaps "
        "(manifests/base/rbac.yaml, docs/rollout.md)",
        404: "the InferenceService or the KServe CRD is missing",
        409: "the InferenceService changed meanwhile; run the command again",
        422: "the API server rejected the InferenceService body",
    }.get(status or 0, "")
    kind = Conflict if status == 409 else RolloutError
    return kind(
        f"{doing} failed: HTTP {status} {reason} {message}".strip() + (f" ({hint})" if hint else "")
    )


def _conditions(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    st = isvc.get("status") or {}
    return {c.get("type", ""): c for c in st.get("conditions") or []}


def rollout_progress(isvc: dict[str, Any], latest_ready: bool = True) -> tuple[bool, str]:
    """Whether KServe has carried out the object's current spec, and if not, what it waits for.

    Done means: ``status.observedGeneration`` has caught up with ``metadata.generation`` (where
    the API server sets them), condition ``Ready`` is ``True``, the predictor's latest created
    revision is ready, and ``status.components.predictor.traffic`` gives the latest revision the
    share the spec asks for (``canaryTrafficPercent``; all traffic without it).

    With ``latest_ready=False`` (a rollback) only the generation and the traffic count: a
    crashed canary never becomes ready, and its rollback is done once it gets no traffic.
    """
    meta, st = isvc.get("metadata") or {}, isvc.get("status") or {}
    generation, observed = meta.get("generation"), st.get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return False, f"KServe has not yet observed generation {generation} (at {observed})"
    ready = _conditions(isvc).get("Ready")
    if latest_ready and (ready is None or ready.get("status") != "True"):
        why = (
            f"{ready.get('reason') or ''} {ready.get('message') or ''}".strip()
            if ready
            else "no Ready condition yet"
        )
        return False, f"condition Ready is {ready.get('status') if ready else 'missing'}: {why}"
    predictor = (st.get("components") or {}).get("predictor") or {}
    latest = predictor.get("latestCreatedRevision")
    if latest_ready and latest and predictor.get("latestReadyRevision") != latest:
        return False, f"revision {latest} is not ready yet"
    want = (isvc.get("spec") or {}).get("predictor", {}).get("canaryTrafficPercent")
    want = 100 if want is None else int(want)
    # A target's revisionName is the revision it resolved to: `latestRevision: true` follows the
    # latest *ready* revision, which is an older one while the latest created is not ready yet.
    got = sum(
        int(t.get("percent") or 0)
        for t in predictor.get("traffic") or []
        if (t.get("revisionName") == latest if latest and t.get("revisionName")
            else t.get("latestRevision"))
    )  # fmt: skip
    if predictor.get("traffic") is not None and got != want:
        return False, f"the latest revision {latest} has {got} % of the traffic, not {want} %"
    return True, "ready"


@dataclass
class KubernetesBackend:
    """KServe InferenceService canary through the Kubernetes API (``CustomObjectsApi``).

    ``service`` is the InferenceService name, which is also the model name on its endpoints:
    ``registry.model_name``, the one name of the served model everywhere.
    """

    cfg: RolloutConfig
    service: str
    image: str = ""  # default: aicrush.images.default_images()["serve"]
    api: Any = None  # kubernetes.client.CustomObjectsApi; default: in-cluster or kubeconfig
    core_api: Any = None  # kubernetes.client.CoreV1Api; default: on the same connection as api
    prometheus_selector: str = ""
    sleep: Callable[[float], None] = time.sleep
    name: str = field(default="kubernetes", init=False)

    def __post_init__(self) -> None:
        if not self.image:
            from aicrush.images import default_images

            self.image = default_images()["serve"]

    @property
    def client(self) -> Any:
        if self.api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, OSError) as err:
                    raise RolloutError(
                        f"no Kubernetes cluster to talk to ({err}): point KUBECONFIG or "
                        "~/.kube/config at the cluster (GKE: gcloud container clusters "
                        "get-credentials CLUSTER --region REGION), or use --backend local"
                    ) from None
            self.api = client.CustomObjectsApi()
        return self.api

    @property
    def core(self) -> Any:
        """CoreV1Api (the state ConfigMap) on the same connection as :attr:`client`."""
        if self.core_api is None:
            from kubernetes import client

            self.core_api = client.CoreV1Api(self.client.api_client)
        return self.core_api

    @property
    def where(self) -> str:
        return f"InferenceService {self.cfg.namespace}/{self.service}"

    # -- API calls -------------------------------------------------------------------------

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.get_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, self.service
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(err, f"reading {self.where}") from err

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.create_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, body
            )
        except ApiException as err:
            raise _api_error(err, f"creating {self.where}") from err

    def _patch(
        self, current: dict[str, Any] | None, patch: dict[str, Any], doing: str
    ) -> dict[str, Any]:
        """One JSON merge patch, conditional on the resourceVersion that was read (if ``current``)."""
        from kubernetes.client.exceptions import ApiException

        if current is not None:
            patch = {
                **patch,
                "metadata": {
                    **patch.get("metadata", {}),
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
        try:
            return self.client.patch_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, self.service, patch
            )
        except ApiException as err:
            raise _api_error(err, doing) from err

    def _patch_current(
        self,
        build: Callable[[dict[str, Any]], dict[str, Any]],
        doing: str,
        canary: str | None = None,
    ) -> dict[str, Any]:
        """Read the object, check that its canary is still ``canary`` (when given), build the
        patch from what was read and apply it conditionally; on a 409 read again, check again
        and rebuild, up to :data:`CONFLICT_TRIES` times. A status update by KServe in between is
        not a failure; another canary deployed meanwhile is a :class:`RolloutError`, not a target.
        """
        for attempt in range(1, CONFLICT_TRIES + 1):
            isvc = self._require(canary=True)
            current = isvc["metadata"]["annotations"].get(CANARY_ANNOTATION)
            if canary is not None and current != canary:
                raise RolloutError(
                    f"{doing}: the canary on {self.where} is now version {current}, not {canary}: "
                    "it changed meanwhile; nothing was changed, see `aicrush status`"
                )
            try:
                return self._patch(isvc, build(isvc), doing)
            except Conflict:
                if attempt == CONFLICT_TRIES:
                    raise
                log.info("%s: %s changed meanwhile; reading it again", doing, self.where)
        raise AssertionError("unreachable")

    def _require(self, canary: bool) -> dict[str, Any]:
        isvc = self.get()
        if isvc is None:
            raise RolloutError(
                f"{self.where} does not exist; run `aicrush deploy --backend kubernetes` first"
            )
        if canary and not isvc["metadata"].get("annotations", {}).get(CANARY_ANNOTATION):
            raise RolloutError(f"{self.where} has no canary in progress")
        return isvc

    def wait_ready(self, doing: str, latest_ready: bool = True) -> dict[str, Any]:
        """Poll the object until KServe has carried out its spec (:func:`rollout_progress`).

        Raises RolloutError after ``rollout.ready_timeout_s`` naming what it still waits for.
        """
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while True:
            isvc = self._require(canary=False)
            done, why = rollout_progress(isvc, latest_ready)
            if done:
                return isvc
            if time.monotonic() >= deadline:
                raise NotReady(
                    f"{doing}: {self.where} not ready after {self.cfg.ready_timeout_s:.0f}s: {why}. "
                    f"See `kubectl -n {self.cfg.namespace} describe inferenceservice {self.service}`; "
                    "raise rollout.ready_timeout_s for slow cold starts, or roll back"
                )
            log.info("%s: waiting: %s", doing, why)
            self.sleep(min(self.cfg.ready_poll_s, max(0.0, deadline - time.monotonic())))

    # -- Backend ---------------------------------------------------------------------------

    def deploy(self, stable: ModelRef, canary: ModelRef | None, percent: int) -> None:
        for ref in (stable, canary):
            if ref is not None and not ref.uri.startswith(STORAGE_SCHEMES):
                raise RolloutError(
                    f"version {ref.version} lives at {ref.uri}, which KServe's storage initializer cannot "
                    f"read; use an MLflow artifact store in GCS (registry.tracking_uri with a gs:// artifact root)"
                )
        isvc = self.get()
        if isvc is None:
            self._create(build_inference_service(self.cfg, self.service, stable, self.image))
            log.info("created %s serving version %s", self.where, stable.version)
            isvc = self.wait_ready(f"serving version {stable.version}")
        else:
            ann = isvc["metadata"].get("annotations", {})
            if ann.get(CANARY_ANNOTATION):
                raise RolloutError(
                    f"version {ann[CANARY_ANNOTATION]} is already a canary on {self.where}; "
                    "promote or roll it back first"
                )
            if ann.get(STABLE_ANNOTATION) != stable.version:
                body = build_inference_service(self.cfg, self.service, stable, self.image)
                body["spec"]["predictor"]["canaryTrafficPercent"] = None
                body["metadata"]["annotations"][ROLLED_BACK_ANNOTATION] = None
                # The manifests' InferenceService declares `model` (ServingRuntime form); the
                # backend's `containers` replace it: KServe accepts one of the two.
                body["spec"]["predictor"]["model"] = None
                self._patch(
                    isvc,
                    body,
                    f"updating {self.service} to the champion, version {stable.version}",
                )
                isvc = self.wait_ready(f"serving the champion, version {stable.version}")
        if canary is None:
            return
        body = build_inference_service(
            self.cfg,
            self.service,
            canary,
            self.image,
            canary_percent=percent,
            stable_version=stable.version,
        )
        body["metadata"]["annotations"][ROLLED_BACK_ANNOTATION] = None
        body["spec"]["predictor"]["model"] = None
        try:
            self._patch(isvc, body, f"adding version {canary.version} as a {percent} % canary")
        except RolloutError as err:
            raise RolloutError(
                f"{err}. The InferenceService still serves version {stable.version} with all traffic; "
                "nothing else changed, run deploy again"
            ) from err
        try:
            self.wait_ready(f"starting version {canary.version} as a {percent} % canary")
        except NotReady as err:
            # A canary that never became ready must not stay in the spec: the next deploy
            # (another pipeline run) would refuse it as "already a canary".
            try:
                self.rollback()
            except RolloutError as again:
                raise RolloutError(
                    f"{err}. Rolling the canary back failed too: {again}; run `aicrush rollback "
                    "--backend kubernetes`"
                ) from err
            raise RolloutError(
                f"{err}. The canary was rolled back: version {stable.version} serves all "
                "traffic, nothing else changed; deploy again once the cause is fixed"
            ) from err

    def set_traffic(self, percent: int, *, canary: str | None = None) -> None:
        self._patch_current(
            lambda isvc: {"spec": {"predictor": {"canaryTrafficPercent": int(percent)}}},
            f"setting the canary traffic to {percent} %",
            canary,
        )
        self.wait_ready(f"moving {percent} % of the traffic to the canary")

    def promote(self, *, canary: str | None = None) -> None:
        def patch(isvc: dict[str, Any]) -> dict[str, Any]:
            version = isvc["metadata"]["annotations"][CANARY_ANNOTATION]
            return {
                "metadata": {"annotations": {STABLE_ANNOTATION: version, CANARY_ANNOTATION: None}},
                "spec": {"predictor": {"canaryTrafficPercent": None}},
            }

        version = canary or self._require(canary=True)["metadata"]["annotations"][CANARY_ANNOTATION]
        self._patch_current(patch, f"promoting version {version} to 100 %", canary)
        self.wait_ready(f"promoting version {version}")

    def rollback(self, *, canary: str | None = None) -> None:
        """All traffic back to the stable revision, then the canary's annotations.

        Two patches: traffic first, alone, waited for until the canary's revision has none; the
        annotations after. KServe copies annotations onto the revision template, so changing
        them in the traffic patch made a new revision, and after a 100 % step (when KServe had
        recorded the canary's revision as rolled out) the remaining traffic stayed on the
        canary. The second patch starts a copy of the rolled-back model at 0 %.
        """
        version = canary or self._require(canary=True)["metadata"]["annotations"][CANARY_ANNOTATION]
        self._patch_current(
            lambda isvc: {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
            f"rolling back version {version} (canary traffic to 0 %)",
            canary,
        )
        self.wait_ready(f"rolling back version {version}", latest_ready=False)
        self._patch_current(
            lambda isvc: {"metadata": {"annotations": {
                CANARY_ANNOTATION: None, ROLLED_BACK_ANNOTATION: version,
            }}},
            f"recording the rollback of version {version}",
            canary,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        isvc = self.get()
        if isvc is None:
            return {"healthy": False, "exists": False}
        ann = isvc["metadata"].get("annotations", {})
        st = isvc.get("status", {}) or {}
        conditions = {k: c.get("status") for k, c in _conditions(isvc).items()}
        predictor = (st.get("components") or {}).get("predictor", {})
        done, why = rollout_progress(isvc)
        return {
            "exists": True,
            "healthy": conditions.get("Ready") == "True",
            "settled": done,
            "waiting_for": None if done else why,
            "conditions": conditions,
            "stable_version": ann.get(STABLE_ANNOTATION),
            "canary_version": ann.get(CANARY_ANNOTATION),
            "canary_percent": isvc["spec"]["predictor"].get("canaryTrafficPercent"),
            "traffic": [
                {
                    "revision": t.get("revisionName"),
                    "percent": t.get("percent"),
                    "latest": t.get("latestRevision"),
                }
                for t in predictor.get("traffic", [])
            ],
            "url": st.get("url"),
        }

    def revisions(self) -> dict[str, str]:
        """Model version -> Knative revision name, from the object's annotations and status.

        During a canary the latest created revision serves the canary and the last rolled-out
        one the stable version; otherwise the latest rolled-out revision serves the stable one.
        """
        isvc = self.get()
        if isvc is None:
            return {}
        ann = isvc["metadata"].get("annotations", {})
        predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
        out: dict[str, str] = {}
        stable, canary = ann.get(STABLE_ANNOTATION), ann.get(CANARY_ANNOTATION)
        if canary and predictor.get("latestCreatedRevision"):
            out[canary] = predictor["latestCreatedRevision"]
            rolled = predictor.get("latestRolledoutRevision")
            if rolled == out[canary]:
                # At canaryTrafficPercent 100 KServe records the canary's revision as rolled
                # out; the stable version's is then the one rolled out before it.
                rolled = predictor.get("previousRolledoutRevision")
            if stable and rolled:
                out[stable] = rolled
        elif stable and predictor.get("latestRolledoutRevision"):
            out[stable] = predictor["latestRolledoutRevision"]
        return out

    def metrics_source(self) -> PrometheusMetricsSource:
        """Errors and latency per revision from Knative's queue-proxy series (they count the
        requests a crashing model server never answers); predicted labels from the model
        servers' own series."""
        return PrometheusMetricsSource(
            self.cfg.prometheus_url,
            selector=self.prometheus_selector,
            revisions=self.revisions,
            step_s=self.cfg.prometheus_step_s,
        )

    def drift_verdict(self) -> PrometheusDriftVerdict:
        """The drift monitor's verdict per version, as Prometheus scraped it."""
        return PrometheusDriftVerdict(
            self.cfg.prometheus_url, self.service, selector=self.prometheus_selector
        )

    def state_store(self) -> InferenceServiceStateStore:
        return InferenceServiceStateStore(self)


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def merge_history(theirs: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events another writer recorded (``theirs``) plus those only ``ours`` has, in time
    order (a stable sort: events of the same time keep their order), the last
    :data:`~serving.rollout.machine.HISTORY_EVENTS` of them."""
    mine = [e for e in ours if e not in theirs]
    merged = sorted([*theirs, *mine], key=lambda e: float(e.get("time") or 0.0))
    return merged[-HISTORY_EVENTS:]


class InferenceServiceStateStore:
    """The rollout machine's state beside the InferenceService.

    Which versions serve and the canary's share are read from what actually drives serving
    (the version annotations and ``spec.predictor.canaryTrafficPercent``); the phase, the last
    analysis and the history are JSON in the ConfigMap ``<service>-rollout`` (key ``state``),
    whose history is trimmed by whole events to stay valid JSON within :data:`STATE_MAX_CHARS`.
    The ConfigMap is owned by the InferenceService, so deleting the service deletes it.
    """

    def __init__(self, backend: KubernetesBackend):
        self.backend = backend
        #: Whether the ConfigMap exists, as last seen (None: not read yet): save() then creates
        #: or replaces it at the first try.
        self._exists: bool | None = None
        #: The InferenceService's uid as last read (its ConfigMap's owner): the machine loads
        #: before it saves, so a save needs no read of its own.
        self._owner_uid: str | None = None
        #: The ConfigMap's resourceVersion as last read or written: a save replaces that one.
        self._resource_version: str | None = None

    @property
    def name(self) -> str:
        return f"{self.backend.service}{STATE_CONFIGMAP_SUFFIX}"

    @property
    def where(self) -> str:
        return f"ConfigMap {self.backend.cfg.namespace}/{self.name}"

    def _record(self, isvc: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.backend.core.read_namespaced_config_map(self.name, self.backend.cfg.namespace)
            text, where = (cm.data or {}).get(STATE_KEY) or "{}", self.where
            self._exists = True
            self._resource_version = cm.metadata.resource_version
        except ApiException as err:
            if err.status != 404:
                raise _api_error(err, f"reading the rollout state ({self.where})") from err
            self._exists, self._resource_version = False, None
            # No state yet, or a rollout an earlier version kept in an annotation.
            ann = isvc["metadata"].get("annotations") or {}
            text, where = ann.get(STATE_ANNOTATION) or "{}", f"annotation {STATE_ANNOTATION}"
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            log.warning("the rollout state in %s is not a JSON object; ignoring it", where)
            return {}
        return record

    def load(self) -> RolloutState:
        isvc = self.backend.get()
        if isvc is None:
            self._exists = False  # deleted with its InferenceService (owner reference)
            self._owner_uid = None
            return RolloutState(self.backend.name)
        self._owner_uid = isvc["metadata"].get("uid")
        ann = isvc["metadata"].get("annotations") or {}
        record = self._record(isvc)
        stable, canary = ann.get(STABLE_ANNOTATION), ann.get(CANARY_ANNOTATION)
        percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        phase = record.get("phase") or ("promoted" if stable else "idle")
        if canary:
            phase = "canary"
        elif phase == "canary":  # the canary annotation is gone: someone finished it by hand
            phase = "rolled_back" if ann.get(ROLLED_BACK_ANNOTATION) else "promoted"
        return RolloutState(
            backend=self.backend.name,
            phase=phase,  # type: ignore[arg-type]  # one of Phase, by the branches above
            stable=stable,
            canary=canary or None,
            percent=int(percent or 0) if canary else 0,
            last_analysis=record.get("last_analysis"),
            history=list(record.get("history") or []),
            updated_at=float(record.get("updated_at") or 0.0),
        )

    def save(self, state: RolloutState) -> None:
        """Write ``state`` with the ConfigMap's ``resourceVersion`` as last loaded (optimistic
        concurrency, as ``kubectl apply`` does): when another command wrote the state since
        (a person's ``aicrush rollback`` between two analysis polls), the API server answers
        409, and the events it recorded are kept: the history becomes theirs plus this
        command's new events, in time order, and the write is tried again (3 times at most).

        Raises :class:`RolloutError` when the API server refuses the write."""
        from kubernetes.client.exceptions import ApiException

        state.updated_at = time.time()
        doing = f"saving the rollout state ({self.where})"
        for _attempt in range(STATE_WRITE_ATTEMPTS):
            try:
                self._write(state)
                return
            except ApiException as err:
                if err.status not in (404, 409):
                    raise _api_error(err, doing) from err
                try:  # deleted (404) or written by someone else (409) since our load
                    cm = self.backend.core.read_namespaced_config_map(
                        self.name, self.backend.cfg.namespace
                    )
                except ApiException as read_err:
                    if read_err.status != 404:
                        raise _api_error(read_err, doing) from read_err
                    self._exists, self._resource_version = False, None
                    continue
                self._exists = True
                self._resource_version = cm.metadata.resource_version
                theirs = _json_object((cm.data or {}).get(STATE_KEY)).get("history") or []
                state.history = merge_history(theirs, state.history)
        raise RolloutError(
            f"{doing} failed: the state changed under each of {STATE_WRITE_ATTEMPTS} writes "
            "(another command is writing it); run the command again"
        )

    def _write(self, state: RolloutState) -> None:
        """One create (no ConfigMap yet) or replace (at the loaded ``resourceVersion``)."""
        record = {k: v for k, v in asdict(state).items() if k != "history"}
        budget = STATE_MAX_CHARS - len(json.dumps(record, default=str)) - len(', "history": ')
        history = json.loads(fit_json_list(state.history, budget))
        value = json.dumps({**record, "history": history}, default=str)
        namespace = self.backend.cfg.namespace
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "aicrush",
                "aicrush.dev/inference-service": self.backend.service,
            },
        }
        uid = self._owner_uid
        if uid is None:  # not loaded yet, or the service was created since
            uid = ((self.backend.get() or {}).get("metadata") or {}).get("uid")
            self._owner_uid = uid
        if uid:  # garbage-collected with the InferenceService
            metadata["ownerReferences"] = [
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                 "name": self.backend.service, "uid": uid}
            ]  # fmt: skip
        core = self.backend.core
        if self._exists is False:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                    "data": {STATE_KEY: value}}  # fmt: skip
            written = core.create_namespaced_config_map(namespace, body)
        else:
            if self._resource_version:  # a 409 when someone else wrote it since our load
                metadata["resourceVersion"] = self._resource_version
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                    "data": {STATE_KEY: value}}  # fmt: skip
            written = core.replace_namespaced_config_map(self.name, namespace, body)
        self._exists = True
        self._resource_version = getattr(
            getattr(written, "metadata", None), "resource_version", None
        )
