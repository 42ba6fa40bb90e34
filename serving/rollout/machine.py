"""The rollout state machine: one canary at a time, stepped up by analysis, promoted or rolled back.

```
  stable only --deploy(v, p)--> canary at p % --step--> ... --> 100 % --promote--> stable only (v)
                                      '---- check fails / rollback ----> stable only (unchanged)
```

The machine is the same for both backends (:mod:`serving.rollout.local`,
:mod:`serving.rollout.kubernetes`); they only move traffic. The registry (MLflow) follows the
backend: the alias ``champion`` moves after the backend serves the new version at 100 %, so it
always names the version that serves the stable traffic.

State (versions, split, last analysis, history) lives where the backend keeps its serving state,
so every CLI call and every pipeline step (each its own pod in a cluster) sees where the last one
left off: the local backend in a JSON file (:class:`FileStateStore`), the Kubernetes backend on the
InferenceService and the ConfigMap beside it (:class:`serving.rollout.kubernetes.InferenceServiceStateStore`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from aicrush.rollout_config import RolloutConfig
from serving.rollout.analysis import DriftVerdict, Verdict, judge
from serving.rollout.metrics_source import MetricsSource

log = logging.getLogger(__name__)

Phase = Literal["idle", "canary", "promoted", "rolled_back"]


class RolloutError(RuntimeError):
    """A rollout command that cannot run now; the message says what to do instead."""


class CanaryHeld(RolloutError):
    """The analysis ran out of time without a verdict and ``on_insufficient_traffic`` is
    ``hold``: the canary keeps its traffic for a person to promote or roll back."""


class CanaryChanged(RolloutError):
    """Another version is the canary now than the one the caller (an analysis, a pipeline step)
    was about: nothing was changed."""


class VersionNotFound(RolloutError):
    """The model version or alias to roll out is not registered; the message lists the versions
    and aliases there are (the CLI exits 2 on it, as ``aicrush serve`` does)."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and where its model folder is (local path, file://, gs:// or
    an MLflow artifact URI such as ``mlflow-artifacts:/...``); ``tracking_uri``: the MLflow
    server such a URI resolves against ("" for none)."""

    version: str
    uri: str
    tracking_uri: str = ""


class Backend(Protocol):
    """Moves traffic between a stable and a canary version. Every method is one consistent change:
    when it raises, the serving state is what it was before (or a state ``status()`` reports)."""

    name: str

    def deploy(self, stable: ModelRef, canary: ModelRef | None, percent: int) -> None:
        """Serve ``stable``; with ``canary``, send it ``percent`` % of the traffic."""

    def set_traffic(self, percent: int, *, canary: str | None = None) -> None:
        """Give the running canary ``percent`` % of the traffic. ``canary``: the version the
        caller means; another canary running instead (a person's change meanwhile) raises
        :class:`RolloutError` and changes nothing."""

    def promote(self, *, canary: str | None = None) -> None:
        """Send all traffic to the canary, which becomes the stable version (``canary``: as for
        :meth:`set_traffic`)."""

    def rollback(self, *, canary: str | None = None) -> None:
        """Send all traffic back to the stable version and retire the canary (``canary``: as
        for :meth:`set_traffic`)."""

    def status(self) -> dict[str, Any]:
        """Health and the observed traffic split."""

    def metrics_source(self) -> MetricsSource: ...


class RolloutRegistry(Protocol):
    """The model registry side of a rollout (MLflow: :mod:`serving.rollout.registry`)."""

    #: The registered model, also the served model's name on every endpoint.
    model_name: str

    def champion(self) -> ModelRef | None: ...

    def challenger_version(self) -> str | None:
        """The version the alias ``challenger`` names (what ``deploy`` rolls out), or None."""

    def resolve(self, version: str | None) -> ModelRef:
        """A version by number, or the ``challenger`` alias when ``version`` is None."""

    def record_traffic(self, version: str, percent: int, outcome: str) -> None: ...

    def record_promotion(self, version: str, previous: str | None) -> None: ...

    def record_rollback(self, version: str, reason: str) -> None: ...


@dataclass
class RolloutState:
    backend: str
    phase: Phase = "idle"
    stable: str | None = None
    canary: str | None = None
    percent: int = 0
    last_analysis: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float = 0.0

    # What follows is read from the history's events, which survive a concurrent writer (the
    # Kubernetes store merges both writers' events on a 409), not from fields a stale write
    # could put back.

    @property
    def owner(self) -> str | None:
        """Who the rollout belongs to: the ``owner`` of its last deploy (or take-over) event, the
        id of the KFP run whose deploy step made it, or None for a person (the CLI). The
        pipeline's exit handler acts on its own run's rollout only."""
        for e in reversed(self.history):
            if e["event"] in OWNER_EVENTS:
                return e.get("owner")
        return None

    @property
    def deployed_at(self) -> float | None:
        """When the rollout in progress was deployed (its last deploy event), epoch seconds."""
        for e in reversed(self.history):
            if e["event"] in ("deploy", "initial_deploy"):
                return float(e["time"])
        return None

    def since_deploy(self) -> list[dict[str, Any]]:
        """The events since the rollout in progress was deployed (its last deploy event)."""
        for i in range(len(self.history) - 1, -1, -1):
            if self.history[i]["event"] in ("deploy", "initial_deploy"):
                return self.history[i + 1 :]
        return list(self.history)

    @property
    def rollback_unrecorded(self) -> bool:
        """Rolled back by the backend (phase ``rolled_back``) without the machine's own record of
        it (no rollback event since the deploy): a kill or timeout came in between."""
        return self.phase == "rolled_back" and not any(
            e["event"] == "rollback" for e in self.since_deploy()
        )

    @property
    def held(self) -> bool:
        """A canary the analysis held on purpose (``on_insufficient_traffic: hold``) that nothing
        has moved or taken over since."""
        moves = [e["event"] for e in self.since_deploy() if e["event"] in MOVE_EVENTS]
        return self.phase == "canary" and bool(moves) and moves[-1] == "held"

    def event(self, kind: str, **data: Any) -> None:
        self.history.append({"time": time.time(), "event": kind, **data})
        del self.history[:-HISTORY_EVENTS]


#: Events kept in ``RolloutState.history``.
HISTORY_EVENTS = 200
#: Events that give a rollout its owner (``RolloutState.owner``): ``deploying`` is written
#: before a pipeline's deploy changes the backend, so a deploy step killed or failing right
#: after its change still leaves the canary to its run's exit handler.
OWNER_EVENTS = ("deploying", "deploy", "initial_deploy", "take_over")
#: Seconds beyond one ``poll_s`` a second analysis waits for the first to stop (a metrics read
#: can take that long before the first notices its canary changed).
ANALYSIS_LOCK_GRACE_S = 15.0
#: Events after which a held canary is no longer held.
MOVE_EVENTS = ("traffic", "held", "take_over", "rollback", "promote")


def fit_json_list(items: list[Any], max_chars: int) -> str:
    """``items`` as a JSON array of at most ``max_chars`` characters, dropping the oldest (first)
    items until it fits: never a cut string, so the result always parses. ``"[]"`` at worst."""
    kept = list(items)
    text = json.dumps(kept, default=str)
    while len(text) > max_chars and kept:
        # Drop roughly the share that is too long (at least one item), then measure again.
        drop = max(1, int(len(kept) * (len(text) - max_chars) / len(text)))
        kept = kept[drop:]
        text = json.dumps(kept, default=str)
    return text


class StateStore(Protocol):
    """Where a backend keeps the machine's state between commands (and between pipeline pods)."""

    def load(self) -> RolloutState: ...

    def save(self, state: RolloutState) -> None: ...


class FileStateStore:
    """The machine's state as one JSON file, replaced atomically (a crash never leaves half a file).

    Only for the local backend: its processes live on this machine anyway."""

    def __init__(self, path: Path, backend: str):
        self.path = path
        self.backend = backend

    def load(self) -> RolloutState:
        if not self.path.is_file():
            return RolloutState(self.backend)
        known = {f.name for f in fields(RolloutState)}
        data = json.loads(self.path.read_text())
        return RolloutState(**{k: v for k, v in data.items() if k in known})

    @contextmanager
    def analysis_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Held while an analysis watches the canary (``flock`` on ``<state>.analysis.lock``,
        released when the process ends however it ends). A second analysis of the same
        rollout, which would step the canary under the first, waits up to ``wait_s`` (an
        analysis whose canary was rolled back, replaced or taken over stops at its next poll),
        then raises :class:`RolloutError`."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        path = self.path.with_suffix(".analysis.lock")
        deadline = time.monotonic() + wait_s
        with open(path, "a+") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise RolloutError(
                        f"the canary is already being watched (process {holder}: an `aicrush "
                        "deploy`, `aicrush watch` or a pipeline's analysis step); stop that "
                        "one first, or let it finish"
                    ) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def save(self, state: RolloutState) -> None:
        state.updated_at = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2, default=str))
        tmp.replace(self.path)


class Rollout:
    """Canary rollout of one model on one backend."""

    def __init__(
        self,
        backend: Backend,
        registry: RolloutRegistry,
        cfg: RolloutConfig,
        state: Path | StateStore,
        drift: DriftVerdict | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``state``: a :class:`StateStore`, or a JSON file path (a :class:`FileStateStore`)."""
        self.backend = backend
        self.registry = registry
        self.cfg = cfg
        self.store: StateStore = (
            FileStateStore(state, backend.name) if isinstance(state, Path) else state
        )
        self.drift = drift
        self.sleep = sleep

    # -- commands -------------------------------------------------------------------------

    def deploy(
        self, version: str | None = None, percent: int | None = None, owner: str | None = None
    ) -> RolloutState:
        """Start a canary of ``version`` (default: alias ``challenger``) at ``percent`` % (default: first step).

        With no champion yet, the version is deployed as the stable one at 100 % and becomes champion.
        ``owner``: the KFP run id of a pipeline's deploy step (recorded in the deploy events
        for :meth:`recover`, before the backend changes); None for a person's deploy.
        """
        st = self.store.load()
        if st.phase == "canary":
            raise RolloutError(
                f"version {st.canary} is already a canary at {st.percent} %; run `aicrush promote` or "
                "`aicrush rollback` first"
            )
        percent = self.cfg.steps[0] if percent is None else int(percent)
        if not 0 < percent <= 100:
            raise RolloutError(f"canary percent must be in 1..100, got {percent}")
        canary = self.registry.resolve(version)
        champion, _ = self._finish_promotion(st)
        if owner is not None:  # before the change: a step killed after it leaves a known owner
            st.event("deploying", version=canary.version, owner=owner)
            self.store.save(st)
        if champion is None:
            log.info("no champion yet: deploying version %s as the stable version", canary.version)
            self.backend.deploy(canary, None, 0)
            self.registry.record_promotion(canary.version, None)
            st.phase, st.stable, st.canary, st.percent = "promoted", canary.version, None, 0
            st.event("initial_deploy", version=canary.version, owner=owner)
            self.store.save(st)
            return st
        if champion.version == canary.version and st.phase == "idle":
            # Nothing serves (after `aicrush stop`, or a state folder new to this registry): the
            # champion serves again, alone. `aicrush status` says "start it with `aicrush
            # deploy`", and the challenger is often the champion itself after a promotion.
            log.info("nothing serves: deploying the champion, version %s, again", champion.version)
            self.backend.deploy(champion, None, 0)
            st.phase, st.stable, st.canary, st.percent = "promoted", champion.version, None, 0
            st.event("initial_deploy", version=champion.version, owner=owner, restart=True)
            self.store.save(st)
            return st
        if champion.version == canary.version:
            raise RolloutError(
                f"version {canary.version} is already the champion; register a new version first"
            )
        self.backend.deploy(champion, canary, percent)
        st.phase, st.stable, st.canary, st.percent, st.last_analysis = (
            "canary",
            champion.version,
            canary.version,
            percent,
            None,
        )
        st.event(
            "deploy", stable=champion.version, canary=canary.version, percent=percent, owner=owner
        )
        self.store.save(st)
        self._tag(self.registry.record_traffic, canary.version, percent, "canary")
        return st

    def set_traffic(
        self, percent: int, expected: str | None = None, owner: str | None = None
    ) -> RolloutState:
        """The canary to ``percent`` %. ``expected``: the canary version the caller means (an
        analysis, a pipeline step); another one in progress raises :class:`RolloutError`.
        ``owner``: the pipeline run the caller acts for; a canary that is no longer that run's
        (taken over by a person) raises :class:`CanaryChanged`."""
        st = self._require_canary(expected, owner)
        self.backend.set_traffic(percent, canary=st.canary)
        st.percent = percent
        st.event("traffic", canary=st.canary, percent=percent)
        self.store.save(st)
        self._tag(self.registry.record_traffic, str(st.canary), percent, "canary")
        return st

    def promote(self, reason: str = "manual", expected: str | None = None) -> RolloutState:
        """Canary to 100 %, alias ``champion`` to its version (idempotent: a retry finishes a
        half-done one, also one whose backend change landed and whose registry record did not)."""
        st = self.store.load()
        if self._finish_promotion(st)[1]:
            return st
        st = self._require_canary(expected)
        self.backend.promote(canary=st.canary)
        previous, version = st.stable, str(st.canary)
        st.phase, st.stable, st.canary, st.percent = "promoted", version, None, 0
        st.event("promote", version=version, previous=previous, reason=reason)
        self.store.save(st)
        try:
            self.registry.record_promotion(version, previous)
        except Exception as err:  # the traffic has moved: say so, and how to finish
            raise RolloutError(
                f"version {version} serves all the traffic, but moving the alias champion to it "
                f"failed ({type(err).__name__}: {err}); run `aicrush promote` again to finish"
            ) from err
        return st

    def rollback(self, reason: str = "manual", expected: str | None = None) -> RolloutState:
        """All traffic back to the stable version; champion unchanged; the canary tagged as rolled
        back. Idempotent: a retry after a rollback whose backend change landed and whose record
        did not (a kill, a timeout) records it."""
        st = self.store.load()
        if st.rollback_unrecorded:
            # The canary the backend rolled back: the last one the history names.
            version = next((str(e["canary"]) for e in reversed(st.history) if e.get("canary")), "")
            st.event("rollback", version=version or None, stable=st.stable, reason=reason)
            self.store.save(st)
            if version:
                self._tag(self.registry.record_rollback, version, reason)
            return st
        st = self._require_canary(expected)
        self.backend.rollback(canary=st.canary)
        version = str(st.canary)
        st.phase, st.canary, st.percent = "rolled_back", None, 0
        st.event("rollback", version=version, stable=st.stable, reason=reason)
        self.store.save(st)
        self._tag(self.registry.record_rollback, version, reason)
        return st

    def recover(self, owner: str, reason: str) -> str:
        """Finish what pipeline run ``owner`` left when one of its steps failed (the rollout
        pipeline's exit handler), so that no failure leaves a half-shifted traffic split:

        - its canary still in progress: rolled back (``reason`` recorded), also one at 100 %
          whose promotion step failed (a failed run never promotes), unless the analysis held
          it on purpose (``rollout.on_insufficient_traffic: hold``): it stays for a person;
        - its rollback that landed unrecorded, or its promotion whose registry step failed:
          finished, as :meth:`rollback` and :meth:`promote` would on a retry.

        A rollout that ``owner`` did not start, or that a person took over (``aicrush watch``),
        is left alone. Returns what was done: "rolled_back", "promoted", "held", "not_owner" or
        "nothing". Raises what :meth:`rollback` or the registry raise; the state then says what
        is left, and ``aicrush rollback`` / ``aicrush promote`` finish it.
        """
        st = self.store.load()
        if not owner or st.owner != owner:
            return "not_owner"
        if st.phase == "canary":
            if st.held:
                return "held"
            self.rollback(reason=reason, expected=st.canary)
            return "rolled_back"
        if st.rollback_unrecorded:
            self.rollback(reason=reason)
            return "rolled_back"
        return "promoted" if self._finish_promotion(st)[1] else "nothing"

    def take_over(self) -> RolloutState:
        """Make the canary in progress a person's (``aicrush watch --take-over``): its pipeline
        run's analysis and exit handler leave it alone from then on (event ``take_over``,
        owner None). Raises :class:`RolloutError` when no canary is in progress."""
        st = self._require_canary()
        st.event("take_over", canary=st.canary, previous_owner=st.owner, owner=None)
        self.store.save(st)
        return st

    def stop(self) -> RolloutState:
        """Stop the backend's processes (the local proxy and model servers). A canary in progress
        is neither promoted nor rolled back (phase ``idle``): the aliases stay, and its version is
        tagged ``rollout.outcome=stopped``, ``rollout.traffic=0``.

        Raises :class:`RolloutError` for a backend without processes of its own (Kubernetes).
        """
        shutdown = getattr(self.backend, "shutdown", None)
        if shutdown is None:
            raise RolloutError(
                f"the {self.backend.name} backend runs no local processes; `aicrush rollback` "
                "moves traffic back, and the InferenceService is deleted with kubectl"
            )
        shutdown()
        st = self.store.load()
        canary = st.canary
        st.event("stop", stable=st.stable, canary=canary)
        st.phase, st.canary, st.percent = "idle", None, 0
        self.store.save(st)
        if canary is not None:
            # Its tags said "canary at N %" while nothing served it; a later deploy of it starts
            # a new deployment (a new rollout.deployed_at).
            self._tag(self.registry.record_traffic, canary, 0, "stopped")
        return st

    def status(self) -> dict[str, Any]:
        st = self.store.load()
        champion = self.registry.champion()
        try:
            serving = self.backend.status()
        except Exception as err:  # status must answer even when the backend is down
            serving = {"healthy": False, "error": str(err)}
        return {
            "backend": st.backend,
            "phase": st.phase,
            "champion": champion.version if champion else None,
            "challenger": self.registry.challenger_version(),
            "stable": st.stable,
            "canary": st.canary,
            "canary_percent": st.percent,
            "serving": serving,
            "last_analysis": st.last_analysis,
            "updated_at": st.updated_at,
        }

    # -- analysis -------------------------------------------------------------------------

    def analyze(
        self,
        stop: threading.Event | None = None,
        auto_promote: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
        expected: str | None = None,
        owner: str | None = None,
    ) -> RolloutState:
        """Watch the canary step by step; promote after the last step passes, roll back on a failed check.

        A failed check always rolls back at once. With ``auto_promote=False`` the canary is left at
        100 % after the last step passes (phase ``canary``) for a separate promotion step.

        Runs from the current percentage through the remaining ``steps``. Each step lasts at least
        ``interval_s``; metrics are read every ``poll_s``, so a failing check rolls back within one
        poll of having enough evidence. ``progress`` gets every poll's verdict (the dict stored as
        ``last_analysis``: ``percent``, ``elapsed_s``, ``outcome``, ``reason``, ...).
        """
        # One analysis at a time where the store can lock (the local backend's state file): a
        # second `aicrush watch` would step the same canary under the first.
        # The canary must be the caller's before it waits for the lock (a run whose canary a
        # person took over gets CanaryChanged, not a lock error). The wait covers an analysis
        # that stops at its next poll because its canary changed.
        self._require_canary(expected, owner)
        lock = getattr(self.store, "analysis_lock", None)
        wait_s = self.cfg.poll_s + ANALYSIS_LOCK_GRACE_S
        with lock(wait_s) if lock is not None else nullcontext():
            return self._analyze(stop, auto_promote, progress, expected, owner)

    def _analyze(
        self,
        stop: threading.Event | None,
        auto_promote: bool,
        progress: Callable[[dict[str, Any]], None] | None,
        expected: str | None,
        owner: str | None,
    ) -> RolloutState:
        st = self._require_canary(expected, owner)
        stable, canary = str(st.stable), str(st.canary)
        if st.percent == 0:
            # Only a rollback moves a canary to 0 % (its traffic patch landed, its second patch
            # or its record did not: a kill). Watching 0 % would wait for traffic that never
            # comes; finish the rollback.
            return self.rollback(reason="finishing a rollback left at 0 %", expected=canary)
        source = self.backend.metrics_source()
        # The drift check reads only monitor windows analysed since this canary was deployed.
        deployed_at = st.deployed_at
        steps = [st.percent] + [p for p in self.cfg.steps if p > st.percent]
        t = self.cfg.thresholds
        for percent in steps:
            if percent != st.percent:
                st = self.set_traffic(percent, expected=canary, owner=owner)
            started = time.time()
            try:
                source.window([stable, canary], since=started)  # baseline scrape for this step
            except Exception as err:  # the first read that works is the baseline then
                log.warning("reading metrics failed: %s", err)
            while True:
                if stop is not None and stop.is_set():
                    return self.store.load()
                self.sleep(self.cfg.poll_s)
                try:
                    window = source.window([stable, canary], since=started)
                except Exception as err:  # a missed scrape is retried on the next poll...
                    elapsed = time.time() - started
                    log.warning(
                        "reading metrics at %s %% failed (%.0fs into the step, retried every "
                        "%gs until %gs): %s", percent, elapsed, self.cfg.poll_s,
                        self.cfg.max_step_wait_s, err,
                    )  # fmt: skip
                    # Servers stopped or the canary rolled back from another shell: say so now.
                    # The state itself unreadable (the API server down too) is retried as the
                    # metrics are.
                    try:
                        current = self.store.load()
                    except Exception as load_err:
                        log.warning("reading the rollout state failed: %s", load_err)
                    else:
                        self._still_in_progress(current, canary, owner)
                    if elapsed >= self.cfg.max_step_wait_s:  # ...until the step's time is up
                        return self._out_of_time(
                            percent, f"metrics unreadable ({err})", elapsed, canary
                        )
                    continue
                verdict = judge(
                    window[stable],
                    window[canary],
                    t,
                    canary_version=canary,
                    drift=self.drift,
                    drift_since=deployed_at,
                )
                elapsed = time.time() - started
                record = self._record(verdict, percent, elapsed, canary, owner)
                if progress is not None:
                    progress(record)
                if verdict.outcome == "fail":
                    return self.rollback(
                        reason=f"analysis at {percent} %: {verdict.reason}", expected=canary
                    )
                if verdict.outcome == "pass" and elapsed >= self.cfg.interval_s:
                    break
                if elapsed >= self.cfg.max_step_wait_s:
                    return self._out_of_time(
                        percent, verdict.reason or "not enough traffic", elapsed, canary
                    )
        if not auto_promote:
            return self.store.load()
        return self.promote(reason="analysis passed every step", expected=canary)

    def _tag(self, record: Callable[..., None], *args: Any) -> None:
        """Registry bookkeeping after a backend change (traffic and rollback tags): a failure is
        a warning, not a failed step, since the change it describes has happened and the state
        records it. The alias ``champion`` is not bookkeeping (:meth:`_finish_promotion`)."""
        try:
            record(*args)
        except Exception as err:
            log.warning("recording %s of version %s in the registry failed: %s", record.__name__,
                        args[0], err)  # fmt: skip

    def _finish_promotion(self, st: RolloutState) -> tuple[ModelRef | None, bool]:
        """The champion, after finishing a promotion the registry did not record, and whether
        there was one to finish (``st`` then has the event and is saved).

        When the backend serves ``st.stable`` after a promotion (phase ``promoted``) and the
        alias ``champion`` names another version, the promotion's registry step failed or was
        killed (an MLflow error; on Kubernetes, a readiness timeout after the patch landed). The
        alias then moves to what serves, as a completed promotion would have; a deploy never
        turns serving back to the alias' version instead.
        """
        champion = self.registry.champion()
        if st.phase != "promoted" or st.stable is None:
            return champion, False
        if champion is not None and champion.version == st.stable:
            return champion, False
        previous = champion.version if champion else None
        log.warning(
            "version %s serves all traffic after a promotion, but the registry's champion is %s: "
            "recording the promotion now", st.stable, previous,
        )  # fmt: skip
        self.registry.record_promotion(st.stable, previous)
        st.event("promote", version=st.stable, previous=previous, reason="finishing a promotion")
        self.store.save(st)
        return self.registry.champion(), True

    def _out_of_time(self, percent: int, reason: str, elapsed: float, canary: str) -> RolloutState:
        """A step that reached ``max_step_wait_s`` without a verdict: roll back, or (``hold``)
        leave the canary where it is and raise :class:`RolloutError` saying so."""
        why = f"analysis at {percent} %: {reason} after {elapsed:.0f}s"
        if self.cfg.on_insufficient_traffic == "rollback":
            return self.rollback(reason=why, expected=canary)
        st = self.store.load()
        st.event("held", canary=canary, percent=percent, reason=why)  # RolloutState.held
        self.store.save(st)
        raise CanaryHeld(why + "; the canary holds its traffic; promote or roll back by hand")

    def _still_in_progress(self, st: RolloutState, canary: str, owner: str | None) -> None:
        """Raise :class:`CanaryChanged` when ``canary`` is no longer the canary in progress
        (another command rolled it back, promoted it, stopped the servers or deployed another)
        or no longer ``owner``'s: the analysis stops instead of judging what is gone."""
        if st.phase != "canary" or str(st.canary) != canary:
            if st.phase == "canary":
                what = f"replaced by version {st.canary}"
            else:
                done = {"rolled_back": "rolled back", "promoted": "promoted", "idle": "stopped"}
                what = done.get(st.phase, f"left in phase {st.phase}")
            raise CanaryChanged(
                f"canary version {canary} was {what} by another command meanwhile: the analysis "
                "stops (`aicrush status` shows the rollout)"
            )
        if owner is not None and st.owner != owner:
            self._require_canary(canary, owner)  # raises the take-over's CanaryChanged

    def _record(
        self,
        verdict: Verdict,
        percent: int,
        elapsed: float,
        canary: str | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        st = self.store.load()
        if canary is not None:
            self._still_in_progress(st, canary, owner)
        st.last_analysis = {
            "time": time.time(),
            "canary": canary,
            "percent": percent,
            "elapsed_s": round(elapsed, 2),
            **verdict.to_dict(),
        }
        self.store.save(st)
        return st.last_analysis

    def _require_canary(
        self, expected: str | None = None, owner: str | None = None
    ) -> RolloutState:
        """The state with a canary in progress; with ``expected``, that canary's version; with
        ``owner``, a canary that pipeline run's deploy made and nobody took over.

        Raises :class:`RolloutError` ("no canary in progress"), or :class:`CanaryChanged` when
        another version is the canary now (a person rolled back and deployed another one) or
        the canary is no longer ``owner``'s (``aicrush watch --take-over``).
        """
        st = self.store.load()
        if st.phase != "canary" or st.canary is None:
            raise RolloutError(
                f"no canary in progress on the {self.backend.name} backend (phase {st.phase}); "
                "start one with `aicrush deploy --version N`"
            )
        if expected is not None and str(st.canary) != str(expected):
            raise CanaryChanged(
                f"the canary on the {self.backend.name} backend is now version {st.canary}, not "
                f"{expected}: it changed meanwhile; nothing was changed, see `aicrush status`"
            )
        if owner is not None and st.owner != owner:
            raise CanaryChanged(
                f"canary version {st.canary} is no longer pipeline run {owner}'s (a person took "
                "it over with `aicrush watch --take-over`): this run leaves it as it is"
            )
        return st
