"""Where the canary analysis reads its numbers: one interface, two sources.

Both read the same metric families, labelled by model ``version`` (see ``serving/metrics.py``):
``aicrush_requests_total{status}``, ``aicrush_request_duration_seconds`` (histogram) and
``aicrush_predictions_total{label}``, plus ``aicrush_rollout_mirrored_total{agree}`` from the
local proxy's mirrored requests.

- :class:`ScrapeMetricsSource` (local): scrapes ``/metrics`` endpoints and differences counters
  between scrapes. The local backend points it at its proxy, which records every request it
  forwards under those names (a crashed server cannot count its own failures; the proxy can).
- :class:`PrometheusMetricsSource` (cluster): each counter's exact increase over the window
  (:func:`counter_increase`, young series counted from zero) through the Prometheus HTTP API.
  Given the version -> Knative revision map (the Kubernetes backend reads it from the
  InferenceService status), requests, 5xx and latency come from the series Knative's
  queue-proxy exports per revision (``revision_request_count{response_code_class}``,
  ``revision_request_latencies`` in milliseconds): the queue-proxy answers 502/503 for a model
  server that crashed or hangs, which that server's own counters never see.

The drift monitor's verdict on the canary (``aicrush_drift_dataset_drift{model, version}``) is
read the same two ways: :class:`ScrapeDriftVerdict` (the monitor's ``/metrics``) and
:class:`PrometheusDriftVerdict`. Both answer None (no check) when the monitor is absent,
unreachable or has not closed a window of that version yet.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

log = logging.getLogger(__name__)

REQUESTS = "aicrush_requests_total"
#: The ``status`` values of ``REQUESTS`` that are server errors (a PromQL / Python regex, whole
#: value): REST 5xx, and gRPC ``INTERNAL`` (the model server's only gRPC server-error status;
#: ``INVALID_ARGUMENT`` and ``NOT_FOUND`` are the client's). The alert rules and the dashboard use
#: the same set.
SERVER_ERROR_STATUS = "5..|INTERNAL"
LATENCY = "aicrush_request_duration_seconds"
PREDICTIONS = "aicrush_predictions_total"
MIRRORED = "aicrush_rollout_mirrored_total"
#: Knative queue-proxy series, one per revision (https://knative.dev/docs/serving/services/service-metrics/).
REVISION_REQUESTS = "revision_request_count"
REVISION_LATENCY_MS = "revision_request_latencies"
#: The drift monitor's verdict on the last closed window of a (model, version): 1 drifted, 0 not.
DATASET_DRIFT = "aicrush_drift_dataset_drift"
#: When the monitor analysed that window (Unix seconds).
LAST_WINDOW = "aicrush_drift_last_window_timestamp_seconds"


@dataclass
class Counters:
    """Cumulative (or windowed) counters of one model version."""

    requests: float = 0.0
    errors: float = 0.0  # responses with a 5xx status
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    labels: dict[str, float] = field(default_factory=dict)
    mirrored: float = 0.0
    agreed: float = 0.0

    def minus(self, earlier: Counters) -> Counters:
        def sub(a: Mapping, b: Mapping) -> dict:
            return {k: max(0.0, v - b.get(k, 0.0)) for k, v in a.items()}

        return Counters(
            max(0.0, self.requests - earlier.requests),
            max(0.0, self.errors - earlier.errors),
            sub(self.buckets, earlier.buckets),
            sub(self.labels, earlier.labels),
            max(0.0, self.mirrored - earlier.mirrored),
            max(0.0, self.agreed - earlier.agreed),
        )

    @property
    def error_rate(self) -> float:
        """5xx share, at most 1 (counts read at different moments, or extrapolated by a source
        that uses ``increase()``, can put errors a little above requests)."""
        return min(1.0, self.errors / self.requests) if self.requests else 0.0

    def quantile(self, q: float) -> float:
        """Histogram quantile like PromQL's ``histogram_quantile`` (linear within a bucket)."""
        items = sorted(self.buckets.items())
        if not items or items[-1][1] <= 0:
            return float("nan")
        total = items[-1][1]
        rank = q * total
        prev_le, prev_count = 0.0, 0.0
        for le, count in items:
            if count >= rank:
                if math.isinf(le):
                    return prev_le  # beyond the last finite bucket: its bound, as Prometheus does
                width = count - prev_count
                return prev_le + (le - prev_le) * ((rank - prev_count) / width if width else 1.0)
            prev_le, prev_count = le, count
        return prev_le

    @property
    def agreement(self) -> float:
        return self.agreed / self.mirrored if self.mirrored else float("nan")


Snapshot = dict[str, Counters]  # version -> counters


class MetricsSource(Protocol):
    """Counters per model version accumulated between ``since`` (epoch seconds) and now."""

    def window(self, versions: Iterable[str], since: float) -> Snapshot: ...


def parse_metrics(text: str) -> Snapshot:
    """Parse Prometheus text exposition into per-version counters (series without a version are ignored)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            version = s.labels.get("version")
            if version is None:
                continue
            c = out.setdefault(version, Counters())
            if s.name == REQUESTS:
                c.requests += s.value
                if re.fullmatch(SERVER_ERROR_STATUS, str(s.labels.get("status", ""))):
                    c.errors += s.value
            elif s.name == LATENCY + "_bucket":
                le = float(s.labels["le"])
                c.buckets[le] = c.buckets.get(le, 0.0) + s.value
            elif s.name == PREDICTIONS:
                label = s.labels.get("label", "")
                c.labels[label] = c.labels.get(label, 0.0) + s.value
            elif s.name == MIRRORED:
                c.mirrored += s.value
                if s.labels.get("agree") == "true":
                    c.agreed += s.value
    return out


class ScrapeMetricsSource:
    """Scrapes ``/metrics`` URLs; a window is the difference to the last scrape at or before ``since``.

    Counters are summed over the URLs by version. Scrapes are kept (a bounded history), so a window
    starting at a step's beginning needs one scrape then: the analysis takes it when the step starts.
    """

    def __init__(self, urls: Iterable[str], timeout_s: float = 5.0, history: int = 2000):
        self.urls = list(urls)
        self.timeout_s = timeout_s
        self.history_limit = history
        self._history: list[tuple[float, Snapshot]] = []

    def scrape(self) -> Snapshot:
        total: Snapshot = {}
        for url in self.urls:
            r = httpx.get(url, timeout=self.timeout_s)
            r.raise_for_status()
            for version, c in parse_metrics(r.text).items():
                t = total.setdefault(version, Counters())
                total[version] = _add(t, c)
        return total

    def window(self, versions: Iterable[str], since: float) -> Snapshot:
        now = time.time()
        current = self.scrape()
        self._history.append((now, current))
        del self._history[: -self.history_limit]
        # The last scrape at or before `since`; without one, the earliest after it (the step's baseline).
        before = [snap for t, snap in self._history if t <= since]
        base = before[-1] if before else self._history[0][1]
        return {v: current.get(v, Counters()).minus(base.get(v, Counters())) for v in versions}


def _add(a: Counters, b: Counters) -> Counters:
    def add(x: Mapping, y: Mapping) -> dict:
        return {k: x.get(k, 0.0) + y.get(k, 0.0) for k in set(x) | set(y)}

    return Counters(
        a.requests + b.requests,
        a.errors + b.errors,
        add(a.buckets, b.buckets),
        add(a.labels, b.labels),
        a.mirrored + b.mirrored,
        a.agreed + b.agreed,
    )


#: How far back (seconds) a step looks for a series' previous value: a series absent for longer
#: (no scrape succeeded meanwhile) counts again from zero. Prometheus' default lookback delta.
COUNTER_LOOKBACK_S = 300


def counter_increase(series: str, by: str, range_s: int, step_s: int) -> str:
    """PromQL for the exact increase of the counter ``series`` (a selector) over the last
    ``range_s`` seconds, summed by the labels ``by`` (e.g. ``"version, le"``).

    The rule is Prometheus' own counter semantics applied step by step, with one difference: a
    series that had no value before counts from zero. At each step (every ``step_s`` seconds
    of the subquery) a series adds its growth since its last value before the step (within
    :data:`COUNTER_LOOKBACK_S`, so a failed scrape, whose staleness markers hide a series for a
    moment, does not count it twice); a series whose value dropped (a reset: its process
    restarted) or that had no value in the lookback (born in the window) adds its whole value.
    ``sum_over_time`` adds the steps up; nothing is extrapolated, so the result is a whole
    number of events.

    Why not ``increase(series[range])``: it reads a series from its first sample on, and a
    labelled series (``status="500"``, ``response_code_class="5xx"``) is born at its first
    increment, so its first scrape already shows 1 and those events are never counted
    (prometheus/prometheus#1673, #17824: "working as designed"); it also extrapolates to the
    window's edges (5 events read as 6.25). Prometheus >= 2.50 can ingest a zero sample at each
    series' created timestamp (``--enable-feature=created-timestamp-zero-ingestion``, with a
    scrape protocol that carries it) and then ``increase()`` sees the first events too; this
    query needs no such setting.

    Exact when ``step_s`` is at most the scrape interval: with longer steps, growth inside one
    step just before a reset is lost. The subquery evaluates ``range_s / step_s`` steps.
    """
    # Both sides look back as far: with the bare selector, Prometheus' own lookback (5 minutes
    # by default, --query.lookback-delta) would decide how long a series without a staleness
    # marker still has a current value, and a longer one than ours counted it whole every step.
    current = f"last_over_time({series}[{COUNTER_LOOKBACK_S}s])"
    previous = f"last_over_time({series}[{COUNTER_LOOKBACK_S}s] offset {step_s}s)"
    growth = f"({current} - {previous}) >= 0"
    per_step = f"sum by ({by}) (({growth}) or {current})"
    return f"sum_over_time(({per_step})[{range_s}s:{step_s}s])"


class PrometheusMetricsSource:
    """The Prometheus HTTP API (``/api/v1/query``): the exact increase of each family over the
    window (:func:`counter_increase`), young series counted from zero."""

    def __init__(
        self,
        base_url: str,
        selector: str = "",
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        revisions: Callable[[], Mapping[str, str]] | None = None,
        step_s: int = 1,
    ):
        """``revisions``: returns version -> Knative revision name; with it, requests, errors and
        latency come from the queue-proxy's per-revision series instead of the model servers'.
        ``step_s``: the step of the counting subquery, at most Prometheus' scrape interval for
        exact counts (1 s suits any interval; a 600 s window is then 600 steps)."""
        if step_s < 1:
            raise ValueError(f"step_s must be a whole number of seconds >= 1, got {step_s}")
        self.base_url = base_url.rstrip("/")
        self.selector = selector  # e.g. 'namespace="aicrush"'; ANDed into every query
        self.timeout_s = timeout_s
        self.client = client or httpx.Client(timeout=timeout_s)
        self.revisions = revisions
        self.step_s = step_s

    def queries(self, versions: list[str], range_s: int) -> dict[str, str]:
        sel = f'version=~"{"|".join(versions)}"' + (f",{self.selector}" if self.selector else "")

        def inc(series: str, by: str) -> str:
            return counter_increase(series, by, range_s, self.step_s)

        return {
            "requests": inc(f"{REQUESTS}{{{sel}}}", "version"),
            "errors": inc(f'{REQUESTS}{{{sel},status=~"{SERVER_ERROR_STATUS}"}}', "version"),
            "buckets": inc(f"{LATENCY}_bucket{{{sel}}}", "version, le"),
            "labels": inc(f"{PREDICTIONS}{{{sel}}}", "version, label"),
        }

    def revision_queries(self, revisions: list[str], range_s: int) -> dict[str, str]:
        sel = f'revision_name=~"{"|".join(revisions)}"' + (
            f",{self.selector}" if self.selector else ""
        )

        def inc(series: str, by: str) -> str:
            return counter_increase(series, by, range_s, self.step_s)

        return {
            "requests": inc(f"{REVISION_REQUESTS}{{{sel}}}", "revision_name"),
            "errors": inc(
                f'{REVISION_REQUESTS}{{{sel},response_code_class="5xx"}}', "revision_name"
            ),
            "buckets": inc(f"{REVISION_LATENCY_MS}_bucket{{{sel}}}", "revision_name, le"),
        }

    def _query(self, promql: str, at: float | None = None) -> list[dict]:
        """Rows of an instant query, evaluated at ``at`` (epoch seconds; Prometheus' now if None)."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        r = self.client.get(f"{self.base_url}/api/v1/query", params=params)
        r.raise_for_status()
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(
                f"Prometheus query failed: {body.get('error', body)} (query: {promql})"
            )
        return list(body["data"]["result"])

    def window(self, versions: Iterable[str], since: float) -> Snapshot:
        """Counts from ``since`` to the last whole step (at most ``step_s`` ago), the window
        rounded out to whole steps: the subquery's steps fall on multiples of ``step_s``, so the
        queries are evaluated at one, and all at the same one."""
        versions = [str(v) for v in versions]
        step = self.step_s
        at = math.floor(time.time() / step) * step
        range_s = step * max(1, math.ceil((at - since) / step))
        out: Snapshot = {v: Counters() for v in versions}
        queries = self.queries(versions, range_s)
        if self.revisions is not None:
            revision_of = {v: r for v, r in self.revisions().items() if v in out}
            missing = [v for v in versions if v not in revision_of]
            if missing:
                raise RuntimeError(
                    f"no Knative revision serves version(s) {', '.join(missing)} yet "
                    "(InferenceService status.components.predictor)"
                )
            version_of = {r: v for v, r in revision_of.items()}
            queries = {"labels": queries["labels"]}
            # Knative's revision series: latency buckets in milliseconds, the thresholds' unit is s.
            self._fill(
                out,
                self.revision_queries(list(version_of), range_s),
                lambda labels: version_of.get(labels.get("revision_name", ""), ""),
                at,
                bucket_scale=1 / 1000.0,
            )
        self._fill(out, queries, lambda labels: labels.get("version", ""), at)
        return out

    def _fill(
        self,
        out: Snapshot,
        queries: dict[str, str],
        version_of: Callable[[dict[str, str]], str],
        at: float,
        bucket_scale: float = 1.0,
    ) -> None:
        """Run ``queries`` (kind -> PromQL) at ``at`` and add each row to its version's Counters."""
        for kind, promql in queries.items():
            for row in self._query(promql, at):
                labels, value = row["metric"], float(row["value"][1])
                c = out.get(version_of(labels))
                if c is None or math.isnan(value):
                    continue
                if kind == "requests":
                    c.requests = value
                elif kind == "errors":
                    c.errors = value
                elif kind == "buckets":
                    c.buckets[float(labels["le"]) * bucket_scale] = value
                else:
                    c.labels[labels.get("label", "")] = value


class ScrapeDriftVerdict:
    """Drift verdict of a version from the drift monitor's ``/metrics`` (local backend)."""

    def __init__(self, metrics_url: str, model: str, timeout_s: float = 5.0):
        self.metrics_url = metrics_url
        self.model = model
        self.timeout_s = timeout_s

    def __call__(self, version: str, since: float | None = None) -> bool | None:
        """The verdict of ``version``'s last window, None without one analysed at or after
        ``since`` (epoch seconds; None: any), without enough data, or with the monitor down."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            r = httpx.get(self.metrics_url, timeout=self.timeout_s)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("drift monitor %s unreachable (%s): no drift check", self.metrics_url, exc)
            return None
        drift, analysed = math.nan, None
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if s.labels.get("model") != self.model or s.labels.get("version") != str(version):
                    continue
                if s.name == DATASET_DRIFT:
                    drift = s.value
                elif s.name == LAST_WINDOW:
                    analysed = s.value
        return _verdict(drift, analysed, since)


def _verdict(drift: float, analysed: float | None, since: float | None) -> bool | None:
    """NaN (the window had too little data to judge), no window, or one analysed before
    ``since``: no verdict."""
    if math.isnan(drift) or (since is not None and (analysed is None or analysed < since)):
        return None
    return drift >= 1.0


class PrometheusDriftVerdict:
    """Drift verdict of a version through the Prometheus HTTP API (Kubernetes backend)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        selector: str = "",
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ):
        # The same client, selector and query call as the canary's other metrics.
        self.prometheus = PrometheusMetricsSource(base_url, selector, timeout_s, client)
        self.model = model

    def query(self, version: str, family: str = DATASET_DRIFT) -> str:
        selector = self.prometheus.selector
        sel = f'model="{self.model}",version="{version}"' + (f",{selector}" if selector else "")
        return f"max({family}{{{sel}}})"

    def __call__(self, version: str, since: float | None = None) -> bool | None:
        """As :meth:`ScrapeDriftVerdict.__call__`, through Prometheus."""
        try:
            rows = self.prometheus._query(self.query(str(version)))
            stamps = (
                self.prometheus._query(self.query(str(version), LAST_WINDOW))
                if since is not None and rows
                else []
            )
        except (httpx.HTTPError, ValueError, RuntimeError) as exc:
            log.warning(
                "Prometheus %s: drift query failed (%s): no drift check",
                self.prometheus.base_url,
                exc,
            )
            return None
        if not rows:
            return None
        analysed = float(stamps[0]["value"][1]) if stamps else None
        return _verdict(float(rows[0]["value"][1]), analysed, since)
