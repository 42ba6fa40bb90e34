"""``aicrush serve``: the KServe model server on localhost for a registered or local model.

The lead registers :func:`serve_command` on the ``aicrush`` Typer app
(``app.command("serve")(serve_command)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aicrush.config import DEFAULT_MODEL_NAME
from aicrush.errors import DataError

DEFAULT_REGISTERED_MODEL = DEFAULT_MODEL_NAME


def folder_version(path: Path) -> str | None:
    """The version the model folder at ``path`` records in its aicrush.json (found as the server
    finds it, :func:`aicrush.model_folder.resolve_model_dir`), if any."""
    import json

    from aicrush.model_folder import MODEL_META_FILE, recorded_version, resolve_model_dir

    try:
        meta = json.loads((resolve_model_dir(path) / MODEL_META_FILE).read_text())
    except (OSError, ValueError):  # no model there: serve() says so, with what it expected
        return None
    return recorded_version(meta) if isinstance(meta, dict) else None


def model_source(
    model: str,
    alias: str | None,
    version: int | None,
    path: Path | None,
    tracking_uri: str | None = None,
) -> tuple[str, str]:
    """What to load (a folder or a ``models:/NAME/VERSION`` URI) and a short description of it.

    At most one of ``path``, ``alias`` and ``version`` picks the model; with none, the rule of
    :func:`aicrush.registry.find_version` applies: the ``champion`` alias, else ``challenger``
    (what ``make demo`` registers), else the latest version. Raises ``typer.BadParameter`` for two
    choices at once and :class:`aicrush.registry.ModelVersionNotFound` (listing the versions and
    aliases there are) for a model, alias or version the store does not hold.
    """
    from aicrush.registry import find_version
    from aicrush.state import resolve_tracking_uri

    chosen = [x for x in (path, alias, version) if x is not None]
    if len(chosen) > 1:
        raise typer.BadParameter("give only one of --path, --alias and --version")
    if path is not None:
        return str(path), f"folder {path}"
    uri = resolve_tracking_uri(None, None, tracking_uri)
    mv = find_version(uri, model, version if version is not None else alias)
    aliases = ", ".join(getattr(mv, "aliases", None) or []) or "no alias"
    how = "" if chosen else " (no --alias/--version: champion, else challenger, else latest)"
    return f"models:/{model}/{mv.version}", f"{model} version {mv.version} ({aliases}){how}"


def example_curl(http_url: str, name: str) -> str:
    body = '{"instances": [{"text": "def hello():\\n    print(\\"hi\\")"}]}'
    return (
        f"curl -s {http_url}/v1/models/{name}:predict -H 'Content-Type: application/json' "
        f"-d '{body}'"
    )


def unregistered_run_hint(state: Path) -> str:
    """When the newest ``aicrush run`` in ``state`` trained a model the gate refused, a line saying
    so, with the command that serves that model folder anyway; else ''."""
    import json

    from aicrush.state import last_summary_path

    try:
        last = json.loads(last_summary_path(state).read_text())
    except (OSError, ValueError):
        return ""
    folder = (last.get("reports") or {}).get("model", "")
    if last.get("model_version") or not folder or not Path(folder).is_dir():
        return ""
    return (
        f"the last `aicrush run` here trained a model but did not register it ({last.get('reason')}); "
        f"serve it anyway with: aicrush serve --path {folder}"
    )


def serve_command(
    model: Annotated[
        str, typer.Option("--model", help="Registered MLflow model name.")
    ] = DEFAULT_REGISTERED_MODEL,
    alias: Annotated[
        str | None,
        typer.Option(
            "--alias",
            help="Registry alias to serve (champion, challenger). Default: champion if set, else "
            "challenger, else the latest version.",
        ),
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="Registry version number to serve.", min=1)
    ] = None,
    path: Annotated[
        Path | None,
        typer.Option(
            "--path", help="Serve a model folder (a train_model artifact) instead of the registry."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Model name on the endpoints. Default: the --model name."),
    ] = None,
    http_port: Annotated[int, typer.Option("--http-port", help="REST port.")] = 8080,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8081,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking URI. Default $MLFLOW_TRACKING_URI, else the local state store.",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Local state folder. Default $AICRUSH_HOME or ./.aicrush."
        ),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(
            "--model-version", help="Version label on metrics (default: the registry version)."
        ),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most texts per forward pass.")
    ] = 32,
    max_batch_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-batch-wait-ms",
            min=0,
            help="Longest wait for a batch to fill (0: run what is queued as soon as the model is free).",
        ),
    ] = 0.0,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            "--max-body-bytes",
            min=1,
            help="The one request size limit: larger REST bodies get 413, larger gRPC messages "
            "RESOURCE_EXHAUSTED. Default KServe's gRPC limit, 8 MiB.",
        ),
    ] = 8 * 1024 * 1024,
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize", help="torch dynamic int8 quantization (torch backend; docs/serving.md)."
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Forward pass: auto (what the model was registered with, else torch), torch, "
            "onnx or onnx-int8 (ONNX Runtime over the files exported at registration).",
        ),
    ] = "auto",
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=0,
            help="Intra-op threads of the forward pass (0: one per core); docs/serving.md has "
            "the table by pod size.",
        ),
    ] = 1,
    batch_workers: Annotated[
        int,
        typer.Option(
            "--batch-workers",
            min=0,
            help="Forward passes that run at once, each batch on its own thread (0: the CPUs "
            "this process may use, affinity and cgroup CPU limit, divided by --threads; "
            "docs/serving.md, 'Both cores').",
        ),
    ] = 0,
    log_to: Annotated[
        str | None,
        typer.Option("--log-to", help="Send each request and response (CloudEvents) to this URL."),
    ] = None,
    log_batch_size: Annotated[
        int,
        typer.Option(
            "--log-batch-size",
            min=1,
            help="Inferences per payload-log POST, as one CloudEvents batch (the drift monitor "
            "accepts it). 1: one binary-mode event per POST, as KServe's logger sends them.",
        ),
    ] = 32,
    # One flag, not an --access-log/--no-access-log pair: the pair's second column of flag
    # names left too little room at 80 columns, and --help cut --max-batch-wait-ms short.
    no_access_log: Annotated[
        bool,
        typer.Option(
            "--no-access-log",
            help="No log line per request (by default one: client, request line, status).",
        ),
    ] = False,
    log_linger_ms: Annotated[
        float,
        typer.Option("--log-linger-ms", min=0, help="How long a payload-log batch waits to fill."),
    ] = 200.0,
    ssl_certfile: Annotated[
        Path | None,
        typer.Option("--ssl-certfile", help="Serve REST over HTTPS with this certificate (PEM)."),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option("--ssl-keyfile", help="The private key of --ssl-certfile.")
    ] = None,
    access_log_format: Annotated[
        str | None,
        typer.Option(
            "--access-log-format",
            help="KServe's access-log format (asgi-logger fields); needs kserve[logging].",
        ),
    ] = None,
) -> None:
    """Serve a model on localhost over V1 and V2 (REST and gRPC), until Ctrl-C.

    Picks the model from the MLflow registry (--model with --alias or --version) or a folder
    (--path). With none of them: the champion if set, else the challenger (what `make demo`
    registers), else the latest version. Prints the version, the URLs and an example curl, and
    blocks. A missing model, alias or version exits 2 and lists the versions and aliases there are.
    """
    from aicrush.registry import ModelVersionNotFound
    from aicrush.state import resolve_tracking_uri, state_dir
    from serving.predictor import BACKEND_CHOICES
    from serving.server import CannotListen, serve

    if backend not in BACKEND_CHOICES:
        raise typer.BadParameter(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}",
            param_hint="--backend",
        )
    if quantize and backend.startswith("onnx"):
        raise typer.BadParameter("--quantize is for the torch backend; use --backend onnx-int8")
    tracking_uri = resolve_tracking_uri(None, state_dir(state), tracking_uri)
    if log_to:
        from serving.payload_logger import check_sink_url

        try:
            check_sink_url(log_to)
        except ValueError as err:
            raise typer.BadParameter(
                str(err).removeprefix("--log-to "), param_hint="--log-to"
            ) from None
    if log_to and path is not None and model_version is None and not folder_version(path):
        # The served version labels every logged payload, and the drift monitor compares them
        # against that version's reference: a folder's default label, "1", would be compared
        # against whatever registered version 1 is.
        raise typer.BadParameter(
            "a model folder has no registry version, and the drift monitor would compare its "
            "payloads with version 1's reference: give --model-version N (the registered "
            "version this folder is), or serve it from the registry (--alias, --version)",
            param_hint="--log-to with --path",
        )
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither")
    given = {
        "ssl_certfile": str(ssl_certfile) if ssl_certfile else None,
        "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None,
        "access_log_format": access_log_format,
    }
    # Unset options keep KServe's defaults (e.g. its KSERVE_TLS_CERT_FILE fallback).
    options = {k: v for k, v in given.items() if v is not None}
    from serving.server import check_server_options

    try:
        check_server_options(options, access_log=not no_access_log)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        source, description = model_source(model, alias, version, path, tracking_uri)
    except ModelVersionNotFound as err:
        typer.echo(f"error: {err}", err=True)
        hint = unregistered_run_hint(state_dir(state))
        if hint:
            typer.echo(hint, err=True)
        raise typer.Exit(2) from None
    served = name or model
    http_url = f"{'https' if ssl_certfile else 'http'}://{host}:{http_port}"

    def announce() -> None:
        typer.echo(f"aicrush: serving {description} as '{served}'")
        typer.echo(f"  REST  {http_url}/v1/models/{served}:predict  (V1)")
        typer.echo(f"  REST  {http_url}/v2/models/{served}/infer    (V2)")
        typer.echo(f"  gRPC  0.0.0.0:{grpc_port}  (V2 GRPCInferenceService; KServe binds all)")
        typer.echo(f"  metrics {http_url}/metrics")
        typer.echo("  try:  " + example_curl(http_url, served))

    try:
        serve(
            source,
            name=served,
            http_port=http_port,
            grpc_port=grpc_port,
            host=host,
            version=model_version,
            max_batch_size=max_batch_size,
            max_wait_ms=max_batch_wait_ms,
            max_body_bytes=max_body_bytes,
            quantize=quantize,
            backend=backend,
            threads=threads,
            batch_workers=batch_workers,
            log_to=log_to,
            log_batch_size=log_batch_size,
            log_linger_ms=log_linger_ms,
            tracking_uri=tracking_uri,
            on_ready=announce,
            server_options=options,
            access_log=not no_access_log,
        )
    except (FileNotFoundError, CannotListen, DataError) as err:  # DataError: e.g. no credentials
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except Exception as err:  # MLflow: unknown model, alias or version
        if type(err).__name__ in ("MlflowException", "RestException"):
            typer.echo(f"error: cannot load {description} from MLflow: {err}", err=True)
            raise typer.Exit(2) from None
        raise
