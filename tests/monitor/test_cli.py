"""``aicrush drift`` offline: JSONL of V1 requests or plain text lines against a reference file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from serving.monitor.cli import drift_command, read_requests
from tests.gcs_refusing import gcs_refusing_anonymous  # noqa: F401

app = typer.Typer()
app.command()(drift_command)


def test_drift_command_on_jsonl_requests(tmp_path, split, reference):
    _, pool = split
    shifted = pool[pool["prediction"].isin(["JavaScript", "CSS"])].sample(
        200, replace=True, random_state=11
    )
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    requests = tmp_path / "requests.jsonl"
    with requests.open("w") as f:
        for start in range(0, len(shifted), 10):
            chunk = shifted.iloc[start : start + 10]
            f.write(
                json.dumps(
                    {
                        "instances": [{"text": t} for t in chunk["text"]],
                        "predictions": [{"label": p, "score": 1.0} for p in chunk["prediction"]],
                    }
                )
                + "\n"
            )
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        [
            str(requests),
            "--reference",
            str(ref_path),
            "--model",
            "m",
            "--version",
            "3",
            "--out",
            str(out),
            "--fail-on-drift",
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("DRIFT")
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["dataset_drift"] and summary["reference_sha256"] == reference.sha256
    assert summary["n_rows"] == 200 and out.is_file()


def test_read_requests_plain_text_and_instances(tmp_path):
    plain = tmp_path / "inputs.txt"
    plain.write_text("print(1)\n\nint x;\n")
    assert read_requests(plain) == (["print(1)", "int x;"], None)
    lines = tmp_path / "inputs.jsonl"
    lines.write_text('{"text": "a", "prediction": "C"}\n{"instances": ["b"]}\n"c"\n')
    assert read_requests(lines) == (["a", "b", "c"], None)


def test_read_requests_reads_v2_lines_as_the_server_does(tmp_path):
    lines = tmp_path / "inputs.jsonl"
    v2 = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2, 1],
                "data": [["print(1)"], ["int x;"]],
            }
        ]
    }
    lines.write_text(json.dumps(v2) + "\n")
    assert read_requests(lines) == (["print(1)", "int x;"], None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"inputs": "print(1)"}) + "\n")
    with pytest.raises(typer.BadParameter, match=r"bad\.jsonl:1"):
        read_requests(bad)


def _squash(text: str) -> str:
    return "".join(text.replace("│", "").split())


def _aicrush_drift(cwd, *args: str):
    from tests.pipelines.test_first_hour import aicrush

    return aicrush(cwd, "drift", *args, timeout=120)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("garbage.bin", b"fine line\nsecond\n\xff\xfe\x80garbage\n", "garbage.bin:3 is not UTF-8"),
        (
            "deep.jsonl",
            b'{"text": "a"}\n' + b"[" * 100_000 + b"]" * 100_000,
            "deep.jsonl:2 is JSON",
        ),
        ("number.jsonl", b'{"text": 12}\n', "number.jsonl:1: 'text' must be a string"),
    ],
)
def test_an_unreadable_requests_file_is_one_clean_exit_2(tmp_path, name, content, says):
    (tmp_path / name).write_bytes(content)
    result = _aicrush_drift(tmp_path, str(tmp_path / name))
    assert result.returncode == 2, result.stdout
    assert _squash(says) in _squash(result.stdout), result.stdout  # rich wraps the message
    assert "Traceback" not in result.stdout and "UnicodeDecodeError" not in result.stdout


def test_drift_without_a_file_says_how_to_give_one(tmp_path):
    result = _aicrush_drift(tmp_path)
    assert result.returncode == 2
    assert "give the requests file: aicrush drift --requests FILE" in result.stdout


def _few_requests(tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(json.dumps({"text": f"x = {i}\nprint(x)\n"}) + "\n" for i in range(5))
    )
    return requests


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--reference", "{not_parquet}"],
            "Invalid value for --reference: cannot read the reference",
        ),
        (
            ["--out", "gs://bucket/drift/report.html"],
            "Invalid value for --out: aicrush drift writes",
        ),
        (["--model-dir", "{missing}"], "Invalid value for --model-dir: no aicrush model in"),
    ],
)
def test_bad_drift_options_are_a_clean_exit_2(tmp_path, monkeypatch, reference, args, says):
    """A reference that is not Parquet, a gs:// --out (pathlib used to fold it into a local
    folder 'gs:'), a model folder that is not one: exit 2 naming the option, no traceback."""
    monkeypatch.chdir(tmp_path)
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    not_parquet = tmp_path / "not.parquet"
    not_parquet.write_bytes(b"\x00\x01 not parquet")
    args = [a.format(not_parquet=not_parquet, missing=tmp_path / "missing") for a in args]
    if "--reference" not in args:
        args += ["--reference", str(ref_path)]
    result = CliRunner().invoke(app, [str(_few_requests(tmp_path)), "--min-rows", "1", *args])
    assert result.exit_code == 2, result.output
    assert _squash(says) in _squash(result.output), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "gs:").exists()


def test_not_enough_data_writes_its_summary_into_a_new_folder(tmp_path, reference):
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    out = tmp_path / "new" / "folder" / "report.html"
    result = CliRunner().invoke(
        app, [str(_few_requests(tmp_path)), "--reference", str(ref_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "not enough data: 5 requests" in result.output
    assert json.loads(out.with_suffix(".json").read_text())["verdict"] == "not_enough_data"


def test_a_registry_that_is_down_is_not_a_bad_reference_option() -> None:
    """`aicrush monitor --reference models:/...` while MLflow or the bucket is down: that error
    keeps its own message, it is not 'Invalid value for --reference' (exit 2, a usage error)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from serving.monitor.cli import _unreachable

    assert _unreachable(ConnectionError("refused")) and _unreachable(TimeoutError())
    assert _unreachable(MlflowException("503", error_code=TEMPORARILY_UNAVAILABLE))
    assert not _unreachable(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not _unreachable(MlflowException("anything else"))
    assert not _unreachable(ValueError("not a Parquet file"))


def _python_only_requests(tmp_path, pool, rows: int = 250):
    """A normal day of a Python shop: Python files only, none indented with tabs, so the
    window's tab_indent_ratio has one value (0) in every row."""
    python = pool[(pool["prediction"] == "Python") & (pool["tab_indent_ratio"] == 0)]
    sample = python.sample(rows, replace=True, random_state=7)
    requests = tmp_path / "python.jsonl"
    with requests.open("w") as f:
        for start in range(0, rows, 10):
            chunk = sample.iloc[start : start + 10]
            line = {
                "instances": [{"text": t} for t in chunk["text"]],
                "predictions": [{"label": p, "score": 1.0} for p in chunk["prediction"]],
            }
            f.write(json.dumps(line) + "\n")
    return requests


def test_drift_on_a_window_with_a_constant_column_raises_no_runtime_warning(
    runtime_warnings_raise, tmp_path, split, reference
):
    """The newcomer's run: `aicrush drift` on a Python-only file printed numpy's "invalid value
    encountered in divide" (Evidently's correlation of a column with one value). With
    RuntimeWarning an error, the same path gives its verdict and its report."""
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    out = tmp_path / "report.html"
    requests = _python_only_requests(tmp_path, split[1])
    result = CliRunner().invoke(
        app, [str(requests), "--reference", str(ref_path), "--out", str(out)]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.output.startswith(("DRIFT", "no drift")), result.output
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text())["n_rows"] == 250


def test_aicrush_drift_prints_no_library_warning(tmp_path, split, reference):
    """What the user sees, in a process of its own: the verdict line, no RuntimeWarning."""
    ref_path = tmp_path / "reference.parquet"
    ref_path.write_bytes(reference.parquet)
    requests = _python_only_requests(tmp_path, split[1])
    result = _aicrush_drift(tmp_path, str(requests), "--reference", str(ref_path))
    assert result.returncode == 0, result.stdout
    assert "Warning" not in result.stdout, result.stdout
    assert result.stdout.startswith(("DRIFT", "no drift")), result.stdout


def test_a_reference_in_gs_without_credentials_is_one_line(
    tmp_path,
    state_dir,
    gcs_refusing_anonymous,  # noqa: F811
):
    """Not "Invalid value for --reference" (the option is right) and not a traceback: the
    CredentialsError's line naming the reference and the ways to provide credentials, exit 2."""
    from aicrush.registry import client
    from aicrush.state import local_tracking_uri

    uri = local_tracking_uri(state_dir)
    c = client(uri)
    run = c.create_run(c.create_experiment("e", artifact_location="gs://team-mlflow/aicrush"))
    c.create_registered_model("m")
    c.create_model_version("m", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    requests = tmp_path / "requests.txt"
    requests.write_text("print('hello')\n")
    args = ["--requests", str(requests), "--model", "m", "--version", "1", "--tracking-uri", uri]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    said = "error: no Google credentials found for reference/reference.parquet of models:/m/1"
    assert f"{said} (run {run.info.run_id}): run `gcloud auth" in result.output
    assert "Invalid value" not in result.output
    assert type(result.exception) is SystemExit  # typer.Exit, not an uncaught error


_LABEL_EXPECTED = """a label string or {"label": "...", "score": ...}"""


@pytest.mark.parametrize(
    ("line", "says"),
    [
        # a V1 response's predictions, logged beside the request
        ({"instances": ["a"], "predictions": [{"lbl": "C"}]}, "predictions[0] has no 'label'"),
        ({"instances": ["a"], "predictions": [{"label": 3}]}, "predictions[0].label must be"),
        ({"instances": ["a"], "predictions": [{"label": None}]}, "got null"),
        ({"instances": ["a"], "predictions": [None]}, "predictions[0] must be"),
        ({"instances": ["a"], "predictions": [7]}, "got number"),
        ({"instances": ["a"], "predictions": [["C"]]}, "got array"),
        ({"instances": ["a"], "predictions": [True]}, "got boolean"),
        (
            {"instances": ["a"], "predictions": [{"label": "C", "score": "high"}]},
            "predictions[0].score must be a number, got string",
        ),
        ({"instances": ["a"], "predictions": "C"}, "'predictions' must be a list"),
        ({"instances": ["a"], "predictions": None}, "'predictions' must be a list"),
        ({"instances": ["a", "b"], "predictions": ["C"]}, "1 prediction(s) for 2 input(s)"),
        # a single instance's "prediction"
        ({"text": "a", "prediction": None}, "prediction must be"),
        ({"text": "a", "prediction": {"lbl": "C"}}, "prediction has no 'label'"),
        ({"text": "a", "prediction": 3}, "got number"),
    ],
)
def test_a_logged_prediction_the_server_cannot_return_is_a_usage_error(tmp_path, line, says):
    """The newcomer's file: a prediction without a label was a KeyError traceback, a null one
    the label "None". Every shape the model server does not return names file:line, what is
    wrong and what was expected."""
    requests = tmp_path / "f.jsonl"
    good = {"instances": ["x"], "predictions": [{"label": "C", "score": 0.5}]}
    requests.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(typer.BadParameter) as err:
        read_requests(requests)
    message = str(err.value)
    assert message.startswith(f"{requests}:2: "), message
    assert says in message, message
    assert _LABEL_EXPECTED in message or "one prediction per input" in message, message


def test_every_prediction_shape_the_server_returns_is_read(tmp_path):
    requests = tmp_path / "f.jsonl"
    lines = [
        {"instances": ["a", "b"], "predictions": [{"label": "C", "score": 0.5}, "Python"]},
        {"instances": ["c"], "predictions": [{"label": "CSS"}]},
        {"instances": ["d"], "predictions": [{"label": "Go", "score": None}]},
        {"text": "e", "prediction": "Rust"},
        {"text": "f", "prediction": {"label": "Java", "score": 0.9}},
    ]
    requests.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_requests(requests) == (
        ["a", "b", "c", "d", "e", "f"],
        ["C", "Python", "CSS", "Go", "Rust", "Java"],
    )


def test_aicrush_drift_on_a_prediction_without_a_label_is_one_clean_exit_2(tmp_path):
    """The reported run, in a process of its own: exit 2 naming file:line, no traceback."""
    requests = tmp_path / "f.jsonl"
    requests.write_text('{"instances":["a"],"predictions":[{"lbl":"C"}]}\n')
    result = _aicrush_drift(tmp_path, "--requests", str(requests))
    assert result.returncode == 2, result.stdout
    assert _squash("f.jsonl:1: predictions[0] has no 'label'") in _squash(result.stdout)
    assert "Traceback" not in result.stdout and "KeyError" not in result.stdout


class _Built(Exception):
    """Raised in place of building the monitor: the options got past the parser."""


@pytest.fixture
def monitor_app(monkeypatch, tmp_path):
    """``aicrush monitor`` with a Parquet reference and no monitor behind it: build_monitor
    raises :class:`_Built`, so a test sees whether the options got that far."""
    from serving.monitor import cli
    from serving.monitor.cli import monitor_command

    def built(**kwargs):
        raise _Built(kwargs)

    monkeypatch.setattr(cli, "build_monitor", built)
    monitor = typer.Typer()
    monitor.command()(monitor_command)
    base = ["--reference", str(tmp_path / "ref.parquet"), "--state-dir", str(tmp_path / "s")]
    return lambda *args: CliRunner().invoke(monitor, [*base, *args])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--window-rows", "0"),
        ("--window-rows", "-5"),
        ("--window-seconds", "0"),
        ("--window-seconds", "-1"),
        ("--window-seconds", "nan"),
        ("--window-seconds", "inf"),
        ("--sustained-windows", "0"),
        ("--sustained-windows", "-1"),
        ("--retrain-interval-s", "-1"),
        ("--retrain-interval-s", "nan"),
        ("--retrain-interval-s", "inf"),
        ("--min-rows", "0"),
        ("--max-body-bytes", "0"),
        ("--version-refresh-s", "-1"),
        ("--version-refresh-s", "nan"),
        ("--version-refresh-s", "inf"),
        ("--port", "-1"),
        ("--port", "65536"),
    ],
)
def test_every_numeric_monitor_option_is_checked_at_parse_time(monitor_app, option, value):
    """--window-rows 0 was a ValueError traceback after the slow start, --window-seconds -1,
    --sustained-windows 0 and --retrain-interval-s -1 were taken silently: each numeric option
    is a usage error (exit 2) naming the option, before anything is loaded."""
    result = monitor_app(option, value)
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert not isinstance(result.exception, _Built)


@pytest.mark.parametrize(
    "args",
    [
        ["--window-rows", "1", "--window-seconds", "0.5", "--sustained-windows", "1"],
        ["--retrain-interval-s", "0", "--version-refresh-s", "0", "--min-rows", "1"],
        ["--port", "0", "--max-body-bytes", "1"],
    ],
)
def test_the_smallest_sensible_monitor_options_are_taken(monitor_app, args):
    result = monitor_app(*args)
    assert isinstance(result.exception, _Built), (result.output, result.exception)


@pytest.mark.parametrize("entry", [["pipelines.cli", "monitor"], ["serving.monitor"]])
def test_both_monitor_entry_points_check_their_options(tmp_path, entry):
    """`aicrush monitor` and the monitor image's `python -m serving.monitor` parse the same
    options the same way: one line naming the option, exit 2, no traceback."""
    import subprocess
    import sys

    from tests.pipelines.test_first_hour import user_env

    result = subprocess.run(
        [sys.executable, "-m", *entry, "--window-rows", "0"],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--window-rows'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".aicrush").exists()  # refused before the registry was opened


def test_a_port_in_use_is_one_line_before_anything_loads(monitor_app, tmp_path):
    """The monitor loaded for ~15 s, then uvicorn's "[Errno 98] address already in use", exit 3,
    no hint. The port is checked first (the model server's check): one line naming the port and
    the option, exit 2, before the registry or the reference is touched."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = monitor_app("--reference", "mlflow", "--port", str(port))
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert lines == [f"error: port {port} is in use (127.0.0.1); choose another with --port"]
    assert not (tmp_path / "s" / "mlflow.db").exists()  # the registry was not opened


def test_a_host_that_is_not_this_machines_is_said_as_such(monitor_app, tmp_path):
    result = monitor_app("--reference", "mlflow", "--host", "192.0.2.1", "--port", "18765")
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on host '192.0.2.1'" in lines[0], result.output
    assert not (tmp_path / "s" / "mlflow.db").exists()


# ----------------------------------------------------------------------- docs vs --help
DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def _click_options(command) -> dict[str, object]:
    """--option -> its default, as the command's --help shows it."""
    cli = typer.Typer(add_completion=False)
    cli.command()(command)
    params = typer.main.get_command(cli).params
    options = {p.opts[0]: p.default for p in params if p.param_type_name == "option"}
    options.pop("--help", None)
    assert options, "no options read from the command"
    return options


def _same(documented: str, default: object) -> bool:
    if isinstance(default, bool) or not isinstance(default, int | float):
        return documented == str(default)
    try:
        return float(documented) == float(default)
    except ValueError:
        return False


def _synopses() -> list[str]:
    """The docs' code blocks that show an `aicrush monitor` or `aicrush drift` command line."""
    blocks = DOCS.read_text().split("```")[1::2]
    return [b for b in blocks if re.search(r"aicrush (monitor|drift) \[?--", b)]


def test_the_synopses_show_no_value_an_option_does_not_default_to():
    """`[--window-seconds 600]` read as a default; there is none (no time windows). An optional
    option shown with a literal value shows its default; anything else is a placeholder."""
    from serving.monitor.cli import drift_command, monitor_command

    synopses = _synopses()
    assert len(synopses) == 2, synopses
    checked = 0
    for block in synopses:
        options = _click_options(monitor_command if "aicrush monitor" in block else drift_command)
        text = block.replace("\\\n", " ")
        for name, value in re.findall(r"\[(--[a-z-]+) ([^\]\s]+)", text):
            assert name in options, f"{name} is no option of the command: {block}"
            if "|" in value or re.fullmatch(r"[A-Z][A-Z_./:-]*", value):
                continue  # a placeholder: N|ALIAS, SECONDS
            assert _same(value, options[name]), (
                f"[{name} {value}]: the default is {options[name]!r}"
            )
            checked += 1
        unbracketed = re.findall(r"(?<!\[)(--[a-z-]+)", text)
        required = {"--requests"}
        assert set(unbracketed) <= required, f"optional options shown as required: {unbracketed}"
    assert checked >= 5


def test_the_monitor_options_table_gives_each_options_default_as_help_does():
    from serving.monitor.cli import monitor_command

    options = _click_options(monitor_command)
    rows = dict(re.findall(r"^\| `(--[a-z-]+)` \| ([^|]*) \|", DOCS.read_text(), re.MULTILINE))
    assert set(rows) == set(options), set(rows) ^ set(options)
    for name, cell in rows.items():
        cell = cell.strip()
        if cell.startswith("none"):
            assert options[name] is None, f"{name}: documented none, default {options[name]!r}"
        else:
            literal = re.match(r"`([^`]*)`", cell)
            assert literal, f"{name}: the default cell is `VALUE` or none...: {cell!r}"
            assert _same(literal.group(1), options[name]), (name, cell, options[name])
