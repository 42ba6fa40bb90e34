"""The pypi: source against package indexes made in the test: a local folder of sdists and a
simple-API index (PEP 503 HTML and PEP 691 JSON) served on loopback. No network."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import IngestConfig
from aicrush.errors import DataError
from components.ingest_sources import ingest
from components.sources import pypi

PY = "import os\n\n\ndef main():\n    return os.getcwd()\n"
JS = "function main() {\n  return 1;\n}\n"
RS = 'fn main() {\n    println!("hi");\n}\n'


def make_sdist(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """``name-version.tar.gz`` with every file under the ``name-version/`` top folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def add_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    """Rewrite a .tar.gz with one more member (raw, as an attacker would write it)."""
    with tarfile.open(archive) as tf:
        members = [(m, tf.extractfile(m).read() if m.isreg() else b"") for m in tf]
    with tarfile.open(archive, "w:gz") as tf:
        for m, payload in [*members, (info, data)]:
            tf.addfile(m, io.BytesIO(payload) if m.isreg() else None)


@pytest.fixture
def index_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    make_sdist(folder, "alpha", "1.0", {"alpha/__init__.py": PY, "web/app.js": JS, "PKG-INFO": "x"})
    make_sdist(folder, "beta_pkg", "2.1", {"src/lib.rs": RS, "beta_pkg/core.py": PY})
    return folder


def cfg_for(index: Path | str, *sources: str, **kw) -> IngestConfig:
    return IngestConfig(sources=sources, pypi_index_url=str(index), **kw)


def read_files(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "files.parquet")


# ----------------------------------------------------------------------------- folder index


def test_pinned_packages_are_repositories_and_rerun_downloads_nothing(
    index_folder: Path, tmp_path: Path, state_dir: Path
) -> None:
    reqs = tmp_path / "corpus.txt"
    reqs.write_text("# two packages\nalpha==1.0\n\nBeta.Pkg == 2.1  # normalized name\n")
    cfg = cfg_for(index_folder, f"pypi:{reqs}")
    first = ingest(cfg, tmp_path / "r1", state_dir)
    files = read_files(tmp_path / "r1")
    assert sorted(zip(files["repository"], files["path"], files["language"], strict=True)) == [
        ("alpha", "alpha/__init__.py", "Python"),
        ("alpha", "web/app.js", "JavaScript"),
        ("beta-pkg", "beta_pkg/core.py", "Python"),
        ("beta-pkg", "src/lib.rs", "Rust"),
    ]
    manifest = json.loads(first.manifest_path.read_text())
    sizes = {p.name: p.stat().st_size for p in index_folder.iterdir()}
    assert manifest["packages"]["alpha==1.0"]["bytes"] == sizes["alpha-1.0.tar.gz"]
    assert (
        manifest["packages"]["beta-pkg==2.1"]["sha256"]
        == hashlib.sha256((index_folder / "beta_pkg-2.1.tar.gz").read_bytes()).hexdigest()
    )
    assert manifest["packages_downloaded"] == 2 and first.n_downloaded == 2
    assert manifest["download_bytes"] == manifest["downloaded_bytes"] == sum(sizes.values())
    assert (state_dir / "ingest_cache" / "pypi" / "trees" / "alpha-1.0.json").is_file()

    # The cache answers alone: with the index gone, a re-run still works and fetches nothing.
    for archive in index_folder.iterdir():
        archive.unlink()
    index_folder.rmdir()
    again = ingest(cfg, tmp_path / "r2", state_dir)
    again_manifest = json.loads(again.manifest_path.read_text())
    assert again.n_downloaded == 0 and again_manifest["packages_downloaded"] == 0
    assert again_manifest["downloaded_bytes"] == 0
    assert again_manifest["download_bytes"] == manifest["download_bytes"]  # what a fresh run costs
    assert again.content_hash == first.content_hash


def test_a_missing_package_names_itself_and_the_setting(
    index_folder: Path, tmp_path: Path, state_dir: Path
) -> None:
    with pytest.raises(DataError) as err:
        ingest(
            cfg_for(index_folder, "pypi:alpha==1.0", "pypi:alpha==9.9"), tmp_path / "o", state_dir
        )
    message = str(err.value)
    assert "alpha==9.9" in message and "ingest.sources" in message
    assert "ingest.pypi_index_url" in message
    assert "alpha==1.0" not in message.split("not found")[1]  # only the missing one is named
    # What was found before the failure stays cached.
    assert pypi.PackageCache(state_dir / "ingest_cache").record("alpha-1.0") is not None


@pytest.mark.parametrize("spec", ["alpha", "alpha>=1.0", "alpha==1.*"])
def test_unpinned_requirements_are_refused(spec: str, index_folder: Path, state_dir: Path) -> None:
    with pytest.raises(DataError, match=r"not a pinned package: write NAME==VERSION"):
        ingest(cfg_for(index_folder, f"pypi:{spec}"), state_dir / "o", state_dir)


def test_a_source_naming_no_package_is_refused(tmp_path: Path, state_dir: Path) -> None:
    """``pypi:`` read the working directory as a folder of archives and failed much later."""
    (tmp_path / "empty.txt").write_text("# nothing pinned yet\n")
    (tmp_path / "no-archives").mkdir()
    cases = {
        "pypi:": r"^pypi: names no package: write pypi:NAME==VERSION",
        "pypi: ": r"^pypi: names no package",
        f"pypi:{tmp_path / 'empty.txt'}": r"empty\.txt pins no package: add NAME==VERSION lines",
        f"pypi:{tmp_path / 'no-archives'}": r"no-archives holds no package archive",
    }
    for source, message in cases.items():
        with pytest.raises(DataError, match=message):
            ingest(IngestConfig(sources=(source,)), tmp_path / "o", state_dir)


def test_folder_of_archives_holds_sdists_and_wheels(tmp_path: Path, state_dir: Path) -> None:
    folder = tmp_path / "downloads"
    make_sdist(folder, "alpha", "1.0", {"alpha/__init__.py": PY})
    with zipfile.ZipFile(folder / "gamma-3.0-py3-none-any.whl", "w") as zf:
        zf.writestr("gamma/__init__.py", PY)
        zf.writestr("gamma/static/x.js", JS)
    ingest(IngestConfig(sources=(f"pypi:{folder}",)), tmp_path / "o", state_dir)
    files = read_files(tmp_path / "o")
    assert sorted(zip(files["repository"], files["path"], strict=True)) == [
        ("alpha", "alpha/__init__.py"),
        ("gamma", "gamma/__init__.py"),
        ("gamma", "gamma/static/x.js"),
    ]


# ----------------------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize("name", ["alpha-1.0/../../escape.py", "/tmp/absolute.py", "C:/evil.py"])
def test_unsafe_members_refuse_the_archive(
    name: str, index_folder: Path, tmp_path: Path, state_dir: Path
) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(PY)
    add_member(index_folder / "alpha-1.0.tar.gz", info, PY.encode())
    with pytest.raises(DataError, match=r"unsafe member .*refused.*ingest\.sources"):
        ingest(cfg_for(index_folder, "pypi:alpha==1.0"), tmp_path / "o", state_dir)
    assert not (tmp_path / "escape.py").exists() and not Path("/tmp/absolute.py").exists()
    trees = state_dir / "ingest_cache" / "pypi" / "trees"
    assert not (trees / "alpha-1.0.json").exists()  # nothing cached as if it were complete
    assert not (trees / "alpha-1.0").exists()


def test_zip_with_a_parent_path_is_refused(tmp_path: Path, state_dir: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    with zipfile.ZipFile(folder / "evil-1.0.zip", "w") as zf:
        zf.writestr("evil-1.0/ok.py", PY)
        zf.writestr("evil-1.0/../../../escape.py", PY)
    with pytest.raises(DataError, match=r"evil-1\.0\.zip holds an unsafe member"):
        ingest(IngestConfig(sources=(f"pypi:{folder}",)), tmp_path / "o", state_dir)
    assert not (tmp_path / "escape.py").exists()


def test_links_and_oversized_members_are_skipped(
    index_folder: Path, tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = index_folder / "alpha-1.0.tar.gz"
    link = tarfile.TarInfo("alpha-1.0/passwd.py")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    add_member(archive, link)
    hard = tarfile.TarInfo("alpha-1.0/hard.py")
    hard.type, hard.linkname = tarfile.LNKTYPE, "alpha-1.0/alpha/__init__.py"
    add_member(archive, hard)
    big = tarfile.TarInfo("alpha-1.0/big.py")
    big.size = 5000
    add_member(archive, big, b"x = 1\n" * 833 + b"xx")
    monkeypatch.setattr(pypi, "MAX_MEMBER_BYTES", 4096)
    ingest(cfg_for(index_folder, "pypi:alpha==1.0"), tmp_path / "o", state_dir)
    assert set(read_files(tmp_path / "o")["path"]) == {"alpha/__init__.py", "web/app.js"}
    tree = state_dir / "ingest_cache" / "pypi" / "trees" / "alpha-1.0"
    assert not any(p.is_symlink() for p in tree.rglob("*"))
    record = json.loads((tree.parent / "alpha-1.0.json").read_text())
    assert record["skipped"] == {"archive_link_or_special": 2, "archive_member_too_large": 1}


def test_a_damaged_archive_is_a_clear_error(tmp_path: Path, state_dir: Path) -> None:
    folder = tmp_path / "downloads"
    archive = make_sdist(folder, "alpha", "1.0", {"alpha/__init__.py": PY * 50})
    archive.write_bytes(archive.read_bytes()[:60])  # truncated
    with pytest.raises(DataError, match=r"alpha-1\.0\.tar\.gz could not be unpacked .*damaged"):
        ingest(IngestConfig(sources=(f"pypi:{folder}",)), tmp_path / "o", state_dir)


def test_a_decompression_bomb_is_refused(
    index_folder: Path, tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pypi, "MAX_UNPACKED_BYTES", 50)  # alpha's files hold 81 bytes
    with pytest.raises(DataError, match=r"unpacks to more than 50 bytes: refused"):
        ingest(cfg_for(index_folder, "pypi:alpha==1.0"), tmp_path / "o", state_dir)


# ----------------------------------------------------------------------------- an HTTP index


class _SimpleIndex(http.server.SimpleHTTPRequestHandler):
    """A static simple-API index: PEP 691 JSON when asked for and present, else PEP 503 HTML."""

    def do_GET(self) -> None:
        page = Path(self.translate_path(self.path))
        wants_json = "vnd.pypi.simple.v1+json" in self.headers.get("Accept", "")
        if wants_json and (page / "index.json").is_file():
            body = (page / "index.json").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_index(index_folder: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``/simple/alpha/`` as HTML with sha256 fragments, ``/simple/beta-pkg/`` as JSON."""
    root = tmp_path / "www"
    files = root / "files"
    files.mkdir(parents=True)
    for archive in index_folder.iterdir():
        (files / archive.name).write_bytes(archive.read_bytes())
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.iterdir()}
    alpha = root / "simple" / "alpha"
    alpha.mkdir(parents=True)
    (alpha / "index.html").write_text(
        "<!DOCTYPE html><html><body>"
        f'<a href="../../files/alpha-1.0.tar.gz#sha256={sha["alpha-1.0.tar.gz"]}">'
        "alpha-1.0.tar.gz</a><br/></body></html>"
    )
    beta = root / "simple" / "beta-pkg"
    beta.mkdir(parents=True)
    (beta / "index.json").write_text(
        json.dumps(
            {
                "meta": {"api-version": "1.0"},
                "name": "beta-pkg",
                "files": [
                    {
                        "filename": "beta_pkg-2.1.tar.gz",
                        "url": "/files/beta_pkg-2.1.tar.gz",
                        "hashes": {"sha256": sha["beta_pkg-2.1.tar.gz"]},
                    }
                ],
            }
        )
    )
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_SimpleIndex, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", root
    finally:
        server.shutdown()
        server.server_close()


def test_http_simple_index_html_and_json(
    http_index: tuple[str, Path], tmp_path: Path, state_dir: Path
) -> None:
    url, _ = http_index
    cfg = cfg_for(url, "pypi:alpha==1.0", "pypi:beta-pkg==2.1")
    result = ingest(cfg, tmp_path / "o", state_dir)
    assert result.n_downloaded == 2
    assert set(read_files(tmp_path / "o")["repository"]) == {"alpha", "beta-pkg"}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["packages"]["alpha==1.0"]["archive"] == "alpha-1.0.tar.gz"


def test_http_index_errors(http_index: tuple[str, Path], tmp_path: Path, state_dir: Path) -> None:
    url, root = http_index
    with pytest.raises(
        DataError, match=r"ghost==1\.0 .*no project 'ghost'.*ingest\.pypi_index_url"
    ):
        ingest(cfg_for(url, "pypi:ghost==1.0"), tmp_path / "o1", state_dir)
    with pytest.raises(DataError, match=r"alpha==2\.0 .*no source distribution of version 2\.0"):
        ingest(cfg_for(url, "pypi:alpha==2.0"), tmp_path / "o2", state_dir)
    # The archive changed after the index published its hash: refused, nothing cached.
    make_sdist(root / "files", "alpha", "1.0", {"alpha/__init__.py": PY + "# tampered\n"})
    with pytest.raises(DataError, match=r"sha256 .* does not match the index"):
        ingest(cfg_for(url, "pypi:alpha==1.0"), tmp_path / "o3", state_dir)
    assert pypi.PackageCache(state_dir / "ingest_cache").record("alpha-1.0") is None


def test_an_unreachable_index_is_a_clear_error(
    tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(pypi, "HTTP_RETRIES", 0)
    with pytest.raises(
        DataError, match=r"could not fetch alpha==1\.0 from .*ingest\.pypi_index_url"
    ):
        ingest(
            cfg_for(f"http://127.0.0.1:{port}/simple", "pypi:alpha==1.0"), tmp_path / "o", state_dir
        )


# ----------------------------------------------------------------------------- the default list


def test_default_corpus_is_pinned_and_unique() -> None:
    packages = pypi.default_corpus()
    names = [p.name for p in packages]
    assert len(names) >= 50 and len(set(names)) == len(names)
    assert all(p.name == pypi.normalize(p.name) and p.version for p in packages)
    assert IngestConfig().sources == () and pypi.DEFAULT_SOURCE == "pypi:default"
