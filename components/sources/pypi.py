"""Source distributions from a Python package index: each package is one repository.

Spellings in ``ingest.sources``:

- ``pypi:NAME==VERSION``: one pinned package;
- ``pypi:default``: the pinned default corpus kept in the repository (``default_corpus.txt`` beside
  this module);
- ``pypi:FILE``: a requirements-style file of pinned ``NAME==VERSION`` lines (``#`` comments);
- ``pypi:FOLDER``: a folder of already downloaded sdists (``.tar.gz``, ``.zip``) or wheels.

The sdist of each pinned package is looked up on the index's simple repository API (PEP 691 JSON,
PEP 503 HTML as fallback; ``ingest.pypi_index_url``, else ``$PIP_INDEX_URL``, else PyPI; a local
folder of archives works as an offline index), downloaded once with its sha256 checked against the
index, and unpacked into ``<cache>/pypi/trees/NAME-VERSION/`` with ``<cache>/pypi/trees/
NAME-VERSION.json`` beside it (archive name, size, sha256). A re-run finds that record and
downloads nothing.

Why not ``pip download``: for an sdist pip runs the package's build backend to prepare metadata even
with ``--no-deps`` (pypa/pip#1884), i.e. arbitrary code of every corpus package, 5-40 s of CPU per
package, and a Rust toolchain for maturin sdists (``orjson`` failed without ``cargo`` on PATH,
2026-11-30). Reading the index as pip does, without building, needs none of that.

Unpacking is defensive: members with absolute paths or ``..`` make the archive refused (a
:class:`DataError` naming the member); links, devices and other non-regular members are skipped;
members over :data:`MAX_MEMBER_BYTES` are skipped; an archive that unpacks to more than
:data:`MAX_UNPACKED_BYTES` or holds more than :data:`MAX_MEMBERS` members is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.request import url2pathname

from aicrush.errors import DataError
from components.sources.base import Candidate, SourceContext
from components.sources.folder import folder_candidates

PREFIX = "pypi:"
#: ``pypi:default``: the pinned list shipped with aicrush (the default corpus).
DEFAULT_LIST = "default"
DEFAULT_SOURCE = PREFIX + DEFAULT_LIST
DEFAULT_INDEX = "https://pypi.org/simple"
#: A member larger than this is not unpacked (``ingest.max_file_bytes`` is far below it).
MAX_MEMBER_BYTES = 16 * 1024 * 1024
#: An archive that unpacks to more than this is refused (a decompression bomb).
MAX_UNPACKED_BYTES = 2 * 1024 * 1024 * 1024
#: An archive with more members than this is refused.
MAX_MEMBERS = 200_000
#: A download larger than this is refused.
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
#: Retries of a failed index request (exponential backoff from 0.5 s).
HTTP_RETRIES = 5
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
ARCHIVE_SUFFIXES = (*SDIST_SUFFIXES, ".whl")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")
_SETTING = "ingest.sources"


@dataclass(frozen=True)
class PinnedPackage:
    """``name`` (PEP 503 normalized) at exactly ``version``; ``origin`` says where it was pinned."""

    name: str
    version: str
    origin: str = _SETTING

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def normalize(name: str) -> str:
    """PEP 503 project name normalization (``Foo_Bar`` -> ``foo-bar``)."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def parse_pin(text: str, origin: str = _SETTING) -> PinnedPackage:
    """``NAME==VERSION`` -> :class:`PinnedPackage`. Raises :class:`DataError` for anything else
    (an unpinned or ranged requirement would make the corpus change under the user)."""
    match = _PIN.match(text)
    if not match:
        raise DataError(
            f"{text.strip()!r} in {origin} is not a pinned package: write NAME==VERSION "
            "(an exact version keeps the corpus reproducible), or pypi:FILE of such lines, or "
            "pypi:FOLDER of archives"
        )
    return PinnedPackage(normalize(match.group(1)), match.group(2), origin)


def read_pinned_list(text: str, origin: str) -> list[PinnedPackage]:
    """Pinned packages of a requirements-style text (blank lines and ``#`` comments ignored)."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(parse_pin(line, f"{origin} line {number}"))
    return out


def default_corpus() -> list[PinnedPackage]:
    """The pinned default corpus (``components/sources/default_corpus.txt``)."""
    text = importlib.resources.files(__package__).joinpath("default_corpus.txt").read_text()
    return read_pinned_list(text, "the default corpus (components/sources/default_corpus.txt)")


def index_url(configured: str) -> str:
    """The index to read: ``ingest.pypi_index_url``, else ``$PIP_INDEX_URL``, else PyPI."""
    return configured or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX


def _local_folder(url: str) -> Path | None:
    """The folder an index setting names when it is a local folder (path or ``file://``)."""
    if url.startswith("file://"):
        return Path(url2pathname(urlparse(url).path))
    if "://" not in url:
        return Path(url).expanduser()
    return None


# ----------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class Distribution:
    """One file of a package on the index."""

    filename: str
    url: str  # http(s) URL or local path
    sha256: str = ""  # from the index; "" when it gives none (a local folder)


class _Anchors(HTMLParser):
    """(href, text) of every ``<a>`` in a PEP 503 page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _session() -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(
        total=HTTP_RETRIES, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504)
    )
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=16))
    return session


def list_files(session: Any, index: str, name: str) -> list[Distribution] | None:
    """The files of project ``name`` on a simple-API index or in a local folder; None when the
    index does not know the project."""
    folder = _local_folder(index)
    if folder is not None:
        if not folder.is_dir():
            raise DataError(
                f"package index folder {str(folder)!r} does not exist: fix ingest.pypi_index_url"
            )
        return [
            Distribution(p.name, str(p))
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)
        ]
    page = f"{index.rstrip('/')}/{name}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    response = session.get(page, headers={"Accept": accept}, timeout=60)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    if "json" in response.headers.get("Content-Type", ""):
        return [
            Distribution(
                f["filename"], urljoin(page, f["url"]), f.get("hashes", {}).get("sha256", "")
            )
            for f in response.json().get("files", [])
        ]
    parser = _Anchors()
    parser.feed(response.text)
    out = []
    for href, text in parser.links:
        url, fragment = urldefrag(urljoin(page, href))
        sha = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
        out.append(Distribution(text or url.rsplit("/", 1)[-1], url, sha))
    return out


def _sdist_of(files: list[Distribution], package: PinnedPackage) -> Distribution | None:
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename
    from packaging.version import InvalidVersion, Version

    try:
        wanted = Version(package.version)
    except InvalidVersion:
        return None
    for dist in files:
        if not dist.filename.endswith(SDIST_SUFFIXES):
            continue
        filename = dist.filename
        if filename.endswith((".tgz", ".tar.bz2", ".tar.xz")):  # parse_sdist_filename: .tar.gz|.zip
            filename = re.sub(r"(\.tgz|\.tar\.bz2|\.tar\.xz)$", ".tar.gz", filename)
        try:
            name, version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion):
            continue
        if name == package.name and version == wanted:
            return dist
    return None


def _download(session: Any, dist: Distribution, dest: Path) -> tuple[int, str]:
    """Copy or download ``dist`` to ``dest``; (bytes, sha256). Raises :class:`DataError` when the
    sha256 does not match the index's or the file is larger than :data:`MAX_ARCHIVE_BYTES`."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(dest, "wb"))
        if "://" not in dist.url:
            local = stack.enter_context(open(dist.url, "rb"))
            chunks: Any = iter(lambda: local.read(1 << 20), b"")
        else:
            response = stack.enter_context(session.get(dist.url, stream=True, timeout=120))
            response.raise_for_status()
            chunks = response.iter_content(1 << 20)
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise DataError(
                    f"{dist.filename} is larger than {MAX_ARCHIVE_BYTES} bytes: refused; "
                    f"remove it from {_SETTING}"
                )
            digest.update(chunk)
            out.write(chunk)
    sha = digest.hexdigest()
    if dist.sha256 and sha != dist.sha256:
        raise DataError(
            f"{dist.filename}: sha256 {sha} does not match the index's {dist.sha256}; the download "
            "was corrupted or tampered with: re-run, or check ingest.pypi_index_url"
        )
    return size, sha


# ----------------------------------------------------------------------------- unpacking


def _safe_relative(name: str, archive: str) -> PurePosixPath:
    """A member name as a relative path; :class:`DataError` for absolute paths and ``..``."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in path.parts:
        raise DataError(
            f"archive {archive} holds an unsafe member {name!r} (absolute path or '..'): refused; "
            f"remove the package from {_SETTING}"
        )
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


def _members(archive: Path) -> Any:
    """(name, kind, size, opener) of every member; kind is 'file', 'dir' or 'other'."""
    if archive.name.endswith((".zip", ".whl")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o170000
                if info.is_dir():
                    kind = "dir"
                elif mode and mode != 0o100000:  # a symlink or another special file
                    kind = "other"
                else:
                    kind = "file"
                yield info.filename, kind, info.file_size, (lambda i=info: zf.open(i))
    else:
        with tarfile.open(archive) as tf:
            for member in tf:
                kind = "file" if member.isreg() else "dir" if member.isdir() else "other"
                yield member.name, kind, member.size, (lambda m=member: tf.extractfile(m))


def unpack(archive: Path, dest: Path) -> Counter[str]:
    """Unpack the regular files of ``archive`` into ``dest`` (created), dropping the single top
    folder (``NAME-VERSION/``) sdists have. Returns counts of skipped members by reason.

    Raises :class:`DataError` for unsafe member names, too many members or too many bytes.
    """
    skipped: Counter[str] = Counter()
    files: list[tuple[PurePosixPath, int, Any]] = []
    total = 0
    dest.mkdir(parents=True)
    # One pass: tar.gz members can only be read in order, so files are written as they come and
    # the common top folder is stripped by renaming at the end.
    staging = dest / ".unpack"
    n_members = 0
    for name, kind, size, opener in _members(archive):
        n_members += 1
        if n_members > MAX_MEMBERS:
            raise DataError(
                f"archive {archive.name} holds more than {MAX_MEMBERS} members: refused; "
                f"remove the package from {_SETTING}"
            )
        rel = _safe_relative(name, archive.name)
        if kind == "dir" or not rel.parts:
            continue
        if kind != "file":
            skipped["archive_link_or_special"] += 1
            continue
        if size > MAX_MEMBER_BYTES:
            skipped["archive_member_too_large"] += 1
            continue
        target = staging.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = _copy_capped(opener(), target, MAX_MEMBER_BYTES)
        if written < 0:
            target.unlink()
            skipped["archive_member_too_large"] += 1
            continue
        total += written
        if total > MAX_UNPACKED_BYTES:
            raise DataError(
                f"archive {archive.name} unpacks to more than {MAX_UNPACKED_BYTES} bytes: refused; "
                f"remove the package from {_SETTING}"
            )
        files.append((rel, written, None))
    tops = {rel.parts[0] for rel, _, _ in files if len(rel.parts) > 1}
    is_wheel = archive.name.endswith(".whl")  # a wheel's top folders are the packages
    single_top = not is_wheel and len(tops) == 1 and all(len(r.parts) > 1 for r, _, _ in files)
    root = staging / tops.pop() if single_top else staging
    if root.is_dir():
        for child in root.iterdir():
            child.rename(dest / child.name)
    shutil.rmtree(staging, ignore_errors=True)
    return skipped


def _copy_capped(source: BinaryIO | None, target: Path, cap: int) -> int:
    """Copy at most ``cap`` bytes; -1 when the member is larger (its header lied)."""
    if source is None:
        return -1
    written = 0
    with source, open(target, "wb") as out:  # a repeated member: the last one wins, as in tar
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > cap:
                return -1
            out.write(chunk)
    return written


# ----------------------------------------------------------------------------- the cache


class PackageCache:
    """Unpacked packages under ``<cache>/pypi/trees/``: ``KEY/`` (the files) and ``KEY.json``
    (archive name, bytes, sha256, when). The record is written last, so a tree without one is an
    interrupted unpack and is redone."""

    def __init__(self, cache_root: Path) -> None:
        self.root = Path(cache_root) / "pypi"
        self.trees = self.root / "trees"

    def tree(self, key: str) -> Path:
        return self.trees / key

    def record(self, key: str) -> dict[str, Any] | None:
        path = self.trees / f"{key}.json"
        if not path.is_file() or not self.tree(key).is_dir():
            return None
        return dict(json.loads(path.read_text()))

    def store(self, key: str, archive: Path, record: dict[str, Any]) -> Counter[str]:
        """Unpack ``archive`` as ``key`` (replacing a partial tree) and write its record."""
        self.trees.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.trees)) / "tree"
        try:
            try:
                skipped = unpack(archive, partial)
            except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as err:
                raise DataError(
                    f"archive {archive.name} could not be unpacked ({type(err).__name__}: {err}): "
                    f"it is damaged or not an sdist; remove the package from {_SETTING}"
                ) from err
            final = self.tree(key)
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
        finally:
            shutil.rmtree(partial.parent, ignore_errors=True)
        record = {**record, "skipped": dict(sorted(skipped.items()))}
        tmp = self.trees / f"{key}.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        tmp.replace(self.trees / f"{key}.json")
        return skipped


# ----------------------------------------------------------------------------- the source


@dataclass
class _Fetched:
    package: PinnedPackage
    record: dict[str, Any]
    downloaded: bool


def _fetch_one(
    session: Any, index: str, package: PinnedPackage, cache: PackageCache
) -> _Fetched | str:
    """The package's record, downloading and unpacking it when not cached; a message when the
    index lacks it."""
    record = cache.record(package.key)
    if record is not None:
        return _Fetched(package, record, downloaded=False)
    files = list_files(session, index, package.name)
    if files is None:
        return f"{package} (pinned in {package.origin}): no project {package.name!r} on {index}"
    dist = _sdist_of(files, package)
    if dist is None:
        return (
            f"{package} (pinned in {package.origin}): {index} has no source distribution of "
            f"version {package.version}"
        )
    cache.trees.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache.root) as tmp:
        archive = Path(tmp) / dist.filename
        size, sha = _download(session, dist, archive)
        record = {
            "name": package.name,
            "version": package.version,
            "archive": dist.filename,
            "bytes": size,
            "sha256": sha,
            "url": dist.url if "://" in dist.url else Path(dist.url).as_uri(),
        }
        cache.store(package.key, archive, record)
    return _Fetched(package, cache.record(package.key) or record, downloaded=True)


def fetch(packages: list[PinnedPackage], ctx: SourceContext) -> list[_Fetched]:
    """Every package unpacked in the cache, downloading only the missing ones (in parallel).

    Raises :class:`DataError` naming every package the index lacks and the setting to change;
    the ones fetched before stay cached.
    """
    cache = PackageCache(ctx.cache_root)
    index = index_url(ctx.pypi_index_url)
    cached = [p for p in packages if cache.record(p.key) is not None]
    todo = len(packages) - len(cached)
    session = _session() if todo else None
    start = time.perf_counter()
    if todo:
        ctx.progress(
            f"ingest: pypi: downloading {todo} of {len(packages)} packages from {index} "
            f"into {cache.trees} ({min(ctx.download_workers, todo)} workers)"
        )

    def one(package: PinnedPackage) -> _Fetched | str:
        try:
            return _fetch_one(session, index, package, cache)
        except OSError as err:  # requests' errors are OSErrors too
            raise DataError(
                f"could not fetch {package} from {index} ({type(err).__name__}: {err}): check the "
                "network or ingest.pypi_index_url, then re-run (finished packages stay cached)"
            ) from err

    with ThreadPoolExecutor(max_workers=max(1, min(ctx.download_workers, todo or 1))) as pool:
        results = list(pool.map(one, packages))
    seconds = time.perf_counter() - start
    missing = [r for r in results if isinstance(r, str)]
    if missing:
        raise DataError(
            f"{len(missing)} pinned package(s) not found: {'; '.join(missing)}. Fix the name or "
            f"version where it is pinned ({_SETTING} or the list file), or point "
            "ingest.pypi_index_url (or $PIP_INDEX_URL) at an index that has it"
        )
    fetched = [r for r in results if isinstance(r, _Fetched)]
    new = [f for f in fetched if f.downloaded]
    new_bytes = sum(int(f.record.get("bytes", 0)) for f in new)
    stats = ctx.stats.setdefault(
        "pypi", {"packages": {}, "downloaded": 0, "download_bytes": 0, "download_seconds": 0.0}
    )
    for f in fetched:
        stats["packages"][str(f.package)] = {
            k: f.record.get(k) for k in ("archive", "bytes", "sha256")
        }
    stats["downloaded"] += len(new)
    stats["download_bytes"] += new_bytes
    if new:
        stats["download_seconds"] = round(stats["download_seconds"] + seconds, 2)
        ctx.progress(
            f"ingest: pypi: downloaded {len(new)} packages, {new_bytes / 1e6:.1f} MB in "
            f"{seconds:.1f} s (cached for the next runs)"
        )
    else:
        ctx.progress(f"ingest: pypi: all {len(packages)} packages cached, nothing downloaded")
    return fetched


def _folder_packages(folder: Path, ctx: SourceContext) -> list[Candidate]:
    """``pypi:FOLDER``: every archive in the folder is one package (name from its file name)."""
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    cache = PackageCache(ctx.cache_root)
    out: list[Candidate] = []
    for archive in sorted(folder.iterdir()):
        if not archive.is_file() or not archive.name.endswith(ARCHIVE_SUFFIXES):
            continue
        try:
            if archive.name.endswith(".whl"):
                name, version, _, _ = parse_wheel_filename(archive.name)
            else:
                name, version = parse_sdist_filename(
                    re.sub(r"(\.tgz|\.tar\.bz2|\.tar\.xz)$", ".tar.gz", archive.name)
                )
        except (InvalidSdistFilename, InvalidWheelFilename):
            ctx.skipped["unparsable_archive_name"] += 1
            continue
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        key = f"{name}-{version}-{sha[:16]}"
        if cache.record(key) is None:
            record: dict[str, object] = {
                "name": str(name),
                "version": str(version),
                "archive": archive.name,
            }
            record |= {"bytes": archive.stat().st_size, "sha256": sha, "url": archive.as_uri()}
            cache.store(key, archive, record)
        out.extend(folder_candidates(cache.tree(key), str(name), ctx, depth=0))
    return out


def _looks_like_path(spec: str) -> bool:
    """``pypi:SPEC`` meant as a file or folder (a separator, a leading ``.``/``~``, a suffix)."""
    return "/" in spec or spec.startswith((".", "~")) or Path(spec).suffix in (".txt", ".in")


def packages_of(spec: str) -> list[PinnedPackage] | Path:
    """What ``pypi:SPEC`` names: pinned packages, or a folder of archives.

    Raises :class:`DataError` for an empty ``pypi:``, an unpinned or ranged requirement, a bad
    line of a ``pypi:FILE``, a ``pypi:FILE`` that pins nothing and a ``pypi:FILE``/
    ``pypi:FOLDER`` that does not exist or holds no archive. Reads no network.
    """
    if not spec:  # Path("") is the working directory: it would be read as pypi:FOLDER
        raise DataError(
            "pypi: names no package: write pypi:NAME==VERSION, pypi:FILE of such lines, "
            "pypi:FOLDER of downloaded archives or pypi:default in ingest.sources"
        )
    if spec == DEFAULT_LIST:
        return default_corpus()
    path = Path(spec).expanduser()
    if "==" not in spec and not path.exists() and _looks_like_path(spec):
        raise DataError(
            f"pypi:{spec}: no such file or folder ({path.resolve()}); give pypi:FILE of "
            "NAME==VERSION lines, pypi:FOLDER of downloaded archives or pypi:NAME==VERSION"
        )
    if "==" not in spec and path.is_dir():
        if not any(p.name.endswith(ARCHIVE_SUFFIXES) for p in path.iterdir() if p.is_file()):
            raise DataError(
                f"pypi:{spec}: the folder {path.resolve()} holds no package archive "
                f"({', '.join(ARCHIVE_SUFFIXES)}): download them there or fix ingest.sources"
            )
        return path
    if "==" not in spec and path.is_file():
        pinned = read_pinned_list(path.read_text(), str(path))
        if not pinned:
            raise DataError(
                f"pypi:{spec}: the file {path.resolve()} pins no package: add NAME==VERSION "
                "lines or fix ingest.sources"
            )
        return pinned
    return [parse_pin(spec)]


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """The labelled files of every package ``source`` names (each package one repository)."""
    what = packages_of(source.removeprefix(PREFIX).strip())
    if isinstance(what, Path):
        return _folder_packages(what, ctx)
    out: list[Candidate] = []
    cache = PackageCache(ctx.cache_root)
    for fetched in fetch(what, ctx):
        tree = cache.tree(fetched.package.key)
        out.extend(folder_candidates(tree, fetched.package.name, ctx, depth=0))
    return out
