"""KServe's multiprocess mode (``--workers 2``) against two single-process replicas: how KServe's
worker processes share the connections of a burst, and what that does to throughput.

    .venv/bin/python benchmarks/bench_kserve_workers.py [--trials 8] [--duration 3]
        [--connections 32] [--workers 2] [--block-ms 1.0] [--out results.json]

Why: ``serving.server`` refuses ``--workers`` > 1 (docs/serving.md, "Both cores"), and two 1-CPU
processes serve ~25 % more than one process on the same two cores. This measures the mode itself
with nothing of aicrush in it: KServe's own server around a no-op model
(benchmarks/serving/kserve_noop_server.py) that holds its process ``--block-ms`` per request
(default 1 ms, about the tiny model's forward pass for one text on one core; a sleep, so each
worker serves at most 1,000 requests/s whatever else the machine runs), so the result does not
depend on how our model would be carried into the workers.

Setup: KServe's parent process binds the port and spawns ``--workers`` processes that all accept
from that one socket. Each trial starts a fresh ``wrk`` (one thread, ``--connections``
keep-alive connections opened at once, V1 REST, ~1 KB bodies) against it, counts each worker's
established connections halfway through the trial (psutil) and records the requests/s; then the
same load split evenly over two separate single-process servers (what two replicas behind a
Kubernetes Service get). Every server logs an access line per request and no timing lines (one
``--log_config_file`` for all, since KServe's workers configure their logging from it alone).
wrk runs on the same cores as the servers on a 2-core machine (then the rates are a floor).

Prints a line per trial, the medians and
``RESULT workers_rps=... replicas_rps=... ratio=... worst_ratio=... starved_trials=K/N
unbalanced_trials=K/N``: medians, the worst trial against the replicas' median, the trials in
which a worker held no connection at all and those in which one held fewer than a quarter.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_serving import (  # noqa: E402
    KSERVE_NOOP,
    free_port,
    lua_script,
    predict_url,
    ready,
    server,
    wrk_cmd,
    wrk_parallel,
    wrk_result,
)
from benchmarks.serving.model import code_snippets  # noqa: E402

#: A worker holding fewer than this share of the connections counts as unbalanced.
UNBALANCED_SHARE = 0.25


def log_config(path: Path) -> Path:
    """KServe's default logging configuration with its per-request timing lines off."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = copy.deepcopy(KSERVE_LOG_CONFIG)
    config["loggers"]["kserve.trace"]["level"] = "WARNING"
    path.write_text(json.dumps(config))
    return path


def tcp_connections(proc: object) -> list:
    """``proc``'s TCP connections (psutil >= 6 names it net_connections, 5.x connections)."""
    method = getattr(proc, "net_connections", None) or proc.connections  # type: ignore[attr-defined]
    return list(method(kind="tcp"))


def connections_per_worker(parent_pid: int, port: int) -> list[int]:
    """Established connections on ``port`` held by each child of ``parent_pid`` (sorted, largest
    first; KServe's spawn helper process, if any, holds none and is left out)."""
    import psutil

    counts = []
    for child in psutil.Process(parent_pid).children():
        try:
            conns = tcp_connections(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        n = sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED")
        if n or any(c.laddr and c.laddr.port == port for c in conns):
            counts.append(n)
    return sorted(counts, reverse=True)


def server_pid(port: int) -> int:
    """The pid of the process listening on ``port`` that has children (KServe's parent)."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.children() and any(
                c.laddr and c.laddr.port == port and c.status == "LISTEN"
                for c in tcp_connections(proc)
            ):
                return int(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise RuntimeError(f"no multiprocess server listening on {port}")


def trial(url: str, port: int, parent: int, script: Path, connections: int,
          duration: float) -> dict:  # fmt: skip
    """One wrk run; the workers' connection counts halfway through."""
    seen: dict[str, list[int]] = {}

    def count() -> None:
        time.sleep(duration / 2)
        seen["split"] = connections_per_worker(parent, port)

    counter = threading.Thread(target=count)
    counter.start()
    out = subprocess.run(
        wrk_cmd(url, script, connections, duration), capture_output=True, text=True, check=True
    ).stdout
    counter.join()
    return {**wrk_result(out), "split": seen.get("split", [])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8, help="fresh wrk runs per server")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per trial")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="KServe --workers (and replicas)")
    parser.add_argument(
        "--block-ms", type=float, default=1.0, help="ms each request holds its worker process"
    )
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-kserve-workers-") as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        work = Path(tmp)
        logs = str(log_config(work / "logging.json"))
        bodies = [json.dumps({"instances": [t]}) for t in code_snippets(64, 1024)]
        script = lua_script(work / "v1.lua", bodies)
        noop = [sys.executable, "-m", KSERVE_NOOP, "--block_ms", str(args.block_ms)]
        port = free_port()
        stack.enter_context(server(
            [*noop, str(port), "--workers", str(args.workers), "--log_config_file", logs],
            ready(port), work / "workers.log",
        ))  # fmt: skip
        parent = server_pid(port)
        replica_urls = []
        for i in range(args.workers):
            rport = free_port()
            stack.enter_context(server(
                [*noop, str(rport), "--log_config_file", logs], ready(rport), work / f"r{i}.log"
            ))  # fmt: skip
            replica_urls.append(predict_url(rport))
        # Warm-up of both, then interleaved trials.
        trial(predict_url(port), port, parent, script, 8, 1.0)
        wrk_parallel(replica_urls, script, 8, 1.0)
        rows = []
        for i in range(args.trials):
            w = trial(predict_url(port), port, parent, script, args.connections, args.duration)
            r = wrk_parallel(replica_urls, script, args.connections, args.duration)
            rows.append({"workers": w, "replicas": r})
            print(f"trial {i + 1}: --workers {args.workers} {w['rps']:7.0f} rps, connections per "
                  f"worker {w['split']}; {args.workers} replicas {r['rps']:7.0f} rps", flush=True)  # fmt: skip
    unbalanced = sum(
        1 for row in rows
        if len(row["workers"]["split"]) < args.workers
        or min(row["workers"]["split"]) < UNBALANCED_SHARE * args.connections
    )  # fmt: skip
    starved = sum(
        1 for row in rows
        if len(row["workers"]["split"]) < args.workers or min(row["workers"]["split"]) == 0
    )  # fmt: skip
    worst = min(r["workers"]["rps"] for r in rows)
    workers_rps = statistics.median(r["workers"]["rps"] for r in rows)
    replicas_rps = statistics.median(r["replicas"]["rps"] for r in rows)
    print(f"\nKServe --workers {args.workers} (one shared socket): median {workers_rps:.0f} rps, "
          f"range {min(r['workers']['rps'] for r in rows):.0f}-"
          f"{max(r['workers']['rps'] for r in rows):.0f}; {unbalanced} of {len(rows)} trials "
          f"left a worker under {UNBALANCED_SHARE:.0%} of the {args.connections} connections, "
          f"{starved} with none")  # fmt: skip
    print(
        f"{args.workers} single-process replicas, connections split evenly: median "
        f"{replicas_rps:.0f} rps"
    )
    print(f"load average {os.getloadavg()[0]:.1f}, {time.monotonic() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"trials": rows, "loadavg": os.getloadavg()}, indent=2))
    print(
        f"RESULT workers_rps={workers_rps:.0f} replicas_rps={replicas_rps:.0f} "
        f"ratio={workers_rps / replicas_rps:.3f} worst_ratio={worst / replicas_rps:.3f} "
        f"starved_trials={starved}/{len(rows)} unbalanced_trials={unbalanced}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
