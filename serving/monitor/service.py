"""The monitor's core, without HTTP: route paired inferences into per-version windows, analyse
closed windows against the reference, export Prometheus metrics, write reports, trigger retrains.

:class:`Monitor` is what ``app.py`` serves and what tests and the benchmark drive directly.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.monitor.drift import (
    DriftResult,
    DriftSettings,
    analyze_window,
    build_report,
    save_report,
)
from serving.monitor.events import (
    EXPIRED,
    REGISTRY_VERSION,
    EventError,
    EventPairer,
    InferenceEvent,
    PairedInference,
    canonical_version,
    parse_events,
)
from serving.monitor.features import features_of
from serving.monitor.reference import Reference
from serving.monitor.retrain import RetrainTrigger
from serving.monitor.state import MonitorState
from serving.monitor.windows import Window, WindowPolicy, window_frame

log = logging.getLogger(__name__)

ReportPolicy = Literal["never", "drift", "always"]
UNKNOWN_LABEL = "_unknown"


class MonitorMetrics:
    """The monitor's metric families, on their own registry (one per :class:`Monitor`)."""

    def __init__(self, registry: CollectorRegistry):
        mv = ["model", "version"]
        self.share = Gauge(
            "aicrush_drift_share_drifted_columns",
            "Share of monitored columns that drifted in the last closed window.",
            mv,
            registry=registry,
        )
        self.column_score = Gauge(
            "aicrush_drift_column_score",
            "Drift score of one column in the last window (method label: "
            "wasserstein = normed distance, jensenshannon = distance).",
            [*mv, "column", "method"],
            registry=registry,
        )
        self.column_drifted = Gauge(
            "aicrush_drift_column_drifted",
            "1 when the column drifted in the last window.",
            [*mv, "column"],
            registry=registry,
        )
        self.dataset_drift = Gauge(
            "aicrush_drift_dataset_drift",
            "1 when the last window drifted (share >= drift_share).",
            mv,
            registry=registry,
        )
        self.consecutive = Gauge(
            "aicrush_drift_consecutive_drifted_windows",
            "Drifted windows in a row, up to the last one.",
            mv,
            registry=registry,
        )
        self.window_rows = Gauge(
            "aicrush_drift_window_rows", "Rows in the last closed window.", mv, registry=registry
        )
        self.open_rows = Gauge(
            "aicrush_drift_open_window_rows", "Rows in the open window.", mv, registry=registry
        )
        self.windows = Counter(
            "aicrush_drift_windows",
            "Closed and analysed windows (dataset_drift: true, false, or not_enough_data for a "
            "window under the minimum rows, which gets no verdict).",
            [*mv, "dataset_drift"],
            registry=registry,
        )
        self.enough_data = Gauge(
            "aicrush_drift_enough_data",
            "1 when the last closed window had enough rows for a verdict (DriftSettings.min_rows);"
            " 0: 'not enough data', and the drift gauges of that window are NaN.",
            mv,
            registry=registry,
        )
        self.reports_failed = Counter(
            "aicrush_drift_reports_failed",
            "HTML drift reports that could not be written (the window's verdict is kept).",
            mv,
            registry=registry,
        )
        self.last_window = Gauge(
            "aicrush_drift_last_window_timestamp_seconds",
            "Unix time the last window was analysed.",
            mv,
            registry=registry,
        )
        self.reference = Gauge(
            "aicrush_drift_reference_info",
            "The reference sample in use (value 1; its sha256 is a label).",
            [*mv, "sha256", "source"],
            registry=registry,
        )
        self.reference_rows = Gauge(
            "aicrush_drift_reference_rows", "Rows in the reference.", mv, registry=registry
        )
        self.received = Counter(
            "aicrush_monitor_events_received",
            "CloudEvents received (type: request or response).",
            [*mv, "type"],
            registry=registry,
        )
        self.dropped = Counter(
            "aicrush_monitor_events_dropped",
            "Events not used (reason: malformed, no_reference, analysis_error).",
            ["model", "reason"],
            registry=registry,
        )
        self.unpaired = Counter(
            "aicrush_monitor_events_unpaired",
            "Request or response halves dropped without their pair (reason: expired = no "
            "partner within the pairing TTL, overflow = too many waiting, count_mismatch = the "
            "only partner with that id has another number of rows).",
            ["reason"],
            registry=registry,
        )
        self.pending = Gauge(
            "aicrush_monitor_events_pending", "Halves waiting for their pair.", registry=registry
        )
        self.records = Counter(
            "aicrush_monitor_records", "Paired inputs added to windows.", mv, registry=registry
        )
        self.retrains = Counter(
            "aicrush_drift_retrain_decisions",
            "Retraining decisions on sustained drift (outcome label).",
            [*mv, "outcome"],
            registry=registry,
        )
        self.analysis_seconds = Histogram(
            "aicrush_drift_analysis_duration_seconds",
            "Time to featurize and analyse one window.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )


@dataclass
class MonitorConfig:
    """``state_dir``: SQLite state; ``reports``: folder or gs:// prefix for HTML reports (None: no
    reports); ``report_on``: which windows get one; ``background``: analyse windows on a worker
    thread (the HTTP service) or inline (tests, the offline command)."""

    state_dir: Path
    policy: WindowPolicy = field(default_factory=WindowPolicy)
    settings: DriftSettings = field(default_factory=DriftSettings)
    reports: str | None = None
    report_on: ReportPolicy = "drift"
    background: bool = True
    pair_ttl_s: float = 120.0
    warm_up: bool = True
    featurize_chunk: int = 250
    #: How often the tick re-resolves the version that events without one belong to, for the
    #: models given a ``follow`` resolver (the champion alias moves on promotion); 0: never.
    follow_every_s: float = 60.0


#: (model, version) pairs whose failed reference loads are remembered (and not retried for a
#: minute); the oldest is forgotten beyond this. Also the most odd version spellings warned about.
MAX_FAILED_LOADS = 1000


class Monitor:
    """Windows per (model, version), each analysed against that version's reference."""

    def __init__(
        self,
        config: MonitorConfig,
        references: list[Reference] | None = None,
        retrain: RetrainTrigger | None = None,
        registry: CollectorRegistry | None = None,
        reference_loader: Callable[[str, str], Reference] | None = None,
        follow: Mapping[str, Callable[[], str]] | None = None,
    ):
        """``reference_loader(model, version)``: loads the reference of a version the monitor
        sees events for but has none of (in a rollout, the canary's); None: known versions only.

        ``follow``: model -> a function returning the version its events without a version
        belong to now (the champion alias, re-resolved in the registry). The tick calls it every
        ``config.follow_every_s`` (:meth:`follow_versions`); None: the versions of
        ``references`` stay the defaults until a restart."""
        self.config = config
        self.reference_loader = reference_loader
        self._load_failed: dict[tuple[str, str], float] = {}  # key -> when; retried after a minute
        self._not_numbers: set[tuple[str, str]] = set()  # odd versions warned about (once each)
        self.registry = registry or CollectorRegistry()
        self.metrics = MonitorMetrics(self.registry)
        self.state = MonitorState(config.state_dir)
        self.retrain = retrain
        if retrain is not None and retrain.state is None:
            retrain.state = self.state
        self.pairer = EventPairer(ttl_s=config.pair_ttl_s)
        self._lock = threading.Lock()
        self.references: dict[tuple[str, str], Reference] = {}
        self.windows: dict[tuple[str, str], Window] = {}
        self.last_results: dict[tuple[str, str], DriftResult] = {}
        self._consecutive: dict[tuple[str, str], int] = {}  # drifted windows in a row
        # Feature rows computed ahead, while windows fill (background mode): id(record) -> row.
        self._features: dict[int, tuple[tuple, np.ndarray]] = {}
        self._unfeaturized: dict[tuple[str, str], list] = {}
        for ref in self.state.load_references():  # what a previous run watched
            self._install(ref, persist=False)
        #: model -> the version its events without one belong to (``route``).
        self.default_versions: dict[str, str] = {}
        for ref in references or []:
            self._install(ref, persist=True)
            self.default_versions[ref.model_name] = ref.model_version
        self.follow = dict(follow or {})
        self._followed_at: float | None = None  # the tick's clock at the last re-resolution
        self._following: threading.Thread | None = None
        self._follow_failing: set[str] = set()  # models whose re-resolution fails (logged once)
        self._follow_no_reference: set[tuple[str, str]] = set()  # (logged once each)
        self._closed = False
        if config.warm_up:  # Evidently and Feast import lazily in seconds; pay it before traffic
            import evidently.legacy.calculations.stattests  # noqa: F401

            features_of(["warm up"])
        self._jobs: queue.Queue[tuple[str, tuple[str, str], list] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        if config.background:
            self._worker = threading.Thread(target=self._work, name="drift-analysis", daemon=True)
            self._worker.start()

    # references
    def _install(self, ref: Reference, persist: bool) -> None:
        key = (ref.model_name, ref.model_version)
        old = self.references.get(key)
        if old is not None and old.sha256 != ref.sha256:
            self.metrics.reference.remove(*key, old.sha256, old.source)
        self.references[key] = ref
        if persist:
            self.state.save_reference(ref)
        self.metrics.reference.labels(*key, ref.sha256, ref.source).set(1)
        self.metrics.reference_rows.labels(*key).set(len(ref.frame))
        window = Window(self.config.policy)
        for record in self.state.load_records(*key):
            window.add(*record)
        self.windows[key] = window
        self.metrics.open_rows.labels(*key).set(len(window))

    def route(self, model: str, version: str | None) -> tuple[str, str] | None:
        """The (model, version) whose reference applies. An event without a version (KServe's
        own logger) goes to the model's default version: the one the monitor was started for
        (``references``: the champion's), or where ``follow`` last found the champion, else to
        the model's only reference, else to the last one loaded; never to a canary's reference
        loaded on the way, nor to one a previous run left in the state.

        A version is read as the registry writes it ("01" is version 1). One that is not a
        registry version number (an alias, "v1") has no reference unless the monitor was given
        one under that name (a Parquet reference's --version): its events are dropped, and each
        such value of a watched model is logged once; it is never looked up in the registry."""
        if version is not None:
            version = canonical_version(version)
            if (model, version) in self.references:
                return (model, version)
            if not REGISTRY_VERSION.fullmatch(version):
                self._warn_not_a_number(model, version)
                return None
            self._load_reference(model, version)
            return (model, version) if (model, version) in self.references else None
        default = self.default_versions.get(model)
        if default is not None and (model, default) in self.references:
            return (model, default)
        keys = [k for k in self.references if k[0] == model]
        return keys[-1] if keys else None

    def _warn_not_a_number(self, model: str, version: str) -> None:
        key = (model, version)
        if key in self._not_numbers or not any(m == model for m, _ in self.references):
            return  # logged already, or another model's (the sender's names: not ours to log)
        if len(self._not_numbers) >= MAX_FAILED_LOADS:
            return  # the values are the sender's: the log stays bounded (the counter counts on)
        self._not_numbers.add(key)
        log.warning(
            "events of %s with version %r are dropped: that is not a registry version number, "
            "so it names no reference; the sender should give the number (ce-modelversion or "
            "?modelversion=, e.g. %r), not an alias or another spelling (counted in "
            "aicrush_monitor_events_dropped_total{reason=\"no_reference\"}; logged once)",
            model, version, self.default_versions.get(model, "1"),
        )  # fmt: skip

    def _load_reference(self, model: str, version: str) -> None:
        key = (model, version)
        if self.reference_loader is None or time.time() - self._load_failed.get(key, 0) < 60:
            return
        if not any(m == model for m, _ in self.references):
            # Only new versions of a model the monitor watches: the model name is the sender's.
            return
        if len(self._load_failed) >= MAX_FAILED_LOADS:  # versions are the sender's too
            oldest = min(self._load_failed, key=self._load_failed.__getitem__)
            del self._load_failed[oldest]
        try:
            ref = self.reference_loader(model, version)
            if (ref.model_name, ref.model_version) != key:
                # Installed under its own key, it would never serve these events, and each
                # event would load and persist it again.
                raise LookupError(
                    f"the loader answered with the reference of {ref.model_name} version "
                    f"{ref.model_version} ({ref.source})"
                )
            self._install(ref, persist=True)
        except Exception as err:  # no reference (yet): the events count as dropped, retried later
            self._load_failed[key] = time.time()
            log.warning("no reference for %s version %s: %s", model, version, err)

    # ingest
    def ingest(
        self,
        headers: Mapping[str, str],
        body: bytes,
        now: float | None = None,
        version: str | None = None,
    ) -> str:
        """Take one CloudEvent, or a batch of them; return ``paired`` or ``pending`` (for a
        batch: ``batch of N``), or raise :class:`EventError` with the reason (a malformed event,
        attribute or body is refused before anything is paired; a batch is refused whole).

        Every inference then either lands in a window or is counted: halves without a pair in
        ``aicrush_monitor_events_unpaired_total{reason}``, events of a model without a
        reference in ``aicrush_monitor_events_dropped_total{reason="no_reference"}``.

        ``version`` is the model version for an event that does not carry ``modelversion``
        (KServe's logger does not; the Kubernetes backend puts ``?modelversion=N`` in each
        revision's logger URL, so stable and canary land in their own windows).
        """
        try:
            events = parse_events(headers, body)
        except EventError:
            self.metrics.dropped.labels("", "malformed").inc()
            raise
        outcome = ""
        for event in events:
            outcome = self._ingest_event(event, now, version)
        return outcome if len(events) == 1 else f"batch of {len(events)}"

    def _ingest_event(self, event: InferenceEvent, now: float | None, version: str | None) -> str:
        if event.version is None and version:
            event = replace(event, version=version)
        if event.version is not None and canonical_version(event.version) != event.version:
            # before pairing: a request saying "03" and its response saying "3" are one inference
            event = replace(event, version=canonical_version(event.version))
        kind = "request" if event.type.endswith("request") else "response"
        self.metrics.received.labels(*self._labels(event.model, event.version), kind).inc()
        with self._lock:
            pair, dropped = self.pairer.add(event, now)
            for reason, n in dropped.items():
                self.metrics.unpaired.labels(reason).inc(n)
            self.metrics.pending.set(len(self.pairer))
            if pair is None:
                return "pending"
            self.add_pair(pair, now)
        return "paired"

    def _labels(self, model: str, version: str | None) -> tuple[str, str]:
        """Metric label values from a bounded set: the monitored models and versions; any other
        name an event carries is counted as ``_unknown`` (senders choose those names)."""
        # A snapshot of the keys: events are ingested on several threads, and a reference may be
        # installed meanwhile (iterating the dict itself could fail mid-way).
        if not any(k[0] == model for k in list(self.references)):
            return UNKNOWN_LABEL, ""
        return model, (version or "") if (model, version or "") in self.references else ""

    def add_pair(self, pair: PairedInference, now: float | None = None) -> None:
        key = self.route(pair.model, pair.version)
        if key is None:
            self.metrics.dropped.labels(self._labels(pair.model, None)[0], "no_reference").inc(2)
            return
        ts = time.time() if now is None else now
        records = [(ts, t, p[0], p[1]) for t, p in zip(pair.texts, pair.predictions, strict=True)]
        self.add_records(key, records, now=ts)

    def add_records(
        self,
        key: tuple[str, str],
        records: list[tuple[float, str, str, float]],
        now: float | None = None,
    ) -> None:
        window = self.windows[key]
        self.state.append_records(*key, records)
        window.extend(records)
        self.metrics.records.labels(*key).inc(len(records))
        if self._worker is not None:
            pending = self._unfeaturized.setdefault(key, [])
            pending.extend(records)
            if len(pending) >= self.config.featurize_chunk:
                self._jobs.put(("featurize", key, pending))
                self._unfeaturized[key] = []
        self._close_full(key, now)
        self.metrics.open_rows.labels(*key).set(len(window))

    def tick(self, now: float | None = None) -> None:
        """Close windows that are old enough (time windows), expire unpaired halves and, every
        ``config.follow_every_s``, re-resolve the followed versions (:meth:`follow_versions`,
        on a thread of its own in background mode: a slow registry does not hold the tick up);
        the service calls this periodically."""
        with self._lock:
            expired = self.pairer.expire(now)
            if expired:
                self.metrics.unpaired.labels(EXPIRED).inc(expired)
            self.metrics.pending.set(len(self.pairer))
            for key in list(self.windows):
                self._close_full(key, now)
                self.metrics.open_rows.labels(*key).set(len(self.windows[key]))
        clock = time.time() if now is None else now
        every = self.config.follow_every_s
        if not self.follow or every <= 0:
            return
        if self._followed_at is None:  # the versions were resolved at start: count from here
            self._followed_at = clock
            return
        if clock - self._followed_at < every:
            return
        if self._following is not None and self._following.is_alive():
            return  # the last one still waits for the registry
        self._followed_at = clock
        if self.config.background:
            self._following = threading.Thread(
                target=self.follow_versions, name="follow-versions", daemon=True
            )
            self._following.start()
        else:
            self.follow_versions()

    def follow_versions(self) -> None:
        """Re-resolve, for each followed model, the version its events without a version
        belong to (``follow``); when it moved (a promotion moved the champion alias), load that
        version's reference if the monitor has none yet, and route later events without a
        version to it. A registry that cannot be reached, or a new version without a reference,
        keeps the last version; each is logged once (and once more when it is over), not per
        event nor per try."""
        for model, resolve in list(self.follow.items()):
            current = self.default_versions.get(model)
            try:
                version = str(resolve())
            except Exception as err:
                if model not in self._follow_failing:
                    self._follow_failing.add(model)
                    log.warning(
                        "cannot re-resolve which version of %s events without a version belong "
                        "to (%s: %s); they stay on version %s until the registry names one",
                        model, type(err).__name__, err, current,
                    )  # fmt: skip
                continue
            if model in self._follow_failing:
                self._follow_failing.discard(model)
                log.info("the registry answers again: %s events without a version -> version %s",
                         model, version)  # fmt: skip
            if version == current:
                continue
            key = (model, version)
            if key not in self.references:
                try:
                    if self.reference_loader is None:
                        raise LookupError(
                            "the monitor has no reference loader (--reference mlflow)"
                        )
                    ref = self.reference_loader(model, version)
                except Exception as err:
                    if key not in self._follow_no_reference:
                        self._follow_no_reference.add(key)
                        log.warning(
                            "%s moved to version %s, which has no reference (%s: %s); events "
                            "without a version stay on version %s",
                            model, version, type(err).__name__, err, current,
                        )  # fmt: skip
                    continue
                with self._lock:
                    if self._closed:
                        return
                    if key not in self.references:
                        self._install(ref, persist=True)
            with self._lock:
                if self._closed:
                    return
                self.default_versions[model] = version
            log.info(
                "%s moved from version %s to %s: events without a version now count for %s",
                model, current, version, version,
            )  # fmt: skip

    def _close_full(self, key: tuple[str, str], now: float | None) -> None:
        window = self.windows[key]
        while window.is_full(now):
            records = window.take()
            if self._worker is not None:
                # Records of the closed window are no longer featurized ahead of time.
                closed = {id(r) for r in records}
                pending = self._unfeaturized.get(key, [])
                self._unfeaturized[key] = [r for r in pending if id(r) not in closed]
                self._jobs.put(("analyse", key, records))
            else:
                self._analyse(key, records)

    # analysis
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                kind, key, records = job
                if kind == "featurize":
                    rows = features_of([r[1] for r in records]).to_numpy(np.float32)
                    for record, row in zip(records, rows, strict=True):
                        # keeps the record alive, so its id cannot be reused while cached
                        self._features[id(record)] = (record, row)
                else:
                    self._analyse(key, records)
            except Exception:  # keep the worker alive; the error is counted and logged
                log.exception("window analysis failed")
                self.metrics.dropped.labels(job[1][0] if job else "", "analysis_error").inc()
            finally:
                self._jobs.task_done()

    def analyse_now(self, model: str, version: str) -> DriftResult:
        """Close the open window whatever its size and analyse it inline (tests, admin)."""
        self.flush()
        with self._lock:
            self._unfeaturized.pop((model, version), None)
            records = self.windows[(model, version)].records
            self.windows[(model, version)] = Window(self.config.policy)
            self.metrics.open_rows.labels(model, version).set(0)
        return self._analyse((model, version), records)

    def flush(self) -> None:
        """Wait until queued windows are analysed."""
        if self._worker is not None:
            self._jobs.join()

    def _analyse(self, key: tuple[str, str], records: list) -> DriftResult:
        ref = self.references[key]
        started = time.perf_counter()
        frame = window_frame(records, self._features)
        for record in records:
            self._features.pop(id(record), None)
        result = analyze_window(frame, ref.frame, self.config.settings)
        self.metrics.analysis_seconds.observe(time.perf_counter() - started)
        report = None
        if self.config.reports and (
            self.config.report_on == "always"
            or (self.config.report_on == "drift" and result.dataset_drift)
        ):
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            dest = f"{self.config.reports.rstrip('/')}/{key[0]}/v{key[1]}/drift-{stamp}-{time.time_ns() % 10**9}.html"
            try:
                report = save_report(build_report(frame, ref.frame, self.config.settings), dest)
            except Exception as err:  # a report that cannot be written must not lose the verdict
                log.warning(
                    "drift report of %s version %s not written to %s: %s (the window's verdict "
                    "is recorded without it)", *key, dest, err,
                )  # fmt: skip
                self.metrics.reports_failed.labels(*key).inc()
        self.state.record_result(*key, ref.sha256, result.to_dict(), report)
        self.state.drop_records(*key, len(records))
        self._export(key, result)
        if self.retrain is not None and result.enough_data:
            outcome = self.retrain.observe(*key, result)
            if outcome != "none":
                self.metrics.retrains.labels(*key, outcome).inc()
        return result

    def _export(self, key: tuple[str, str], result: DriftResult) -> None:
        m = self.metrics
        m.window_rows.labels(*key).set(result.n_rows)
        m.enough_data.labels(*key).set(int(result.enough_data))
        self.last_results[key] = result
        try:
            self._export_verdict(m, key, result)
        finally:
            # Last: a scrape that sees this window's time sees its verdict too (the canary
            # analysis counts only windows analysed since the canary's deploy).
            m.last_window.labels(*key).set(time.time())

    def _export_verdict(self, m: Any, key: tuple[str, str], result: DriftResult) -> None:
        if not result.enough_data:
            # No verdict: the gauges say NaN (alert rules and the canary analysis compare them
            # with 1 or a threshold, which NaN never meets), the run of drifted windows holds.
            m.windows.labels(*key, "not_enough_data").inc()
            m.share.labels(*key).set(math.nan)
            m.dataset_drift.labels(*key).set(math.nan)
            for column in result.settings.columns:
                m.column_drifted.labels(*key, column).set(math.nan)
                m.column_score.labels(*key, column, result.settings.method_of(column)).set(math.nan)
            return
        m.share.labels(*key).set(result.share_drifted)
        m.dataset_drift.labels(*key).set(int(result.dataset_drift))
        m.windows.labels(*key, str(result.dataset_drift).lower()).inc()
        previous = self._consecutive.get(key, 0)
        self._consecutive[key] = previous + 1 if result.dataset_drift else 0
        m.consecutive.labels(*key).set(self._consecutive[key])
        for col in result.columns:
            m.column_score.labels(*key, col.column, col.method).set(col.score)
            m.column_drifted.labels(*key, col.column).set(int(col.drifted))

    def close(self) -> None:
        with self._lock:  # a re-resolution still waiting for the registry installs nothing now
            self._closed = True
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join(timeout=30)
        self.state.close()
