"""A git repository (URL, a path ending in ``.git``, or a local folder holding ``.git``): shallow
``git clone --depth 1`` into the ingest's temporary folder, so only committed files count. The
whole repository is one repository."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from aicrush.errors import DataError
from components.sources.base import Candidate, SourceContext
from components.sources.folder import folder_candidates

_GIT_ADVICE = ("Please make sure you have the correct access rights", "and the repository exists")
_GIT_URL = re.compile(r"^(https?://|ssh://|git://|file://|git@[^:]+:)")


def is_remote_git_url(source: str) -> bool:
    """An https/ssh/git URL (or ``git@host:path``): what a pod elsewhere can clone too."""
    return bool(_GIT_URL.match(source)) and not source.startswith("file://")


def is_git_source(source: str) -> bool:
    """URLs, ``*.git`` paths and local folders holding ``.git`` are cloned, not walked."""
    if _GIT_URL.match(source):
        return True
    if source.endswith(".git"):
        return True
    path = Path(source).expanduser()
    return path.is_dir() and (path / ".git").exists()


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """Clone ``source`` and label its files. Raises :class:`DataError` when the clone fails."""
    url = source
    local = Path(source).expanduser()
    if not _GIT_URL.match(source) and local.exists():
        url = local.resolve().as_uri()  # file:// so that --depth applies to local repositories
    name = source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git") or "repo"
    dest = Path(tempfile.mkdtemp(prefix="git-", dir=ctx.workdir)) / name
    cmd = ["git", "clone", "--depth", "1", "--quiet", url, str(dest)]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=1800, check=False
        )
    except FileNotFoundError:
        raise DataError(
            f"cannot clone {source!r}: the git command is not installed here (the pipeline "
            "image installs it; elsewhere install git, e.g. apt-get install git)"
        ) from None
    except subprocess.TimeoutExpired:
        raise DataError(
            f"git clone of {source!r} did not finish in 30 minutes: check the URL, or clone it "
            "yourself and pass the folder as a source"
        ) from None
    if proc.returncode != 0:
        # git's closing advice ("Please make sure you have the correct access rights / and the
        # repository exists.") would push out the line that says what happened (ssh's).
        said = [
            line.strip()
            for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith(_GIT_ADVICE)
        ]
        tail = said[-3:]
        raise DataError(
            f"git clone of {source!r} failed ({'; '.join(tail) or 'exit ' + str(proc.returncode)}): "
            "check ingest.sources, the URL and access rights"
        )
    return folder_candidates(dest, name, ctx, depth=0)  # a clone is one repository
