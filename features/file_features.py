"""File statistics computed from source text: the one feature function of aicrush.

Training (through the Feast feature view), serving (through the on-demand feature view) and the
drift monitor all call :func:`compute_file_features`, so a feature cannot mean one thing at
training time and another at request time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

# Order matters: it is the column order of every feature frame and of the Feast schema.
FEATURE_NAMES: tuple[str, ...] = (
    "n_chars",
    "n_lines",
    "mean_line_length",
    "max_line_length",
    "blank_line_ratio",
    "alpha_ratio",
    "digit_ratio",
    "whitespace_ratio",
    "punctuation_ratio",
    "upper_ratio",
    "tab_indent_ratio",
    "space_indent_ratio",
    "mean_indent",
    "brace_ratio",
    "semicolon_line_ratio",
    "angle_bracket_ratio",
    "hash_comment_ratio",
    "slash_comment_ratio",
    "dash_comment_ratio",
    "keyword_density",
)

# Tokens whose presence says something about the language family; counted per line.
_KEYWORDS: tuple[str, ...] = (
    "def ",
    "import ",
    "#include",
    "function",
    "class ",
    "return",
    "<div",
    "SELECT",
    "struct ",
    "template",
    "end",
    "$",
)


def _features_of(text: str) -> list[float]:
    n_chars = len(text)
    if n_chars == 0:
        return [0.0] * len(FEATURE_NAMES)
    lines = text.splitlines() or [""]
    n_lines = len(lines)
    lengths = [len(line) for line in lines]
    stripped = [line.lstrip() for line in lines]
    nonblank = [s for s in stripped if s]
    n_nonblank = max(len(nonblank), 1)

    n_alpha = sum(c.isalpha() for c in text)
    n_digit = sum(c.isdigit() for c in text)
    n_space = sum(c.isspace() for c in text)
    n_upper = sum(c.isupper() for c in text)
    n_punct = n_chars - n_alpha - n_digit - n_space

    tab_indent = sum(1 for line in lines if line.startswith("\t"))
    space_indent = sum(1 for line in lines if line.startswith(" "))
    indents = [len(line) - len(s) for line, s in zip(lines, stripped, strict=True) if s]

    hash_comments = sum(1 for s in nonblank if s.startswith("#"))
    slash_comments = sum(1 for s in nonblank if s.startswith(("//", "/*", "*")))
    dash_comments = sum(1 for s in nonblank if s.startswith("--"))
    semicolon_lines = sum(1 for s in nonblank if s.rstrip().endswith(";"))
    keywords = sum(text.count(k) for k in _KEYWORDS)

    return [
        float(n_chars),
        float(n_lines),
        n_chars / n_lines,
        float(max(lengths)),
        1.0 - len(nonblank) / n_lines,
        n_alpha / n_chars,
        n_digit / n_chars,
        n_space / n_chars,
        n_punct / n_chars,
        n_upper / n_chars,
        tab_indent / n_lines,
        space_indent / n_lines,
        (sum(indents) / len(indents)) if indents else 0.0,
        (text.count("{") + text.count("}")) / n_chars,
        semicolon_lines / n_nonblank,
        (text.count("<") + text.count(">")) / n_chars,
        hash_comments / n_nonblank,
        slash_comments / n_nonblank,
        dash_comments / n_nonblank,
        keywords / n_lines,
    ]


def compute_file_features(texts: Iterable[str]) -> pd.DataFrame:
    """Return one row of :data:`FEATURE_NAMES` (float32) per text, in input order.

    Pure and deterministic: the same text gives the same row in training, serving and monitoring.
    """
    rows = [_features_of(t) for t in texts]
    values = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    return pd.DataFrame(values, columns=list(FEATURE_NAMES))


def compute_features_for(texts: Sequence[str], index: pd.Index | None = None) -> pd.DataFrame:
    """Like :func:`compute_file_features`, with the frame's index set to ``index`` when given."""
    frame = compute_file_features(texts)
    if index is not None:
        frame.index = index
    return frame
