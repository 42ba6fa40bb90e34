"""`aicrush serve` on a port that is taken: one line naming the port and the option, exit 2,
before the model is loaded; KServe's gRPC server (grpc's SO_REUSEPORT default) never shares one."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from serving.rollout.processes import free_port
from tests.pipelines.test_first_hour import user_env

REPO_ROOT = Path(__file__).resolve().parents[2]


def serve(model_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--path", str(model_dir), *args],
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


@pytest.fixture
def listening_http_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def grpc_port():
    """A port held by a real grpc server with grpc's defaults (SO_REUSEPORT on), as a first
    `aicrush serve` holds its gRPC port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("[::]:0")
    server.start()
    yield port
    server.stop(grace=None)


def test_http_port_in_use_is_one_line_and_exit_2(random_model_dir, tmp_path, listening_http_port):
    result = serve(
        random_model_dir,
        tmp_path,
        "--http-port",
        str(listening_http_port),
        "--grpc-port",
        str(free_port()),
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout.strip().splitlines() == [
        f"error: port {listening_http_port} is in use (http, 127.0.0.1); choose another with "
        "--http-port"
    ]


def test_grpc_port_in_use_is_refused_not_shared(random_model_dir, tmp_path, grpc_port):
    result = serve(
        random_model_dir,
        tmp_path,
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(grpc_port),
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout.strip().splitlines() == [
        f"error: port {grpc_port} is in use (grpc, all interfaces); choose another with --grpc-port"
    ]


def test_free_ports_and_port_zero_pass_the_check(listening_http_port):
    from serving.server import PortInUse, check_ports_free

    check_ports_free("127.0.0.1", free_port(), free_port())
    check_ports_free("127.0.0.1", 0, 0)
    check_ports_free("127.0.0.1", free_port(), None)  # gRPC off
    with pytest.raises(PortInUse, match="--http-port"):
        check_ports_free("127.0.0.1", listening_http_port, None)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--http-port", "70000"], "--http-port 70000 is not a TCP port"),
        (["--grpc-port", "-1"], "--grpc-port -1 is not a TCP port"),
        (["--host", "example.invalid"], "cannot listen on host 'example.invalid'"),
        (["--host", "0.0.0.0.0"], "cannot listen on host '0.0.0.0.0'"),
        (["--host", "192.0.2.1"], "cannot listen on host '192.0.2.1'"),  # TEST-NET-1, not ours
    ],
)
def test_where_it_cannot_listen_is_one_line_and_exit_2(random_model_dir, tmp_path, args, says):
    """Not 'port in use' for a host that is not this machine's, nor an OverflowError traceback."""
    result = serve(random_model_dir, tmp_path, *args)
    assert result.returncode == 2, result.stdout
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "in use" not in lines[0], result.stdout


def test_bad_tls_files_and_sink_urls_stop_before_the_model_loads(random_model_dir, tmp_path):
    (tmp_path / "not.pem").write_text("hello\n")
    cases = [
        (["--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", "/nonexistent.key"],
         "TLS certificate file /nonexistent.pem: no such file"),
        (["--ssl-certfile", str(tmp_path / "not.pem"), "--ssl-keyfile", str(tmp_path / "not.pem")],
         "cannot serve TLS with certificate"),
        (["--log-to", "http://[::1"], "--log-to"),
        (["--log-to", "not-a-url"], "http:// or https:// URL with a host"),
        (["--log-to", "ftp://127.0.0.1/"], "http:// or https:// URL with a host"),
    ]  # fmt: skip
    for args, says in cases:
        result = serve(random_model_dir, tmp_path, *args)
        assert result.returncode == 2, (args, result.stdout)
        flat = " ".join(result.stdout.replace("│", " ").split())  # typer's usage-error box
        assert says in flat and "Traceback" not in result.stdout, (args, result.stdout)
        assert "serving" not in result.stdout, result.stdout  # stopped before the banner


def test_python_m_serving_server_refuses_them_too(random_model_dir, tmp_path):
    for args in (["--log_to", "not-a-url"], ["--http_port", "70000"],
                 ["--ssl_certfile", "/nonexistent.pem", "--ssl_keyfile", "/nonexistent.key"]):  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "serving.server", "--model_dir", str(random_model_dir), *args],
            cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]


def test_a_folder_logged_to_the_monitor_needs_its_registry_version(random_model_dir, tmp_path):
    """Served from a folder, payloads were labelled version "1" and compared with registered
    version 1's reference, whatever the folder was."""
    sink = ["--log-to", "http://127.0.0.1:8085/"]
    result = serve(random_model_dir, tmp_path, *sink)
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert result.returncode == 2 and "--model-version" in flat, result.stdout
    # with the version given, that check passes (the out-of-range port stops it next)
    result = serve(
        random_model_dir, tmp_path, *sink, "--model-version", "3", "--http-port", "70000"
    )
    assert result.returncode == 2 and "not a TCP port" in result.stdout, result.stdout
