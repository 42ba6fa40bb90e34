"""Test doubles for the rollout: an in-memory registry, a load client, model-server launchers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving.rollout.machine import ModelRef
from serving.rollout.processes import default_launcher, spawn


@dataclass
class MemoryRegistry:
    """Registry double: versions -> folders, the champion alias and every recorded event."""

    versions: dict[str, str]
    champion_version: str | None = None
    challenger: str | None = None
    events: list[tuple] = field(default_factory=list)
    model_name: str = "aicrush-code-language"

    def champion(self) -> ModelRef | None:
        v = self.champion_version
        return ModelRef(v, self.versions[v]) if v else None

    def challenger_version(self) -> str | None:
        return self.challenger

    def resolve(self, version: str | None) -> ModelRef:
        v = str(version or self.challenger)
        return ModelRef(v, self.versions[v])

    def record_traffic(self, version: str, percent: int, outcome: str) -> None:
        self.events.append(("traffic", version, percent, outcome))

    def record_promotion(self, version: str, previous: str | None) -> None:
        self.champion_version = version
        self.events.append(("promote", version, previous))

    def record_rollback(self, version: str, reason: str) -> None:
        self.events.append(("rollback", version, reason))


def make_launcher(stubs: dict[str, tuple[str, float]]):
    """serving.server for real versions; the stdlib stub server for versions listed in ``stubs``
    (version -> (mode, delay_s), mode ``ok``, ``fail`` or ``slow``): it starts in under a second."""

    def launch(
        model_dir: Path, name: str, version: str, port: int, log_file: Path
    ) -> subprocess.Popen:
        if version in stubs:
            mode, delay = stubs[version]
            cmd = [
                sys.executable,
                "-m",
                "tests.rollout.stub_server",
                name,
                str(port),
                mode,
                str(delay),
            ]
            return spawn(cmd, log_file)
        return default_launcher(model_dir, name, version, port, log_file)

    return launch


@dataclass
class Sample:
    t: float
    status: int
    version: str


class LoadClient:
    """Steady background load (bounded in rate, count and time) recording status and version."""

    def __init__(
        self,
        url: str,
        model: str,
        rate_hz: float = 25.0,
        max_requests: int = 20_000,
        max_s: float = 300.0,
    ):
        self.url = f"{url}/v1/models/{model}:predict"
        self.period = 1.0 / rate_hz
        self.max_requests = max_requests
        self.max_s = max_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        texts = [
            "def f(x):\n    return x + 1\n",
            "#include <stdio.h>\nint main(){return 0;}",
            "body { color: red; }",
        ]
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            i = 0
            while (
                not self._stop.is_set()
                and i < self.max_requests
                and time.monotonic() - started < self.max_s
            ):
                t0 = time.monotonic()
                try:
                    r = client.post(self.url, json={"instances": [{"text": texts[i % 3]}]})
                    self.samples.append(
                        Sample(
                            time.time(), r.status_code, r.headers.get("x-aicrush-model-version", "")
                        )
                    )
                except httpx.HTTPError:
                    self.samples.append(Sample(time.time(), -1, ""))
                i += 1
                time.sleep(max(0.0, self.period - (time.monotonic() - t0)))

    def start(self) -> LoadClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]
