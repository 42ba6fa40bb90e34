"""A fake Kubernetes API server on loopback for the InferenceService custom-object endpoints.

It validates every object it would store (after applying a JSON merge patch) against the real
InferenceService CRD schema, keeps ``resourceVersion`` (409 on a stale one) and
``metadata.generation`` (bumped by spec changes only, as for a CRD with a status subresource),
simulates KServe's revisions and traffic in ``status``, records every call, and can fail a chosen
call. With ``auto_ready=True`` a change is Ready at once; with ``False`` the new status waits
(condition Ready ``Unknown``, the old traffic) until a controller calls :meth:`FakeKube.mark_ready`.

As KServe does, it makes a new Knative revision for a change of the predictor spec and for a
change of the InferenceService's own annotations (KServe copies them onto the revision template,
except those on its ``serviceAnnotationDisallowedList``), and when the latest revision gets 100 %
of the traffic it becomes ``latestRolledoutRevision`` (the one before it
``previousRolledoutRevision``), also while ``canaryTrafficPercent`` is 100.

It also serves core/v1 ConfigMaps (get, create, replace): names and ``data`` checked as the API
server does (DNS subdomain, string values, 1 MiB in all).

Given the Kubeflow Trainer TrainJob CRD it also serves ``trainer.kubeflow.org/v1alpha1``
TrainJobs (create, get, delete): every body is checked against the CRD's OpenAPI schema and its
top-level CEL rules on ``metadata.name``; their status is set by a controller
(:meth:`FakeKube.set_trainjob_status`, e.g. ``tests.cluster.emulator.TrainJobController``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/?]+))?/?(?:\?.*)?$"
)

CONFIGMAP_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/configmaps(?:/([^/?]+))?/?(?:\?.*)?$")

#: KServe's default ``serviceAnnotationDisallowedList`` (config/configmap/inferenceservice.yaml):
#: InferenceService annotations it does not copy onto the Knative revision template.
ANNOTATIONS_NOT_PROPAGATED = frozenset(
    {
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/max-scale",
        "internal.serving.kserve.io/storage-initializer-sourceuri",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)


def propagated_annotations(obj: dict | None) -> dict:
    """The annotations KServe copies from the InferenceService onto its revision template."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k not in ANNOTATIONS_NOT_PROPAGATED}


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def configmap_errors(obj: dict) -> list[str]:
    """What the API server refuses in a ConfigMap body."""
    errors = []
    name = (obj.get("metadata") or {}).get("name", "")
    if not DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: {name!r} is not a DNS subdomain")
    data = obj.get("data") or {}
    errors += [f"data.{k}: not a string" for k, v in data.items() if not isinstance(v, str)]
    if sum(len(k) + len(v) for k, v in data.items() if isinstance(v, str)) > 1024 * 1024:
        errors.append("data: over 1 MiB")
    return errors


TRAINJOB_PATH = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/?]+))?/?(?:\?.*)?$"
)


def shared_schema(path: Path) -> Path:
    """``path`` (a file of ../shared/schemas), or skip the test when the clone has no shared/
    beside it: the schemas are not part of the repository (CI puts them there)."""
    if not path.is_file():
        import pytest

        pytest.skip(f"{path} not found: shared/ must sit beside the clone (CI has it)")
    return path


@functools.lru_cache(maxsize=4)
def crd_validator(crd_file: Path, version: str = "v1beta1") -> Any:
    """A validator for the ``version`` schema (parsed once per process: CRDs are MBs of YAML).
    Skips the test when the CRD file is not there (:func:`shared_schema`)."""
    import jsonschema

    text = shared_schema(crd_file).read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"][
        "openAPIV3Schema"
    ]
    return jsonschema.Draft7Validator(schema)


_CEL_MATCHES = re.compile(r"^self\.metadata\.name\.matches\('(.+)'\)$")
_CEL_SIZE = re.compile(r"^size\(self\.metadata\.name\) <= (\d+)$")


def name_rules(validator: Any) -> list[tuple[str, Any]]:
    """The schema's top-level CEL rules on ``metadata.name`` as (message, check) pairs. Only the
    two forms the TrainJob CRD uses are understood; any other rule raises, so a CRD update
    that adds one is noticed here rather than silently not enforced."""
    rules = []
    for rule in validator.schema.get("x-kubernetes-validations") or []:
        text, message = rule["rule"], rule["message"]
        if m := _CEL_MATCHES.match(text):
            pattern = re.compile(m.group(1))
            rules.append((message, lambda name, p=pattern: bool(p.search(name))))
        elif m := _CEL_SIZE.match(text):
            limit = int(m.group(1))
            rules.append((message, lambda name, n=limit: len(name) <= n))
        else:
            raise NotImplementedError(f"CEL rule not understood by the fake API server: {text}")
    return rules


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@dataclass
class Call:
    method: str
    path: str
    body: Any
    status: int


@dataclass
class FakeKube:
    validator: Any
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    fail_next: list[tuple[str, int]] = field(
        default_factory=list
    )  # (method, status) for the next such call
    auto_ready: bool = True
    #: TrainJobs (namespace, name) -> object, validated by ``trainjob_validator`` when given.
    trainjob_validator: Any = None
    trainjobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: (namespace, name) -> the status KServe reports once the pending revision is ready.
    pending: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: core/v1 ConfigMaps: (namespace, name) -> object.
    configmaps: dict[tuple[str, str], dict] = field(default_factory=dict)
    _rv: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_ready(self, namespace: str, name: str) -> bool:
        """Controller side: the pending revision of ``name`` became ready; traffic follows the spec."""
        with self._lock:
            key = (namespace, name)
            status = self.pending.pop(key, None)
            if status is None or key not in self.objects:
                return False
            obj = copy.deepcopy(self.objects[key])
            obj["status"] = status
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.objects[key] = obj
            return True

    def get(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self.objects.get((namespace, name)))

    def validate(self, obj: dict) -> list[str]:
        return [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in self.validator.iter_errors(obj)
        ]

    def _simulate_status(self, obj: dict, old: dict | None) -> None:
        """KServe-like status: a new revision per predictor change, canary traffic split between two."""
        status = (old or {}).get("status", {}).get("components", {}).get("predictor", {})
        rev_no = int(status.get("_n", 0))
        pred = copy.deepcopy(obj["spec"]["predictor"])
        old_pred = copy.deepcopy((old or {}).get("spec", {}).get("predictor", {}))
        pred.pop("canaryTrafficPercent", None)
        old_pred.pop("canaryTrafficPercent", None)
        latest = status.get("latestCreatedRevision")
        rolled = status.get("latestRolledoutRevision")
        previous = status.get("previousRolledoutRevision")
        template_changed = pred != old_pred or (
            propagated_annotations(obj) != propagated_annotations(old)
        )
        if template_changed or latest is None:
            rev_no += 1
            latest = f"{obj['metadata']['name']}-predictor-{rev_no:05d}"
        canary = obj["spec"]["predictor"].get("canaryTrafficPercent")
        if canary is None or rolled is None or (canary == 100 and latest != rolled):
            # The latest revision has all the traffic: KServe records it as rolled out.
            if rolled != latest:
                previous, rolled = rolled, latest
            traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        elif latest == rolled and canary < 100 and previous:
            # Back below 100 % after the latest was rolled out: KServe restores the previous
            # rolled-out revision, which gets the rest of the traffic.
            rolled = previous
            traffic = [
                {"revisionName": rolled, "percent": 100 - canary, "latestRevision": False,
                 "tag": "prev"},
                {"revisionName": latest, "percent": canary, "latestRevision": True,
                 "tag": "latest"},
            ]  # fmt: skip
        elif latest == rolled:
            traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        else:
            traffic = [
                {
                    "revisionName": rolled,
                    "percent": 100 - canary,
                    "latestRevision": False,
                    "tag": "prev",
                }
            ]
            if canary:
                traffic.append(
                    {
                        "revisionName": latest,
                        "percent": canary,
                        "latestRevision": True,
                        "tag": "latest",
                    }
                )
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PredictorReady", "status": "True"},
            ],
            "url": f"http://{obj['metadata']['name']}.{obj['metadata']['namespace']}.example.com",
            "components": {
                "predictor": {
                    "_n": rev_no,
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": latest,
                    "latestRolledoutRevision": rolled,
                    "previousRolledoutRevision": previous,
                    "traffic": traffic,
                }
            },
        }

    def set_trainjob_status(self, namespace: str, name: str, status: dict) -> bool:
        """Controller side: replace the status of a TrainJob (False when it is gone)."""
        with self._lock:
            obj = self.trainjobs.get((namespace, name))
            if obj is None:
                return False
            obj = copy.deepcopy(obj)
            obj["status"] = copy.deepcopy(status)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.trainjobs[(namespace, name)] = obj
            return True

    def get_trainjob(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self.trainjobs.get((namespace, name)))

    def validate_trainjob(self, obj: dict) -> list[str]:
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in self.trainjob_validator.iter_errors(obj)
        ]
        name = obj.get("metadata", {}).get("name", "")
        errors += [f"metadata.name: {msg}" for msg, ok in name_rules(self.trainjob_validator)
                   if not ok(name)]  # fmt: skip
        return errors

    def _handle_trainjob(
        self, method: str, ns: str, name: str | None, body: Any
    ) -> tuple[int, dict]:
        if self.trainjob_validator is None:
            return 404, _status(404, "NotFound", "the TrainJob CRD is not installed")
        key = (ns, name or (body or {}).get("metadata", {}).get("name", ""))
        current = self.trainjobs.get(key)
        if method == "GET":
            if current:
                return 200, current
            return 404, _status(
                404, "NotFound", f'trainjobs.trainer.kubeflow.org "{key[1]}" not found'
            )
        if method == "DELETE":
            if not current:
                return 404, _status(
                    404, "NotFound", f'trainjobs.trainer.kubeflow.org "{key[1]}" not found'
                )
            del self.trainjobs[key]  # foreground deletion, its JobSet already gone
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method != "POST":
            return 405, _status(405, "MethodNotAllowed", method)
        if current:
            return 409, _status(
                409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{key[1]}" already exists'
            )
        new = copy.deepcopy(body)
        new.pop("status", None)
        errors = self.validate_trainjob(new)
        if errors:
            self.invalid.extend(errors)
            return 422, _status(422, "Invalid", "; ".join(errors[:5]))
        self._rv += 1
        new["metadata"].update(resourceVersion=str(self._rv), generation=1, uid=f"uid-{self._rv}")
        self.trainjobs[key] = new
        return 201, new

    def _handle_configmap(
        self, method: str, ns: str, name: str | None, body: Any
    ) -> tuple[int, dict]:
        key = (ns, name or ((body or {}).get("metadata") or {}).get("name", ""))
        current = self.configmaps.get(key)
        if method == "GET":
            if current is None:
                return 404, _status(404, "NotFound", f'configmaps "{key[1]}" not found')
            return 200, copy.deepcopy(current)
        if method not in ("POST", "PUT"):
            return 405, _status(405, "MethodNotAllowed", method)
        if method == "POST" and current is not None:
            return 409, _status(409, "AlreadyExists", f'configmaps "{key[1]}" already exists')
        if method == "PUT" and current is None:
            return 404, _status(404, "NotFound", f'configmaps "{key[1]}" not found')
        new = copy.deepcopy(body)
        errors = configmap_errors(new)
        if errors:
            self.invalid.extend(errors)
            return 422, _status(422, "Invalid", "; ".join(errors))
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if current is not None and rv and rv != current["metadata"]["resourceVersion"]:
            return 409, _status(409, "Conflict", "the object has been modified")
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        new["metadata"]["namespace"] = ns
        self.configmaps[key] = new
        return (201 if method == "POST" else 200), copy.deepcopy(new)

    def _injected(self, method: str) -> tuple[int, dict] | None:
        """The next failure queued in ``fail_next`` for ``method`` (consumed), if any."""
        for i, (fail_method, code) in enumerate(self.fail_next):
            if fail_method == method:
                del self.fail_next[i]
                return code, _status(code, "InternalError", "injected failure")
        return None

    def handle(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        c = CONFIGMAP_PATH.match(path)
        if c:
            with self._lock:
                injected = self._injected(method)
                return injected or self._handle_configmap(method, c.group(1), c.group(2), body)
        t = TRAINJOB_PATH.match(path)
        if t:
            with self._lock:
                injected = self._injected(method)
                return injected or self._handle_trainjob(method, t.group(1), t.group(2), body)
        m = PATH.match(path)
        if not m:
            return 404, _status(404, "NotFound", f"no route {path}")
        ns, name = m.group(1), m.group(2)
        with self._lock:
            injected = self._injected(method)
            if injected is not None:
                return injected
            key = (ns, name or (body or {}).get("metadata", {}).get("name", ""))
            current = self.objects.get(key)
            if method == "GET":
                return (
                    (200, current)
                    if current
                    else (404, _status(404, "NotFound", f"inferenceservices {key[1]} not found"))
                )
            if method == "POST":
                if current:
                    return 409, _status(409, "AlreadyExists", "already exists")
                new = copy.deepcopy(body)
                old = None
            elif method == "PATCH":
                if not current:
                    return 404, _status(404, "NotFound", "not found")
                rv = (body or {}).get("metadata", {}).get("resourceVersion")
                if rv is not None and rv != current["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", "the object has been modified")
                new = merge_patch(current, body)
                old = current
            else:
                return 405, _status(405, "MethodNotAllowed", method)
            new.pop("status", None)
            errors = self.validate(new)
            if errors:
                self.invalid.extend(errors)
                return 422, _status(422, "Invalid", "; ".join(errors[:5]))
            self._rv += 1
            new["metadata"]["resourceVersion"] = str(self._rv)
            spec_changed = old is None or new.get("spec") != old.get("spec")
            generation = int((old or {}).get("metadata", {}).get("generation", 0))
            new["metadata"]["generation"] = generation + 1 if spec_changed else generation
            if old is None:
                new["metadata"]["uid"] = f"uid-{key[0]}-{key[1]}-{self._rv}"
            # KServe reconciles annotation changes too: they reach the revision template.
            template_changed = spec_changed or (
                propagated_annotations(new) != propagated_annotations(old)
            )
            if not template_changed:
                new["status"] = copy.deepcopy(old.get("status")) if old else None
            elif self.auto_ready:
                self._simulate_status(new, old)
            else:
                # KServe observes the change at once but the new revision is not ready yet:
                # the old traffic stays until the controller marks it ready.
                target = copy.deepcopy(new)
                self._simulate_status(target, old)
                self.pending[key] = target["status"]
                waiting = copy.deepcopy((old or {}).get("status") or {})
                waiting["observedGeneration"] = new["metadata"]["generation"]
                waiting["conditions"] = [
                    {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing",
                     "message": "Configuration is waiting for a Revision to become ready."},
                ]  # fmt: skip
                predictor = waiting.setdefault("components", {}).setdefault("predictor", {})
                predictor["latestCreatedRevision"] = target["status"]["components"]["predictor"][
                    "latestCreatedRevision"
                ]
                predictor["_n"] = target["status"]["components"]["predictor"]["_n"]
                new["status"] = waiting
            if new.get("status") is None:
                new.pop("status", None)
            self.objects[key] = new
            return (201 if method == "POST" else 200), new


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class FakeKubeServer:
    """``with FakeKubeServer(crd) as s:`` -> ``s.url``, ``s.kube`` (state, calls), ``s.api()`` (CustomObjectsApi)."""

    def __init__(self, crd_file: Path, trainjob_crd: Path | None = None):
        self.kube = FakeKube(crd_validator(crd_file))
        if trainjob_crd is not None:
            self.kube.trainjob_validator = crd_validator(trainjob_crd, "v1alpha1")
        kube = self.kube

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _do(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                body = json.loads(raw) if raw else None
                if (
                    self.command == "PATCH"
                    and self.headers.get("content-type") != "application/merge-patch+json"
                ):
                    status, doc = (
                        415,
                        _status(415, "UnsupportedMediaType", self.headers.get("content-type", "")),
                    )
                else:
                    status, doc = kube.handle(self.command, self.path, body)
                kube.calls.append(Call(self.command, self.path.split("?")[0], body, status))
                out = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _do

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def api(self) -> Any:
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.url
        return client.CustomObjectsApi(client.ApiClient(conf))

    def __enter__(self) -> FakeKubeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
