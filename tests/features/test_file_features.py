"""The feature function: known values on small texts, and equality with a plain reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.file_features import FEATURE_NAMES, compute_features_for, compute_file_features


def _reference(text: str) -> list[float]:
    """The features written out line by line: the meaning the fast implementation must keep."""
    if not text:
        return [0.0] * len(FEATURE_NAMES)
    lines = text.splitlines() or [""]
    stripped = [line.lstrip() for line in lines]
    nonblank = [s for s in stripped if s]
    n, n_lines, n_nb = len(text), len(lines), max(len(nonblank), 1)
    alpha = sum(c.isalpha() for c in text)
    digit = sum(c.isdigit() for c in text)
    space = sum(c.isspace() for c in text)
    indents = [len(a) - len(b) for a, b in zip(lines, stripped, strict=True) if b]
    keywords = ("def ", "import ", "#include", "function", "class ", "return", "<div", "SELECT",
                "struct ", "template", "end", "$")  # fmt: skip
    return [
        n, n_lines, n / n_lines, max(map(len, lines)), 1 - len(nonblank) / n_lines,
        alpha / n, digit / n, space / n, (n - alpha - digit - space) / n,
        sum(c.isupper() for c in text) / n,
        sum(x.startswith("\t") for x in lines) / n_lines,
        sum(x.startswith(" ") for x in lines) / n_lines,
        sum(indents) / len(indents) if indents else 0.0,
        (text.count("{") + text.count("}")) / n,
        sum(s.rstrip().endswith(";") for s in nonblank) / n_nb,
        (text.count("<") + text.count(">")) / n,
        sum(s.startswith("#") for s in nonblank) / n_nb,
        sum(s.startswith(("//", "/*", "*")) for s in nonblank) / n_nb,
        sum(s.startswith("--") for s in nonblank) / n_nb,
        sum(text.count(k) for k in keywords) / n_lines,
    ]  # fmt: skip


def _row(text: str) -> dict[str, float]:
    return compute_file_features([text]).iloc[0].to_dict()


def test_frame_contract() -> None:
    frame = compute_file_features(["a", "bb\ncc", ""])
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert (frame.dtypes == np.float32).all()
    assert frame["n_chars"].tolist() == [1.0, 5.0, 0.0]
    assert compute_file_features([]).shape == (0, len(FEATURE_NAMES))


def test_empty_text_is_all_zero() -> None:
    assert set(_row("").values()) == {0.0}


def test_lengths_and_blank_lines() -> None:
    row = _row("ab\n\ncdef\n")
    assert row["n_chars"] == 9 and row["n_lines"] == 3
    assert row["mean_line_length"] == pytest.approx(3.0)
    assert row["max_line_length"] == 4
    assert row["blank_line_ratio"] == pytest.approx(1 / 3)


def test_tabs_and_space_indentation() -> None:
    row = _row("\tx = 1\n\ty = 2\n    z\nw\n")
    assert row["tab_indent_ratio"] == pytest.approx(0.5)
    assert row["space_indent_ratio"] == pytest.approx(0.25)
    assert row["mean_indent"] == pytest.approx((1 + 1 + 4 + 0) / 4)


def test_comment_markers_and_semicolons() -> None:
    row = _row("# hash\n  // slash\n/* block */\n -- dash\nint x;  \n\n")
    assert row["hash_comment_ratio"] == pytest.approx(1 / 5)
    assert row["slash_comment_ratio"] == pytest.approx(2 / 5)
    assert row["dash_comment_ratio"] == pytest.approx(1 / 5)
    assert row["semicolon_line_ratio"] == pytest.approx(1 / 5)


def test_character_classes_and_keywords() -> None:
    text = "def F(x):\n    return 42 {}<>"
    row, n = _row(text), len(text)
    assert row["digit_ratio"] == pytest.approx(2 / n)
    assert row["upper_ratio"] == pytest.approx(1 / n)
    assert row["brace_ratio"] == pytest.approx(2 / n)
    assert row["angle_bracket_ratio"] == pytest.approx(2 / n)
    assert row["keyword_density"] == pytest.approx(2 / 2)  # "def " and "return"
    total = (
        row["alpha_ratio"] + row["digit_ratio"] + row["whitespace_ratio"] + row["punctuation_ratio"]
    )
    assert total == pytest.approx(1.0)


TRICKY = [
    "",
    "\n",
    "\r\n\r\n  \n",
    "x = 1\r\ny = 2\rz;",
    "ÄÖü ß\u00a0\u2003１２３ x\u0660\n",
    "\x1c\x1d\x1e\x1f\x85 abc\u2028  # y\v-- z\f* w ;\u00a0\n \u3000;",
    "dé\u00e9f x\u00a0# \n\u00a0\u00a0--x;\u2003",
    "#include <stdio.h>\nint main(void) {\n\treturn 0;\n}\n",
    "SELECT a FROM t; -- end\n",
    '<div class="x">$y</div>\n' * 3,
]


@pytest.mark.parametrize("text", TRICKY)
def test_matches_the_line_by_line_reference(text: str) -> None:
    expected = np.asarray(_reference(text), dtype=np.float32)
    np.testing.assert_array_equal(compute_file_features([text]).to_numpy()[0], expected)


def test_index_is_kept_and_order_is_input_order() -> None:
    index = pd.Index([7, 3, 5])
    frame = compute_features_for(["a", "bbb", "cc"], index=index)
    assert frame.index.tolist() == [7, 3, 5]
    assert frame["n_chars"].tolist() == [1.0, 3.0, 2.0]
