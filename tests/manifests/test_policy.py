"""Security policy of everything the cluster runs: each container of each workload (Deployments,
StatefulSets, the InferenceService predictor over its ServingRuntime) meets the Pod Security
"restricted" profile with a read-only root filesystem and has CPU/memory requests and limits; no
Secret value or credential-looking string is in a manifest, Dockerfile or the compiled pipeline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests import (
    DOCKER,
    MANIFESTS,
    REPO,
    TARGETS,
    base_images,
    by_kind,
    compiled_pipeline,
    containers_of,
    pod_spec,
    render,
    workload_pod,
)

#: Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
CREDENTIAL_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key": re.compile(r'"private_key(_id)?"\s*:'),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abpsr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"$]+@"),
    # a literal value after a secret-looking key; references ($VAR, ${VAR}, $(VAR)) are fine
    "literal secret": re.compile(
        r"(?i)\b[\w-]*(password|passwd|secret|token|api[_-]?key)[ \t]*[:=][ \t]*['\"]?"
        r"(?!(?:true|false|null)\b)(?![$'\"{(\[])[^\s'\"#,]{4,}"
    ),
}
SECRET_ENV = re.compile(r"(?i)(password|passwd|secret|token|api_?key)")


def effective(pod_sc: dict[str, Any], container_sc: dict[str, Any], key: str) -> Any:
    return container_sc.get(key, pod_sc.get(key))


def workload_containers(target: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    objects = render(target)
    found = list(containers_of(objects))
    for name, runtime in by_kind(objects, "ServingRuntime").items():
        found += [
            (f"ServingRuntime/{name}/{c['name']}", {}, c) for c in runtime["spec"]["containers"]
        ]
    assert found
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_meets_the_restricted_profile(target: str) -> None:
    for where, pod_sc, c in workload_containers(target):
        sc = c.get("securityContext", {})
        assert effective(pod_sc, sc, "runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert effective(pod_sc, sc, "runAsUser") != 0, f"{where}: runs as uid 0"
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("privileged") in (None, False), f"{where}: privileged"
        seccomp = effective(pod_sc, sc, "seccompProfile") or {}
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile"
        caps = sc.get("capabilities", {})
        assert caps.get("drop") == ["ALL"] and not caps.get("add"), f"{where}: capabilities"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"


@pytest.mark.parametrize("target", TARGETS)
def test_read_only_containers_of_our_images_get_a_writable_tmp(target: str) -> None:
    ours = {ref for name, ref in base_images().items() if name.startswith("aicrush-")}
    for where, _, c in workload_containers(target):
        if c.get("image") in ours:
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"


@pytest.mark.parametrize("target", TARGETS)
def test_pods_use_no_host_namespaces_or_host_paths(target: str) -> None:
    objects = render(target)
    specs = [(o["metadata"]["name"], workload_pod(o)) for o in objects if pod_spec(o) is not None]
    specs += [(n, o["spec"]["predictor"]) for n, o in by_kind(objects, "InferenceService").items()]
    specs += [(n, o["spec"]) for n, o in by_kind(objects, "ServingRuntime").items()]
    for name, spec in specs:
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), f"{name}: {flag}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{name}: volume {volume['name']} is {kinds}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_and_limits(target: str) -> None:
    for where, _, c in workload_containers(target):
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in resources.get(section, {}), f"{where}: no {section}.{resource}"


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_are_referenced_never_inlined(target: str) -> None:
    objects = render(target)
    assert not by_kind(objects, "Secret"), "Secrets are created with kubectl, never committed"
    for where, _, c in workload_containers(target):
        for env in c.get("env", []):
            if SECRET_ENV.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), (
                    f"{where}: {env['name']} must come from a Secret"
                )


def scan(text: str) -> list[str]:
    hits = []
    for label, pattern in CREDENTIAL_PATTERNS.items():
        hits += [f"{label}: {m.group(0)!r}" for m in pattern.finditer(text)]
    return hits


def packaging_files() -> list[Path]:
    files = [p for p in MANIFESTS.rglob("*") if p.is_file()]
    files += [p for p in DOCKER.iterdir() if p.is_file()]
    dockerignore = REPO / ".dockerignore"
    return files + ([dockerignore] if dockerignore.is_file() else [])


def test_no_credentials_in_manifests_or_dockerfiles() -> None:
    files = packaging_files()
    assert any(p.suffix == ".Dockerfile" for p in files)
    for path in files:
        assert scan(path.read_text(errors="replace")) == [], path.relative_to(REPO)


@pytest.mark.parametrize("target", TARGETS)
def test_no_credentials_in_rendered_manifests(target: str) -> None:
    assert scan(yaml.safe_dump_all(render(target))) == []


def test_the_credential_scan_finds_planted_secrets() -> None:
    planted = {
        "password: hunter22",
        "MLFLOW_TRACKING_PASSWORD=s3cr3tvalue",
        "postgresql://mlflow:hunter22@db:5432/mlflow",
        '{"type": "service_account", "private_key": "x"}',
        "AKIAABCDEFGHIJKLMNOP",
    }
    for text in planted:
        assert scan(text), text
    for fine in (
        "password=${REDIS_PASSWORD}",
        "--requirepass\n- $(REDIS_PASSWORD)",
        "key: admin-password",
    ):
        assert scan(fine) == [], fine


def test_no_credentials_or_secret_parameters_in_the_compiled_pipeline() -> None:
    text = compiled_pipeline()
    assert scan(text) == []
    spec = next(yaml.safe_load_all(text))
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    leaked = [name for name in parameters if SECRET_ENV.search(name)]
    assert leaked == [], "secrets are never pipeline parameters; use Secrets or Workload Identity"
