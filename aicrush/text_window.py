"""Which part of a long file the model reads: one function for training, evaluation and serving.

A model reads at most ``max_length`` tokens. The first ``max_length`` tokens of a source file are
often its license header or module docstring, text that reads the same in C, C++, Java, Go or
Protocol Buffers, so a model that only sees the head of a file cannot tell those apart. With the
``head+middle`` window (the default for models trained since it was introduced, recorded as
``text_window`` in the model's ``aicrush.json``) a text longer than
``max_length * CHARS_PER_TOKEN`` characters is cut to its first quarter of that budget (the
header, shebang, includes or imports) and a slice from the middle of the file (code), joined by a
newline. Shorter texts are used whole. Models without the key (trained before) read the head
(``head``), as they were trained to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Characters per token assumed when sizing the window: about what both the tiny preset's code
#: tokenizer and MiniLM's WordPiece produce on source code; a window that tokenizes longer is
#: truncated at ``max_length`` like any text, losing the end of the middle slice only.
CHARS_PER_TOKEN = 4
HEAD_FRACTION = 0.25
WINDOWS = ("head", "head+middle")
DEFAULT_WINDOW = "head+middle"


def window_of(meta: Mapping[str, Any]) -> str:
    """The window a model reads, from its aicrush.json (``head`` for models trained before the
    window was recorded)."""
    return str(meta.get("text_window", "head"))


def window_text(text: str, max_length: int, window: str = DEFAULT_WINDOW) -> str:
    """The part of ``text`` the model reads (see the module docstring)."""
    if window == "head":
        return text
    if window != "head+middle":
        raise ValueError(f"unknown text_window {window!r}; expected one of {', '.join(WINDOWS)}")
    budget = max(1, max_length) * CHARS_PER_TOKEN
    if len(text) <= budget:
        return text
    head = int(budget * HEAD_FRACTION)
    body = budget - head
    start = max(head, (len(text) - body) // 2)
    # Start the middle slice on a line boundary when one is near, so it does not open mid-word.
    newline = text.find("\n", start, start + 160)
    if newline != -1:
        start = newline + 1
    return text[:head] + "\n" + text[start : start + body]


def window_texts(texts: Sequence[str], max_length: int, window: str = DEFAULT_WINDOW) -> list[str]:
    """``window_text`` over a batch."""
    return [window_text(t, max_length, window) for t in texts]
