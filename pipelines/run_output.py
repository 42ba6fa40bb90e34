"""What ``aicrush run`` shows while the pipeline runs: one line per step, progress, the cause of a failure.

kfp.local prints everything on ``sys.stdout``: its own log lines (``Executing task 'x'``, ``Task 'x'
finished with status SUCCESS``, each task's outputs) and every line a step's subprocess writes.
:class:`RunOutput` stands in for ``sys.stdout``/``sys.stderr`` during the run: every line goes to
the run's log file; the terminal gets

- ``ingest-sources      ok      3.2 s`` when a step finishes (parsed from kfp.local's lines),
- the lines a step marks with :func:`aicrush.progress.report` (and, on a terminal, the transient
  :func:`aicrush.progress.status` lines, overwritten in place),
- for a failed step, its one-line cause (the final line of the last Python traceback it printed,
  ``ArrowInvalid: message`` or ``KeyboardInterrupt``, else its last ``SomeError: message`` line;
  the project's errors name the setting to change) and where the full log is.

With ``verbose`` every line is echoed as well (the old behaviour).
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aicrush.progress import PROGRESS_MARK, STATUS_MARK

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_FINISH = re.compile(r"Task '([^']+)' finished with status (\w+)")
# An error line outside a traceback: "ValueError: ...", "aicrush.errors.DataError: ...".
_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit)):\s+(.+)$")
# A traceback's header; "Exception Group Traceback" is how Python 3.11+ starts an ExceptionGroup.
_TRACEBACK = re.compile(r"^(?:Exception Group )?Traceback \(most recent call last\):$")
# The line that ends a traceback (traceback.format_exception_only): "module.Class: message",
# "Class: message", or the bare class when the message is empty ("KeyboardInterrupt").
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)(?::\s?(.*))?$")
# ExceptionGroup tracebacks draw a box: "  + Exception Group Traceback", "  | ValueError: x".
_BOX = re.compile(r"^(\s*)[+|] ")


@dataclass
class StepRecord:
    """One pipeline task as the run output saw it (``seconds``: wall time, ``status``: ok|FAILED)."""

    name: str
    started: float
    seconds: float = 0.0
    status: str = "running"
    cause: str = ""
    errors: list[str] = field(default_factory=list)


class RunOutput(io.TextIOBase):
    """A text stream that writes every line to ``log_file`` and shows the short form on ``terminal``.

    Use it as ``sys.stdout`` and ``sys.stderr`` for the duration of a kfp.local run (see
    :func:`pipelines.local.run_pipeline_locally`). ``steps`` records every task seen, in order.
    """

    def __init__(self, log_file: Path, terminal: TextIO, verbose: bool = False):
        super().__init__()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_file
        self._log = log_file.open("a", encoding="utf-8")
        self._terminal = terminal
        self._tty = bool(getattr(terminal, "isatty", lambda: False)())
        self.verbose = verbose
        self.steps: list[StepRecord] = []
        self._buffer = ""
        self._transient = False  # a status line is on the terminal, to be overwritten
        self._traceback_indent: int | None = None  # inside a traceback: its header's indent

    # -- stream protocol ------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # libraries draw progress bars only for terminals: keep the log plain
        return False

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        if not self._log.closed:
            self._log.flush()

    def close(self) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._clear_transient()
        super().close()  # flushes the log first
        self._log.close()

    # -- what a line means ----------------------------------------------------------------

    @property
    def current(self) -> StepRecord | None:
        return self.steps[-1] if self.steps and self.steps[-1].status == "running" else None

    def _line(self, raw: str) -> None:
        line = _ANSI.sub("", raw).rstrip("\r")
        self._log.write(line + "\n")
        text = line.strip()
        if self.verbose:
            self._show(raw)
        if m := _START.search(text):
            failed = [s for s in self.steps if s.name == m[1] and s.status == "FAILED"]
            self.steps.append(StepRecord(m[1], time.monotonic()))
            self._traceback_indent = None
            if failed and not self.verbose:  # the task's retry policy (resources.train_retries)
                self._show(
                    f"  retrying {m[1]} (attempt {len(failed) + 1}); the last attempt failed: "
                    f"{failed[-1].cause}"
                )
            return
        if m := _FINISH.search(text):
            step = self.current
            if step is not None and step.name == m[1]:
                self._finish(step, "ok" if m[2] == "SUCCESS" else "FAILED")
            return
        step = self.current
        if text.startswith(PROGRESS_MARK):
            if not self.verbose:
                self._show(f"  {text[len(PROGRESS_MARK) :]}")
            return
        if text.startswith(STATUS_MARK):
            if self._tty and not self.verbose:
                self._clear_transient()
                self._terminal.write(f"  {text[len(STATUS_MARK) :]}"[:200])
                self._terminal.flush()
                self._transient = True
            return
        if step is None:
            return
        unboxed = _BOX.sub(lambda m: m[1] + "  ", line)
        if (error := self._traceback_line(unboxed)) is not None:
            if error:
                step.errors.append(error)
        elif m := _ERROR.match(unboxed.strip()):
            step.errors.append(f"{m[1]}: {m[2]}")

    def _traceback_line(self, line: str) -> str | None:
        """Follow a traceback by indentation (kfp.local indents a step's lines by 4): frames
        are indented deeper than the header, the exception line as deep. Returns the cause when
        ``line`` ends a traceback ("Class: message" or "Class"), "" for any other line of one,
        None for a line outside tracebacks."""
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if _TRACEBACK.match(text):
            self._traceback_indent = indent
            return ""
        if self._traceback_indent is None:
            return None
        if not text or indent > self._traceback_indent:
            return ""  # a frame, its source line or the ^^^ markers
        self._traceback_indent = None
        m = _EXCEPTION.match(text)
        if m is None:
            return ""  # a line of some other output: the traceback was cut short
        return f"{m[1]}: {m[2]}" if m[2] else m[1]

    def _finish(self, step: StepRecord, status: str) -> None:
        step.seconds = time.monotonic() - step.started
        step.status = status
        if status != "ok":
            step.cause = self.cause_of(step)
        if not self.verbose:
            self._show(f"{step.name:<22} {status:<7} {step.seconds:7.1f} s")

    @staticmethod
    def cause_of(step: StepRecord) -> str:
        """The step's one-line cause: the last error line it printed that is not the generic
        'task failed' wrapper, without the exception's class when it says nothing more."""
        for error in reversed(step.errors):
            if "finished with status" not in error:
                return error
        return "the step failed without an error message (see the log)"

    def fail_current(self) -> StepRecord | None:
        """Mark the running step FAILED (kfp.local raised instead of printing its finish line)."""
        step = self.current
        if step is not None:
            self._finish(step, "FAILED")
        return step

    # -- terminal -------------------------------------------------------------------------

    def _clear_transient(self) -> None:
        if self._transient:
            self._terminal.write("\r\x1b[2K")
            self._transient = False

    def _show(self, text: str) -> None:
        self._clear_transient()
        self._terminal.write(text + "\n")
        self._terminal.flush()


def default_log_file(state: Path, now: Callable[[], float] = time.time) -> Path:
    """``<state>/runs/run-YYYYmmdd-HHMMSS.log`` for a run starting now."""
    return state / "runs" / time.strftime("run-%Y%m%d-%H%M%S.log", time.localtime(now()))
