"""The short form of kfp.local's output: what `aicrush run` shows and what only the log keeps."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aicrush.progress import PROGRESS_MARK, STATUS_MARK
from pipelines.run_output import RunOutput

CYAN, GREEN, RED, RESET = "\x1b[96m", "\x1b[92m", "\x1b[91m", "\x1b[0m"


def _kfp_lines(task: str, body: list[str], status: str | None) -> str:
    """What kfp.local prints for one task (colours, indented subprocess lines and all)."""
    out = [
        f"11:02:03.123 - INFO - Executing task {CYAN}'{task}'{RESET}",
        "11:02:03.124 - INFO - Streamed logs:",
        "",
        *(f"    {line}" for line in body),
    ]
    if status:
        colour = GREEN if status == "SUCCESS" else RED
        out.append(
            f"11:02:04.000 - INFO - Task {CYAN}'{task}'{RESET} finished with status "
            f"{colour}{status}{RESET}"
        )
        out.append(f"11:02:04.001 - INFO - Task {CYAN}'{task}'{RESET} outputs:")
        out.append('        metrics: {"n_files": 6}')
    return "\n".join(out) + "\n"


def test_terminal_gets_one_line_per_step_and_marked_progress(tmp_path: Path) -> None:
    terminal = io.StringIO()
    out = RunOutput(tmp_path / "run.log", terminal)
    out.write(
        _kfp_lines(
            "ingest-sources",
            ['{"executor": "input json"}', f"{PROGRESS_MARK}ingest: 6 files", "INFO noise"],
            "SUCCESS",
        )
    )
    # Written in pieces, as a pipe delivers it: lines are joined before they are parsed.
    text = _kfp_lines("train-model", [f"{STATUS_MARK}train: step 1/9", "epoch done"], "SUCCESS")
    for i in range(0, len(text), 7):
        out.write(text[i : i + 7])
    out.close()
    lines = terminal.getvalue().splitlines()
    assert lines[0] == "  ingest: 6 files"
    assert lines[1].split() == ["ingest-sources", "ok", lines[1].split()[2], "s"]
    assert lines[2].split()[:2] == ["train-model", "ok"] and len(lines) == 3  # no status: not a tty
    log = (tmp_path / "run.log").read_text()
    assert '{"executor": "input json"}' in log and "INFO noise" in log and "\x1b[" not in log
    assert [s.status for s in out.steps] == ["ok", "ok"]


def test_a_failed_step_gives_its_last_error_as_the_cause(tmp_path: Path) -> None:
    terminal = io.StringIO()
    out = RunOutput(tmp_path / "run.log", terminal)
    traceback = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: an inner error that was handled",
        "aicrush.errors.DataError: only 1 usable class(es) left; lower validate.min_files_per_class",
    ]
    out.write(_kfp_lines("validate-dataset", traceback, status=None))
    step = out.fail_current()  # kfp.local raises instead of printing the finish line
    out.close()
    assert step is not None and step.name == "validate-dataset" and step.status == "FAILED"
    assert step.cause == (
        "DataError: only 1 usable class(es) left; lower validate.min_files_per_class"
    )
    assert terminal.getvalue().split()[:2] == ["validate-dataset", "FAILED"]


def test_a_retried_step_says_so_with_the_cause_of_the_failed_attempt(tmp_path: Path) -> None:
    """kfp.local retries the train task (resources.train_retries): three FAILED lines in a row
    read as three failures; the retry says it is one, and why the attempt before failed."""
    terminal = io.StringIO()
    out = RunOutput(tmp_path / "run.log", terminal)
    failing = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "aicrush.errors.DataError: CUDA out of memory; lower train.batch_size",
    ]
    out.write(_kfp_lines("train-model", failing, "FAILURE"))
    out.write(_kfp_lines("train-model", ["epoch done"], "SUCCESS"))
    out.close()
    lines = terminal.getvalue().splitlines()
    assert lines[0].split()[:2] == ["train-model", "FAILED"]
    assert lines[1] == (
        "  retrying train-model (attempt 2); the last attempt failed: "
        "DataError: CUDA out of memory; lower train.batch_size"
    )
    assert lines[2].split()[:2] == ["train-model", "ok"] and len(lines) == 3


def test_verbose_shows_everything(tmp_path: Path) -> None:
    terminal = io.StringIO()
    out = RunOutput(tmp_path / "run.log", terminal, verbose=True)
    out.write(_kfp_lines("ingest-sources", ["INFO noise"], "SUCCESS"))
    out.close()
    assert "INFO noise" in terminal.getvalue() and "Executing task" in terminal.getvalue()


def _traceback_of(code: str) -> list[str]:
    """The lines a step that runs ``code`` prints (stderr into stdout, as kfp.local pipes it)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0 and "Traceback" in done.stderr, done.stderr
    return done.stderr.splitlines()


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        # A corrupt input file: a dotted module and a class not ending in Error.
        (
            "import pyarrow.parquet as pq, sys; open('x.parquet', 'w').write('not parquet');"
            " pq.read_table('x.parquet')",
            "ArrowInvalid: Could not open Parquet input source",
        ),
        ("import json; json.loads('{')", "JSONDecodeError: Expecting property name"),
        (
            "from aicrush.errors import DataError; raise DataError('add data')",
            "DataError: add data",
        ),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),  # no message
        ("class Boom(Exception): pass\nraise Boom()", "Boom"),
        ("import pyarrow.lib as pl; raise pl.ArrowInvalid()", "ArrowInvalid"),
        ("e = ValueError('bad value'); e.add_note('a note'); raise e", "ValueError: bad value"),
        ("raise OSError(28, 'No space left on device')", "OSError: [Errno 28] No space left"),
        ("raise ValueError('first line\\nsecond line')", "ValueError: first line"),
        # Chained: the last traceback's exception is the cause.
        (
            "try:\n    {}['k']\nexcept KeyError:\n    raise RuntimeError('lookup failed')",
            "RuntimeError: lookup failed",
        ),
        ("def f():\n    return 1 / 0\nf()", "ZeroDivisionError: division by zero"),
        (
            "raise ExceptionGroup('several', [ValueError('inner one')])",
            "ValueError: inner one",
        ),
    ],
)
def test_the_cause_is_the_last_line_of_any_real_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, cause: str
) -> None:
    """A step that failed on a corrupt .parquet (pyarrow.lib.ArrowInvalid) was reported as
    'failed without an error message': only names ending in Error/Exception were recognised."""
    monkeypatch.chdir(tmp_path)
    out = RunOutput(tmp_path / "run.log", io.StringIO())
    out.write(_kfp_lines("ingest-sources", ["INFO: reading", *_traceback_of(code)], status=None))
    step = out.fail_current()
    out.close()
    assert step is not None and step.cause.startswith(cause), step.cause


def test_a_traceback_cut_short_and_frames_that_look_like_errors(tmp_path: Path) -> None:
    """Source lines of frames ("raise Boom: x" is never at the header's depth) are not causes;
    a line of other output after a header does not swallow the next traceback."""
    out = RunOutput(tmp_path / "run.log", io.StringIO())
    body = [
        "Traceback (most recent call last):",
        '  File "x.py", line 3, in <module>',
        "    Failure: not the exception",
        "Epoch 1 of 3",
        "Traceback (most recent call last):",
        '  File "x.py", line 9, in <module>',
        "    raise",
        "    ^^^^^",
        "pyarrow.lib.ArrowNotImplementedError",
        "note: an exception note",
    ]
    out.write(_kfp_lines("train-model", body, status=None))
    step = out.fail_current()
    out.close()
    assert step is not None and step.cause == "ArrowNotImplementedError"
