"""Benchmark: a process's first call to an MLflow tracking server, with and without Feast's
MLflow request-header plugin loaded (docker/skip_feast_mlflow_plugin.py says why it is not).

Each trial is a fresh Python process that imports MLflow and lists the registered models of a
real ``mlflow server`` on loopback; "with the plugin" imports the plugin's module first, which is
what MLflow does on that first call while Feast's entry point is registered. Printed: the
median wall and CPU seconds of each, and the ratio (with / without), baseline measured in the
same run.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_mlflow_first_call.py [--trials 5]``
(about 1-2 minutes on 2 cores). Prints one line per mode, then
``RESULT without_s=... with_s=... ratio=... trials=... load=...``. Measure in an environment
where the plugin is unregistered (``make install`` does it): with it registered, "without" loads
it too and the ratio is near 1 (the script says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

PLUGIN_MODULE = "feast.infra.data_sources.mlflow.auth"
TRIAL = """
import json, resource, sys, time
t0 = time.perf_counter()
if sys.argv[2] == "with":
    import {plugin}  # what MLflow's plugin loading imports
import mlflow
mlflow.MlflowClient(sys.argv[1]).search_registered_models()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}}))
"""


def trial(url: str, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", TRIAL.format(plugin=PLUGIN_MODULE), url, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5, help="fresh processes per mode (>= 1)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    from tests.mlflow_server import mlflow_server  # the repository root on PYTHONPATH

    registered = [
        e.value for e in entry_points(group="mlflow.request_header_provider") if e.name == "feast"
    ]
    if registered:
        print(
            f"warning: Feast's plugin is registered ({registered[0]}): 'without' loads it too; "
            "run python docker/skip_feast_mlflow_plugin.py first"
        )
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(Path(tmp)) as server:
        runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        for _ in range(args.trials):  # interleaved: a change in load hits both alike
            for mode in runs:
                runs[mode].append(trial(server.url, mode))
    med = {
        mode: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")}
        for mode, rs in runs.items()
    }
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for mode, m in med.items():
        print(f"{mode:>7} the plugin: first call {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU")
    ratio = med["with"]["wall_s"] / med["without"]["wall_s"]
    print(
        f"RESULT without_s={med['without']['wall_s']:.2f} with_s={med['with']['wall_s']:.2f} "
        f"ratio={ratio:.2f} trials={args.trials} load={load}"
    )


if __name__ == "__main__":
    main()
