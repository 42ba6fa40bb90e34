"""Pure logic: config validation, the analysis checks, metric parsing, the state machine's loop,
the Prometheus source (mocked HTTP), the compiled rollout pipeline and the CLI commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from aicrush.rollout_config import RolloutConfig, ThresholdsConfig
from serving.rollout.analysis import judge, label_distance
from serving.rollout.machine import Rollout, RolloutError
from serving.rollout.metrics_source import (
    Counters,
    PrometheusMetricsSource,
    ScrapeMetricsSource,
    parse_metrics,
)
from tests.rollout.fakes import MemoryRegistry
from tests.rollout.test_registry import RecordingBackend

# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": [10, 50]}, "must end at 100"),
        ({"steps": [50, 10, 100]}, "strictly increasing"),
        ({"steps": [0, 100]}, "percentages in 1..100"),
        ({"interval_s": 1, "poll_s": 5}, "poll_s must not exceed"),
        ({"interval_s": 900}, r"max_step_wait_s \(600\) must be at least rollout.interval_s"),
        ({"thresholds": {"max_error_rate": 2}}, "less than or equal to 1"),
        ({"thresholds": {"max_eror_rate": 0.1}}, "Extra inputs are not permitted"),
        ({"stepz": [100]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_rollout_configs_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutConfig.model_validate(data)


def test_default_rollout_config() -> None:
    cfg = RolloutConfig()
    assert cfg.steps == (10, 25, 50, 100) and cfg.thresholds.max_error_rate == 0.01
    assert cfg.monitor_url() == "http://aicrush-drift-monitor.aicrush.svc.cluster.local/"


def test_config_file_rollout_section_is_validated(tmp_path: Path) -> None:
    from aicrush.config import ConfigError
    from serving.rollout.cli import load_configs

    good = tmp_path / "good.yaml"
    good.write_text("rollout:\n  steps: [20, 100]\n  thresholds: {max_error_rate: 0.05}\n")
    cfg, rollout_cfg = load_configs(good)
    assert rollout_cfg.steps == (20, 100) and cfg.registry.model_name == "aicrush-code-language"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  steps: [20, 100]\n  intervall_s: 3\n")
    with pytest.raises(ConfigError, match=r"rollout\.intervall_s: unknown key"):
        load_configs(bad)


def test_rollout_commands_read_the_config_file_as_aicrush_run_does(tmp_path: Path) -> None:
    """deploy/status/... read it with yaml.safe_load: a key given twice kept the later value
    silently, a Latin-1 file printed a bare codec error, a folder said 'not found'."""
    from typer.testing import CliRunner

    from aicrush.config import ConfigError
    from pipelines.cli import app
    from serving.rollout.cli import load_configs

    twice = tmp_path / "twice.yaml"
    twice.write_text("rollout:\n  steps: [20, 100]\n  steps: [50, 100]\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# café\nrollout:\n  steps: [20, 100]\n".encode("latin-1"))
    for path, said in (
        (twice, r"rollout\.steps.*(line 2|lines 2).*3|given twice|twice"),
        (latin, r"not UTF-8 text \(byte 0xe9 on line 1\)"),
        (tmp_path, r"is a folder"),
    ):
        with pytest.raises(ConfigError, match=said):
            load_configs(path)
    result = CliRunner().invoke(app, ["status", "--config", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output, result.output


# ---------------------------------------------------------------------------- analysis


def _counters(
    requests: float, errors: float = 0, latency_s: float = 0.01, labels: dict | None = None
) -> Counters:
    buckets = {0.005: 0.0, 0.01: 0.0, 0.05: 0.0, 0.5: 0.0, 1.0: 0.0, 2.5: 0.0, float("inf"): 0.0}
    for le in buckets:
        buckets[le] = requests if latency_s <= le else 0.0
    return Counters(requests, errors, buckets, labels or {"Python": requests})


def test_judge_passes_fails_and_waits() -> None:
    t = ThresholdsConfig(min_requests=20, min_latency_samples=20)
    assert judge(_counters(100), _counters(5), t).outcome == "wait"
    assert judge(_counters(100), _counters(50), t).outcome == "pass"
    v = judge(_counters(100), _counters(50, errors=1), t)  # 2 % > 1 %
    assert v.outcome == "fail" and "error_rate" in v.reason
    assert (
        judge(_counters(100), _counters(6, errors=6), t).outcome == "fail"
    )  # errors are evidence early
    v = judge(_counters(100, latency_s=0.01), _counters(50, latency_s=2.0), t)
    assert v.outcome == "fail" and "p99_latency_s" in v.reason
    strict = ThresholdsConfig(min_requests=20, min_latency_samples=20, max_label_distance=0.3)
    v = judge(_counters(100, labels={"Python": 100}), _counters(50, labels={"C": 50}), strict)
    assert v.outcome == "fail" and "label_distance" in v.reason
    drift = judge(_counters(100), _counters(50), t, canary_version="2", drift=lambda v, since: True)
    assert drift.outcome == "fail" and "last closed window of version 2 drifted" in drift.reason


def test_one_slow_request_of_a_handful_does_not_decide_the_latency_checks() -> None:
    """A newcomer's two equally good models: 14 canary requests, one of them slow (a cold
    start), made the p99 the slowest request and failed the ratio check (22.9 vs 9.8 ms).
    Below min_latency_samples the checks use the second-slowest request: one slow request does
    not fail a canary, a canary slow throughout still does, and a ratio without stable requests
    is listed as not measured."""
    t = ThresholdsConfig(min_requests=10)
    canary = _counters(13, latency_s=0.01)
    canary.requests = 14
    canary.buckets = {k: v + (1 if k >= 0.05 else 0) for k, v in canary.buckets.items()}
    v = judge(_counters(500, latency_s=0.01), canary, t)
    assert v.outcome == "pass", v.reason
    [p99] = [c for c in v.checks if c.name == "p99_latency_s"]
    assert p99.value <= 0.01 and "p86 (fewer than 100 requests) over 14" in p99.detail
    slow = judge(_counters(500, latency_s=0.01), _counters(99, latency_s=2.0), t)
    assert slow.outcome == "fail" and "p99_latency_s" in slow.reason
    many = judge(_counters(500, latency_s=0.01), _counters(150, latency_s=0.05), t)
    assert many.outcome == "fail" and "p99_latency_ratio" in many.reason
    no_stable = judge(_counters(0), _counters(150, latency_s=0.01), t)
    assert any(m.startswith("p99_latency_ratio: 0 stable requests") for m in no_stable.not_measured)


def test_few_requests_fail_only_on_errors_that_break_the_budget() -> None:
    """Below min_requests a window waits, except for 5+ errors that already break the error
    budget: 5 errors in 600 requests (0.8 %) are within a 1 % budget and must not pass the canary
    on 600 of the 1,000 requests asked for."""
    t = ThresholdsConfig(min_requests=1000, max_error_rate=0.01)
    within = judge(_counters(5000), _counters(600, errors=5), t)
    assert within.outcome == "wait" and "need 1000 to judge" in within.reason
    assert judge(_counters(5000), _counters(600, errors=4), t).outcome == "wait"
    beyond = judge(_counters(5000), _counters(100, errors=5), t)  # 5 %
    assert beyond.outcome == "fail" and "error_rate" in beyond.reason
    assert [c.name for c in beyond.checks] == ["error_rate"]
    assert judge(_counters(5000), _counters(1000, errors=5), t).outcome == "pass"


def test_label_distance_and_quantile() -> None:
    assert label_distance({"a": 1, "b": 1}, {"a": 2, "b": 2}) == 0
    assert label_distance({"a": 1}, {"b": 1}) == 1
    c = Counters(100, 0, {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0})
    assert c.quantile(0.5) == pytest.approx(0.1) and c.quantile(0.99) == pytest.approx(0.198)


def test_parse_metrics_by_version() -> None:
    text = """# TYPE aicrush_requests_total counter
aicrush_requests_total{model="m",version="1",protocol="v1",status="200"} 90
aicrush_requests_total{model="m",version="1",protocol="v1",status="500"} 10
aicrush_requests_total{model="m",version="2",protocol="v2",status="200"} 5
# TYPE aicrush_request_duration_seconds histogram
aicrush_request_duration_seconds_bucket{model="m",version="1",protocol="v1",le="0.1"} 80
aicrush_request_duration_seconds_bucket{model="m",version="1",protocol="v1",le="+Inf"} 100
aicrush_request_duration_seconds_count{model="m",version="1",protocol="v1"} 100
aicrush_request_duration_seconds_sum{model="m",version="1",protocol="v1"} 4
# TYPE aicrush_predictions_total counter
aicrush_predictions_total{model="m",version="2",label="C"} 5
# TYPE aicrush_rollout_mirrored_total counter
aicrush_rollout_mirrored_total{model="m",version="2",agree="true"} 3
aicrush_rollout_mirrored_total{model="m",version="2",agree="false"} 1
"""
    snap = parse_metrics(text)
    assert snap["1"].requests == 100 and snap["1"].errors == 10 and snap["1"].buckets[0.1] == 80
    assert snap["2"].labels == {"C": 5} and snap["2"].agreement == 0.75


def test_prometheus_source_queries_and_parses() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        seen.append(q)
        if "status=~" in q:
            result = [{"metric": {"version": "2"}, "value": [0, "3"]}]
        elif "_bucket" in q:
            result = [
                {"metric": {"version": "2", "le": le}, "value": [0, n]}
                for le, n in (("0.1", "90"), ("+Inf", "100"))
            ]
        elif PREDICTIONS in q:
            result = [{"metric": {"version": "1", "label": "Python"}, "value": [0, "7"]}]
        else:
            result = [
                {"metric": {"version": v}, "value": [0, n]} for v, n in (("1", "900"), ("2", "100"))
            ]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    from serving.rollout.metrics_source import PREDICTIONS

    src = PrometheusMetricsSource(
        "http://prom:9090", client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    import time

    w = src.window(["1", "2"], since=time.time() - 60)
    assert w["2"].requests == 100 and w["2"].errors == 3 and w["2"].buckets[float("inf")] == 100
    assert w["1"].labels == {"Python": 7}
    assert len(seen) == 4 and all(
        'version=~"1|2"' in q and ("[60s:1s]" in q or "[61s:1s]" in q) for q in seen
    )


def test_logger_url_names_the_revision_version() -> None:
    from serving.rollout.kubernetes import logger_url

    assert logger_url("http://m.ns.svc/", "7") == "http://m.ns.svc/?modelversion=7"
    assert logger_url("http://m.ns.svc", "7") == "http://m.ns.svc/?modelversion=7"
    assert logger_url("http://m/ingest?a=1", "7") == "http://m/ingest?a=1&modelversion=7"


def test_drift_verdicts_without_a_monitor_give_no_check() -> None:
    from serving.rollout.metrics_source import PrometheusDriftVerdict, ScrapeDriftVerdict

    assert ScrapeDriftVerdict("http://127.0.0.1:1/metrics", "m", timeout_s=0.5)("1") is None
    assert PrometheusDriftVerdict("http://127.0.0.1:1", "m", timeout_s=0.5)("1") is None
    query = PrometheusDriftVerdict("http://p", "m", selector='namespace="ml"').query("3")
    assert query == 'max(aicrush_drift_dataset_drift{model="m",version="3",namespace="ml"})'


def test_open_rollout_wires_the_drift_gate(tmp_path: Path) -> None:
    from aicrush.config import build_config
    from serving.rollout import open_rollout
    from serving.rollout.metrics_source import ScrapeDriftVerdict

    cfg = build_config()
    with_monitor = RolloutConfig(drift_monitor_url="http://127.0.0.1:9/")
    r = open_rollout("local", cfg, with_monitor, tmp_path)
    assert isinstance(r.drift, ScrapeDriftVerdict)
    assert r.drift.metrics_url == "http://127.0.0.1:9/metrics" and r.backend.log_to.endswith(":9/")
    assert open_rollout("local", cfg, RolloutConfig(), tmp_path).drift is None  # no monitor
    off = RolloutConfig(drift_monitor_url="http://127.0.0.1:9/", drift_gate=False)
    assert open_rollout("local", cfg, off, tmp_path).drift is None


# ---------------------------------------------------------------------------- the machine's loop


class ScriptedSource:
    """Counters growing per poll: the canary takes ``share`` of 100 requests per poll, with ``error_rate``."""

    def __init__(self, error_rate: float = 0.0, per_poll: int = 50):
        self.error_rate, self.per_poll, self.n = error_rate, per_poll, 0

    def window(self, versions, since):
        self.n += 1
        stable, canary = list(versions)
        k = self.n * self.per_poll
        return {stable: _counters(k), canary: _counters(k, errors=k * self.error_rate)}


def _machine(
    tmp_path: Path, source: ScriptedSource, **cfg
) -> tuple[Rollout, MemoryRegistry, RecordingBackend]:
    backend = RecordingBackend()
    backend.metrics_source = lambda: source  # type: ignore[method-assign]
    registry = MemoryRegistry({"1": "/m1", "2": "/m2"}, champion_version="1", challenger="2")
    config = RolloutConfig(interval_s=0.05, poll_s=0.01, **cfg)
    return (
        Rollout(backend, registry, config, tmp_path / "s.json", sleep=lambda s: None),
        registry,
        backend,
    )


def test_analysis_steps_up_and_promotes(tmp_path: Path) -> None:
    rollout, registry, backend = _machine(tmp_path, ScriptedSource())
    rollout.deploy()
    assert rollout.status()["challenger"] == "2"
    st = rollout.analyze()
    assert st.phase == "promoted" and registry.champion_version == "2"
    assert [c for c in backend.calls if c[0] == "traffic"] == [
        ("traffic", 25),
        ("traffic", 50),
        ("traffic", 100),
    ]
    assert backend.calls[-1] == ("promote",)


def test_analysis_rolls_back_on_errors_and_holds_without_autopromote(tmp_path: Path) -> None:
    rollout, registry, backend = _machine(tmp_path, ScriptedSource(error_rate=0.05))
    rollout.deploy()
    st = rollout.analyze()
    assert st.phase == "rolled_back" and registry.champion_version == "1"
    assert backend.calls[-1] == ("rollback",) and "error_rate" in st.history[-1]["reason"]
    assert rollout.status()["last_analysis"]["outcome"] == "fail"

    rollout2, _, backend2 = _machine(tmp_path / "b", ScriptedSource())
    rollout2.deploy()
    st = rollout2.analyze(auto_promote=False)
    assert st.phase == "canary" and st.percent == 100 and backend2.calls[-1] == ("traffic", 100)


def test_drifted_canary_is_rolled_back_and_no_verdict_does_not_block(tmp_path: Path) -> None:
    rollout, registry, backend = _machine(tmp_path, ScriptedSource())
    asked: list[str] = []
    rollout.drift = lambda version, since: (
        asked.append(version) or True
    )  # the monitor says: drifted
    rollout.deploy()
    st = rollout.analyze()
    assert st.phase == "rolled_back" and registry.champion_version == "1"
    assert backend.calls[-1] == ("rollback",) and "drift" in st.history[-1]["reason"]
    assert set(asked) == {"2"}  # only the canary is judged

    rollout2, registry2, _ = _machine(tmp_path / "b", ScriptedSource())
    rollout2.drift = lambda version, since: None  # monitor present, no closed window yet
    rollout2.deploy()
    assert rollout2.analyze().phase == "promoted" and registry2.champion_version == "2"


def test_no_traffic_rolls_back_after_max_wait(tmp_path: Path) -> None:
    rollout, _, _ = _machine(tmp_path, ScriptedSource(per_poll=0), max_step_wait_s=0.2)
    rollout.deploy()
    st = rollout.analyze()
    assert st.phase == "rolled_back" and "need 20 to judge" in st.history[-1]["reason"]
    with pytest.raises(RolloutError, match="no canary in progress"):
        rollout.rollback()


class FailingSource:
    """Every read fails, as with Prometheus down (or, before the baseline, ``fail_first`` reads)."""

    def __init__(self, fail_first: int | None = None, then: ScriptedSource | None = None):
        self.reads, self.fail_first, self.then = 0, fail_first, then

    def window(self, versions, since):
        self.reads += 1
        if self.fail_first is None or self.reads <= self.fail_first:
            raise httpx.ConnectError("connection refused")
        assert self.then is not None
        return self.then.window(versions, since)


def test_unreadable_metrics_end_the_step_at_max_wait(tmp_path: Path) -> None:
    """Reads that keep failing do not loop forever: the step ends at max_step_wait_s and rolls
    back (or holds, as configured) with the reason; a failed baseline read is not a crash."""
    source = FailingSource()
    rollout, registry, backend = _machine(tmp_path, source, max_step_wait_s=0.2)  # type: ignore[arg-type]
    rollout.deploy()
    st = rollout.analyze()
    assert st.phase == "rolled_back" and registry.champion_version == "1"
    assert "metrics unreadable (connection refused)" in st.history[-1]["reason"]
    assert backend.calls[-1] == ("rollback",)

    held, _, backend2 = _machine(
        tmp_path / "hold", FailingSource(), max_step_wait_s=0.2, on_insufficient_traffic="hold"
    )  # type: ignore[arg-type]
    held.deploy()
    with pytest.raises(RolloutError, match=r"metrics unreadable.*the canary holds its traffic"):
        held.analyze()
    assert held.status()["phase"] == "canary" and backend2.calls[-1][0] == "deploy"

    # The baseline read (and the next) fail, then reads work: the analysis goes on to promote.
    flaky, registry3, _ = _machine(tmp_path / "flaky", FailingSource(2, ScriptedSource()))  # type: ignore[arg-type]
    flaky.deploy()
    assert flaky.analyze().phase == "promoted" and registry3.champion_version == "2"


def test_scrape_drift_verdict_reads_nan_as_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor exports NaN for a window with too little data: that is no verdict, not 'no
    drift' (NaN >= 1 is False)."""
    from serving.rollout import metrics_source
    from serving.rollout.metrics_source import ScrapeDriftVerdict

    text = (
        'aicrush_drift_dataset_drift{model="m",version="2"} NaN\n'
        'aicrush_drift_dataset_drift{model="m",version="3"} 1.0\n'
        'aicrush_drift_dataset_drift{model="m",version="4"} 0.0\n'
    )
    monkeypatch.setattr(
        metrics_source.httpx,
        "get",
        lambda url, timeout: httpx.Response(200, text=text, request=httpx.Request("GET", url)),
    )
    verdict = ScrapeDriftVerdict("http://monitor/metrics", "m")
    assert verdict("2") is None and verdict("3") is True and verdict("4") is False
    assert verdict("5") is None


def test_a_drift_verdict_from_before_the_deploy_is_no_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Newcomer trial: v1's last window had drifted; v1 deployed again as a canary was rolled
    back 6 s later on that old window while its own traffic sat in the open one (and a drifting
    canary could pass on an old 'no drift'). Only a window analysed since the deploy counts,
    read from the monitor's /metrics (local) and through Prometheus (cluster)."""
    from serving.rollout import metrics_source
    from serving.rollout.metrics_source import PrometheusDriftVerdict, ScrapeDriftVerdict

    text = (
        'aicrush_drift_dataset_drift{model="m",version="1"} 1.0\n'
        'aicrush_drift_last_window_timestamp_seconds{model="m",version="1"} 1000.0\n'
    )
    monkeypatch.setattr(
        metrics_source.httpx,
        "get",
        lambda url, timeout: httpx.Response(200, text=text, request=httpx.Request("GET", url)),
    )
    scrape = ScrapeDriftVerdict("http://monitor/metrics", "m")
    assert scrape("1") is True and scrape("1", 900.0) is True and scrape("1", 1100.0) is None

    def prometheus(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        value = "1000" if "last_window_timestamp" in q else "1"
        row = {"metric": {}, "value": [0, value]}
        body = {"status": "success", "data": {"resultType": "vector", "result": [row]}}
        return httpx.Response(200, json=body)

    client = httpx.Client(transport=httpx.MockTransport(prometheus))
    via_prometheus = PrometheusDriftVerdict("http://p", "m", client=client)
    assert via_prometheus("1", 900.0) is True and via_prometheus("1", 1100.0) is None

    # The analysis asks with the canary's deploy time.
    rollout, registry, _ = _machine(tmp_path, ScriptedSource())
    asked: list[float | None] = []
    rollout.drift = lambda version, since: asked.append(since) or None
    st = rollout.deploy()
    rollout.analyze()
    assert asked and set(asked) == {st.deployed_at} and st.deployed_at is not None
    assert registry.champion_version == "2"


class FlakyRegistry(MemoryRegistry):
    """The registry side of a promotion fails once (an MLflow error), after the backend moved."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.fail_promotions = 1

    def record_promotion(self, version: str, previous: str | None) -> None:
        if self.fail_promotions:
            self.fail_promotions -= 1
            raise RuntimeError("MLflow: 503 Service Unavailable")
        super().record_promotion(version, previous)


def test_a_promotion_the_registry_missed_is_finished_not_reverted(tmp_path: Path) -> None:
    """promote moved traffic, then the alias update failed: the alias must follow what serves.
    A retried promote records it (it answered 'no canary in progress'), and a deploy before
    that records it too instead of turning serving back to the old champion."""
    for then in ("promote", "deploy"):
        backend = RecordingBackend()
        registry = FlakyRegistry(
            {"1": "/m1", "2": "/m2", "3": "/m3"}, champion_version="1", challenger="2"
        )
        rollout = Rollout(
            backend, registry, RolloutConfig(), tmp_path / then / "s.json", sleep=lambda s: None
        )
        rollout.deploy("2", percent=10)
        with pytest.raises(RolloutError, match=r"version 2 serves all the traffic.*503.*again"):
            rollout.promote()
        assert backend.calls[-1] == ("promote",) and registry.champion_version == "1"
        assert rollout.status()["stable"] == "2"  # the backend serves version 2
        if then == "promote":
            st = rollout.promote()
            assert st.phase == "promoted" and st.stable == "2"
        else:
            rollout.deploy("3", percent=10)
            assert backend.calls[-1] == ("deploy", "2", "3", 10)  # not ("deploy", "1", ...)
        assert registry.champion_version == "2"
        assert ("promote", "2", "1") in registry.events
        assert backend.calls.count(("promote",)) == 1


def test_traffic_and_rollback_tags_are_bookkeeping_not_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend moved and the state says so: an MLflow error in the traffic or rollback tags
    after it is a warning, not a failed step that leaves the canary unwatched."""

    class TagsDown(MemoryRegistry):
        def record_traffic(self, version: str, percent: int, outcome: str) -> None:
            raise RuntimeError("MLflow: 503")

        def record_rollback(self, version: str, reason: str) -> None:
            raise RuntimeError("MLflow: 503")

    backend = RecordingBackend()
    registry = TagsDown({"1": "/m1", "2": "/m2"}, champion_version="1", challenger="2")
    rollout = Rollout(backend, registry, RolloutConfig(), tmp_path / "s.json")
    with caplog.at_level("WARNING"):
        rollout.deploy("2", percent=10)
        rollout.set_traffic(25)
        st = rollout.rollback(reason="test")
    assert st.phase == "rolled_back" and backend.calls[-1] == ("rollback",)
    assert sum("failed: MLflow: 503" in r.getMessage() for r in caplog.records) == 3


def test_a_rollback_the_state_missed_is_recorded_by_a_retry(tmp_path: Path) -> None:
    """The backend rolled back, then the step was killed before it recorded it (Kubernetes:
    phase rolled_back read from the annotations, no rollback event, no registry tag). A retry of
    rollback records it instead of answering 'no canary in progress'."""
    rollout, registry, backend = _machine(tmp_path, ScriptedSource())
    rollout.deploy()
    st = rollout.store.load()
    st.phase, st.canary, st.percent = "rolled_back", None, 0  # what the backend now shows
    rollout.store.save(st)
    st = rollout.rollback(reason="retried")
    assert st.history[-1]["event"] == "rollback" and st.history[-1]["version"] == "2"
    assert registry.events[-1] == ("rollback", "2", "retried")
    assert backend.calls.count(("rollback",)) == 0  # the backend was not asked again
    with pytest.raises(RolloutError, match="no canary in progress"):
        rollout.rollback()  # recorded now: nothing left to finish


def test_scrape_source_windows_from_step_start(tmp_path: Path) -> None:
    texts = iter(
        [f'aicrush_requests_total{{version="1",status="200"}} {n}\n' for n in (10, 30, 70)]
    )
    src = ScrapeMetricsSource(["http://x/metrics"])
    src.scrape = lambda: parse_metrics(next(texts))  # type: ignore[method-assign]
    import time

    t0 = time.time()
    assert src.window(["1"], since=t0)["1"].requests == 0  # the step's baseline
    assert src.window(["1"], since=t0)["1"].requests == 20
    assert src.window(["1"], since=t0)["1"].requests == 60


# ---------------------------------------------------------------------------- pipeline and CLI


def test_rollout_pipeline_compiles(tmp_path: Path) -> None:
    import yaml
    from kfp import compiler

    from components import PIPELINE_IMAGE
    from pipelines.rollout import rollout_pipeline

    out = tmp_path / "rollout.yaml"
    compiler.Compiler().compile(rollout_pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    root = spec["root"]["dag"]["tasks"]
    # The steps run inside an exit handler; its exit task runs whether they pass or not.
    assert set(root) == {"exit-handler-1", "finish-rollout"}
    finish = root["finish-rollout"]
    assert finish["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert finish["dependentTasks"] == ["exit-handler-1"]
    assert spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"] == {
        "producerSubtask": "finish-rollout",
        "outputParameterKey": "champion_version",
    }
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert set(tasks) == {"deploy-canary", "analyze-canary", "promote-or-rollback"}
    # The exit task acts only on the rollout the run's deploy step records as its own.
    run_id = {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert tasks["deploy-canary"]["inputs"]["parameters"]["run_id"] == run_id
    assert finish["inputs"]["parameters"]["run_id"] == run_id
    # Both later steps act on the canary this run's deploy made, not on whichever is there.
    for name in ("analyze-canary", "promote-or-rollback"):
        source = tasks[name]["inputs"]["parameters"]["canary_version"]["taskOutputParameter"]
        assert source == {"producerTask": "deploy-canary", "outputParameterKey": "canary_version"}
    # A killed analysis pod starts again (from the canary's current step), not a stuck canary.
    assert tasks["analyze-canary"]["retryPolicy"]["maxRetryCount"] == 2
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {PIPELINE_IMAGE}
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "config",
        "state_dir",
        "backend",
        "model_version",
        "canary_percent",
    }


def test_a_held_canary_is_a_decision_the_last_step_leaves_alone(
    tmp_path: Path, monkeypatch
) -> None:
    """on_insufficient_traffic: hold ended the pipeline run with a failed analysis step; it is
    the decision "held" now, and promote_or_rollback leaves the canary where it is (it rolled
    back anything that was not "promote")."""
    import components.analyze_canary as analyze_mod
    import components.promote_or_rollback as final_mod
    import serving.rollout as rollout_pkg

    rollout, registry, backend = _machine(
        tmp_path, ScriptedSource(per_poll=0), max_step_wait_s=0.2, on_insufficient_traffic="hold"
    )
    rollout.deploy()
    monkeypatch.setattr(rollout_pkg, "open_rollout", lambda *a, **k: rollout)
    monkeypatch.setattr("serving.rollout.cli.configs_from_dict", lambda config: (None, rollout.cfg))

    class Metrics:
        def __init__(self) -> None:
            self.metadata: dict = {}

        def log_metric(self, name: str, value: float) -> None:
            self.metadata[name] = value

    analysis = Metrics()
    decision = analyze_mod.run_analyze_canary({}, "", "local", analysis)
    assert decision == "held" and "holds its traffic" in analysis.metadata["reason"]
    assert final_mod.run_promote_or_rollback({}, "", "local", decision) == "1"
    assert rollout.status()["phase"] == "canary" and backend.calls[-1][0] == "deploy"
    assert registry.champion_version == "1"


def test_the_pipeline_steps_leave_a_canary_a_person_deployed_meanwhile(
    tmp_path: Path, monkeypatch
) -> None:
    """The run deployed v2 and its analysis said promote; meanwhile a person rolled v2 back and
    deployed v3. promote_or_rollback promoted v3, never analysed, to champion. The steps now
    carry the canary the run deployed, and leave another one alone."""
    import components.analyze_canary as analyze_mod
    import components.promote_or_rollback as final_mod
    import serving.rollout as rollout_pkg

    rollout, registry, backend = _machine(tmp_path, ScriptedSource())
    registry.versions["3"] = "/m3"
    rollout.deploy("2", percent=10)
    rollout.rollback(reason="a person")
    rollout.deploy("3", percent=10)  # the person's canary
    monkeypatch.setattr(rollout_pkg, "open_rollout", lambda *a, **k: rollout)
    monkeypatch.setattr("serving.rollout.cli.configs_from_dict", lambda config: (None, rollout.cfg))
    assert final_mod.run_promote_or_rollback({}, "", "local", "promote", "2") == "1"
    assert rollout.status()["canary"] == "3" and registry.champion_version == "1"
    assert backend.calls[-1] == ("deploy", "1", "3", 10)

    class Metrics:
        def __init__(self) -> None:
            self.metadata: dict = {}

        def log_metric(self, name: str, value: float) -> None: ...

    assert analyze_mod.run_analyze_canary({}, "", "local", Metrics(), "2") == "changed"
    assert backend.calls[-1] == ("deploy", "1", "3", 10)  # no step, no rollback of v3
    with pytest.raises(RolloutError, match="now version 3, not 2"):
        rollout.set_traffic(50, expected="2")


def _held_canary(tmp_path: Path, owner: str) -> tuple[Rollout, MemoryRegistry, RecordingBackend]:
    """Version 2 deployed by pipeline run ``owner`` and held by its analysis (no traffic within
    max_step_wait_s, ``on_insufficient_traffic: hold``)."""
    rollout, registry, backend = _machine(
        tmp_path, ScriptedSource(per_poll=0), max_step_wait_s=0.2, on_insufficient_traffic="hold"
    )
    rollout.deploy("2", percent=10, owner=owner)
    with pytest.raises(RolloutError, match="holds its traffic"):
        rollout.analyze(auto_promote=False, owner=owner)
    return rollout, registry, backend


def test_the_exit_handler_finishes_only_what_its_own_run_left(tmp_path: Path, monkeypatch) -> None:
    """A pipeline run whose analysis step failed past its retries (or was cancelled) left its
    canary at a share nobody watched. The exit task rolls back the run's own canary, leaves a
    canary held on purpose and anybody else's rollout alone, and finishes an unrecorded
    promotion; the pipeline's output is the champion after it."""
    import components.finish_rollout as finish_mod
    import serving.rollout as rollout_pkg

    def finish(rollout: Rollout, run_id: str = "run-1") -> tuple[str, str]:
        monkeypatch.setattr(rollout_pkg, "open_rollout", lambda *a, **k: rollout)
        monkeypatch.setattr(
            "serving.rollout.cli.configs_from_dict", lambda config: (None, rollout.cfg)
        )
        return tuple(finish_mod.run_finish_rollout({}, "", "local", run_id))  # type: ignore[return-value]

    # The run's canary, mid-way: rolled back, with the reason.
    rollout, registry, backend = _machine(tmp_path / "a", ScriptedSource())
    rollout.deploy("2", percent=10, owner="run-1")
    rollout.set_traffic(25)
    assert finish(rollout, "run-2") == ("not_owner", "1")  # another run's exit task
    assert backend.calls[-1] == ("traffic", 25)
    assert finish(rollout) == ("rolled_back", "1")
    st = rollout.store.load()
    assert st.phase == "rolled_back" and backend.calls[-1] == ("rollback",)
    assert "pipeline run run-1 ended before its decision" in st.history[-1]["reason"]
    assert registry.events[-1][:2] == ("rollback", "2")
    assert finish(rollout) == ("nothing", "1")  # a finished rollout: nothing more

    # A person's deploy after the run: not the run's to touch.
    registry.versions["3"] = "/m3"
    rollout.deploy("3", percent=10)
    assert finish(rollout) == ("not_owner", "1") and rollout.store.load().canary == "3"

    # Held on purpose (on_insufficient_traffic: hold): stays for a person.
    held, _, held_backend = _held_canary(tmp_path / "b", owner="run-1")
    assert finish(held) == ("held", "1")
    assert held.store.load().phase == "canary" and held_backend.calls[-1][0] == "deploy"

    # The promotion moved traffic, the registry failed: the alias follows what serves.
    backend = RecordingBackend()
    flaky = FlakyRegistry({"1": "/m1", "2": "/m2"}, champion_version="1", challenger="2")
    promoted = Rollout(backend, flaky, RolloutConfig(), tmp_path / "c" / "s.json")
    promoted.deploy("2", percent=10, owner="run-1")
    with pytest.raises(RolloutError, match="serves all the traffic"):
        promoted.promote()
    assert finish(promoted) == ("promoted", "2") and flaky.champion_version == "2"


def test_a_canary_left_at_zero_percent_is_rolled_back_not_watched(tmp_path: Path) -> None:
    """Killed between the rollback's traffic patch and its record: the canary is at 0 %. A
    retried analysis watched that step for traffic that never comes (and, under 'hold', left
    the failed canary in place); it finishes the rollback now."""
    rollout, registry, backend = _machine(tmp_path, ScriptedSource())
    rollout.deploy("2", percent=10)
    st = rollout.store.load()
    st.percent = 0
    rollout.store.save(st)
    st = rollout.analyze()
    assert st.phase == "rolled_back" and backend.calls[-1] == ("rollback",)
    assert "left at 0 %" in st.history[-1]["reason"] and registry.champion_version == "1"


def test_cli_commands(state_dir: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from serving.rollout import cli

    app = typer.Typer()
    for name in ("deploy", "promote", "rollback", "status"):
        app.command(name)(getattr(cli, name))
    runner = CliRunner()
    r = runner.invoke(app, ["status", "--json", "--backend", "local"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{\n") :])  # MLflow may log to stderr first
    assert s["phase"] == "idle" and s["champion"] is None and s["serving"]["healthy"] is False
    assert s["challenger"] is None
    r = runner.invoke(app, ["promote"])
    assert r.exit_code == 1 and "no canary in progress" in r.output
    r = runner.invoke(app, ["deploy", "--no-watch"])
    assert r.exit_code == 2 and "has no alias 'challenger'" in r.output
    r = runner.invoke(app, ["deploy", "--canary", "150"])
    assert r.exit_code == 2


def test_prometheus_source_reads_errors_and_latency_per_knative_revision() -> None:
    """A crashing canary's 502s exist only in the queue-proxy's series: they must count."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        seen.append(q)
        if "sum by (revision_name, le)" in q:
            result = [
                {"metric": {"revision_name": "langid-predictor-00002", "le": le}, "value": [0, n]}
                for le, n in (("50", "30"), ("1000", "40"), ("+Inf", "40"))
            ]
        elif 'response_code_class="5xx"' in q:
            result = [{"metric": {"revision_name": "langid-predictor-00002"}, "value": [0, "12"]}]
        elif "revision_request_count" in q:
            result = [
                {"metric": {"revision_name": r}, "value": [0, n]}
                for r, n in (("langid-predictor-00001", "400"), ("langid-predictor-00002", "40"))
            ]
        else:  # predicted labels still come from the model servers, by version
            result = [{"metric": {"version": "2", "label": "C"}, "value": [0, "28"]}]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    import time

    src = PrometheusMetricsSource(
        "http://prom:9090",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        revisions=lambda: {"1": "langid-predictor-00001", "2": "langid-predictor-00002"},
    )
    w = src.window(["1", "2"], since=time.time() - 30)
    assert w["1"].requests == 400 and w["2"].requests == 40 and w["2"].errors == 12
    assert w["2"].buckets == {0.05: 30, 1.0: 40, float("inf"): 40}  # ms -> s
    assert w["2"].labels == {"C": 28}
    assert judge(w["1"], w["2"], ThresholdsConfig(min_requests=20)).outcome == "fail"
    assert not any("aicrush_requests_total" in q for q in seen)

    missing = PrometheusMetricsSource(
        "http://prom:9090",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
        revisions=lambda: {"1": "langid-predictor-00001"},
    )
    with pytest.raises(RuntimeError, match="no Knative revision serves version"):
        missing.window(["1", "2"], since=time.time() - 30)


def test_analysis_reports_what_it_could_not_measure() -> None:
    t = ThresholdsConfig(
        min_requests=20, min_latency_samples=20, min_agreement=0.9, max_label_distance=0.5
    )
    v = judge(_counters(100), _counters(50), t, canary_version="2", drift=lambda _v, _since: None)
    assert v.outcome == "pass"
    names = [m.split(":")[0] for m in v.not_measured]
    assert names == ["agreement", "drift"] and "Knative does not" in v.not_measured[0]
    assert v.to_dict()["not_measured"] == list(v.not_measured)
    no_gate = judge(
        _counters(100), _counters(50), ThresholdsConfig(min_requests=20, min_latency_samples=20)
    )
    assert no_gate.not_measured == ("drift: rollout.drift_gate is off",)
    mirrored = _counters(50)
    mirrored.mirrored, mirrored.agreed = 20, 19
    measured = judge(
        _counters(100), mirrored, t, canary_version="2", drift=lambda _v, _since: False
    )
    assert measured.not_measured == () and {c.name for c in measured.checks} >= {
        "agreement",
        "drift",
    }


def test_error_rate_is_a_share_even_when_prometheus_extrapolates() -> None:
    # increase() extrapolates requests and errors separately: 22.56 vs 22.58 happens.
    assert Counters(22.56, 22.58).error_rate == 1.0
    assert Counters(100, 5).error_rate == 0.05 and Counters().error_rate == 0.0


def test_ctrl_c_while_watching_says_where_the_canary_was_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in `aicrush deploy` used to exit 130 without a word, the canary left part-way
    (25 % here) and no longer watched."""
    import typer
    from typer.testing import CliRunner

    from serving.rollout import cli

    class InterruptedSource(ScriptedSource):
        def window(self, versions, since):
            if ("traffic", 25) in backend.calls:  # Ctrl-C during the 25 % step
                raise KeyboardInterrupt
            return super().window(versions, since)

    rollout, _, backend = _machine(tmp_path, InterruptedSource(), steps=(10, 25, 100))
    monkeypatch.setattr(cli, "_open", lambda *a: rollout)
    app = typer.Typer()
    app.command("deploy")(cli.deploy)
    app.command("status")(cli.status)
    r = CliRunner().invoke(app, ["deploy"])
    assert r.exit_code == 130, r.output
    assert "interrupted: the analysis stopped; canary v2 keeps 25 % of the traffic" in r.output
    assert "`aicrush watch` goes on with the analysis" in r.output
    assert rollout.status()["canary_percent"] == 25


def test_watch_goes_on_with_the_analysis_of_a_canary_left_unwatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After Ctrl-C or `deploy --no-watch` only promote or rollback could decide: nothing
    analysed the canary again. `aicrush watch` goes on from its current step."""
    import typer
    from typer.testing import CliRunner

    from serving.rollout import cli

    rollout, registry, backend = _machine(tmp_path, ScriptedSource(), steps=(10, 25, 100))
    monkeypatch.setattr(cli, "_open", lambda *a: rollout)
    app = typer.Typer()
    app.command("deploy")(cli.deploy)
    app.command("watch")(cli.watch)
    app.command("status")(cli.status)
    runner = CliRunner()
    r = runner.invoke(app, ["deploy", "--no-watch"])
    assert r.exit_code == 0 and "`aicrush watch` analyses it" in r.output, r.output
    rollout.set_traffic(25)  # where an interrupted analysis left it
    r = runner.invoke(app, ["watch"])
    assert r.exit_code == 0, r.output
    assert "canary v2 at 25 %" in r.output and "analysis finished: promoted (stable v2)" in r.output
    assert [c for c in backend.calls if c[0] == "traffic"] == [("traffic", 25), ("traffic", 100)]
    assert registry.champion_version == "2"
    # The last analysis is named by its canary (after the promotion nothing is a canary).
    r = runner.invoke(app, ["status"])
    assert "analysis  v2: pass at 100 %" in r.output, r.output
    r = runner.invoke(app, ["watch"])
    assert r.exit_code == 1 and "no canary in progress" in r.output

    bad, _, _ = _machine(tmp_path / "bad", ScriptedSource(error_rate=0.05))
    monkeypatch.setattr(cli, "_open", lambda *a: bad)
    bad.deploy()
    r = runner.invoke(app, ["watch"])
    assert r.exit_code == 2 and "rolled back: stable v1 serves all traffic" in r.output


def test_watch_takes_a_pipeline_runs_canary_over_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's canary may still be analysed by the run (a retry): watch refuses it without
    --take-over, or two analyses would step one canary. Taken over, the run's analysis, its last
    step and its exit handler leave it alone. A canary the run held is a person's to watch."""
    import typer
    from typer.testing import CliRunner

    import components.promote_or_rollback as final_mod
    import serving.rollout as rollout_pkg
    from serving.rollout import cli
    from serving.rollout.machine import CanaryChanged

    rollout, registry, backend = _machine(tmp_path, ScriptedSource(), steps=(10, 25, 100))
    monkeypatch.setattr(cli, "_open", lambda *a: rollout)
    app = typer.Typer()
    app.command("watch")(cli.watch)
    app.command("status")(cli.status)
    runner = CliRunner()
    rollout.deploy("2", percent=10, owner="run-1")
    r = runner.invoke(app, ["watch"])
    assert r.exit_code == 1 and "belongs to pipeline run run-1" in r.output, r.output
    assert "--take-over" in r.output and backend.calls[-1][0] == "deploy"

    # Taken over (the person's watch, interrupted here at once): the run's steps leave it.
    st = rollout.take_over()
    assert st.owner is None and st.history[-1]["previous_owner"] == "run-1"
    with pytest.raises(CanaryChanged, match="no longer pipeline run run-1's"):
        rollout.analyze(expected="2", owner="run-1")
    monkeypatch.setattr(rollout_pkg, "open_rollout", lambda *a, **k: rollout)
    monkeypatch.setattr("serving.rollout.cli.configs_from_dict", lambda config: (None, rollout.cfg))
    assert final_mod.run_promote_or_rollback({}, "", "local", "promote", "2", "run-1") == "1"
    assert rollout.recover("run-1", reason="run failed") == "not_owner"
    assert rollout.store.load().phase == "canary" and backend.calls[-1][0] == "deploy"
    r = runner.invoke(app, ["watch"])  # a person's canary now: no flag needed
    assert r.exit_code == 0 and "analysis finished: promoted" in r.output, r.output
    assert registry.champion_version == "2"

    # --take-over on a run's canary in progress; a held one needs no flag.
    registry.versions["3"] = "/m3"
    rollout.deploy("3", percent=10, owner="run-2")
    r = runner.invoke(app, ["watch", "--take-over"])
    assert r.exit_code == 0 and "took canary v3 over from pipeline run run-2" in r.output
    held, _, _ = _held_canary(tmp_path / "held", owner="run-3")
    monkeypatch.setattr(cli, "_open", lambda *a: held)
    r = runner.invoke(app, ["watch"])
    assert "took canary v2 over from pipeline run run-3" in r.output, r.output
    assert held.recover("run-3", reason="late exit task") == "not_owner"


def test_grpc_server_errors_count_as_errors() -> None:
    """The model server counts gRPC requests with gRPC status names: INTERNAL never matched
    the analysis' status=~"5.." (and gRPC's OK counted as a failure in the error-rate alert)."""
    text = (
        'aicrush_requests_total{model="m",version="2",protocol="grpc",status="OK"} 97\n'
        'aicrush_requests_total{model="m",version="2",protocol="grpc",status="INTERNAL"} 3\n'
        'aicrush_requests_total{model="m",version="2",protocol="grpc",status="INVALID_ARGUMENT"} 4\n'
        'aicrush_requests_total{model="m",version="2",protocol="v1",status="503"} 1\n'
    )
    c = parse_metrics(text)["2"]
    assert (c.requests, c.errors) == (105, 4)
    errors = PrometheusMetricsSource("http://p").queries(["2"], 60)["errors"]
    assert 'status=~"5..|INTERNAL"' in errors


def test_counter_increase_looks_back_as_far_on_both_sides() -> None:
    """A review found the current value read through Prometheus' own lookback and the previous
    one through 300 s: with --query.lookback-delta=10m a series gone without a staleness marker
    counted whole at every step (16,030 for 14 requests). Both sides now use last_over_time."""
    from serving.rollout.metrics_source import counter_increase

    q = counter_increase('m{a="1"}', "version", 60, 15)
    cur, prev = 'last_over_time(m{a="1"}[300s])', 'last_over_time(m{a="1"}[300s] offset 15s)'
    assert q == f"sum_over_time((sum by (version) ((({cur} - {prev}) >= 0) or {cur}))[60s:15s])"
    cfg = RolloutConfig(prometheus_step_s=15)
    assert cfg.prometheus_step_s == 15
    with pytest.raises(ValidationError):
        RolloutConfig(prometheus_step_s=0)


def test_ctrl_c_while_the_servers_start_says_so_and_status_shows_no_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in `aicrush deploy` before the analysis (the model servers loading) exited 130
    without a word, and `aicrush status` then showed "traffic stable 100 %" for a proxy with no
    server behind it, answering 503 (a newcomer's trial)."""
    import typer
    from typer.testing import CliRunner

    from serving.rollout import cli

    rollout, _, backend = _machine(tmp_path, ScriptedSource())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "deploy", interrupted)
    monkeypatch.setattr(cli, "_open", lambda *a: rollout)
    app = typer.Typer()
    app.command("deploy")(cli.deploy)
    app.command("status")(cli.status)
    r = CliRunner().invoke(app, ["deploy"])
    assert r.exit_code == 130, r.output
    assert "interrupted while deploying" in r.output and "`aicrush status`" in r.output

    routes = {"stable": None, "canary": None, "percent": 0, "inflight": {}}
    serving = {"running": True, "endpoint": "http://127.0.0.1:1", "routes": routes}
    monkeypatch.setattr(backend, "status", lambda: serving, raising=False)
    r = CliRunner().invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    assert "traffic   none: no model server behind the proxy" in r.output
    assert "stable 100 %" not in r.output


def test_a_watch_stops_when_another_command_changes_the_canary_and_one_watch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Newcomer trial: a watching deploy printed 'pass' lines for a canary another shell had
    rolled back, and polled a stopped backend for 10 minutes; two `aicrush watch` at once
    stepped one canary in turn. The analysis now stops at the first poll that finds its canary
    gone, and the local state allows one analysis at a time."""
    from serving.rollout.machine import CanaryChanged

    class RolledBackMeanwhile(ScriptedSource):
        def window(self, versions, since):
            if self.n == 2:  # another shell: `aicrush rollback`
                other = Rollout(RecordingBackend(), registry, rollout.cfg, tmp_path / "s.json")
                other.rollback(reason="a person")
            return super().window(versions, since)

    rollout, registry, _ = _machine(tmp_path, RolledBackMeanwhile(per_poll=1))
    rollout.deploy()
    with pytest.raises(CanaryChanged, match="canary version 2 was rolled back by another command"):
        rollout.analyze()

    class StoppedMeanwhile(FailingSource):
        def window(self, versions, since):
            st = stopped.store.load()
            st.phase, st.canary, st.percent = "idle", None, 0  # `aicrush stop`
            stopped.store.save(st)
            return super().window(versions, since)

    stopped, _, _ = _machine(tmp_path / "stop", StoppedMeanwhile())
    stopped.deploy()
    with pytest.raises(CanaryChanged, match="was stopped by another command"):
        stopped.analyze()

    import threading

    from serving.rollout import machine

    monkeypatch.setattr(machine, "ANALYSIS_LOCK_GRACE_S", 0.3)  # the second waits this long
    first, _, _ = _machine(tmp_path / "two", ScriptedSource(per_poll=0))
    first.deploy()
    done = threading.Event()
    watching = threading.Thread(target=lambda: first.analyze(stop=done), daemon=True)
    first.sleep = lambda s: time.sleep(0.01)
    watching.start()
    try:
        time.sleep(0.2)
        second = Rollout(RecordingBackend(), first.registry, first.cfg, tmp_path / "two" / "s.json")
        with pytest.raises(RolloutError, match=r"already being watched \(process \d+"):
            second.analyze()
    finally:
        done.set()
        watching.join(10)
    assert not watching.is_alive()


def test_a_take_over_waits_for_the_runs_analysis_to_stop_and_an_api_blip_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review findings. `aicrush watch --take-over` while the run's analysis held the lock
    exited at once, and the run's analysis then stopped: nobody watched the canary. The second
    analysis now waits for the first to notice the take-over at its next poll. And a state read
    that failed beside a failed metrics read (the API server down) ended the analysis at once;
    it is retried like the metrics."""
    import threading

    from serving.rollout.machine import CanaryChanged

    rollout, _, _ = _machine(tmp_path, ScriptedSource(per_poll=0))
    rollout.sleep = lambda s: time.sleep(0.02)
    rollout.deploy("2", percent=10, owner="run-1")
    outcome: list[BaseException] = []

    def run_analysis() -> None:
        try:
            rollout.analyze(auto_promote=False, owner="run-1")
        except BaseException as err:  # the test reads it
            outcome.append(err)

    pipeline = threading.Thread(target=run_analysis, daemon=True)
    pipeline.start()
    time.sleep(0.2)
    person_backend = RecordingBackend()
    person_backend.metrics_source = lambda: ScriptedSource(per_poll=0)  # type: ignore[method-assign]
    person = Rollout(person_backend, rollout.registry, rollout.cfg, tmp_path / "s.json",
                     sleep=lambda s: time.sleep(0.02))  # fmt: skip
    person.take_over()
    done = threading.Event()
    threading.Timer(1.0, done.set).start()
    st = person.analyze(stop=done)  # waited for the lock, then watched
    pipeline.join(10)
    assert outcome and isinstance(outcome[0], CanaryChanged), outcome
    assert st.phase == "canary" and st.owner is None

    class BlipStore:
        """The state store of a backend whose API answers 503 once, beside a failed scrape."""

        def __init__(self, inner) -> None:
            self.inner, self.loads = inner, 0

        def load(self):
            self.loads += 1
            if self.loads == 3:
                raise RolloutError("reading the rollout state failed: HTTP 503")
            return self.inner.load()

        def save(self, state) -> None:
            self.inner.save(state)

    blip, _, _ = _machine(tmp_path / "blip", FailingSource(), max_step_wait_s=0.2)
    blip.deploy()
    blip.store = BlipStore(blip.store)
    st = blip.analyze()
    assert st.phase == "rolled_back" and "metrics unreadable" in st.history[-1]["reason"]
