"""docker/skip_feast_mlflow_plugin.py: MLflow clients no longer import Feast on their first call.

Feast registers an ``mlflow.request_header_provider`` plugin; MLflow loads every such plugin on a
process's first call to a tracking server, and this one imports all of Feast (seconds of CPU: its
typeguard decorators compile their modules again at import). ``make install`` and the images
unregister it."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.manifests import DOCKER
from tests.mlflow_server import mlflow_server

SCRIPT = DOCKER / "skip_feast_mlflow_plugin.py"


def test_the_installed_environment_has_no_feast_mlflow_plugin() -> None:
    found = [e.value for e in entry_points(group="mlflow.request_header_provider")]
    assert not [v for v in found if v.startswith("feast")], (
        f"{found}: run `python {SCRIPT.relative_to(DOCKER.parent)}` (make install does)"
    )


@pytest.mark.integration
def test_an_mlflow_client_call_imports_no_feast(tmp_path: Path) -> None:
    """A pipeline step's first registry call, in a fresh process, against a real server."""
    with mlflow_server(tmp_path / "mlflow") as server:
        code = (
            "import sys, mlflow\n"
            f"mlflow.MlflowClient({server.url!r}).search_registered_models()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'feast'))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
    assert out.stdout.strip() == "[]", out.stdout[-2000:]


def _fake_feast(site: Path, entry_points_txt: bytes, record: bool = True) -> Path:
    """A feast distribution in ``site`` (found before the real one on PYTHONPATH)."""
    info = site / "feast-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: feast\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_bytes(entry_points_txt)
    if record:
        files = ["METADATA", "entry_points.txt", "RECORD"]
        (info / "RECORD").write_text("".join(f"{info.name}/{f},,\n" for f in files))
    return info / "entry_points.txt"


def _run(site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("record", [True, False], ids=["record", "no-record"])
def test_the_script_removes_that_one_entry_and_is_idempotent(
    tmp_path: Path, newline: bytes, record: bool
) -> None:
    """Only the feast line of that section goes: other lines, comments, a non-ASCII byte and the
    line endings stay byte for byte; a distribution without RECORD is found all the same."""
    lines = [
        b"[console_scripts]",
        b"feast = feast.cli.cli:cli",
        b"# caf\xc3\xa9: a comment",
        b"",
        b"[mlflow.request_header_provider]",
        b"feast = feast.infra.data_sources.mlflow.auth:FeastMLflowHeaderProvider",
        b"other = other.plugin:Provider",
    ]
    path = _fake_feast(tmp_path / "site", newline.join(lines) + newline, record)
    first = _run(tmp_path / "site")
    assert first.returncode == 0 and "unregistered feast 0.0.1's" in first.stdout, first
    assert path.read_bytes() == newline.join(lines[:5] + lines[6:]) + newline
    second = _run(tmp_path / "site")
    assert second.returncode == 0 and "nothing to do" in second.stdout, second
    assert path.read_bytes() == newline.join(lines[:5] + lines[6:]) + newline
