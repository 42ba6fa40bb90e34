"""Build and run the aicrush model server: KServe's ModelServer with the aicrush predictor.

The same entry point runs locally (``aicrush serve``, REST bound to 127.0.0.1) and as the
predictor container of the InferenceService (``python -m serving.server --model_dir /mnt/models``,
bound to all interfaces). The server is KServe's own: ``kserve.ModelServer.start`` builds and runs
its REST server (uvicorn, TLS, access-log format, keep-alive, event loop) and its gRPC server
(``--grpc_max_*_message_length``, ``--max_threads``), and KServe's flags
(``kserve.model_server.parser``) are this module's flags. One size limit governs both protocols
(``--max_body_bytes``, default KServe's 8 MiB gRPC limit). On top of KServe's REST app,
:mod:`serving.http_guard` adds limits, strict decoding and bounded metrics (see there).

SIGTERM (KServe's handling): uvicorn stops accepting connections and lets in-flight requests
finish (``--grace_period``), then KServe stops gRPC (same grace) and unloads the model, which
finishes what the batcher has queued.
"""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from serving.http_guard import (
    CLIENT_ERROR_LINE,
    DEFAULT_MAX_BODY_BYTES,
    clip_reason,
    install_http_extensions,
)

log = logging.getLogger(__name__)


MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


# --------------------------------------------------------------------------- model sources


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the local store (:func:`aicrush.state.resolve_tracking_uri`)."""
    from aicrush.state import resolve_tracking_uri

    return resolve_tracking_uri()


def registry_uri(model: str, alias: str | None = None, version: int | str | None = None) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (exactly one of alias and version)."""
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias (champion|challenger) and version")
    return f"models:/{model}@{alias}" if alias is not None else f"models:/{model}/{version}"


def resolve_model_source(
    model_path_or_uri: str | Path, tracking_uri: str | None = None
) -> tuple[Path, str | None]:
    """A local model folder for a path or a ``models:/`` URI, and the registry version if known.

    ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are downloaded from MLflow
    (``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the local state store).
    """
    from aicrush.model_folder import resolve_model_dir

    text = str(model_path_or_uri)
    m = MODELS_URI.match(text)
    if not m:
        return resolve_model_dir(text), None
    import mlflow

    from aicrush.registry import client, tracking

    uri = tracking_uri or default_tracking_uri()
    version = m["version"]
    if m["alias"]:
        version = str(client(uri).get_model_version_by_alias(m["name"], m["alias"]).version)
    from aicrush.errors import google_credentials

    # models:/ URIs resolve through MLflow's global registry URI; artifacts in gs:// need
    # Google credentials, whose absence is a CredentialsError naming the URI
    with tracking(uri), google_credentials(text):
        local = mlflow.artifacts.download_artifacts(artifact_uri=text)
    return resolve_model_dir(local), version


# --------------------------------------------------------------------------- the server


def configure_kserve_grpc(max_receive_bytes: int, max_send_bytes: int) -> None:
    """Set the gRPC message limits that KServe's ``ModelServer.start`` hands its ``GRPCServer``.

    KServe reads them from ``kserve.model_server.args`` (the namespace its module parses from the
    command line at import), not from constructor arguments, so ``aicrush serve`` (whose command
    line is not KServe's) and one size limit for REST and gRPC both need them set here. This is
    the one place that writes that namespace; tests/serving/test_server_grpc.py fails when an
    upgrade stops honouring it (a 6 MiB gRPC request with a 16 MiB limit).
    """
    from kserve import model_server

    model_server.args.grpc_max_receive_message_length = max_receive_bytes
    model_server.args.grpc_max_send_message_length = max_send_bytes


class ClientErrorLogFilter(logging.Filter):
    """Turn KServe's ERROR-with-traceback log of a client's mistake into one INFO line.

    KServe's REST exception handlers and gRPC interceptor log every error with ``exc_info``,
    a 4xx included (``kserve ERROR ... Exception:`` and ~30 lines of traceback per bad request).
    A client error (:data:`CLIENT_ERRORS`: 400 invalid input, 404 unknown model) is the client's
    to fix; the access line already shows it, so it becomes one line, traceback dropped. Every
    other exception (5xx) keeps its ERROR record and traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, _client_errors()):
            return True
        record.msg, record.args = CLIENT_ERROR_LINE, (type(exc).__name__, clip_reason(str(exc)))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _client_errors() -> tuple[type[BaseException], ...]:
    from kserve.errors import InvalidInput, ModelNotFound

    return (InvalidInput, ModelNotFound, RepositoryChangeRefused)


class RepositoryChangeRefused(NotImplementedError):
    """A load or unload request of the Open Inference Protocol's model repository extension
    (``POST /v2/repository/models/NAME/load|unload``, gRPC ``RepositoryModelLoad|Unload``).

    This server serves the one model it loaded at start, so it refuses both: KServe's own
    extension would unload the model on any unauthenticated request and leave the server
    answering 404 to every inference while ``/v2/health/ready`` still said ready, with no way
    back but a restart. KServe answers a ``NotImplementedError`` with HTTP 501 and gRPC
    ``UNIMPLEMENTED``; ``reason`` is the message (KServe's gRPC interceptor reads it).
    """

    def __init__(self, model_name: str, action: str) -> None:
        self.reason = (
            f"{action} of model {model_name!r} refused: this server serves the model it loaded "
            "at start and does not offer the model repository extension's load and unload; "
            "to serve another model or version, start a server for it (or roll it out: "
            "aicrush deploy)"
        )
        super().__init__(self.reason)


def _fixed_repository_class() -> type:
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    class FixedModelRepository(ModelRepositoryExtension):  # type: ignore[misc,valid-type]
        """KServe's model repository extension with its index, and load and unload refused."""

        async def load(self, model_name: str) -> None:
            raise RepositoryChangeRefused(model_name, "load")

        async def unload(self, model_name: str) -> None:
            raise RepositoryChangeRefused(model_name, "unload")

    return FixedModelRepository


def install_client_error_log_filter() -> None:
    """Install :class:`ClientErrorLogFilter` on KServe's logger (once)."""
    from kserve.logging import KSERVE_LOGGER_NAME

    logger = logging.getLogger(KSERVE_LOGGER_NAME)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())


class CannotListen(OSError):
    """The server cannot listen where it is asked to: a port out of range, a host that is not
    an address of this machine (or does not resolve), or a taken port (:class:`PortInUse`).
    Raised before the model loads; the message names the value and the option to change."""


class PortInUse(CannotListen):
    """A port the server needs is taken (``which``: ``http`` or ``grpc``)."""

    def __init__(self, which: str, port: int, host: str) -> None:
        flag = "--http-port" if which == "http" else "--grpc-port"
        super().__init__(f"port {port} is in use ({which}, {host}); choose another with {flag}")
        self.which, self.port = which, port


def _bindable(host: str, port: int) -> bool:
    """Whether a listening socket could bind ``host:port`` now, without SO_REUSEPORT (so a
    server that shares ports, like gRPC's, still counts as the owner). False only for a port
    that is taken; :class:`CannotListen` when ``host`` cannot be listened on at all."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn and grpc do: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind((host, port))
        except socket.gaierror as err:
            raise CannotListen(f"cannot listen on host {host!r}: {err.strerror}; --host takes "
                               "an address or name of this machine (127.0.0.1, 0.0.0.0)") from None  # fmt: skip
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return False
            raise CannotListen(f"cannot listen on host {host!r} port {port}: {err.strerror}; "
                               "--host takes an address of this machine (127.0.0.1, 0.0.0.0)") from None  # fmt: skip
    return True


def check_ports_free(host: str, http_port: int, grpc_port: int | None) -> None:
    """Raise :class:`PortInUse` when the REST port on ``host`` or the gRPC port (KServe binds it on
    all interfaces, ``[::]``) is taken; port 0 (any free port) is not checked.
    :class:`CannotListen` for a port outside 0-65535, a privileged port without the right, and
    a ``host`` that does not resolve or is not an address of this machine.

    KServe's gRPC server binds with grpc's default ``SO_REUSEPORT`` and passes no way to turn it
    off, so without this check a second server silently shares a port with the first.
    """
    import socket

    for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if port is not None and not 0 <= port <= 65535:
            raise CannotListen(f"{flag} {port} is not a TCP port: give 1-65535 (0: any free port)")
    if http_port and not _bindable(host, http_port):
        raise PortInUse("http", http_port, host)
    if grpc_port:
        grpc_host = "::" if socket.has_ipv6 and _ipv6_works() else "0.0.0.0"
        if not _bindable(grpc_host, grpc_port):
            raise PortInUse("grpc", grpc_port, "all interfaces")


def _ipv6_works() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM):
            return True
    except OSError:
        return False


def _model_server_class() -> type:
    from kserve import ModelServer

    class AicrushModelServer(ModelServer):  # type: ignore[misc,valid-type]
        """KServe's ``ModelServer``, started by its own ``start()``, with the REST server bound to
        ``host`` (KServe binds all interfaces; a local ``aicrush serve`` should not) and the
        model repository extension's load and unload refused (:class:`RepositoryChangeRefused`)."""

        def __init__(self, host: str, on_ready: Callable[[], None] | None, **kwargs: Any):
            super().__init__(**kwargs)
            self.host = host
            self.on_ready = on_ready
            # start() hands this object to the REST and gRPC servers: load and unload refused
            self.model_repository_extension = _fixed_repository_class()(self.registered_models)

        def setup_event_loop(self) -> None:
            # start() calls this after creating the servers and before running them.
            super().setup_event_loop()
            rest = getattr(self, "_rest_server", None)
            if rest is not None:
                rest.config.host = self.host
            if self.on_ready is not None:
                self.on_ready()

    return AicrushModelServer


def serve(
    model_path_or_uri: str | Path,
    name: str = "aicrush",
    http_port: int = 8080,
    grpc_port: int = 8081,
    host: str = "127.0.0.1",
    version: str | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 0.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    quantize: bool = False,
    log_to: str | None = None,
    log_batch_size: int = 32,
    log_linger_ms: float = 200.0,
    tracking_uri: str | None = None,
    grace_period: int = 30,
    threads: int = 1,
    batch_workers: int = 0,
    enable_grpc: bool = True,
    max_grpc_threads: int = 4,
    on_ready: Callable[[], None] | None = None,
    server_options: dict[str, Any] | None = None,
    max_send_bytes: int | None = None,
    access_log: bool = True,
    backend: str = "auto",
) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (blocking).

    ``model_path_or_uri`` is a model folder (a train_model artifact, /mnt/models) or an MLflow
    ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI. ``version`` labels metrics and
    metadata (default: the registry version, else aicrush.json ``version``, else "1").
    ``log_to`` sends each request and response to the drift monitor's payload logger, up to
    ``log_batch_size`` inferences per POST after waiting up to ``log_linger_ms`` for them (1: one
    binary-mode CloudEvent per POST, as KServe's logger does, for any KServe logger sink).
    ``max_body_bytes`` is the one size limit: REST bodies over it get 413 before parsing, gRPC
    messages over it ``RESOURCE_EXHAUSTED``. ``server_options`` are further ``kserve.ModelServer``
    arguments (TLS files, access-log format, keep-alive, event loop, ...). ``backend``: ``auto``
    (what aicrush.json ``serving_backend`` says, else ``torch``), ``torch``, ``onnx`` or
    ``onnx-int8`` (serving/onnx_backend.py; torch is not imported). ``threads``: intra-op threads
    of the forward pass (torch or ONNX Runtime; 0: the library's default, one per core).
    ``batch_workers``: forward passes that run at once, each on its own thread (0: the CPUs this
    process may use, affinity and cgroup CPU limit, divided by ``threads``; docs/serving.md,
    "Both cores").

    Raises :class:`PortInUse` (before loading the model) when a port is taken, and
    ``serving.onnx_backend.MissingOnnxFiles`` when an ONNX backend is asked of a folder without
    the exported file.
    """
    from serving.predictor import TextClassifierModel

    check_ports_free(host, http_port, grpc_port if enable_grpc else None)  # before the slow load
    model_dir, registry_version = resolve_model_source(model_path_or_uri, tracking_uri)
    model = TextClassifierModel(
        name,
        model_dir,
        version=version or registry_version,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        quantize=quantize,
        payload_logger=make_payload_logger(
            log_to, batch_size=log_batch_size, linger_s=log_linger_ms / 1000
        ),
        backend=backend,
        threads=threads,
        batch_workers=batch_workers,
    )
    model.load()
    run_model_server(
        model,
        http_port=http_port,
        grpc_port=grpc_port,
        host=host,
        max_body_bytes=max_body_bytes,
        grace_period=grace_period,
        enable_grpc=enable_grpc,
        max_grpc_threads=max_grpc_threads,
        on_ready=on_ready,
        server_options=server_options,
        max_send_bytes=max_send_bytes,
        access_log=access_log,
    )


def run_model_server(
    model: Any,
    http_port: int = 8080,
    grpc_port: int = 8081,
    host: str = "127.0.0.1",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    grace_period: int = 30,
    enable_grpc: bool = True,
    max_grpc_threads: int = 4,
    on_ready: Callable[[], None] | None = None,
    server_options: dict[str, Any] | None = None,
    max_send_bytes: int | None = None,
    access_log: bool = True,
) -> None:
    """Serve one loaded ``kserve.Model`` (with ``version`` and ``stop()``) until SIGTERM/SIGINT,
    through KServe's own ``ModelServer.start`` (its REST and gRPC servers, signal handling and
    graceful stop), with the aicrush HTTP extensions installed on KServe's app first.

    ``access_log``: one line per request (uvicorn's access log); False: none.

    Raises :class:`PortInUse` when ``http_port`` or ``grpc_port`` is taken, ValueError for
    ``workers`` > 1 (KServe's worker processes re-import its app without
    these extensions and cannot share the loaded model) and for an access-log format without
    the ``asgi-logger`` package.
    """
    from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
    from kserve.model_server import app

    options = check_server_options(server_options or {})
    check_ports_free(host, http_port, grpc_port if enable_grpc else None)
    configure_kserve_grpc(max_body_bytes, max_send_bytes or MAX_GRPC_MESSAGE_LENGTH)
    server_class = _model_server_class()
    model_server = server_class(
        host=host,
        on_ready=on_ready,
        http_port=http_port,
        grpc_port=grpc_port,
        workers=1,
        max_threads=max_grpc_threads,
        enable_grpc=enable_grpc,
        grace_period=grace_period,
        **{"enable_latency_logging": False, **options},
    )
    # After ModelServer(): it (re)configures KServe's loggers. Per request: one access line
    # (access_log) and no timing lines (kserve.trace logs two per request at INFO).
    if not model_server.enable_latency_logging:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if not access_log:
        # No handler and no propagation: uvicorn then skips the line's formatting as well.
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
        access.disabled = True
    install_client_error_log_filter()
    if hasattr(model, "describe"):  # KServe's logger: the one its configuration prints
        logging.getLogger("kserve").info("serving %s", model.describe())
        if (warning := model.oversubscription()) is not None:
            logging.getLogger("kserve").warning(warning)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    # ModelServer.start registers the model (registering it here too logged it twice).
    install_http_extensions(
        app, model_server.registered_models, {model.name: str(model.version)}, max_body_bytes
    )
    freeze_loaded_heap()
    model_server.start([model])


def freeze_loaded_heap() -> None:
    """Move every object alive now (the loaded model, tokenizer, libraries, the app) out of the
    garbage collector's reach (``gc.freeze``), so a full collection during serving scans only
    what requests created.

    Without it, full collections stalled the event loop: no-op model at c=8, p99 75-91 ms
    (p50 2.4 ms); frozen: p99 6.3 ms (docs/serving.md, "CPU speed"). Nothing that is frozen
    is ever collected, which is what the loaded model wants; request garbage is collected as
    before.
    """
    import gc

    gc.collect()
    gc.freeze()


def check_server_options(server_options: dict[str, Any], access_log: bool = True) -> dict[str, Any]:
    """``kserve.ModelServer`` options this server can honour, without ``workers``; ValueError
    (with what to do instead) for those it cannot, and for an access-log format with the access
    log off (``access_log`` False)."""
    options = dict(server_options)
    if not access_log and options.get("access_log_format"):
        raise ValueError(
            "the access log is off (--enable_access_log false, aicrush serve --no-access-log) "
            "and --access_log_format is given: they contradict, drop one of them"
        )
    if int(options.pop("workers", 1) or 1) != 1:
        raise ValueError(
            "--workers > 1 is not supported: KServe starts each worker by re-importing its app "
            "in a new process, without this server's request guard and without the loaded "
            "model; run more replicas instead (InferenceService minReplicas, or more "
            "'aicrush serve' processes behind a proxy)"
        )
    check_tls_files(options.get("ssl_certfile"), options.get("ssl_keyfile"))
    if options.get("access_log_format"):
        import importlib.util

        if importlib.util.find_spec("asgi_logger") is None:
            raise ValueError(
                "--access_log_format needs the asgi-logger package (KServe's 'logging' extra): "
                "pip install 'kserve[logging]'"
            )
    return options


def check_tls_files(certfile: str | None, keyfile: str | None) -> None:
    """ValueError naming the file when ``certfile``/``keyfile`` (``--ssl_certfile``,
    ``--ssl_keyfile``) cannot serve TLS: missing, unreadable, not PEM, or a key that does not
    match the certificate (what uvicorn would find only after the model loaded, as a traceback).
    Nothing to check when neither is given."""
    if not certfile and not keyfile:
        return
    import ssl

    for what, path in (("certificate", certfile), ("key", keyfile)):
        if path and not Path(path).is_file():
            raise ValueError(f"TLS {what} file {path}: no such file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certfile), keyfile or None)
    except (ssl.SSLError, OSError) as err:
        raise ValueError(
            f"cannot serve TLS with certificate {certfile} and key {keyfile}: "
            f"{getattr(err, 'reason', None) or err.strerror or err} (both must be PEM, the key "
            "that of the certificate)"
        ) from None


def make_payload_logger(
    url: str | None, queue_size: int = 1000, batch_size: int = 1, linger_s: float = 0.0
) -> Any:
    """The drift monitor's PayloadLogger for ``url``, or None (no URL, or module not present)."""
    if not url:
        return None
    try:
        from serving.payload_logger import PayloadLogger  # type: ignore[import-not-found]
    except ImportError:
        log.warning("--log-to %s ignored: serving.payload_logger is not available", url)
        return None
    return PayloadLogger(url, queue_size, batch_size=batch_size, linger_s=linger_s)


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server arguments (``kserve.model_server.parser``) plus aicrush's."""
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        # No abbreviations: a flag renamed or mistyped is an error, not silently another flag
        # (--access_log was read as KServe's --access_log_format).
        allow_abbrev=False,
        parents=[kserve_parser],
        description="aicrush KServe predictor (code-language classifier)",
    )
    parser.add_argument(
        "--model_dir",
        default="/mnt/models",
        help="model folder or models:/NAME@ALIAS | models:/NAME/VERSION",
    )
    parser.add_argument("--model_version", default=None, help="version label for metrics")
    parser.add_argument("--host", default="0.0.0.0", help="interface the REST server binds")
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--max_batch_wait_ms", type=float, default=0.0)
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=None,
        help="the one request size limit: REST bodies over it get 413, gRPC messages over it "
        "RESOURCE_EXHAUSTED (default: --grpc_max_receive_message_length, KServe's 8 MiB)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnx", "onnx-int8"),
        help="forward pass: PyTorch eager, or ONNX Runtime (fp32 / int8) over the files exported "
        "at registration; auto: aicrush.json serving_backend, else torch (docs/serving.md)",
    )
    parser.add_argument(
        "--quantize", action="store_true", help="torch dynamic int8 (torch backend only)"
    )
    parser.add_argument("--log_to", default=None, help="payload-log (CloudEvents) URL")
    parser.add_argument(
        "--log_batch_size",
        type=int,
        default=32,
        help="inferences per payload-log POST (1: KServe-style single binary events)",
    )
    parser.add_argument(
        "--log_linger_ms", type=float, default=200.0, help="how long a payload-log batch fills"
    )
    parser.add_argument("--tracking_uri", default=None, help="MLflow tracking URI")
    parser.add_argument(
        "--grace_period",
        type=int,
        default=30,
        help="seconds in-flight requests get to finish after SIGTERM before the server exits",
    )
    parser.add_argument(
        "--threads",
        "--torch_threads",
        dest="threads",
        type=int,
        default=1,
        help="intra-op threads of the forward pass, torch or ONNX Runtime (0: the library's "
        "default, one per core); see docs/serving.md for the table by pod size",
    )
    parser.add_argument(
        "--batch_workers",
        type=int,
        default=0,
        help="forward passes that run at once, each batch on its own thread (default 0: the CPUs "
        "this process may use, from its affinity and cgroup CPU limit, divided by --threads; "
        "docs/serving.md, 'Both cores')",
    )
    parser.add_argument(
        "--enable_access_log",
        dest="access_log",
        default=True,
        type=_strtobool,
        help="one log line per request (uvicorn's access log: client, request line, status); "
        "false: none. Off, one 1-CPU server served 1-4 %% more requests/s at c=32 "
        "(docs/serving.md, 'Benchmark: the 1-CPU pod')",
    )
    # A log line per request costs throughput; KServe's flag still turns it on.
    parser.set_defaults(enable_latency_logging=False)
    return parser


def _strtobool(value: str) -> bool:
    """KServe's boolean flag syntax (``--enable_grpc false``): true/false, yes/no, on/off, 1/0."""
    from kserve import utils

    return bool(utils.strtobool(value))


_strtobool.__name__ = "true/false"  # argparse's error: "invalid true/false value: 'maybe'"


def body_limit(max_body_bytes: int | None, grpc_max_receive: int) -> int:
    """The one size limit of REST bodies and gRPC messages.

    ``--max_body_bytes`` when given, else KServe's ``--grpc_max_receive_message_length`` (8 MiB by
    default). Both given and different: ValueError (one limit governs both protocols).
    """
    from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH

    if max_body_bytes is None:
        return grpc_max_receive
    if max_body_bytes < 1:
        raise ValueError(f"--max_body_bytes must be >= 1, got {max_body_bytes}")
    if grpc_max_receive not in (MAX_GRPC_MESSAGE_LENGTH, max_body_bytes):
        raise ValueError(
            f"--max_body_bytes {max_body_bytes} and --grpc_max_receive_message_length "
            f"{grpc_max_receive} differ; one limit governs REST and gRPC: give only one of them"
        )
    return max_body_bytes


KSERVE_SERVER_OPTIONS = (
    "workers",
    "max_asyncio_workers",
    "enable_docs_url",
    "enable_latency_logging",
    "access_log_format",
    "event_loop",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)
"""KServe's ``--flags`` passed on to ``kserve.ModelServer`` as they are."""


#: aicrush's numeric flags and their least value (what 0 means, where it means something):
#: refused at start with the flag named, not a traceback at load or the first request.
_FLAG_MINIMUMS = (
    ("batch_workers", 0, " (auto)"),
    ("threads", 0, " (the library's default)"),
    ("max_batch_size", 1, ""),
    ("max_batch_wait_ms", 0, ""),
    ("log_batch_size", 1, ""),
    ("log_linger_ms", 0, ""),
)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m serving.server --model_dir /mnt/models --model_name NAME ...``"""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {k: getattr(args, k) for k in KSERVE_SERVER_OPTIONS}
    try:
        limit = body_limit(args.max_body_bytes, args.grpc_max_receive_message_length)
        check_server_options(options, access_log=args.access_log)
        if args.quantize and args.backend.startswith("onnx"):
            raise ValueError("--quantize is for the torch backend; use --backend onnx-int8")
        if args.log_to:
            from serving.payload_logger import check_sink_url

            check_sink_url(args.log_to)
        for flag, least, meaning in _FLAG_MINIMUMS:
            if getattr(args, flag) < least:
                raise ValueError(
                    f"--{flag} must be {least}{meaning} or more, got {getattr(args, flag)}"
                )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(
            args.model_dir,
            name=args.model_name,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            host=args.host,
            version=args.model_version,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_batch_wait_ms,
            max_body_bytes=limit,
            quantize=args.quantize,
            log_to=args.log_to,
            log_batch_size=args.log_batch_size,
            log_linger_ms=args.log_linger_ms,
            tracking_uri=args.tracking_uri,
            grace_period=args.grace_period,
            threads=args.threads,
            batch_workers=args.batch_workers,
            backend=args.backend,
            enable_grpc=args.enable_grpc,
            max_grpc_threads=args.max_threads,
            server_options=options,
            max_send_bytes=args.grpc_max_send_message_length,
            access_log=args.access_log,
        )
    except (FileNotFoundError, CannotListen) as exc:
        # A missing model folder, ONNX file or free port: one line in the pod's log and exit 2,
        # as `aicrush serve` does, not a traceback.
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except Exception as exc:  # MLflow: an unknown model, alias or version in --model_dir
        if type(exc).__name__ not in ("MlflowException", "RestException"):
            raise
        parser.exit(2, f"{parser.prog}: error: cannot load {args.model_dir} from MLflow: {exc}\n")


if __name__ == "__main__":
    main()
