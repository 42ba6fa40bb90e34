"""`aicrush serve` after a run whose model the gate refused: the error says so and how to serve it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app


def _last_summary(state: Path, version: str, model_dir: Path) -> None:
    runs = state / "runs"
    runs.mkdir(parents=True)
    summary = {
        "model_version": version,
        "reason": "macro-F1 0.5270 is below the linear baseline's 0.8060 -0.0500",
        "reports": {"model": str(model_dir)},
    }
    (runs / "last-summary.json").write_text(json.dumps(summary))


def test_serve_names_the_refused_run_and_its_model_folder(state_dir: Path, tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _last_summary(state_dir, "", model_dir)
    result = CliRunner().invoke(app, ["serve", "--state-dir", str(state_dir)])
    assert result.exit_code == 2
    assert "no registered model 'aicrush-code-language'" in result.output
    assert "did not register it (macro-F1 0.5270 is below the linear baseline" in result.output
    assert f"aicrush serve --path {model_dir}" in result.output


def test_no_hint_when_the_last_run_registered_its_model(state_dir: Path, tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _last_summary(state_dir, "3", model_dir)
    result = CliRunner().invoke(app, ["serve", "--state-dir", str(state_dir)])
    assert result.exit_code == 2
    assert "serve it anyway" not in result.output
