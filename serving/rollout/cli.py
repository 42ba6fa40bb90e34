"""``aicrush deploy | watch | promote | rollback | status | stop``: typer command functions over the rollout.

The lead registers them on the ``aicrush`` app (``app.command("deploy")(deploy)``, ...). Each takes
``--backend local|kubernetes``, ``--config`` (the aicrush YAML; its ``rollout:`` section holds
:class:`~aicrush.rollout_config.RolloutConfig`) and ``--state-dir``.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
import urllib3

from aicrush.rollout_config import RolloutConfig
from serving.rollout.machine import Rollout, RolloutError, VersionNotFound


class BackendChoice(StrEnum):
    local = "local"
    kubernetes = "kubernetes"


BACKEND = typer.Option(
    BackendChoice.local,
    "--backend",
    help="local: model servers behind a proxy on "
    "localhost; kubernetes: a KServe InferenceService in the current context.",
)
CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    help="aicrush config YAML (its rollout: section sets steps and thresholds).",
)
STATE = typer.Option(
    None, "--state-dir", help="Local state folder (default $AICRUSH_HOME or ./.aicrush)."
)


def load_configs(config: Path | None) -> tuple[Any, RolloutConfig]:
    """The aicrush config file (presets applied) and its ``rollout:`` section, validated.

    Read as ``aicrush run`` reads it (:func:`aicrush.config.load_config`): a folder, a file that is
    not UTF-8 and a key given twice are a :class:`aicrush.config.ConfigError` naming the file."""
    from aicrush.config import load_config

    cfg = load_config(config)
    return cfg, cfg.rollout


def configs_from_dict(data: dict[str, Any], merged: bool = True) -> tuple[Any, RolloutConfig]:
    """Validate a config dict (``cfg.to_dict()`` between pipeline steps when ``merged``, else a
    user's file with presets still to apply) and return it with its ``rollout`` section."""
    from aicrush.config import build_config, config_from_dict

    cfg = config_from_dict(data) if merged else build_config(data)
    return cfg, cfg.rollout


def _open(
    backend: BackendChoice, config: Path | None, state_dir: Path | None, reading: bool = False
) -> Rollout:
    """The rollout of ``backend``; ``reading`` (a command that only reads, e.g. ``status``):
    :class:`RolloutError` rather than a new, empty local store where there is no state folder."""
    from aicrush.state import state_dir as resolve_state
    from serving.rollout import open_rollout

    cfg, rollout_cfg = load_configs(config)
    if reading:
        _refuse_missing_local_state(backend, cfg, state_dir)
    return open_rollout(backend.value, cfg, rollout_cfg, resolve_state(state_dir))


#: What a rollout command reports in one line: its own errors, a setting to fix, and the
#: Kubernetes API server out of reach (the kubernetes client's urllib3 gives up after retries).
COMMAND_ERRORS = (RolloutError, ValueError, urllib3.exceptions.HTTPError)


def _fail(err: Exception) -> None:
    """Print ``err``; exit 2 for a config file to fix (as ``aicrush run``), 1 otherwise."""
    from aicrush.config import ConfigError

    if isinstance(err, urllib3.exceptions.HTTPError):
        where = getattr(getattr(err, "pool", None), "host", None) or "the API server"
        reason = getattr(err, "reason", None) or err
        err = RolloutError(
            f"cannot reach the Kubernetes API server at {where} ({reason}); check "
            "`kubectl config current-context`, or use --backend local"
        )
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2 if isinstance(err, ConfigError) else 1)


def _v(version: Any) -> str:
    return f"v{version}" if version else "none"


def _endpoint_lines(serving: dict[str, Any], service: str) -> list[str]:
    """Where clients call: the local proxy or the InferenceService URL (none when not running)."""
    url = serving.get("endpoint") or serving.get("url")
    if not url:
        return []
    return [
        f"endpoint  {url}",
        f"          POST {url}/v1/models/{service}:predict  (V1)  |  {url}/v2/models/{service}/infer  (V2)",
    ]


def _progress_line(a: dict[str, Any]) -> str:
    """One line per analysis poll: step, elapsed time, requests seen, outcome and why."""
    line = (
        f"  {a['percent']:>3} %  {a['elapsed_s']:>6.1f}s  canary {a.get('canary_requests', 0):.0f} "
        f"/ stable {a.get('stable_requests', 0):.0f} requests  {a['outcome']}"
    )
    return line + (f": {a['reason']}" if a.get("reason") else "")


def deploy(
    version: str = typer.Option(
        None, "--version", help="Model version (or alias) to roll out (default: alias challenger)."
    ),
    canary: int = typer.Option(
        None,
        "--canary",
        min=1,
        max=100,
        help="Initial canary traffic percent (default: first step).",
    ),
    watch: bool = typer.Option(
        True, "--watch/--no-watch", help="Run the analysis: step up, then promote or roll back."
    ),
    backend: BackendChoice = BACKEND,
    config: Path = CONFIG,
    state_dir: Path = STATE,
) -> None:
    """Deploy a registered model version as a canary next to the champion and (by default) watch it.

    Prints the endpoint clients call. With --watch the canary is stepped through rollout.steps
    and every analysis poll prints one line (step, time, requests, verdict); every step is judged
    on 5xx rate and p99 latency against the champion (and on prediction agreement, label
    distance and the drift monitor's verdict where rollout.thresholds and rollout.drift_gate
    turn them on: docs/rollout.md), and the canary is
    promoted after the last step or rolled back at the first failed check (exit 2, with the
    reason). Without a champion, the version is deployed with all traffic and becomes champion.
    A version or alias that is not registered exits 2 and lists the versions and aliases there
    are. `aicrush stop` stops the local proxy and servers.
    """
    try:
        r = _open(backend, config, state_dir)
        try:
            st = r.deploy(version, canary)
        except KeyboardInterrupt:  # while the servers start: say so rather than exit silently
            started = (
                "the model servers it was starting are stopped"
                if backend is BackendChoice.local
                else "the InferenceService may already have taken the change"
            )
            typer.echo(
                f"\ninterrupted while deploying: {started}; `aicrush status` shows what serves "
                "now, `aicrush rollback` or `aicrush deploy` goes on from there",
                err=True,
            )
            raise typer.Exit(code=130) from None
        typer.echo(
            f"{backend.value}: stable {_v(st.stable)}"
            + (f", canary {_v(st.canary)} at {st.percent} %" if st.canary else "")
            + (
                " (the champion: it serves all the traffic)"
                if st.history and st.history[-1]["event"] == "initial_deploy"
                else ""
            )
        )
        for line in _endpoint_lines(r.status().get("serving") or {}, r.registry.model_name):
            typer.echo(line)
        if watch and st.phase == "canary":
            _watch(r)
        elif not watch and st.phase == "canary":
            typer.echo("not watching: `aicrush watch` analyses it, or `aicrush promote` / "
                       "`aicrush rollback` decides")  # fmt: skip
    except VersionNotFound as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    except COMMAND_ERRORS as err:
        _fail(err)


def _watch(r: Rollout) -> None:
    """Run the analysis from the canary's current step, one line a poll; exit 2 on a rollback."""
    typer.echo(
        f"analysis: steps {', '.join(map(str, r.cfg.steps))} %, at least "
        f"{r.cfg.interval_s:g}s each, metrics every {r.cfg.poll_s:g}s"
    )
    try:
        st = r.analyze(progress=lambda a: typer.echo(_progress_line(a)))
    except KeyboardInterrupt:
        _interrupted(r)
    if st.phase == "rolled_back":
        reason = next(
            (e.get("reason") for e in reversed(st.history) if e["event"] == "rollback"), ""
        )
        typer.echo(f"rolled back: stable {_v(st.stable)} serves all traffic; {reason}")
        raise typer.Exit(code=2)
    typer.echo(f"analysis finished: {st.phase} (stable {_v(st.stable)})")


def watch(
    take_over: bool = typer.Option(
        False,
        "--take-over",
        help="Watch a canary a pipeline run deployed whose analysis may still be running (its "
        "retries); the run's steps and exit handler leave it alone from then on.",
    ),
    backend: BackendChoice = BACKEND,
    config: Path = CONFIG,
    state_dir: Path = STATE,
) -> None:
    """Watch the canary in progress again: after Ctrl-C, `aicrush deploy --no-watch`, or a
    pipeline run that held it or whose steps failed.

    The analysis goes on from the canary's current share through the rest of rollout.steps (the
    step it is at starts anew: its metrics window begins now), then promotes, or rolls back at
    the first failed check (exit 2, with the reason), as `aicrush deploy` does. A canary a
    pipeline run deployed becomes yours (its run's exit handler no longer touches it); unless the
    run held it, that takes --take-over, since the run's own analysis may still be stepping it.
    Exits 1 when no canary is in progress.
    """
    try:
        r = _open(backend, config, state_dir)
        st = r.store.load()
        if st.phase != "canary":
            raise RolloutError(
                f"no canary in progress on the {backend.value} backend (phase {st.phase}); "
                "start one with `aicrush deploy --version N`"
            )
        if st.owner is not None:
            if not st.held and not take_over:
                raise RolloutError(
                    f"canary v{st.canary} belongs to pipeline run {st.owner}, whose analysis may "
                    "still be running (a retry); check the run in the Kubeflow Pipelines UI, "
                    "then `aicrush watch --take-over` makes it yours"
                )
            st = r.take_over()
            typer.echo(
                f"took canary v{st.canary} over from pipeline run {st.history[-1]['previous_owner']}"
            )
        typer.echo(
            f"{backend.value}: stable {_v(st.stable)}, canary {_v(st.canary)} at {st.percent} %"
        )
        _watch(r)
    except COMMAND_ERRORS as err:
        _fail(err)


def _interrupted(r: Rollout) -> None:
    """Ctrl-C while watching: the servers run on (they are detached), the split stays where the
    analysis left it, unwatched. Say where that is and what decides it, exit 130."""
    st = r.store.load()
    if st.phase == "canary":
        where = (
            f"canary {_v(st.canary)} keeps {st.percent} % of the traffic next to stable "
            f"{_v(st.stable)}, unwatched; `aicrush watch` goes on with the analysis, or "
            "`aicrush promote` / `aicrush rollback` decides"
        )
    else:
        where = f"phase {st.phase}, stable {_v(st.stable)}"
    typer.echo(
        f"\ninterrupted: the analysis stopped; {where} (`aicrush status` shows it)", err=True
    )
    raise typer.Exit(code=130)


def promote(
    backend: BackendChoice = BACKEND, config: Path = CONFIG, state_dir: Path = STATE
) -> None:
    """Send all traffic to the canary and move the MLflow alias champion to its version."""
    try:
        st = _open(backend, config, state_dir).promote()
        typer.echo(f"promoted v{st.stable}: champion, 100 % of the traffic")
    except COMMAND_ERRORS as err:
        _fail(err)


def rollback(
    reason: str = typer.Option("manual", "--reason", help="Recorded on the model version."),
    backend: BackendChoice = BACKEND,
    config: Path = CONFIG,
    state_dir: Path = STATE,
) -> None:
    """Send all traffic back to the champion and tag the canary's version as rolled back."""
    try:
        st = _open(backend, config, state_dir).rollback(reason=reason)
        typer.echo(f"rolled back: v{st.stable} serves all traffic")
    except COMMAND_ERRORS as err:
        _fail(err)


def stop(config: Path = CONFIG, state_dir: Path = STATE) -> None:
    """Stop the local rollout: its proxy and model servers (started by `aicrush deploy`).

    The registry is untouched: the champion stays champion, and a canary in progress is neither
    promoted nor rolled back. `aicrush deploy` starts them again.
    """
    try:
        r = _open(BackendChoice.local, config, state_dir)
        running = (r.status().get("serving") or {}).get("running")
        r.stop()
    except COMMAND_ERRORS as err:
        _fail(err)
        return
    typer.echo(
        "stopped the local rollout proxy and model servers"
        if running
        else "nothing was running (the local rollout has no proxy or servers)"
    )


def _refuse_missing_local_state(backend: BackendChoice, cfg: Any, state_dir: Path | None) -> None:
    """RolloutError when the local backend's registry would be a new, empty SQLite store in a
    state folder that does not exist: a status read in any folder created
    ``.aicrush/mlflow.db`` there and reported "champion none"."""
    from aicrush.state import state_dir as resolve_state

    if backend != BackendChoice.local:
        return
    where = resolve_state(state_dir, create=False)
    if where.exists():
        return
    if cfg.registry.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return  # a tracking server (resolve_tracking_uri's order): not the local store

    raise RolloutError(
        f"no aicrush state at {where}: run `aicrush run` (or `make demo`) here first, or point "
        "--state-dir (or $AICRUSH_HOME) at the folder a run used"
    )


def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    backend: BackendChoice = BACKEND,
    config: Path = CONFIG,
    state_dir: Path = STATE,
) -> None:
    """Versions, aliases, endpoint, traffic split, health and the last analysis of the rollout."""
    try:
        r = _open(backend, config, state_dir, True)
        s = r.status()
    except COMMAND_ERRORS as err:
        _fail(err)
        return
    if as_json:
        typer.echo(json.dumps(s, indent=2, default=str))
        return
    lines = [
        f"backend   {s['backend']}  phase {s['phase']}",
        f"champion  {_v(s['champion'])}   challenger {_v(s.get('challenger'))}",
    ]
    serving = s.get("serving") or {}
    if serving.get("running") is False or serving.get("exists") is False:
        lines.append("serving   nothing running; start it with `aicrush deploy`")
    else:
        lines += _endpoint_lines(serving, r.registry.model_name)
        lines.append(
            f"versions  stable {_v(s['stable'])}   canary "
            + (f"{_v(s['canary'])} at {s['canary_percent']} %" if s["canary"] else "none")
        )
        lines.append(
            f"health    {'ok' if serving.get('healthy') else 'NOT READY'}"
            + (f"  ({serving['error']})" if serving.get("error") else "")
        )
        if serving.get("traffic"):
            lines.append(
                "traffic   "
                + ", ".join(f"{t['revision']} {t['percent']} %" for t in serving["traffic"])
            )
        elif serving.get("routes") and not serving["routes"].get("stable"):
            # A proxy whose servers were stopped or never started (Ctrl-C in a deploy): it
            # answers every request with 503, which "stable 100 %" hid.
            lines.append(
                "traffic   none: no model server behind the proxy (it answers 503); "
                "`aicrush deploy` starts them"
            )
        elif serving.get("routes"):
            routes = serving["routes"]
            stable_pct = 100 - int(routes.get("percent") or 0) if routes.get("canary") else 100
            lines.append(
                f"traffic   stable {stable_pct} %"
                + (f", canary {routes['percent']} %" if routes.get("canary") else "")
            )
    a = s.get("last_analysis")
    if a:
        # Named by its canary: after a rollback, a promotion or `aicrush stop` it is the last
        # rollout's analysis, not one of what serves now.
        of = f"{_v(a['canary'])}: " if a.get("canary") else ""
        lines.append(
            f"analysis  {of}{a['outcome']} at {a['percent']} % after {a['elapsed_s']}s"
            + (f": {a['reason']}" if a.get("reason") else "")
        )
    sys.stdout.write("\n".join(lines) + "\n")
