"""``aicrush drift`` (offline drift report on a file of requests) and ``aicrush monitor`` (the
service). Plain typer command functions; ``pipelines/cli.py`` registers them on the ``aicrush`` app.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from aicrush.config import DEFAULT_MODEL_NAME
from aicrush.errors import CredentialsError
from serving.monitor.drift import (
    MIN_ROWS,
    PREDICTION_COLUMN,
    DriftSettings,
    analyze_window,
    build_report,
    save_report,
)
from serving.monitor.events import EventError, canonical_version, response_labels, v1_prediction

DEFAULT_MODEL = DEFAULT_MODEL_NAME
#: A URL (gs://, s3://, http://), also after pathlib folded its "//" into "/".
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")

#: How often ``aicrush monitor`` re-resolves the champion (an alias --version, or none) by
#: default: one registry call a minute; a promotion reaches events without a version within it.
DEFAULT_VERSION_REFRESH_S = 60.0

#: --version of drift and monitor: the registry resolves it as serve does (aicrush.registry.find_version).
VersionOpt = Annotated[
    str | None,
    typer.Option(
        help="model version or alias. Default: champion if set, else challenger, else the "
        "latest version"
    ),
]


def read_requests(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts (and logged predictions, when every line has them) from ``path``.

    JSONL lines may be V1 requests ``{"instances": [{"text": ...}]}`` or V2 requests
    ``{"inputs": [...]}``, read by the model server's own decoder (optionally with the
    response's ``"predictions"`` beside them, as a payload log pairs them), single instances
    ``{"text": ...}`` (optionally with ``"prediction"``), or JSON strings. Any other file is read
    as plain text, one input per line.

    Raises :class:`typer.BadParameter` (exit 2) naming the file and the line for bytes that are not
    UTF-8, a line that is not JSON (or nested too deeply), a request of no known layout and a
    logged prediction that is not what the model server returns (a label, or ``{"label": ...,
    "score": ...}``; one per input), read by the monitor's own reader of logged responses.
    """
    from kserve.errors import InvalidInput

    from serving.decoding import texts_of_logged_request

    texts: list[str] = []
    predictions: list[str] = []
    complete = True
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        bad_line = raw.count(b"\n", 0, exc.start) + 1
        raise typer.BadParameter(
            f"{path}:{bad_line} is not UTF-8 text (byte {exc.start}: {exc.reason}); give a UTF-8 "
            "JSONL file of requests or a text file of inputs, one a line"
        ) from None
    as_json = path.suffix in (".jsonl", ".json", ".ndjson")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not as_json:
            texts.append(line)
            complete = False
            continue
        try:
            item = json.loads(line)
        except RecursionError:
            raise typer.BadParameter(f"{path}:{number} is JSON nested too deeply to read") from None
        except ValueError as exc:
            raise typer.BadParameter(
                f"{path}:{number} is not JSON ({exc}); use .txt for plain text, one input per line"
            ) from exc
        if isinstance(item, str):
            texts.append(item)
            complete = False
        elif isinstance(item, dict) and ("instances" in item or "inputs" in item):
            # The model server's own reader: every layout it accepts (V2 [N, 1] too).
            body = {k: v for k, v in item.items() if k != "predictions"}
            try:
                batch = texts_of_logged_request(body)
            except InvalidInput as exc:
                raise typer.BadParameter(f"{path}:{number}: {exc}") from None
            texts.extend(batch)
            if "predictions" in item:  # the logged response: read as the monitor reads one
                try:
                    labels = response_labels({"predictions": item["predictions"]})
                except EventError as exc:
                    raise typer.BadParameter(f"{path}:{number}: {exc}") from None
                if len(labels) != len(batch):
                    raise typer.BadParameter(
                        f"{path}:{number}: {len(labels)} prediction(s) for {len(batch)} "
                        "input(s): a logged response has one prediction per input"
                    )
                predictions.extend(label for label, _ in labels)
            else:
                complete = False
        elif isinstance(item, dict) and "text" in item:
            if not isinstance(item["text"], str):
                raise typer.BadParameter(
                    f"{path}:{number}: 'text' must be a string, got {type(item['text']).__name__}"
                )
            texts.append(item["text"])
            if "prediction" in item:
                try:
                    predictions.append(v1_prediction(item["prediction"], "prediction")[0])
                except EventError as exc:
                    raise typer.BadParameter(f"{path}:{number}: {exc}") from None
            else:
                complete = False
        else:
            raise typer.BadParameter(
                f"{path}:{number}: expected {{'instances': [...]}}, {{'inputs': [...]}}, "
                "{'text': ...} or a JSON string"
            )
    if not texts:
        raise typer.BadParameter(f"{path} holds no requests")
    return texts, (predictions if complete else None)


def quiet_libraries() -> None:
    """Keep the drift command's output to its verdict: no MLflow artifact-download bars, no
    MLflow store-setup INFO lines, and no library deprecation warnings (Evidently's numpy.core
    use, Litestar's through Evidently): they are the libraries' business, not the user's."""
    import feast.feature_view  # noqa: F401  # at import: simplefilter("once", DeprecationWarning)

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # After Feast's import: its module-level simplefilter would otherwise be checked first.
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _predict(texts: list[str], model_dir: Path) -> list[str]:
    """The labels the model folder at ``model_dir`` gives ``texts`` (BadParameter if no model)."""
    from aicrush.model_folder import TextClassifier

    try:
        classifier = TextClassifier.from_dir(model_dir)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err), param_hint="--model-dir") from None
    return [p.label for p in classifier.predict(texts)]


def drift_command(
    requests_file: Annotated[
        Path | None,
        typer.Argument(
            help="Same as --requests (kept for the positional spelling).",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    requests: Annotated[
        Path | None,
        typer.Option(
            "--requests",
            help='JSONL of requests: V1 {"instances": [...]}, V2 (OIP) {"inputs": [...]}, single '
            '{"text": ...} or JSON strings, with their predictions when logged; or plain text, '
            "one input per line.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    reference: Annotated[
        str,
        typer.Option(
            help="Parquet reference file, 'mlflow' (the "
            "version's reference/reference.parquet) or "
            "models:/NAME/VERSION"
        ),
    ] = "mlflow",
    model: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_MODEL,
    version: VersionOpt = None,
    out: Annotated[
        Path,
        typer.Option(
            help="HTML report path (a .json summary is written beside it); gs:// not supported here"
        ),
    ] = Path("drift-report.html"),
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="model folder to predict labels with when the requests carry no predictions "
            "(default with --reference mlflow: the registered version's model)"
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI. Default $MLFLOW_TRACKING_URI, else the local state store"
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Local state folder. Default $AICRUSH_HOME or ./.aicrush"),
    ] = None,
    fail_on_drift: Annotated[
        bool,
        typer.Option(
            "--fail-on-drift",  # one flag, no --no- twin: 80 columns then show every flag whole
            help="exit 1 when the dataset drifted, 3 when there is not enough data",
        ),
    ] = False,
    min_rows: Annotated[
        int,
        typer.Option(
            min=1,
            help="fewest requests (and reference rows) for a verdict; below: 'not enough data'",
        ),
    ] = MIN_ROWS,
) -> None:
    """Run the monitor's drift analysis offline: REQUESTS against the model version's reference.

    Compares the request features and the predicted labels (from the file, else predicted with
    --model-dir or, for --reference mlflow, the registered version's model; with no model at all,
    features only) with the reference, writes the Evidently HTML report and a JSON summary, and
    prints the verdict: DRIFT, no drift, or "not enough data" below --min-rows requests. The MLflow
    store is the one every command uses (--tracking-uri > $MLFLOW_TRACKING_URI >
    `<state-dir>/mlflow.db`).
    """
    from serving.monitor.features import features_of

    quiet_libraries()
    if requests is None and requests_file is None:
        raise typer.BadParameter("give the requests file: aicrush drift --requests FILE")
    if requests is not None and requests_file is not None:
        raise typer.BadParameter("give the requests file once: aicrush drift --requests FILE")
    requests_path = requests or requests_file
    assert requests_path is not None
    if _URL_LIKE.match(str(out)):  # typer's Path turns gs://b/x into the local folder gs:/b
        raise typer.BadParameter(
            "aicrush drift writes its report to a local file, not to a URL (gs://, s3://, ...); "
            "give a local path (aicrush monitor --reports takes a gs:// prefix)",
            param_hint="--out",
        )
    texts, predictions = read_requests(requests_path)  # a bad file fails before the registry
    uri = registry_uri(tracking_uri, state_dir)
    version = registered_version(reference, model, version, uri)
    ref = _load_reference(reference, model, version, uri)
    if predictions is None and model_dir is None and reference == "mlflow":
        from aicrush.registry import download_model

        # The copy is only needed to label these requests: removed once they are labelled.
        with tempfile.TemporaryDirectory(prefix=f"aicrush-drift-{model}-") as tmp:
            resolved = download_model(uri, model, version=version, dst=Path(tmp))
            if resolved is not None:
                predictions = _predict(texts, resolved.path)
    elif predictions is None and model_dir is not None:
        predictions = _predict(texts, model_dir)
    settings = DriftSettings(min_rows=min_rows)
    frame = features_of(texts)
    if predictions is None:
        typer.echo("no predictions in the requests and no --model-dir: comparing features only")
        settings = settings.features_only()
    else:
        frame[PREDICTION_COLUMN] = predictions
    result = analyze_window(frame, ref.frame, settings)
    if not result.enough_data:
        summary = {
            **result.to_dict(),
            "reference_sha256": ref.sha256,
            "reference": ref.source,
            "report": None,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=2))
        typer.echo(
            f"not enough data: {result.n_rows} requests vs {result.n_reference_rows} reference "
            f"rows; a drift verdict needs at least {settings.min_rows} of each (--min-rows; "
            f"docs/monitoring.md gives the false-alarm rate by size); no report written"
        )
        if fail_on_drift:
            raise typer.Exit(3)
        return
    where = save_report(build_report(frame, ref.frame, settings), str(out))
    summary = {
        **result.to_dict(),
        "reference_sha256": ref.sha256,
        "reference": ref.source,
        "report": where,
    }
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    verdict = "DRIFT" if result.dataset_drift else "no drift"
    typer.echo(
        f"{verdict}: {result.n_drifted}/{len(result.columns)} columns drifted "
        f"(share {result.share_drifted:.2f}, threshold {settings.drift_share}); "
        f"{result.n_rows} requests vs {result.n_reference_rows} reference rows "
        f"(sha256 {ref.sha256[:12]}); report {where}"
    )
    if fail_on_drift and result.dataset_drift:
        raise typer.Exit(1)


def checked_seconds(zero: str | None, unset: str | None = None) -> Callable[[Any], Any]:
    """A typer callback for a duration option, so a bad one is a usage error at parse time (exit
    2 naming the option), before the slow start: a finite number of seconds, above 0, or 0 too
    when ``zero`` says what 0 means. None (an option with no default, ``unset`` says what leaving
    it out means) passes."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if math.isfinite(value) and (value > 0 or (value == 0 and zero is not None)):
            return value
        allowed = f">= 0 (0: {zero})" if zero is not None else "> 0"
        left_out = f"; or leave the option out: {unset}" if unset else ""
        raise typer.BadParameter(f"{value} is not a number of seconds {allowed}{left_out}")

    return check


def monitor_command(
    reference: Annotated[
        str, typer.Option(help="Parquet reference, 'mlflow' or models:/NAME/VERSION")
    ] = "mlflow",
    model: Annotated[
        str, typer.Option(help="model name (the InferenceService name in KServe logger events)")
    ] = DEFAULT_MODEL,
    version: VersionOpt = None,
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="listen port (0: any free port)")
    ] = 8085,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Local state folder (default $AICRUSH_HOME or ./.aicrush): monitor.db (reference, "
            "open windows, verdicts) lives in its monitor/ folder; the MLflow store beside it"
        ),
    ] = None,
    window_rows: Annotated[
        int, typer.Option(min=1, help="close a window after this many inputs")
    ] = 1000,
    min_rows: Annotated[
        int,
        typer.Option(
            min=1,
            help="fewest inputs (and reference rows) for a drift verdict; a smaller window is "
            "'not enough data' (below 200 the false-alarm rate rises: docs/monitoring.md)",
        ),
    ] = MIN_ROWS,
    window_seconds: Annotated[
        float | None,
        typer.Option(
            help="...or this long after its first input (s); default: no time limit",
            callback=checked_seconds(None, "windows close by --window-rows only"),
        ),
    ] = None,
    reports: Annotated[
        str | None, typer.Option(help="folder or gs:// prefix for HTML reports")
    ] = None,
    report_on: Annotated[str, typer.Option(help="never | drift | always")] = "drift",
    retrain: Annotated[
        str, typer.Option(help="none | embedded (aicrush run) | cluster (KFP)")
    ] = "none",
    kfp_host: Annotated[str | None, typer.Option(help="KFP endpoint for --retrain cluster")] = None,
    pipeline_package: Annotated[
        str | None, typer.Option(help="compiled pipeline YAML for --retrain cluster")
    ] = None,
    kfp_pipeline_root: Annotated[
        str | None,
        typer.Option(
            help="--retrain cluster: where the run's artifacts go (gs://BUCKET/PREFIX), as "
            "aicrush submit --pipeline-root; default the cluster's"
        ),
    ] = None,
    kfp_service_account: Annotated[
        str | None,
        typer.Option(
            help="--retrain cluster: the run pods' service account (default the cluster's)"
        ),
    ] = None,
    kfp_namespace: Annotated[
        str | None,
        typer.Option(help="--retrain cluster: the Kubeflow profile namespace (multi-user)"),
    ] = None,
    sustained_windows: Annotated[
        int, typer.Option(min=1, help="drifted windows in a row that start a retrain")
    ] = 3,
    retrain_interval_s: Annotated[
        float,
        typer.Option(
            help="at most one retrain per this many seconds (0: no limit)",
            callback=checked_seconds("no limit between retrains"),
        ),
    ] = 21600.0,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI. Default $MLFLOW_TRACKING_URI, else the local state store"
        ),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="largest POST body accepted; larger ones get 413")
    ] = 16 * 1024 * 1024,  # serving.monitor.app.DEFAULT_MAX_BODY_BYTES
    version_refresh_s: Annotated[
        float,
        typer.Option(
            callback=checked_seconds("resolve once at start"),
            help="with --reference mlflow and --version an alias or not given: re-resolve it "
            "this often (s), so events without a version follow the champion after a "
            "promotion; 0: resolve once at start",
        ),
    ] = DEFAULT_VERSION_REFRESH_S,
) -> None:
    """Serve the drift monitor: CloudEvents in on POST /, /metrics, /healthz, /reports."""
    import uvicorn

    from aicrush.state import state_dir as resolve_state
    from serving.monitor.app import create_app
    from serving.server import CannotListen, PortInUse, check_ports_free

    try:  # before the registry and the reference (seconds): a taken port fails at once
        check_ports_free(host, port, None)
    except PortInUse as err:  # its message names the model server's --http-port
        typer.echo(
            f"error: port {err.port} is in use ({host}); choose another with --port", err=True
        )
        raise typer.Exit(2) from None
    except CannotListen as err:  # a --host that is not this machine's, said as such
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    log_service_events()
    uri = registry_uri(tracking_uri, state_dir)
    monitor = build_monitor(
        reference=reference,
        model=model,
        version=registered_version(reference, model, version, uri),
        selector=version,
        version_refresh_s=version_refresh_s,
        state_dir=resolve_state(state_dir) / "monitor",
        window_rows=window_rows,
        min_rows=min_rows,
        window_seconds=window_seconds,
        reports=reports,
        report_on=report_on,
        retrain=retrain,
        kfp_host=kfp_host,
        pipeline_package=pipeline_package,
        kfp_options={
            "pipeline_root": kfp_pipeline_root,
            "service_account": kfp_service_account,
            "namespace": kfp_namespace,
        },
        sustained_windows=sustained_windows,
        retrain_interval_s=retrain_interval_s,
        tracking_uri=uri,
    )
    try:
        app = create_app(monitor, max_body_bytes=max_body_bytes)
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        monitor.close()


def log_service_events() -> None:
    """The monitor's own log lines (``serving.monitor.*``: a champion that moved, a reference
    that could not be loaded, a report not written) on stderr from INFO up, beside uvicorn's;
    without it Python shows only warnings, and the INFO line of a promotion would be lost."""
    logger = logging.getLogger("serving.monitor")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _check_pipeline_package(path: str) -> None:
    """Refuse at start a ``--pipeline-package`` a retrain hours later could not submit: missing,
    not YAML, or not a compiled KFP pipeline (``aicrush compile`` writes one)."""
    import yaml

    file = Path(path)
    what = f"--pipeline-package {path}"
    if not file.is_file():
        raise typer.BadParameter(f"{what}: no such file; write one with `aicrush compile -o FILE`")
    try:
        docs = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d]
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise typer.BadParameter(f"{what} is not YAML ({err})") from None
    if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
        raise typer.BadParameter(
            f"{what} is not a compiled KFP pipeline (no pipelineInfo); write one with "
            "`aicrush compile -o FILE`"
        )


def build_monitor(
    *,
    reference: str,
    model: str,
    version: str,
    state_dir: Path,
    window_rows: int = 1000,
    window_seconds: float | None = None,
    reports: str | None = None,
    report_on: str = "drift",
    min_rows: int = MIN_ROWS,
    retrain: str = "none",
    kfp_host: str | None = None,
    pipeline_package: str | None = None,
    sustained_windows: int = 3,
    retrain_interval_s: float = 21600.0,
    tracking_uri: str | None = None,
    background: bool = True,
    kfp_options: dict[str, str | None] | None = None,
    selector: str | None = None,
    version_refresh_s: float = 0.0,
):  # -> Monitor (import kept lazy)
    """Validate the options and build the :class:`~serving.monitor.service.Monitor`.

    ``version`` is the version number events without one belong to at start; ``selector`` what
    the user asked for (``--version``: None, an alias or a number). With ``--reference mlflow``,
    a selector that is not a number (None: champion, else challenger, else the latest) is
    re-resolved every ``version_refresh_s`` seconds (0: never) and those events follow it."""
    from serving.monitor.retrain import (
        RetrainPolicy,
        RetrainTrigger,
        cluster_hook,
        embedded_hook,
    )
    from serving.monitor.service import Monitor, MonitorConfig
    from serving.monitor.windows import WindowPolicy

    if report_on not in ("never", "drift", "always"):
        raise typer.BadParameter(f"--report-on {report_on!r}: use never, drift or always")
    if retrain not in ("none", "embedded", "cluster"):
        raise typer.BadParameter(f"--retrain {retrain!r}: use none, embedded or cluster")
    if retrain == "cluster" and not (kfp_host and pipeline_package):
        raise typer.BadParameter("--retrain cluster needs --kfp-host and --pipeline-package")
    given = [k for k, v in (kfp_options or {}).items() if v is not None]
    if retrain != "cluster" and (given or kfp_host or pipeline_package):
        raise typer.BadParameter(
            "--kfp-host, --pipeline-package and --kfp-* apply to --retrain cluster only"
        )
    root = (kfp_options or {}).get("pipeline_root")
    if root is not None and (root != root.strip() or not root.partition("://")[2].split("/")[0]):
        raise typer.BadParameter(
            f"--kfp-pipeline-root {root!r}: give a URI with a bucket, e.g. gs://BUCKET/pipeline-root"
        )
    if retrain == "cluster":
        _check_pipeline_package(str(pipeline_package))
    ref = _load_reference(reference, model, version, tracking_uri)
    config = MonitorConfig(
        state_dir=state_dir,
        policy=WindowPolicy(max_rows=window_rows, max_age_s=window_seconds, min_rows=min_rows),
        settings=DriftSettings(min_rows=min_rows),
        reports=reports,
        report_on=report_on,  # type: ignore[arg-type]
        background=background,
        follow_every_s=version_refresh_s,
    )
    hook = None
    if retrain == "embedded":
        hook = embedded_hook()
    elif retrain == "cluster":
        options = kfp_options or {}
        hook = cluster_hook(
            kfp_host or "",
            pipeline_package or "",
            pipeline_root=options.get("pipeline_root"),
            service_account=options.get("service_account"),
            namespace=options.get("namespace"),
        )
    trigger = RetrainTrigger(hook, RetrainPolicy(sustained_windows, retrain_interval_s))
    loader = None
    if reference == "mlflow":  # every version events arrive for (a canary too) gets its reference

        def loader(model_name: str, model_version: str):
            from serving.monitor.reference import load_reference

            return load_reference("mlflow", model_name, model_version, tracking_uri=tracking_uri)

    follow = None
    if reference == "mlflow" and not (selector or "").isdigit() and version_refresh_s > 0:
        from aicrush.registry import find_version

        def resolve() -> str:
            # The alias it was given, or the champion: what serves. Not the start-up rule for no
            # --version (champion, else challenger, else latest): a training run moves the
            # challenger to a version nothing serves yet. No champion yet: the resolution fails
            # and the monitor stays on the version it started with (logged once).
            return str(find_version(tracking_uri or "", model, selector or "champion").version)

        follow = {model: resolve}
    return Monitor(
        config, references=[ref], retrain=trigger, reference_loader=loader, follow=follow
    )


def registry_uri(tracking_uri: str | None, state_dir: Path | None) -> str:
    """The MLflow store every command uses (:func:`aicrush.state.resolve_tracking_uri`)."""
    from aicrush.state import resolve_tracking_uri
    from aicrush.state import state_dir as resolve_state

    return resolve_tracking_uri(None, resolve_state(state_dir), tracking_uri)


def registered_version(reference: str, model: str, version: str | None, tracking_uri: str) -> str:
    """The version number a command works on: ``version`` (a number or an alias) or, when None, the
    champion, else the challenger, else the latest (:func:`aicrush.registry.find_version`). A
    Parquet reference needs no registry: the version is then only a label ("1" by default).

    Raises ``typer.BadParameter`` listing the versions and aliases there are.
    """
    if reference != "mlflow" and not reference.startswith("models:/"):
        # the label events name it by: "01" is read as "1" there (serving.monitor.service.route)
        return canonical_version(version) if version else "1"
    if reference.startswith("models:/"):
        return version or "champion"  # load_reference takes the version from the URI
    from aicrush.registry import ModelVersionNotFound, find_version

    try:
        return str(find_version(tracking_uri, model, version).version)
    except ModelVersionNotFound as err:
        raise typer.BadParameter(str(err), param_hint="--version") from None


def _unreachable(err: BaseException) -> bool:
    """An error of a service being down or refusing us (connection, timeout, 5xx, auth), as
    opposed to a reference that does not exist or cannot be read: that one is not a usage error
    of --reference, so it keeps its own message."""
    import httpx
    import requests

    if isinstance(err, ConnectionError | TimeoutError | httpx.TransportError):
        return True
    if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    code = str(getattr(err, "error_code", ""))  # MlflowException
    return code in ("TEMPORARILY_UNAVAILABLE", "PERMISSION_DENIED", "UNAUTHENTICATED")


def _load_reference(reference: str, model: str, version: str, tracking_uri: str | None):
    from serving.monitor.reference import load_reference

    try:
        return load_reference(reference, model, version, tracking_uri=tracking_uri)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err), param_hint="--reference") from None
    except CredentialsError as err:  # not the option's fault: one line, as `aicrush serve` says it
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except Exception as err:  # a file that is not Parquet, a models:/ URI the registry lacks, ...
        if _unreachable(err):  # not the option's fault: the registry or the bucket is down
            raise
        raise typer.BadParameter(
            f"cannot read the reference {reference!r}: {type(err).__name__}: {err}",
            param_hint="--reference",
        ) from None
