"""A labelled table: ``.parquet``/``.csv`` (any case) with ``text`` and ``language`` columns
(optional ``repository`` and ``path``), or a folder named ``*.parquet`` holding a partitioned
Parquet dataset (as Spark and pyarrow write it; ``key=value`` folders become columns). Rows carry
their text; nothing is read from disk later.

The table is checked before any row is used; messages name example rows (counted from 0, header
excluded, as in the ``row-NNNNNNN`` paths of a table without a ``path`` column):

- a file that does not parse as CSV or Parquet, a CSV row with more or fewer fields than the
  header (a comma or line break in a field not quoted), a missing column, an empty or null
  ``repository`` or ``path``, a ``text`` that is not a string (bytes are taken as the file's raw content) and a
  ``language`` that is not a name (a number: label codes need mapping to names) are a
  :class:`DataError`;
- rows with a null or empty ``language`` are left out, counted as ``unlabelled_row`` and reported.

A CSV is read with every field as a string, as written: an empty field is an empty text, ``NA`` or
``null`` in a text stay text (in ``language``, ``repository`` and ``path`` they mean missing, as R
writes them). In both formats a label that is one of :data:`NA_SPELLINGS` (what ``astype(str)``
makes of a null) is missing, and one that ``float()`` reads (``-1``, ``2e3``, ``inf``) is a
number. A leading ``/`` of a ``path`` is dropped, so a path is always relative to its repository.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from aicrush.errors import DataError
from components.sources.base import Candidate, SourceContext

SUFFIXES = (".parquet", ".csv")
#: Example rows named in a message.
EXAMPLES = 5
#: How a table may write a missing language (a CSV also a missing repository or path).
NA_SPELLINGS = ("", "NA", "N/A", "#N/A", "NaN", "nan", "null", "NULL", "None", "<NA>")
#: The columns that take :data:`NA_SPELLINGS` as missing.
_NAMES = ("language", "repository", "path")
#: Largest CSV field, in characters (a file's whole text is one field).
_FIELD_SIZE_LIMIT = 2**31 - 1


def is_table(path: Path) -> bool:
    """A ``.parquet`` or ``.csv`` file, or a folder named ``*.parquet``: a partitioned dataset,
    as Spark and pyarrow write it (``part-*.parquet`` files, maybe in ``key=value`` folders).
    The suffix in any case."""
    suffix = path.suffix.lower()
    return suffix == ".parquet" if path.is_dir() else suffix in SUFFIXES


def _read(path: Path) -> Any:
    import pandas as pd
    import pyarrow as pa

    parquet = path.suffix.lower() == ".parquet"
    try:
        if parquet:
            if path.is_dir() and not any(_is_dataset_file(path, p) for p in path.rglob("*")):
                raise DataError(
                    f"labelled table {str(path)!r} is a folder named .parquet that holds no "
                    "Parquet files (a partitioned dataset holds part-*.parquet files): write the "
                    "table into it or remove it from ingest.sources"
                )
            return pd.read_parquet(path)  # a file, or a partitioned dataset's folder
        return _read_csv(path)
    except DataError:
        raise
    except (ValueError, OSError, csv.Error, pa.ArrowException) as err:  # ArrowInvalid, ...
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise DataError(
            f"cannot read labelled table {str(path)!r} as {'Parquet' if parquet else 'CSV'} "
            f"({type(err).__name__}: {detail}): re-export it"
            + ("" if parquet else " (a header row, then one row per file)")
            + " or remove it from ingest.sources"
        ) from None


def _is_dataset_file(root: Path, path: Path) -> bool:
    """A file pyarrow reads in a dataset folder: neither it nor a folder above it is hidden
    (``.part-0.parquet.crc``) or private (``_SUCCESS``, ``_metadata``)."""
    parts = path.relative_to(root).parts
    return path.is_file() and not any(part.startswith((".", "_")) for part in parts)


def _read_csv(path: Path) -> Any:
    """Every field a string, as written; the names (``language``, ``repository``, ``path``) take
    :data:`NA_SPELLINGS` as missing, never a file's text. Every row must have the header's number
    of fields: pandas reads a first row with one field more as an index column (every column then
    shifts by one) and pads a row with fewer, so both would be misread silently."""
    import pandas as pd

    limit = csv.field_size_limit()
    csv.field_size_limit(_FIELD_SIZE_LIMIT)  # the default, 128 KiB, is below a large source file
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a byte order mark is fine
            reader = csv.reader(handle, strict=True)
            try:
                header = next((record for record in reader if record), None)
                if header is None:
                    raise ValueError("the file holds no header row")
                records: list[list[str]] = []
                bad: dict[str, list[tuple[int, int, int]]] = {"more": [], "fewer": []}
                line = reader.line_num
                for record in reader:
                    first, line = line + 1, reader.line_num
                    if not record:  # a blank line, as pandas skips them
                        continue
                    if len(record) != len(header):
                        more = len(record) > len(header)
                        bad["more" if more else "fewer"].append((len(records), first, len(record)))
                    records.append(record)
            except csv.Error as err:
                raise ValueError(f"line {reader.line_num}: {err}") from None
    finally:
        csv.field_size_limit(limit)
    name = repr(str(path))
    if bad["more"] or bad["fewer"]:
        what = "; ".join(
            f"{rows_text([row for row, _, _ in found])} {'has' if len(found) == 1 else 'have'} "
            f"{kind} fields ("
            + ", ".join(f"{n} on line {line}" for _, line, n in found[:EXAMPLES])
            + (", ..." if len(found) > EXAMPLES else "")
            + ")"
            for kind, found in bad.items()
            if found
        )
        raise DataError(
            f"cannot read labelled table {name} as CSV: its header has {len(header)} fields; "
            f'{what}. A field holding a comma or a line break must be quoted ("a, b", as csv '
            "writers do): re-export the table with csv quoting, or as Parquet"
        )
    twice = sorted({c for c in header if header.count(c) > 1} & {*_NAMES, "text"})
    if twice:
        raise DataError(
            f"labelled table {name}: its header names column(s) {', '.join(twice)} more than "
            "once: rename or remove the extra ones"
        )
    frame = pd.DataFrame(records, columns=header, dtype=object)
    for column in _NAMES:
        if column in frame.columns:
            frame[column] = [None if v in NA_SPELLINGS else v for v in frame[column]]
    return frame


def rows_text(rows: list[int]) -> str:
    """``1 row (3)`` / ``12 rows (0, 4, 9, 10, 11, ...)``: at most :data:`EXAMPLES` named."""
    named = ", ".join(str(r) for r in rows[:EXAMPLES]) + (", ..." if len(rows) > EXAMPLES else "")
    return f"{len(rows)} row{'s' if len(rows) > 1 else ''} ({named})"


def _is_null(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, arrays: not a scalar, not null
        return False


def _kinds(bad: dict[str, list[int]]) -> str:
    """``int in 3 rows (0, 1, 2), null in 1 row (5)``, the most frequent first."""
    return ", ".join(
        f"{kind} in {rows_text(rows)}"
        for kind, rows in sorted(bad.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    )


def _text_kind(value: Any) -> str:
    if isinstance(value, str | bytes):
        return ""
    return "null" if _is_null(value) else type(value).__name__


def _label_kind(value: Any) -> str:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return "empty"
        if value in NA_SPELLINGS:  # what astype(str) makes of a null, in a Parquet file too
            return "null"
        try:
            float(value)  # "-1", "2e3", "inf": a label code, not a name
        except ValueError:
            return ""
        return "number"
    if _is_null(value):
        return "null"
    return type(value).__name__


def _blank_key(value: Any) -> bool:
    return _is_null(value) or not str(value).strip().strip("/")


def candidates(source: str, ctx: SourceContext) -> list[Candidate]:
    """One candidate per row with a language. Raises :class:`DataError` on a table that cannot
    be read, missing columns, empty keys, non-string texts and labels that are not names."""
    path = Path(source).expanduser()
    name = repr(str(path))
    frame = _read(path)
    missing = [c for c in ("text", "language") if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"labelled table {name} lacks column(s) {', '.join(missing)} (it has: {found}); it "
            "needs 'text' and 'language' (optional 'repository', 'path'): rename the columns or "
            "fix ingest.sources"
        )
    n = len(frame)
    repos = frame["repository"].tolist() if "repository" in frame.columns else [path.stem] * n
    paths = (
        frame["path"].tolist() if "path" in frame.columns else [f"row-{i:07d}" for i in range(n)]
    )
    texts, labels = frame["text"].tolist(), frame["language"].tolist()

    empty_keys: dict[str, list[int]] = {}
    for column, values in (("repository", repos), ("path", paths)):
        rows = [i for i, v in enumerate(values) if _blank_key(v)]
        if rows:
            empty_keys[column] = rows
    if empty_keys:
        what = "; ".join(
            f"empty or null {column} in {rows_text(rows)}" for column, rows in empty_keys.items()
        )
        raise DataError(
            f"labelled table {name}: {what}. Each row needs a repository and a path (they name "
            "the file and decide the split): fill them, or leave the column out (rows are then "
            "named row-NNNNNNN in one repository)"
        )

    bad_text: dict[str, list[int]] = {}
    bad_label: dict[str, list[int]] = {}
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if kind := _text_kind(text):
            bad_text.setdefault(kind, []).append(i)
        if kind := _label_kind(label):
            bad_label.setdefault(kind, []).append(i)
    if bad_text:
        raise DataError(
            f"labelled table {name}: column 'text' must hold each file's content as a string; "
            f"found {_kinds(bad_text)}: fix the table"
        )
    not_names = {k: v for k, v in bad_label.items() if k not in ("null", "empty")}
    if not_names:
        raise DataError(
            f"labelled table {name}: column 'language' must hold language names such as Python "
            f"(docs/languages.md); found {_kinds(not_names)}: map label codes to names in the table"
        )

    unlabelled = {i for rows in bad_label.values() for i in rows}  # null or empty: left out
    if unlabelled:
        ctx.skipped["unlabelled_row"] += len(unlabelled)
    out: list[Candidate] = []
    for i, (text, label, repository, rel) in enumerate(
        zip(texts, labels, repos, paths, strict=True)
    ):
        if i in unlabelled:
            continue
        data = text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass")
        # Messages join them as repository/path: no "/" at the repository's ends or the path's start.
        repo, key = str(repository).strip().strip("/"), str(rel).strip().lstrip("/")
        out.append(Candidate(repo, key, label.strip(), size=len(data), data=data))
    if bad_label:
        n_bad = sum(len(rows) for rows in bad_label.values())
        ctx.note(
            f"ingest: {source}: left out {n_bad} row{'s' if n_bad > 1 else ''} without a language: "
            f"{_kinds(bad_label)}"
        )
    if not out:
        raise DataError(
            f"labelled table {name} has no row with a language ({n} rows): fill its 'language' "
            "column with language names such as Python"
        )
    return out
