"""`aicrush stop`, then `aicrush deploy`: the endpoint clients were given stays the same
(docs/rollout.md: the local proxy's port is picked on first start and kept)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from aicrush.rollout_config import RolloutConfig
from serving.rollout.local import LocalBackend
from serving.rollout.machine import Rollout, RolloutError
from tests.rollout.fakes import MemoryRegistry, make_launcher


def _rollout(tmp_path: Path) -> tuple[LocalBackend, Rollout]:
    folders = {"1": str(tmp_path), "2": str(tmp_path)}
    backend = LocalBackend(
        tmp_path / "rollout",
        model_name="aicrush",
        launcher=make_launcher({"1": ("ok", 0.0), "2": ("ok", 0.0)}),
        fetcher=lambda ref: Path(ref.uri),
    )
    registry = MemoryRegistry(folders, champion_version="1", challenger="2")
    return backend, Rollout(
        backend, registry, RolloutConfig(), tmp_path / "rollout" / "state-local.json"
    )


def _predict(url: str) -> int:
    return httpx.post(f"{url}/v1/models/aicrush:predict", json={"instances": ["x"]}).status_code


def test_stop_then_deploy_keeps_the_endpoint(tmp_path: Path) -> None:
    backend, rollout = _rollout(tmp_path)
    try:
        rollout.deploy(percent=10)
        endpoint = backend.url
        assert _predict(endpoint) == 200
        rollout.stop()
        status = rollout.status()
        assert status["phase"] == "idle" and status["serving"]["running"] is False
        assert status["serving"]["endpoint"] is None
        # The stopped canary's tags no longer say it serves 10 %.
        assert rollout.registry.events[-1] == ("traffic", "2", 0, "stopped")
        rollout.stop()  # twice: nothing to stop, no error
        assert rollout.registry.events[-1] == ("traffic", "2", 0, "stopped")  # not tagged again
        rollout.deploy(percent=10)
        assert backend.url == endpoint
        assert _predict(endpoint) == 200
    finally:
        backend.shutdown()


def test_a_kept_port_taken_meanwhile_moves_the_endpoint(tmp_path: Path) -> None:
    backend, rollout = _rollout(tmp_path)
    try:
        rollout.deploy(percent=10)
        endpoint = backend.url
        rollout.stop()
        port = int(endpoint.rsplit(":", 1)[1])
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            rollout.deploy(percent=10)
            assert backend.url != endpoint
            assert _predict(backend.url) == 200
    finally:
        backend.shutdown()


def test_stop_stops_the_proxy_before_the_servers_behind_it(tmp_path: Path, monkeypatch) -> None:
    """Servers first made the proxy answer the requests in between with 502 (server errors in
    the metrics); the proxy goes first now, then the servers."""
    from serving.rollout import local
    from serving.rollout.processes import LocalProcesses, ServerInfo

    backend, _ = _rollout(tmp_path)
    LocalProcesses(
        proxy_port=1, proxy_pid=100, stable=ServerInfo("1", 2, 201, "/m"),
        canary=ServerInfo("2", 3, 202, "/m"),
    ).save(backend._file)  # fmt: skip
    stopped: list[int | None] = []
    monkeypatch.setattr(local, "stop", lambda pid, *a, **k: stopped.append(pid))
    backend.shutdown()
    assert stopped[0] == 100 and set(stopped[1:]) == {201, 202}


def test_stop_right_after_traffic_keeps_the_endpoint(tmp_path: Path) -> None:
    """Connections the proxy closed itself (clients sending `Connection: close`, as urllib
    does) leave TIME_WAIT sockets on its port after `aicrush stop`. The proxy binds that port
    again (uvicorn sets SO_REUSEADDR), so the endpoint must not move; a newcomer's trial saw it
    move on every stop/deploy within a minute of traffic."""
    backend, rollout = _rollout(tmp_path)
    try:
        rollout.deploy(percent=10)
        endpoint = backend.url
        for _ in range(5):
            with httpx.Client(headers={"connection": "close"}) as client:
                r = client.post(f"{endpoint}/v1/models/aicrush:predict", json={"instances": ["x"]})
                assert r.status_code == 200
        rollout.stop()
        rollout.deploy(percent=10)
        assert backend.url == endpoint
        assert _predict(endpoint) == 200
    finally:
        backend.shutdown()


def test_deploy_after_stop_serves_the_champion_again_when_it_is_the_challenger(
    tmp_path: Path,
) -> None:
    """After a promotion the challenger alias names the champion; `aicrush stop`, then the
    `aicrush deploy` that `aicrush status` suggests must serve the champion again rather than
    answer "already the champion; register a new version first" (nothing could restart it)."""
    folders = {"1": str(tmp_path), "2": str(tmp_path)}
    backend = LocalBackend(
        tmp_path / "rollout",
        model_name="aicrush",
        launcher=make_launcher({"1": ("ok", 0.0), "2": ("ok", 0.0)}),
        fetcher=lambda ref: Path(ref.uri),
    )
    registry = MemoryRegistry(folders, champion_version="2", challenger="2")
    rollout = Rollout(backend, registry, RolloutConfig(), tmp_path / "rollout" / "state-local.json")
    try:
        rollout.deploy("1", percent=10)  # a canary of the older version, then rolled back
        rollout.rollback(reason="test")
        endpoint = backend.url
        rollout.stop()
        st = rollout.deploy()  # the challenger, which is the champion
        assert (st.phase, st.stable, st.canary) == ("promoted", "2", None)
        assert backend.url == endpoint and _predict(endpoint) == 200
        assert registry.champion().version == "2"
        with pytest.raises(RolloutError, match="already the champion"):
            rollout.deploy()  # serving now: the old answer stands
    finally:
        backend.shutdown()


def test_ctrl_c_while_the_proxy_starts_leaves_no_proxy_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy is recorded once it answers; Ctrl-C before that left it running, unknown to
    `aicrush stop` ("nothing was running"), on the endpoint's port (a newcomer's trial)."""
    from serving.rollout import local
    from serving.rollout.processes import alive

    backend, rollout = _rollout(tmp_path)
    spawned: list[int] = []
    real_spawn = local.spawn

    def spawn(*args, **kwargs):
        proc = real_spawn(*args, **kwargs)
        spawned.append(proc.pid)
        return proc

    def interrupted(url: str) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "spawn", spawn)
    monkeypatch.setattr(LocalBackend, "_healthy", staticmethod(interrupted))
    try:
        with pytest.raises(KeyboardInterrupt):
            rollout.deploy(percent=10)
        assert len(spawned) == 1 and not alive(spawned[0])
    finally:
        backend.shutdown()
