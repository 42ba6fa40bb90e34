"""A labelled table: ``.parquet``/``.csv`` with ``text`` and ``language`` columns (optional
``repository`` and ``path``). Rows carry their text; nothing is read from disk later."""

from __future__ import annotations

from pathlib import Path

from aicrush.errors import DataError
from components.sources.base import Candidate, SourceContext

SUFFIXES = (".parquet", ".csv")


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """One candidate per row with a language. Raises :class:`DataError` on missing columns."""
    import pandas as pd

    path = Path(source).expanduser()
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in ("text", "language") if c not in frame.columns]
    if missing:
        raise DataError(
            f"labelled table {str(path)!r} lacks column(s) {', '.join(missing)}; it needs 'text' "
            "and 'language' (optional 'repository', 'path'): fix the table or ingest.sources"
        )
    repos = frame["repository"] if "repository" in frame.columns else [path.stem] * len(frame)
    paths = (
        frame["path"] if "path" in frame.columns else [f"row-{i:07d}" for i in range(len(frame))]
    )
    out = []
    for text, language, repository, rel in zip(
        frame["text"], frame["language"], repos, paths, strict=True
    ):
        language = str(language).strip() if isinstance(language, str) else ""
        if not language:
            ctx.skipped["unlabelled"] += 1
            continue
        data = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else b""
        out.append(Candidate(str(repository), str(rel), language, size=len(data), data=data))
    return out
