"""The aicrush command line: every command explains itself, bad configs fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()
CONFS = Path(__file__).resolve().parents[1] / "confs"


def test_top_level_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "compile", "submit"):
        assert command in result.output


@pytest.mark.parametrize(
    "command", [c.name or c.callback.__name__ for c in app.registered_commands]
)
def test_every_command_has_help(command: str):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) > 3


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("run", "<state-dir>/runs/run-<time>.log"),
        ("ui", "<state-dir>/mlflow.db"),
        ("compile", "aicrush-<pipeline>.yaml"),
        ("serve", "kserve[logging]"),
        ("compile", "the training task requests the GPU, node selector and toleration"),
    ],
)
def test_help_keeps_placeholders_and_reflows_paragraphs(command: str, text: str):
    """Help is rendered as Markdown: docstring paragraphs wrapped at 100 columns reflow to the
    terminal, and <placeholders> and [extras] survive (rich markup used to drop them)."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert text in " ".join(result.output.split())


@pytest.mark.parametrize(
    "command", [c.name or c.callback.__name__ for c in app.registered_commands]
)
def test_help_at_80_columns_shows_every_flag_whole(command: str):
    """At 80 columns `aicrush serve --help` showed `--max-batch-wait…`: the table's column of
    --no-... names (an --access-log/--no-access-log pair) left the flag names too little room."""
    import re

    import typer.main

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    flags = [o for p in click_command.params for o in (*p.opts, *p.secondary_opts) if o[0] == "-"]
    cut = [f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", result.output)]
    assert not cut, (cut, result.output)


def test_serve_refuses_an_access_log_format_with_the_access_log_off(tmp_path: Path):
    result = runner.invoke(
        app, ["serve", "--path", str(tmp_path), "--no-access-log", "--access-log-format", "%(h)s"]
    )
    assert result.exit_code == 2
    assert "contradict" in " ".join(result.output.split())


def test_run_with_invalid_config_names_the_key():
    result = runner.invoke(app, ["run", "--config", str(CONFS / "invalid" / "unknown_key.yaml")])
    assert result.exit_code == 2
    assert "train.epocs: unknown key" in result.output


def test_unknown_preset():
    result = runner.invoke(app, ["compile", "--preset", "gigantic"])
    assert result.exit_code == 2
    assert "unknown preset 'gigantic'" in result.output


def test_compile_writes_yaml(tmp_path: Path):
    out = tmp_path / "p.yaml"
    result = runner.invoke(app, ["compile", "--output", str(out), "--source", "gs://bucket/code"])
    assert result.exit_code == 0, result.output
    assert "gs://bucket/code" in out.read_text()


def test_submit_to_unreachable_host_fails_cleanly():
    result = runner.invoke(app, ["submit", "--host", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach Kubeflow Pipelines at http://127.0.0.1:9" in result.output


@pytest.mark.parametrize(
    ("distributed", "named"),
    [
        ({"num_nodes": 2}, "train.distributed.num_nodes is 2"),
        ({"processes_per_node": 4096}, "train.distributed.processes_per_node is 4096"),
    ],
)
def test_run_refuses_distributed_settings_this_machine_cannot_run_before_it_starts(
    tmp_path: Path, distributed: dict, named: str
):
    import yaml

    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"train": {"distributed": distributed}}))
    state = tmp_path / "state"
    result = runner.invoke(app, ["run", "--config", str(conf), "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not (state / "pipeline_root").exists()  # refused before any step ran


def test_run_refuses_a_hub_model_it_cannot_load_offline_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Local runs are offline (HF_HUB_OFFLINE=1 unless set): a hub id missing from the cache
    failed the train step after ingest, validation and features, and twice more on retry."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the model is in no cache here
    conf = tmp_path / "conf.yaml"
    conf.write_text("train:\n  base_model: some-org/some-model\n")
    state = tmp_path / "state"
    result = runner.invoke(app, ["run", "--config", str(conf), "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "train.base_model 'some-org/some-model'" in said and "gs://BUCKET/models" in said
    assert not (state / "pipeline_root").exists()  # refused before any step ran


def test_submit_host_needs_a_scheme():
    """kfp guessed https for `localhost:8080` (a port-forward speaks http) with a UserWarning."""
    result = runner.invoke(app, ["submit", "--host", "localhost:8080"])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "write http://localhost:8080" in said
