"""A local folder: one repository, or one per sub-folder at ``ingest.repository_depth``."""

from __future__ import annotations

from pathlib import Path

from components.sources.base import Candidate, SourceContext, repository_of, walk


def folder_candidates(
    root: Path, repo_name: str, ctx: SourceContext, depth: int
) -> list[Candidate]:
    """Labelled files under ``root``, cut into repositories at ``depth`` (0: one repository);
    unlabelled files, links and other non-regular files are counted in ``ctx.skipped``."""
    out = []
    for rel, full in walk(root, ctx.skipped):
        language = ctx.table.language_of(rel)
        if language is None:
            ctx.skipped["unlabelled"] += 1
            continue
        repository, path = repository_of(repo_name, rel, depth)
        out.append(Candidate(repository, path, language, location=full))
    return out


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """The folder ``source`` (it exists: the dispatcher checked)."""
    path = Path(source).expanduser()
    return folder_candidates(path, path.resolve().name or "root", ctx, ctx.repository_depth)
