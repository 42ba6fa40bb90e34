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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aicrush.rollout_config import RolloutConfig
from serving.rollout.machine import ModelRef, RolloutError
from serving.rollout.metrics_source import PrometheusDriftVerdict, PrometheusMetricsSource

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
STABLE_ANNOTATION = "aicrush.dev/stable-version"
CANARY_ANNOTATION = "aicrush.dev/canary-version"
ROLLED_BACK_ANNOTATION = "aicrush.dev/rolled-back-version"
HTTP_PORT = 8080
STORAGE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "hf://", "oci://")


def logger_url(monitor_url: str, version: str) -> str:
    """The drift monitor's ingest URL for one revision: ``?modelversion=N`` names its version."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(monitor_url)
    query = "&".join(q for q in (parts.query, urlencode({"modelversion": version})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, parts.fragment))


def build_inference_service(
    cfg: RolloutConfig,
    ref: ModelRef,
    image: str,
    *,
    canary_percent: int | None = None,
    stable_version: str | None = None,
) -> dict[str, Any]:
    """The InferenceService serving ``ref`` (as canary with ``canary_percent``, else as the whole service)."""
    annotations = {STABLE_ANNOTATION: stable_version or ref.version}
    predictor: dict[str, Any] = {
        "minReplicas": cfg.min_replicas,
        "maxReplicas": cfg.max_replicas,
        # Pods of each revision carry these, so Prometheus scrapes both revisions' /metrics.
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics",
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
                    cfg.service_name,
                    "--model_dir",
                    "/mnt/models",
                    "--model_version",
                    ref.version,
                    "--http_port",
                    str(HTTP_PORT),
                ],
                # KServe's storage initializer downloads STORAGE_URI into /mnt/models.
                "env": [{"name": "STORAGE_URI", "value": ref.uri}],
                "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                "resources": {
                    "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
                    "limits": {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit},
                },
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
            "name": cfg.service_name,
            "namespace": cfg.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "aicrush",
                "app.kubernetes.io/component": "predictor",
            },
            "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true", **annotations},
        },
        "spec": {"predictor": predictor},
    }


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
        403: "the service account lacks RBAC on inferenceservices (see docs/rollout.md)",
        404: "the InferenceService or the KServe CRD is missing",
        409: "the InferenceService changed meanwhile; run the command again",
        422: "the API server rejected the InferenceService body",
    }.get(status or 0, "")
    return RolloutError(
        f"{doing} failed: HTTP {status} {reason} {message}".strip() + (f" ({hint})" if hint else "")
    )


@dataclass
class KubernetesBackend:
    """KServe InferenceService canary through the Kubernetes API (``CustomObjectsApi``)."""

    cfg: RolloutConfig
    image: str = ""  # default: aicrush.images.default_images()["serve"]
    api: Any = None  # kubernetes.client.CustomObjectsApi; default: in-cluster or kubeconfig
    prometheus_selector: str = ""
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
                config.load_kube_config()
            self.api = client.CustomObjectsApi()
        return self.api

    # -- API calls -------------------------------------------------------------------------

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.get_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, self.cfg.service_name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(
                err, f"reading InferenceService {self.cfg.namespace}/{self.cfg.service_name}"
            ) from err

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.client.create_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, body
            )
        except ApiException as err:
            raise _api_error(
                err, f"creating InferenceService {self.cfg.namespace}/{self.cfg.service_name}"
            ) from err

    def _patch(self, current: dict[str, Any], patch: dict[str, Any], doing: str) -> dict[str, Any]:
        """One JSON merge patch, conditional on the resourceVersion that was read."""
        from kubernetes.client.exceptions import ApiException

        patch = {
            **patch,
            "metadata": {
                **patch.get("metadata", {}),
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        try:
            return self.client.patch_namespaced_custom_object(
                GROUP, VERSION, self.cfg.namespace, PLURAL, self.cfg.service_name, patch
            )
        except ApiException as err:
            raise _api_error(err, doing) from err

    def _require(self, canary: bool) -> dict[str, Any]:
        isvc = self.get()
        if isvc is None:
            raise RolloutError(
                f"InferenceService {self.cfg.namespace}/{self.cfg.service_name} does not exist; "
                "run `aicrush deploy --backend kubernetes` first"
            )
        if canary and not isvc["metadata"].get("annotations", {}).get(CANARY_ANNOTATION):
            raise RolloutError(
                f"InferenceService {self.cfg.service_name} has no canary in progress"
            )
        return isvc

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
            isvc = self._create(build_inference_service(self.cfg, stable, self.image))
            log.info(
                "created InferenceService %s serving version %s",
                self.cfg.service_name,
                stable.version,
            )
        else:
            ann = isvc["metadata"].get("annotations", {})
            if ann.get(CANARY_ANNOTATION):
                raise RolloutError(
                    f"version {ann[CANARY_ANNOTATION]} is already a canary on {self.cfg.service_name}; "
                    "promote or roll it back first"
                )
            if ann.get(STABLE_ANNOTATION) != stable.version:
                body = build_inference_service(self.cfg, stable, self.image)
                body["spec"]["predictor"]["canaryTrafficPercent"] = None
                body["metadata"]["annotations"][ROLLED_BACK_ANNOTATION] = None
                isvc = self._patch(
                    isvc,
                    body,
                    f"updating {self.cfg.service_name} to the champion, version {stable.version}",
                )
        if canary is None:
            return
        body = build_inference_service(
            self.cfg, canary, self.image, canary_percent=percent, stable_version=stable.version
        )
        body["metadata"]["annotations"][ROLLED_BACK_ANNOTATION] = None
        try:
            self._patch(isvc, body, f"adding version {canary.version} as a {percent} % canary")
        except RolloutError as err:
            raise RolloutError(
                f"{err}. The InferenceService still serves version {stable.version} with all traffic; "
                "nothing else changed, run deploy again"
            ) from err

    def set_traffic(self, percent: int) -> None:
        isvc = self._require(canary=True)
        self._patch(
            isvc,
            {"spec": {"predictor": {"canaryTrafficPercent": int(percent)}}},
            f"setting the canary traffic to {percent} %",
        )

    def promote(self) -> None:
        isvc = self._require(canary=True)
        version = isvc["metadata"]["annotations"][CANARY_ANNOTATION]
        self._patch(isvc, {
            "metadata": {"annotations": {STABLE_ANNOTATION: version, CANARY_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        }, f"promoting version {version} to 100 %")  # fmt: skip

    def rollback(self) -> None:
        isvc = self._require(canary=True)
        version = isvc["metadata"]["annotations"][CANARY_ANNOTATION]
        self._patch(isvc, {
            "metadata": {"annotations": {CANARY_ANNOTATION: None, ROLLED_BACK_ANNOTATION: version}},
            "spec": {"predictor": {"canaryTrafficPercent": 0}},
        }, f"rolling back version {version} (canary traffic to 0 %)")  # fmt: skip

    def status(self) -> dict[str, Any]:
        isvc = self.get()
        if isvc is None:
            return {"healthy": False, "exists": False}
        ann = isvc["metadata"].get("annotations", {})
        st = isvc.get("status", {}) or {}
        conditions = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
        predictor = (st.get("components") or {}).get("predictor", {})
        return {
            "exists": True,
            "healthy": conditions.get("Ready") == "True",
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

    def metrics_source(self) -> PrometheusMetricsSource:
        return PrometheusMetricsSource(self.cfg.prometheus_url, selector=self.prometheus_selector)

    def drift_verdict(self) -> PrometheusDriftVerdict:
        """The drift monitor's verdict per version, as Prometheus scraped it."""
        return PrometheusDriftVerdict(
            self.cfg.prometheus_url, self.cfg.service_name, selector=self.prometheus_selector
        )
