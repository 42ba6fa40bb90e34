"""Labelled tables: bad rows fail or are counted with the rows named, never dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aicrush.config import IngestConfig
from aicrush.errors import DataError
from components.ingest_sources import ingest

PY = "import os\n\n\ndef main():\n    return os.getcwd()\n"


def write_table(path: Path, columns: dict) -> Path:
    frame = pd.DataFrame(columns)
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def run(table: Path, tmp_path: Path, state_dir: Path, say: list[str] | None = None, **settings):
    cfg = IngestConfig(sources=(str(table),), **settings)
    return ingest(cfg, tmp_path / "out", state_dir, progress=None if say is None else say.append)


@pytest.mark.parametrize(
    ("column", "values", "named"),
    [
        ("repository", ["r1", None, "", "r1"], r"empty or null repository in 2 rows \(1, 2\)"),
        ("path", ["a.py", "b.py", None, "  "], r"empty or null path in 2 rows \(2, 3\)"),
    ],
)
def test_empty_keys_fail_naming_the_rows(
    tmp_path: Path, state_dir: Path, column: str, values: list, named: str
) -> None:
    """Empty keys collapsed into one file each and the error blamed min_files_per_class."""
    columns = {"repository": ["r1"] * 4, "path": ["a.py", "b.py", "c.py", "d.py"]}
    columns[column] = values
    table = write_table(
        tmp_path / "t.parquet", {**columns, "text": [PY] * 4, "language": ["Python"] * 4}
    )
    with pytest.raises(DataError, match=named + r".*fill them, or leave the column out"):
        run(table, tmp_path, state_dir)


def test_repeated_keys_are_counted_and_said(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(
        tmp_path / "t.csv",
        {
            "repository": ["r1", "r1", "r1", "r2"],
            "path": ["a.py", "a.py", "a.py", "a.py"],
            "text": [PY, PY + "# 2\n", PY + "# 3\n", PY],
            "language": ["Python"] * 4,
        },
    )
    said: list[str] = []
    result = run(table, tmp_path, state_dir, said)
    assert result.n_files == 2 and result.skipped == {"duplicate_path": 2}
    line = next(s for s in said if "left out" in s)
    assert "2 duplicate_path" in line and "r1/a.py" in line
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["skipped"] == {"duplicate_path": 2}
    assert any("duplicate_path" in note for note in manifest["notes"])


def test_rows_without_a_language_are_counted_by_kind(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(
        tmp_path / "t.parquet",
        {"text": [PY] * 5, "language": ["Python", None, "", "  ", "Python"]},
    )
    said: list[str] = []
    result = run(table, tmp_path, state_dir, said)
    assert result.n_files == 2 and result.skipped == {"unlabelled_row": 3}
    note = next(s for s in said if "without a language" in s)
    assert "left out 3 rows" in note
    assert "empty in 2 rows (2, 3)" in note and "null in 1 row (1)" in note
    assert "extra_extensions" not in " ".join(said)  # file types do not label table rows


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_label_codes_are_not_language_names(tmp_path: Path, state_dir: Path, suffix: str) -> None:
    """Integer labels were all dropped and the error advised ingest.extra_extensions."""
    table = write_table(tmp_path / f"t{suffix}", {"text": [PY] * 3, "language": [0, 1, 2]})
    with pytest.raises(DataError) as err:
        run(table, tmp_path, state_dir)
    message = str(err.value)
    assert "column 'language' must hold language names" in message
    assert "in 3 rows (0, 1, 2)" in message and "extra_extensions" not in message


def test_every_row_without_a_language_fails(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(tmp_path / "t.parquet", {"text": [PY] * 2, "language": [None, ""]})
    with pytest.raises(DataError, match=r"no row with a language \(2 rows\): fill its 'language'"):
        run(table, tmp_path, state_dir)


@pytest.mark.parametrize(
    ("texts", "named"),
    [
        ([1, 2, 3], r"found int in 3 rows \(0, 1, 2\)"),
        ([PY, None, PY], r"found null in 1 row \(1\)"),
    ],
)
def test_text_that_is_not_a_string_is_named(
    tmp_path: Path, state_dir: Path, texts: list, named: str
) -> None:
    """An int text became an empty file and validate called it size_out_of_bounds."""
    table = write_table(tmp_path / "t.parquet", {"text": texts, "language": ["Python"] * 3})
    with pytest.raises(DataError, match=r"column 'text' must hold each file's content.*" + named):
        run(table, tmp_path, state_dir)


def test_bytes_text_is_the_raw_content(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(
        tmp_path / "t.parquet", {"text": [PY.encode(), b"caf\xe9\n"], "language": ["Python"] * 2}
    )
    run(table, tmp_path, state_dir)
    files = pd.read_parquet(tmp_path / "out" / "files.parquet").set_index("path")
    assert files.loc["row-0000000", "text"] == PY
    assert files.loc["row-0000001", "text"] is None  # not UTF-8: kept for validate to count


def test_csv_fields_are_read_as_written(tmp_path: Path, state_dir: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text,language\nNA,Python\n123,Python\nnull,NA\n")
    result = run(table, tmp_path, state_dir)
    assert result.skipped == {"unlabelled_row": 1}  # NA is a missing label, not a language
    files = pd.read_parquet(tmp_path / "out" / "files.parquet")
    assert files["text"].tolist() == ["NA", "123"]


def test_label_case_takes_the_language_table_spelling(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(
        tmp_path / "t.parquet",
        {
            "text": [PY + f"# {i}\n" for i in range(4)],
            "language": ["Python", "python", "PYTHON", "c++"],
        },
    )
    said: list[str] = []
    result = run(table, tmp_path, state_dir, said)
    assert result.languages == {"C++": 1, "Python": 3}
    assert any("python -> Python (1)" in s and "PYTHON -> Python (1)" in s for s in said)
    assert json.loads(result.manifest_path.read_text())["notes"]


def test_unknown_labels_in_several_cases_fail(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(
        tmp_path / "t.parquet",
        {
            "path": ["a.ex", "b.ex", "c.ex"],
            "text": [PY + f"# {i}\n" for i in range(3)],
            "language": ["Elixir", "elixir", "Elixir"],
        },
    )
    with pytest.raises(DataError) as err:
        run(table, tmp_path, state_dir)
    message = str(err.value)
    assert "'Elixir' (2 files, e.g. t/a.ex) vs 'elixir' (1 files, e.g. t/b.ex)" in message
    assert "write one spelling" in message


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("bad.csv", b'text,language\n"unclosed,Python\n', "CSV"),
        ("empty.csv", b"", "CSV"),
        ("bad.parquet", b"PAR1 not really parquet", "Parquet"),
    ],
)
def test_unreadable_table_names_the_file(
    tmp_path: Path, state_dir: Path, name: str, content: bytes, kind: str
) -> None:
    table = tmp_path / name
    table.write_bytes(content)
    with pytest.raises(DataError) as err:
        run(table, tmp_path, state_dir)
    assert str(err.value).startswith(f"cannot read labelled table {str(table)!r} as {kind} (")
    assert "ingest.sources" in str(err.value)


def test_missing_column_lists_the_columns_found(tmp_path: Path, state_dir: Path) -> None:
    table = write_table(tmp_path / "t.csv", {"text": [PY], "label": ["Python"]})
    with pytest.raises(DataError, match=r"lacks column\(s\) language \(it has: text, label\)"):
        run(table, tmp_path, state_dir)


@pytest.mark.parametrize("suffix", [".PARQUET", ".CSV", ".Csv"])
def test_table_suffix_in_any_case(tmp_path: Path, state_dir: Path, suffix: str) -> None:
    table = write_table(tmp_path / f"t{suffix}", {"text": [PY], "language": ["Python"]})
    assert run(table, tmp_path, state_dir).n_files == 1


def test_paths_are_relative_to_the_repository(tmp_path: Path, state_dir: Path) -> None:
    """An absolute path printed as repo//abs/path."""
    table = write_table(
        tmp_path / "t.parquet",
        {"repository": ["org/r1/"], "path": ["/abs/a.py"], "text": [PY], "language": ["Python"]},
    )
    run(table, tmp_path, state_dir)
    files = pd.read_parquet(tmp_path / "out" / "files.parquet")
    assert (files["repository"] + "/" + files["path"]).tolist() == ["org/r1/abs/a.py"]


HEADER = "repository,path,text,language\n"


@pytest.mark.parametrize(
    ("content", "named"),
    [
        # pandas took the first column as the index: every column shifted by one, and the damage
        # surfaced as "rows without a language".
        (
            HEADER + "r1,a.py,x,y,Python\nr1,b.py,x,Python\nr1,c.py,z,Python\n",
            "1 row (0) has more fields (5 on line 2)",
        ),
        (
            HEADER + "r1,a.py,x,Python\nr1,b.py,x,y,Python\n",
            "1 row (1) has more fields (5 on line 3)",
        ),
        ("text,language\nx, y,Python\n", "its header has 2 fields; 1 row (0) has more fields"),
        # pandas padded it: a silent unlabelled row.
        (HEADER + "r1,a.py,x,Python\nr1,b.py,x\n", "1 row (1) has fewer fields (3 on line 3)"),
        (
            HEADER + "r1,a.py,x,y,Python\nr1,b.py,x\nr1,c.py,z,Python\n",
            "1 row (0) has more fields (5 on line 2); 1 row (1) has fewer fields (3 on line 3)",
        ),
    ],
)
def test_csv_rows_with_another_number_of_fields_fail_naming_them(
    tmp_path: Path, state_dir: Path, content: str, named: str
) -> None:
    table = tmp_path / "t.csv"
    table.write_text(content)
    with pytest.raises(DataError) as err:
        run(table, tmp_path, state_dir)
    message = str(err.value)
    assert message.startswith(f"cannot read labelled table {str(table)!r} as CSV: ")
    assert named in message
    assert "must be quoted" in message and "as Parquet" in message
    assert "without a language" not in message


def test_csv_quoted_fields_blank_lines_and_large_texts_are_read(
    tmp_path: Path, state_dir: Path
) -> None:
    """The reader that counts fields keeps what pandas read: quoted commas and line breaks, blank
    lines, a byte order mark and texts over the csv module's default 128 KiB field limit."""
    large = PY + "# " + "x" * 200_000 + "\n"
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {"repository": ["r1", "r1"], "path": ["a.py", "b.py"], "text": [PY, large]}
        | {"language": ["Python", "Python"]}
    ).to_csv(table, index=False)
    table.write_text("\ufeff" + table.read_text() + "\n\n")
    result = run(table, tmp_path, state_dir, max_file_bytes=300_000)
    assert result.n_files == 2 and not result.skipped
    files = pd.read_parquet(tmp_path / "out" / "files.parquet").set_index("path")
    assert files.loc["a.py", "text"] == PY and files.loc["b.py", "text"] == large


def test_csv_header_naming_a_column_twice_fails(tmp_path: Path, state_dir: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("text,language,language\nx,Python,C\n")
    with pytest.raises(DataError, match=r"names column\(s\) language more than once"):
        run(table, tmp_path, state_dir)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("code", ["-1", "2e3", "1E-3", "+7", "inf", "-Infinity", "1_000", " 12 "])
def test_labels_that_float_reads_are_label_codes(
    tmp_path: Path, state_dir: Path, suffix: str, code: str
) -> None:
    """'-1' and '2e3' became classes: only digits with at most one '.' counted as a number."""
    table = write_table(
        tmp_path / f"t{suffix}", {"text": [PY, PY + "#\n"], "language": ["Python", code]}
    )
    with pytest.raises(DataError, match=r"map label codes to names") as err:
        run(table, tmp_path, state_dir)
    assert "found number in 1 row (1)" in str(err.value)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_na_spellings_are_missing_labels_in_both_formats(
    tmp_path: Path, state_dir: Path, suffix: str
) -> None:
    """In Parquet, 'None' and 'nan' (what astype(str) makes of a null) became classes."""
    spellings = ["None", "nan", "NaN", "null", "NULL", "NA", "N/A", "#N/A", "<NA>"]
    table = write_table(
        tmp_path / f"t{suffix}",
        {"text": [PY + f"# {i}\n" for i in range(10)], "language": ["Python", *spellings]},
    )
    said: list[str] = []
    result = run(table, tmp_path, state_dir, said)
    assert result.languages == {"Python": 1}
    assert result.skipped == {"unlabelled_row": len(spellings)}
    assert any(f"left out {len(spellings)} rows without a language" in s for s in said)
