"""Progress lines a pipeline step prints for ``aicrush run`` to show (the rest goes to the log).

A step runs as a subprocess whose output the local runner (:mod:`pipelines.run_output`) writes to
the run's log file; only lines carrying a marker reach the terminal:

- :func:`report` (``aicrush:progress <text>``): a milestone, always shown ("ingest: 1,200 files");
- :func:`status` (``aicrush:status <text>``): a transient update ("train: step 40/200"), shown
  in place on a terminal and left out otherwise.

In the cluster the same lines are plain log lines of the step's pod.
"""

from __future__ import annotations

import sys

PROGRESS_MARK = "aicrush:progress "
STATUS_MARK = "aicrush:status "


def report(text: str) -> None:
    """Print one milestone line of the current step (shown by ``aicrush run``)."""
    print(PROGRESS_MARK + text, file=sys.stdout, flush=True)


def status(text: str) -> None:
    """Print a transient progress line (``aicrush run`` overwrites it in place on a terminal)."""
    print(STATUS_MARK + text, file=sys.stdout, flush=True)
