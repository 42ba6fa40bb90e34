"""validate_dataset: drops by reason, secrets never copied, class handling, leak-free splits."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from aicrush.config import (
    AicrushConfig,
    ConfigError,
    IngestConfig,
    ValidateConfig,
    config_from_dict,
)
from aicrush.errors import DataError
from components.ingest_sources import ingest
from components.validate_dataset import contains_secret, run_validate_step, validate
from tests.components import FakeArtifact

TEMPLATES = {
    "Python": "import os\n\n\ndef f_{i}(x):\n    # helper number {i} of the module\n    return x + {i}\n",
    "C": "#include <stdio.h>\n\nint f_{i}(int x) {{\n    /* helper {i} */\n    return x + {i};\n}}\n",
    "Shell": '#!/bin/sh\nset -e\necho "running step {i} of the build"\nexit 0\n# helper script number {i}\n',
}
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecretsecret\n-----END RSA PRIVATE KEY-----\n"
CFG = ValidateConfig(min_files_per_class=3, report_sample_rows=20)


def rows_for(language: str, repos: list[str], per_repo: int, start: int = 0) -> list[dict]:
    out = []
    i = start
    for repo in repos:
        for _ in range(per_repo):
            out.append(
                {
                    "repository": repo,
                    "path": f"{language}/f{i}",
                    "language": language,
                    "text": TEMPLATES[language].format(i=i),
                }
            )
            i += 1
    return out


def make_dataset(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    encoded = [
        t.encode("utf-8", "surrogateescape") if isinstance(t, str) else b"" for t in frame["text"]
    ]
    frame["sha256"] = [hashlib.sha256(b).hexdigest() for b in encoded]
    frame["size"] = [len(b) for b in encoded]
    frame[["repository", "path", "sha256", "language", "text", "size"]].to_parquet(
        folder / "files.parquet"
    )
    return folder


def standard_rows() -> list[dict]:
    repos = [f"repo{i}" for i in range(8)]
    return (
        rows_for("Python", repos, 6) + rows_for("C", repos[:5], 6) + rows_for("Shell", repos[3:], 5)
    )


def splits_of(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test")}


def test_split_by_repository_without_leaks(tmp_path: Path) -> None:
    raw = make_dataset(tmp_path / "raw", standard_rows())
    report = validate(raw, CFG, tmp_path / "out")
    splits = splits_of(tmp_path / "out")
    repos = {s: set(f["repository"]) for s, f in splits.items()}
    assert not (
        repos["train"] & repos["val"]
        or repos["train"] & repos["test"]
        or repos["val"] & repos["test"]
    )
    for language in ("C", "Python", "Shell"):
        assert language in set(splits["train"]["language"]) and language in set(
            splits["test"]["language"]
        )
    assert sum(len(f) for f in splits.values()) == report.n_kept == 48 + 30 + 25
    assert list(splits["train"].columns) == [
        "repository",
        "path",
        "sha256",
        "language",
        "text",
        "size",
    ]
    assert report.repositories_in_several_splits == []
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["per_class_split"] == report.per_class_split
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Files per class and split" in page and "Features per split" in page
    metrics = report.to_metrics()
    assert metrics["n_classes"] == 3.0 and metrics["n_train"] == float(len(splits["train"]))
    # deterministic
    again = validate(raw, CFG, tmp_path / "out2")
    assert again.per_class_split == report.per_class_split


def test_drops_are_counted_by_reason(tmp_path: Path) -> None:
    rows = standard_rows()
    rows += [
        {"repository": "repo0", "path": "bin", "language": "C", "text": "a\x00b\n" * 40},
        {"repository": "repo0", "path": "latin", "language": "C", "text": None},
        {"repository": "repo0", "path": "tiny", "language": "C", "text": "x\n"},
        {"repository": "repo0", "path": "blank", "language": "C", "text": "int x;\n" + "\n" * 80},
        {
            "repository": "repo9",
            "path": "copy",
            "language": "C",
            "text": rows[60]["text"],
        },  # same file, other repo
    ]
    raw = make_dataset(tmp_path / "raw", rows)
    report = validate(raw, CFG, tmp_path / "out")
    assert report.dropped == {
        "binary": 1,
        "duplicate": 1,
        "near_empty": 1,
        "size_out_of_bounds": 1,
        "undecodable": 1,
    }
    kept = pd.concat(splits_of(tmp_path / "out").values())
    assert not kept["sha256"].duplicated().any()


def test_downsample_and_small_classes(tmp_path: Path) -> None:
    repos = [f"repo{i}" for i in range(6)]
    rows = rows_for("Python", repos, 10) + rows_for("C", repos, 4) + rows_for("Shell", repos[:2], 1)
    raw = make_dataset(tmp_path / "raw", rows)
    cfg = ValidateConfig(min_files_per_class=5, max_files_per_class=30, report_sample_rows=0)
    said: list[str] = []
    report = validate(raw, cfg, tmp_path / "out", progress=said.append)
    assert report.downsampled == {"Python": 30}
    assert report.small_classes == {"Shell": 2}
    # the run's progress names what was dropped and the setting (it showed only counts)
    assert any("dropped Shell (2)" in s and "validate.min_files_per_class (5)" in s for s in said)
    assert report.classes == ["C", "Python"]
    assert (
        report.per_class_split["Python"]["train"]
        + report.per_class_split["Python"]["val"]
        + report.per_class_split["Python"]["test"]
        == 30
    )

    failing = cfg.model_copy(update={"small_class_action": "fail", "min_files_per_class": 30})
    with pytest.raises(
        DataError,
        match=r"dataset has 2 classes with fewer than 30 files: Shell, C; lower validate\.min_files_per_class",
    ):
        validate(raw, failing, tmp_path / "out2")


def test_single_repository_class_actions(tmp_path: Path) -> None:
    repos = [f"repo{i}" for i in range(6)]
    rows = rows_for("Python", repos, 6) + rows_for("C", repos, 5) + rows_for("Shell", ["solo"], 10)
    raw = make_dataset(tmp_path / "raw", rows)
    split_files = validate(raw, CFG, tmp_path / "a")
    assert split_files.single_repository_classes == ["Shell"]
    assert split_files.file_split_classes == ["Shell"]
    assert (
        split_files.per_class_split["Shell"]["train"] > 0
        and split_files.per_class_split["Shell"]["test"] > 0
    )
    assert split_files.repositories_in_several_splits == ["solo"]

    dropped = validate(
        raw, CFG.model_copy(update={"single_repository_class_action": "drop"}), tmp_path / "b"
    )
    assert dropped.classes == ["C", "Python"] and dropped.dropped["single_repository_class"] == 10

    with pytest.raises(
        DataError, match=r"one repository only.*Shell.*single_repository_class_action"
    ):
        validate(
            raw, CFG.model_copy(update={"single_repository_class_action": "fail"}), tmp_path / "c"
        )


def test_unusable_data_fails_clearly(tmp_path: Path) -> None:
    binaries = make_dataset(
        tmp_path / "bin",
        [{"repository": "r", "path": f"b{i}", "language": "C", "text": None} for i in range(5)],
    )
    with pytest.raises(DataError, match=r"no usable file .*undecodable: 5"):
        validate(binaries, CFG, tmp_path / "o1")
    single = make_dataset(tmp_path / "one", rows_for("Python", ["r1", "r2", "r3"], 5))
    with pytest.raises(
        DataError, match=r"only 1 usable class\(es\) left \(Python\); validate\.min_classes is 2"
    ):
        validate(single, CFG, tmp_path / "o2")
    with pytest.raises(DataError, match="run ingest_sources first"):
        validate(tmp_path / "nowhere", CFG, tmp_path / "o3")


def test_drops_name_the_setting_behind_them(tmp_path: Path) -> None:
    """The near-empty drop did not say that validate.min_nonblank_lines decides it."""
    rows = standard_rows()
    rows.append(
        {"repository": "repo0", "path": "blank", "language": "C", "text": "int x;\n" + "\n" * 80}
    )
    said: list[str] = []
    validate(make_dataset(tmp_path / "raw", rows), CFG, tmp_path / "out", progress=said.append)
    line = next(s for s in said if "pass the checks" in s)
    assert "near_empty: 1 (fewer non-blank lines than validate.min_nonblank_lines, 3)" in line

    blank = [{**r, "text": r["text"].splitlines()[0] + "\n" * 80} for r in rows_for("C", ["r"], 3)]
    with pytest.raises(
        DataError, match=r"near_empty: 3 \(fewer non-blank lines than validate\.min_n"
    ):
        validate(make_dataset(tmp_path / "blank", blank), CFG, tmp_path / "o2")


def test_too_few_classes_names_what_ingest_left_out(tmp_path: Path) -> None:
    """Rows dropped at ingest (e.g. duplicate keys) were missing from the class error."""
    raw = make_dataset(tmp_path / "raw", rows_for("Python", ["r1", "r2", "r3"], 5))
    (raw / "manifest.json").write_text(json.dumps({"skipped": {"duplicate_path": 40}}))
    with pytest.raises(
        DataError, match=r"Left out at ingest \(manifest\.json\): duplicate_path: 40"
    ):
        validate(raw, CFG, tmp_path / "out")


def test_binary_folder_fails_at_ingest(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "bins"
    src.mkdir()
    for i in range(3):
        (src / f"blob{i}.c").write_bytes(bytes(range(256)) * 4)
    ingest(IngestConfig(sources=(str(src),)), tmp_path / "raw", state_dir)
    with pytest.raises(DataError, match=r"no usable file .*undecodable: 3"):
        validate(tmp_path / "raw", CFG, tmp_path / "out")


def _all_output_text(*folders: Path) -> bytes:
    blob = b""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                blob += path.read_bytes()
                if path.suffix == ".parquet":
                    blob += "".join(str(t) for t in pd.read_parquet(path)["text"]).encode()
    return blob


def test_secrets_never_reach_an_artifact(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "proj"
    for repo in ("r1", "r2", "r3", "r4"):
        for lang, ext in (("Python", "py"), ("C", "c")):
            for i in range(4):
                path = src / repo / f"f{i}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(TEMPLATES[lang].format(i=f"{repo}{i}"))
    (src / "r1" / "deploy.py").write_text("KEY = '''\n" + PEM + "'''\nprint(KEY)\n")
    token = "ghp_" + "A1b2C3d4" * 4 + "zz9Z"
    (src / "r2" / "ci.py").write_text(f"TOKEN = '{token}'\nprint(1)\nprint(2)\n")
    ingest(
        IngestConfig(sources=(str(src),), repository_depth=1),
        tmp_path / "raw",
        state_dir,
        progress=print,
    )
    report = validate(tmp_path / "raw", CFG, tmp_path / "out", progress=print)
    assert report.secret_paths == ["r1/deploy.py", "r2/ci.py"]
    assert report.ingest_skipped["secret"] == 2
    outputs = (
        _all_output_text(tmp_path / "raw", tmp_path / "out") + capsys.readouterr().out.encode()
    )
    for needle in (b"PRIVATE KEY", b"MIIEowIBAAKCAQEAsecret", token.encode()):
        assert needle not in outputs

    # files.parquet that did not come from our ingest: validate scans itself.
    rows = [
        *standard_rows(),
        {
            "repository": "repo1",
            "path": "aws.sh",
            "language": "Shell",
            "text": "export AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP\necho configured\necho deploying the service\n",
        },
    ]
    validate(make_dataset(tmp_path / "raw2", rows), CFG, tmp_path / "out2")
    assert b"AKIAABCDEFGHIJKLMNOP" not in _all_output_text(tmp_path / "out2")
    assert json.loads((tmp_path / "out2" / "report.json").read_text())["dropped"]["secret"] == 1


def test_secret_patterns() -> None:
    assert contains_secret(PEM) and contains_secret(PEM.encode())
    assert contains_secret("key = 'AIza" + "x" * 35 + "'")
    assert contains_secret("SLACK=xoxb-1234567890-abcdef")
    assert contains_secret("github_pat_" + "a" * 30)
    assert not contains_secret("password = 'hunter2'\nAKIA is a prefix\nghp_short")


def test_invalid_config_values_are_rejected() -> None:
    for bad in (
        {"val_fraction": 0.6},
        {"val_fraction": 0.4, "test_fraction": 0.45},
        {"min_bytes": 500, "max_bytes": 100},
        {"small_class_action": "maybe"},
        {"single_repository_class_action": "ignore"},
        {"min_classes": 1},
        {"report_sample_rows": -1},
        {"unknown_key": 1},
    ):
        with pytest.raises(ValidationError):
            ValidateConfig(**bad)
    for bad in (
        {"max_files": 0},
        {"repository_depth": -1},
        {"download_workers": 0},
        {"max_file_bytes": -5},
    ):
        with pytest.raises(ValidationError):
            IngestConfig(**bad)
    with pytest.raises(ConfigError, match=r"validate\.small_class_action"):
        config_from_dict({"validate": {"small_class_action": "maybe"}})


def test_run_validate_step_and_component_interface(tmp_path: Path) -> None:
    from components.validate_dataset import validate_dataset

    raw = make_dataset(tmp_path / "raw", standard_rows())
    config = AicrushConfig.model_validate(
        {"validate": {"min_files_per_class": 3, "report_sample_rows": 0}}
    ).to_dict()
    clean, html, metrics = (
        FakeArtifact(tmp_path / "clean"),
        FakeArtifact(tmp_path / "report" / "page.html"),
        FakeArtifact(tmp_path / "m"),
    )
    run_validate_step(config, FakeArtifact(raw), clean, html, metrics)
    assert (tmp_path / "clean" / "train.parquet").is_file()
    assert "aicrush data report" in Path(html.path).read_text()
    assert clean.metadata["classes"] == ["C", "Python", "Shell"]
    assert metrics.metrics["n_classes"] == 3.0

    spec = validate_dataset.component_spec
    assert set(spec.inputs) == {"config", "raw"}
    assert set(spec.outputs) == {"clean", "report", "metrics"}


def test_components_run_in_kfp_local(tmp_path: Path, state_dir: Path) -> None:
    """Both components through kfp.local's SubprocessRunner, wired as the training pipeline does."""
    from kfp import dsl, local

    from components.ingest_sources import ingest_sources
    from components.validate_dataset import validate_dataset

    src = tmp_path / "proj"
    for repo in ("r1", "r2", "r3", "r4", "r5"):
        for lang, ext in (("Python", "py"), ("C", "c")):
            for i in range(4):
                path = src / repo / f"f{i}.{ext}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(TEMPLATES[lang].format(i=f"{repo}{i}"))
    config = AicrushConfig.model_validate(
        {
            "ingest": {"sources": [str(src)], "repository_depth": 1},
            "validate": {"min_files_per_class": 3, "report_sample_rows": 0},
        }
    ).to_dict()

    @dsl.pipeline
    def two_steps(config: dict, state_dir: str) -> None:
        raw = ingest_sources(config=config, state_dir=state_dir)
        validate_dataset(config=config, raw=raw.outputs["dataset"])

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "root"),
        raise_on_error=True,
    )
    two_steps(config=config, state_dir=str(state_dir))
    trains = list((tmp_path / "root").rglob("clean/train.parquet"))
    assert len(trains) == 1
    assert set(pd.read_parquet(trains[0])["language"]) == {"C", "Python"}
    assert list((tmp_path / "root").rglob("report/*")) or list((tmp_path / "root").rglob("report"))


def test_report_page_escapes_names_from_the_data() -> None:
    """The page comes from a Jinja2 template with autoescaping: file and class names from the
    data cannot inject markup."""
    from aicrush.config import ValidateConfig
    from components.validate_dataset import ValidationReport, render_report_html

    report = ValidationReport(
        n_input=3,
        n_kept=2,
        classes=["<b>C</b>"],
        per_class_split={"<b>C</b>": {"train": 1, "test": 1}},
        split_sizes={"train": 1, "test": 1},
        secret_paths=["r1/<script>alert(1)</script>.py"],
        input_content_hash="abc",
    )
    page = render_report_html(report, {}, ValidateConfig(report_sample_rows=0))
    assert "<script>" not in page and "<b>C</b>" not in page
    assert "r1/&lt;script&gt;alert(1)&lt;/script&gt;.py" in page
    assert "<td>&lt;b&gt;C&lt;/b&gt;</td><td>1</td><td>0</td><td>1</td><td>2</td>" in page
    assert "Files dropped for secrets (paths only)" in page and "aicrush data report" in page
