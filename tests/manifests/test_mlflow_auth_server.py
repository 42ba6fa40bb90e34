"""The MLflow tracking server as manifests/base/mlflow.yaml runs it, started here.

The Deployment's own command, arguments, environment and basic_auth.ini, with what needs the
cluster swapped for local stand-ins: SQLite for PostgreSQL (tracking and auth stores), a folder
for the gs:// artifacts, loopback for the host. It checks that the image's packages can run it
(`--app-name basic-auth` needs mlflow's `auth` extra, Flask-WTF, which the server once lacked) and
that what it guards is guarded: no credentials, 401; the bootstrapped admin's, 200.
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import httpx
import pytest

from serving.rollout.processes import free_port
from tests.manifests import by_kind, render, workload_pod
from tests.mlflow_server import running_mlflow_server

pytestmark = [pytest.mark.integration]


def test_the_manifests_mlflow_server_starts_with_basic_auth(tmp_path: Path) -> None:
    objects = render("overlays/gke")
    container = workload_pod(by_kind(objects, "Deployment")["aicrush-mlflow"])["containers"][0]
    [ini_text] = [
        cm["data"]["basic_auth.ini"]
        for name, cm in by_kind(objects, "ConfigMap").items()
        if name.startswith("aicrush-mlflow-auth-config")
    ]
    ini = configparser.ConfigParser()
    ini.read_string(ini_text)
    assert ini["mlflow"]["database_uri"].startswith("postgresql://")
    ini["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'auth.db'}"
    ini_path = tmp_path / "basic_auth.ini"
    with ini_path.open("w") as f:
        ini.write(f)

    port = free_port()
    swapped = {
        "--host": "127.0.0.1",
        "--port": str(port),
        "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination": str(tmp_path / "artifacts"),
        "--allowed-hosts": f"127.0.0.1:{port}",
    }
    args = []
    for arg in container["args"]:
        key = arg.split("=", 1)[0]
        args.append(f"{key}={swapped[key]}" if key in swapped else arg)
    assert "--app-name=basic-auth" in args
    env_names = {e["name"] for e in container["env"]}
    assert {"MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME"} <= env_names
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini_path),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-admin-password-1",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
    }
    assert set(env) - {"PATH"} <= env_names  # the Deployment sets each of these
    # The Deployment's command, run by this environment's interpreter (the image's mlflow).
    assert container["command"] == ["mlflow", "server"]
    with running_mlflow_server(args, port, tmp_path, env=env) as server:
        search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(search, timeout=10).status_code == 401
        auth = ("admin", "a-long-admin-password-1")
        assert httpx.get(search, auth=auth, timeout=10).status_code == 200
