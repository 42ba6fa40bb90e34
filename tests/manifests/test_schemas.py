"""Rendered objects validate against real schemas, offline: InferenceServices against KServe's
own CRD (shared/schemas/kserve), core objects against Kubernetes' OpenAPI schemas bundled in
kubernetes-validate (its newest version, strict: unknown fields are errors)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import pytest
import yaml
from referencing import Registry, Resource

from tests.manifests import SHARED, TARGETS, by_kind, render

ISVC_CRD = SHARED / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
#: CRD groups kubernetes-validate does not know; their objects are checked by the tests below.
CRD_GROUPS = {"serving.kserve.io", "monitoring.coreos.com"}

jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")


@lru_cache(maxsize=1)
def isvc_schema() -> dict[str, Any]:
    if not ISVC_CRD.is_file():
        pytest.skip(f"{ISVC_CRD} not found: shared/ must sit beside the clone (CI has it)")
    crd = yaml.load(ISVC_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys the schema does not declare, as the API server's strict field validation reports
    them (jsonschema alone accepts them: CRD schemas do not set additionalProperties: false)."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None:
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


@lru_cache(maxsize=1)
def isvc_validator() -> Any:
    return jsonschema.Draft7Validator(isvc_schema())


def isvc_errors(obj: dict[str, Any]) -> list[str]:
    schema = isvc_schema()
    validator = isvc_validator()
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]
    return errors + [
        f"unknown field {p}"
        for p in unknown_fields(obj["spec"], schema["properties"]["spec"], ".spec")
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_inference_services_validate_against_the_kserve_crd(target: str) -> None:
    services = by_kind(render(target), "InferenceService")
    assert services
    for name, obj in services.items():
        assert obj["apiVersion"] == "serving.kserve.io/v1beta1"
        assert isvc_errors(obj) == [], name


def test_the_crd_check_rejects_bad_values_and_unknown_fields() -> None:
    good = by_kind(render("base"), "InferenceService")["aicrush-code-language"]
    bad_value = copy.deepcopy(good)
    bad_value["spec"]["predictor"]["logger"]["mode"] = "everything"
    assert any("everything" in e for e in isvc_errors(bad_value))
    typo = copy.deepcopy(good)
    typo["spec"]["predictor"]["scaleTraget"] = 8
    assert "unknown field .spec.predictor.scaleTraget" in isvc_errors(typo)


def newest_kubernetes() -> str:
    return kubernetes_validate.latest_version()


def test_kubernetes_validate_ships_its_schemas() -> None:
    """kubernetes-validate reads bundled files, so validation works offline."""
    version = newest_kubernetes()
    bundled = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
    )
    assert (bundled / "deployment-apps-v1.json").is_file()


@pytest.mark.parametrize("target", TARGETS)
def test_core_objects_validate_against_kubernetes_schemas(target: str) -> None:
    version = newest_kubernetes()
    checked = 0
    for obj in render(target):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            group = obj["apiVersion"].split("/")[0]
            assert group in CRD_GROUPS, f"{where}: no schema and not a known CRD group"
        except kubernetes_validate.ValidationError as err:
            pytest.fail(
                f"{target}: {where} does not validate against Kubernetes {version}: {err.message}"
            )
    assert checked >= 20


def test_core_validation_is_not_vacuous() -> None:
    deployment = copy.deepcopy(by_kind(render("base"), "Deployment")["aicrush-mlflow"])
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, newest_kubernetes(), strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_serving_runtime_containers_are_valid_kubernetes_containers(target: str) -> None:
    """No CRD schema for ServingRuntime is vendored; its containers are plain core/v1 Containers,
    so check them against Kubernetes' own Container definition (strict)."""
    version = newest_kubernetes()
    root = (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
    )
    definitions = json.loads((root / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ Registry()
    schema = {"$ref": f"{definitions['$id']}#/$defs/io.k8s.api.core.v1.Container"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    for name, runtime in by_kind(render(target), "ServingRuntime").items():
        for c in runtime["spec"]["containers"]:
            errors = [e.message for e in validator.iter_errors(c)]
            assert errors == [], f"ServingRuntime/{name}/{c['name']}: {errors}"
    assert list(validator.iter_errors({"name": "x", "imag": "typo"})), "vacuous check"
