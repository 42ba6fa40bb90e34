"""Fuzz the V2 REST API with schemathesis against KServe's own Open Inference Protocol spec.

The spec (shared/schemas/kserve/rest_predict_v2.yaml) declares only 200 and 400 for /infer; a
correct server also answers 404 (unknown model or version) and 413 (body over the limit), and
503 while a model loads. Those are accepted here as documented outcomes, each with an
``{"error": ...}`` body; a 5xx other than 503, or a 200 that breaks the response schema, fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.serving import REPO_ROOT, shared_server

pytestmark = pytest.mark.integration

SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "kserve" / "rest_predict_v2.yaml"
INFER = "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"
DOCUMENTED_EXTRA = {404, 413, 503}

if not SCHEMA.is_file():
    pytest.skip(
        f"KServe REST spec not found at {SCHEMA} (CI keeps shared/ beside the clone)",
        allow_module_level=True,
    )

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402


def load_schema():
    raw = yaml.safe_load(SCHEMA.read_text())
    # The spec writes path templates as '${MODEL_NAME}'; OpenAPI templates are '{MODEL_NAME}'.
    raw["paths"] = {p.replace("${", "{"): v for p, v in raw["paths"].items()}
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture(scope="module")
def server(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig):
    return shared_server(random_model_dir, pytestconfig, tmp_path_factory.mktemp("server"))


def _strategy(server):
    op = load_schema()[INFER]["POST"]
    ours = {"MODEL_NAME": server.name, "MODEL_VERSION": server.version}
    return st.one_of(
        op.as_strategy(GenerationMode.POSITIVE, path_parameters=ours),
        op.as_strategy(GenerationMode.NEGATIVE, path_parameters=ours),
        op.as_strategy(GenerationMode.POSITIVE),  # random model names and versions
    )


def test_infer_never_answers_a_server_error(server):
    seen: set[int] = set()

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=_strategy(server))
    def fuzz(case):
        response = case.call(base_url=server.url, timeout=30)
        seen.add(response.status_code)
        if response.status_code in DOCUMENTED_EXTRA or response.status_code == 400:
            assert isinstance(response.json().get("error"), str), response.text
            if response.status_code in DOCUMENTED_EXTRA:
                return
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    fuzz()
    assert 400 in seen  # the fuzzer reached the validation paths
