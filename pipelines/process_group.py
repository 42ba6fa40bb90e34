"""Run a command that spawns its own workers (``mlflow ui``: a uvicorn server, its workers, a huey
job consumer) in a process group of its own, and on Ctrl-C / SIGTERM stop the whole group, so
nothing it started outlives the command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

#: Seconds the group gets to exit after SIGTERM before SIGKILL.
DEFAULT_GRACE_S = 10.0


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from ``/proc`` (Linux); where
    there is no ``/proc``, ``[pgid]`` while the group exists."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, group = fields[0], int(fields[2])
            if group == pgid and state != "Z":
                members.append(int(entry.name))
    return members


def stop_group(proc: subprocess.Popen, grace_s: float = DEFAULT_GRACE_S) -> None:
    """SIGTERM every process of ``proc``'s group (``proc`` leads it), wait up to ``grace_s``
    seconds for all of them to exit, then SIGKILL what is left."""
    pgid = proc.pid
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so it does not count as a member
        if not group_members(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def run_in_own_group(cmd: list[str], grace_s: float = DEFAULT_GRACE_S) -> int:
    """Run ``cmd`` in a new session (its own process group) until it exits, or until this process
    gets SIGINT (Ctrl-C) or SIGTERM: then the whole group is stopped (:func:`stop_group`) and 0
    is returned. Returns the command's exit status otherwise."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        # A new session: Ctrl-C on the terminal reaches only us; we stop the group.
        proc = subprocess.Popen(cmd, start_new_session=True)
        return proc.wait()
    except _Stop:
        return 0
    finally:
        if proc is not None:
            for signum in previous:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(signum, signal.SIG_IGN)
            stop_group(proc, grace_s)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
