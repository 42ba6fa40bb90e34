"""Local backend end to end: real model servers and the splitting proxy on loopback, steady load.

One scenario, because server start-ups dominate the time: v1 serves; v2 goes to 10 % (split
checked), the analysis steps it to 100 % and promotes it; v3 is deployed and rolled back by hand
(no request fails across any of this); then a failing and a slow canary are each rolled back by
the analysis within 60 s while champion stays v2.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aicrush.rollout_config import RolloutConfig, ThresholdsConfig
from serving.rollout.local import LocalBackend
from serving.rollout.machine import Rollout, RolloutError
from tests.rollout.fakes import LoadClient, MemoryRegistry, make_launcher

pytestmark = pytest.mark.integration

SPLIT_TOLERANCE = (
    0.03  # observed canary share vs the set percentage (the proxy is exact per 100 requests)
)


def test_local_canary_rollout_under_load(
    tmp_path: Path, random_model_dir: Path, random_model_dir_v2: Path
) -> None:
    folders = {
        "1": random_model_dir,
        "2": random_model_dir_v2,
        "3": random_model_dir,
        "4": random_model_dir_v2,
        "5": random_model_dir_v2,
    }
    # v1 is already champion (registered and promoted earlier); nothing runs yet, so the first
    # deploy starts the stable and the canary server together.
    registry = MemoryRegistry({v: str(p) for v, p in folders.items()}, champion_version="1")
    # v1 and v2 run in the real model server (serving.server, ~10-30 s to start on 2 busy cores);
    # v3-v5 in a stdlib stand-in that starts at once: what they test is the traffic, not the model.
    stubs = {"3": ("ok", 0.0), "4": ("fail", 0.0), "5": ("slow", 1.5)}
    backend = LocalBackend(
        tmp_path / "rollout",
        model_name="aicrush",
        mirror_fraction=0.3,
        launcher=make_launcher(stubs),
    )
    cfg = RolloutConfig(
        steps=(10, 25, 50, 100),
        interval_s=2.0,
        poll_s=0.5,
        max_step_wait_s=30,
        thresholds=ThresholdsConfig(
            min_requests=5,
            min_latency_samples=5,
            max_p99_latency_s=1.0,
            max_p99_latency_ratio=50.0,
        ),
    )
    rollout = Rollout(backend, registry, cfg, tmp_path / "rollout" / "state-local.json")
    load = None
    try:
        rollout.deploy("2", percent=10)
        load = LoadClient(backend.url, "aicrush", rate_hz=25).start()
        t0 = time.time()
        time.sleep(6.0)
        window = load.between(t0, time.time())
        share = sum(s.version == "2" for s in window) / len(window)
        assert len(window) >= 80, len(window)
        assert abs(share - 0.10) <= SPLIT_TOLERANCE, f"canary share {share:.3f} with 10 % set"
        assert rollout.status()["serving"]["routes"]["percent"] == 10

        state = rollout.analyze()  # 10 -> 25 -> 50 -> 100 -> promote
        assert state.phase == "promoted" and state.stable == "2"
        assert registry.champion_version == "2"
        assert [e[2] for e in registry.events if e[0] == "traffic"] == [10, 25, 50, 100]
        time.sleep(1.0)
        assert {s.version for s in load.samples[-10:]} == {"2"}

        rollout.deploy("3", percent=10)
        time.sleep(3.0)
        rollout.rollback()
        assert registry.champion_version == "2"
        time.sleep(1.0)
        load.stop()
        failed = [s for s in load.samples if s.status != 200]
        assert not failed, f"{len(failed)} of {len(load.samples)} requests failed: {failed[:5]}"
        assert {"1", "2", "3"} <= {s.version for s in load.samples}

        # Deliberately bad canaries: the analysis rolls each back by itself, within 60 s.
        for bad in ("4", "5"):
            load = LoadClient(backend.url, "aicrush", rate_hz=25).start()
            rollout.deploy(bad, percent=25)
            t_deploy = time.monotonic()
            state = rollout.analyze()
            elapsed = time.monotonic() - t_deploy
            load.stop()
            assert state.phase == "rolled_back", state
            assert elapsed < 60, f"rollback of v{bad} took {elapsed:.1f}s"
            assert registry.champion_version == "2"
            assert ("rollback", bad) == registry.events[-1][:2]
            status = rollout.status()
            assert status["canary"] is None and status["serving"]["canary"] is None
            assert status["serving"]["routes"]["stable"]["version"] == "2"
            assert status["last_analysis"]["outcome"] == "fail"
            print(f"v{bad} rolled back after {elapsed:.1f}s: {state.history[-1]['reason']}")
        with pytest.raises(RolloutError, match="no canary"):
            rollout.promote()
    finally:
        if load is not None:
            load.stop()
        backend.shutdown()
