"""The short form of kfp.local's output: what `aicrush run` shows and what only the log keeps."""

from __future__ import annotations

import io
from pathlib import Path

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


def test_verbose_shows_everything(tmp_path: Path) -> None:
    terminal = io.StringIO()
    out = RunOutput(tmp_path / "run.log", terminal, verbose=True)
    out.write(_kfp_lines("ingest-sources", ["INFO noise"], "SUCCESS"))
    out.close()
    assert "INFO noise" in terminal.getvalue() and "Executing task" in terminal.getvalue()
