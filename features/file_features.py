"""File statistics computed from source text: the one feature function of aicrush.

Training (through the Feast feature view), serving (through the on-demand feature view) and the
drift monitor all call :func:`compute_file_features`, so a feature cannot mean one thing at
training time and another at request time.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from itertools import compress

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
_KEYWORD_BYTES = tuple(k.encode() for k in _KEYWORDS)


# Each ASCII byte mapped to its class under the str predicates (isupper, islower-alpha, isdigit,
# isspace, other), so ASCII is classified by one bytes.translate and four counts (C speed).
def _ascii_class(char: str) -> int:
    if char.isupper():
        return ord("A")
    if char.isalpha():
        return ord("a")
    if char.isdigit():
        return ord("0")
    return ord(" ") if char.isspace() else ord(".")


_ASCII_CLASSES = bytes(_ascii_class(chr(b)) for b in range(128)) + b"." * 128
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")
# Matches ";" ending a line, before trailing whitespace other than the line break.
_SEMICOLON_END = re.compile(r";[^\S\n]*(?=\n|\Z)")


def _char_classes(text: str, utf8: bytes) -> tuple[int, int, int, int]:
    """Counts of alphabetic, digit, whitespace and upper-case characters (str predicates)."""
    ascii_only = len(utf8) == len(text)
    classes = (utf8 if ascii_only else text.encode("ascii", "ignore")).translate(_ASCII_CLASSES)
    upper = classes.count(b"A")
    alpha, digit, space = upper + classes.count(b"a"), classes.count(b"0"), classes.count(b" ")
    if not ascii_only:  # the few non-ASCII characters go through the str predicates one by one
        rest = _ASCII_RUNS.sub("", text)
        alpha += sum(c.isalpha() for c in rest)
        digit += sum(c.isdigit() for c in rest)
        space += sum(c.isspace() for c in rest)
        upper += sum(c.isupper() for c in rest)
    return alpha, digit, space, upper


def _features_of(text: str) -> list[float]:
    # Whole-text C-level scans instead of per-line Python loops: this runs on every ingested
    # file and every request. ASCII markers are counted in the UTF-8 bytes, which is exact
    # (no multi-byte sequence contains an ASCII byte) and faster than str.count.
    n_chars = len(text)
    if n_chars == 0:
        return [0.0] * len(FEATURE_NAMES)
    utf8 = text.encode("utf-8")
    lines = text.splitlines() or [""]
    n_lines = len(lines)
    stripped = list(map(str.lstrip, lines))
    n_nonblank_lines = sum(map(bool, stripped))
    n_nonblank = max(n_nonblank_lines, 1)
    # "\n" + line: every line start becomes findable with one str.count.
    starts = "\n" + "\n".join(lines)
    stripped_starts = "\n" + "\n".join(stripped)

    n_alpha, n_digit, n_space, n_upper = _char_classes(text, utf8)
    n_punct = n_chars - n_alpha - n_digit - n_space

    blank_width = sum(map(len, compress(lines, map(operator.not_, stripped))))
    total_indent = len(starts) - len(stripped_starts) - blank_width
    slash_comments = sum(stripped_starts.count(m) for m in ("\n//", "\n/*", "\n*"))
    keywords = sum(utf8.count(k) for k in _KEYWORD_BYTES)

    return [
        float(n_chars),
        float(n_lines),
        n_chars / n_lines,
        float(max(map(len, lines))),
        1.0 - n_nonblank_lines / n_lines,
        n_alpha / n_chars,
        n_digit / n_chars,
        n_space / n_chars,
        n_punct / n_chars,
        n_upper / n_chars,
        starts.count("\n\t") / n_lines,
        starts.count("\n ") / n_lines,
        total_indent / n_nonblank_lines if n_nonblank_lines else 0.0,
        (utf8.count(b"{") + utf8.count(b"}")) / n_chars,
        len(_SEMICOLON_END.findall(stripped_starts)) / n_nonblank,
        (utf8.count(b"<") + utf8.count(b">")) / n_chars,
        stripped_starts.count("\n#") / n_nonblank,
        slash_comments / n_nonblank,
        stripped_starts.count("\n--") / n_nonblank,
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
