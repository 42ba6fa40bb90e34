"""Which part of a long file the model reads: one function for training, evaluation and serving.

A model reads at most ``max_length`` tokens. The first ``max_length`` tokens of a source file are
often its license header or module docstring, text that reads the same in C, C++, Java, Go or
Protocol Buffers, so a model that only sees the head of a file cannot tell those apart. With the
``head+middle`` window (the default for models trained since it was introduced, recorded as
``text_window`` in the model's ``aicrush.json``) a text longer than
``max_length * CHARS_PER_TOKEN`` characters is cut to its first quarter of that budget (the
header, shebang, includes or imports) and a slice from the middle of the file (code), joined by a
newline. Shorter texts are used whole. Models without the key (trained before) read the head
(``head``), as they were trained to. Models trained since issue 10 default to ``crops`` (below):
several windows per text, chosen in token space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Characters per token assumed when sizing the window: about what both the tiny preset's code
#: tokenizer and MiniLM's WordPiece produce on source code; a window that tokenizes longer is
#: truncated at ``max_length`` like any text, losing the end of the middle slice only.
CHARS_PER_TOKEN = 4
HEAD_FRACTION = 0.25
WINDOWS = ("head", "head+middle", "crops")
DEFAULT_WINDOW = "head+middle"


def window_of(meta: Mapping[str, Any]) -> str:
    """The window a model reads, from its aicrush.json (``head`` for models trained before the
    window was recorded)."""
    return str(meta.get("text_window", "head"))


def crops_of(meta: Mapping[str, Any]) -> int:
    """How many windows a ``crops`` model averages per text, from its aicrush.json (1 if unset)."""
    return int(meta.get("crops", 1))


def window_text(text: str, max_length: int, window: str = DEFAULT_WINDOW) -> str:
    """The part of ``text`` the model reads (see the module docstring); ``crops`` models read
    several windows instead (``model_inputs``)."""
    if window == "head":
        return text
    if window == "crops":
        return crop_source(text, max_length)
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


# ---------------------------------------------------------------------------------------------
# Crops: several max_length-token views of one text, in token space.
#
# A ``crops`` model (``text_window: crops`` in aicrush.json, with ``crops``: n) reads a text as up
# to n windows of ``max_length`` tokens spread evenly over the first ``max_length * CROP_SPAN``
# tokens of the text (the first window at its start, the last at the end of that span), and its
# prediction is the mean of the windows' class probabilities. A text of at most ``max_length``
# tokens is one window, as before. Training shows the model one window per file per epoch, at a
# random place (a different view of the file every epoch, so the model learns the language, not
# one file's header). Cropping token ids, not characters, makes every window exactly
# ``max_length`` tokens whatever the characters per token of the language.

CROPS = "crops"
#: A crops model reads from the first ``max_length * CROP_SPAN`` tokens of a text.
CROP_SPAN = 16


def crop_source(text: str, max_length: int) -> str:
    """The characters a crops model tokenizes (enough for ``max_length * CROP_SPAN`` tokens)."""
    return text[: max_length * CROP_SPAN * CHARS_PER_TOKEN]


def _span(ids: Sequence[int], max_length: int) -> tuple[int, list[int], int, int]:
    """(first id, inner ids within the span, last id, inner width of one window)."""
    inner = list(ids[1:-1])[: max_length * CROP_SPAN]
    return ids[0], inner, ids[-1], max(1, max_length - 2)


def token_crops(ids: Sequence[int], max_length: int, n: int) -> list[list[int]]:
    """Up to ``n`` windows of ``ids`` (``[CLS] ... [SEP]``, untruncated), evenly spaced.

    Each window keeps the first and last special token: ``[CLS] + inner[s : s + max_length - 2]
    + [SEP]``. Shapes: ``ids`` any length >= 2; returns 1..n lists of at most ``max_length`` ids.
    """
    if len(ids) <= max_length:
        return [list(ids)]
    first, inner, last, width = _span(ids, max_length)
    room = max(0, len(inner) - width)
    half = max(1, width // 2)
    count = max(1, min(n, -(-room // half) + 1))  # as few as cover the span, overlapping >= half
    starts = sorted({round(room * i / max(1, count - 1)) for i in range(count)})
    return [[first, *inner[s : s + width], last] for s in starts]


def random_crop(ids: Sequence[int], max_length: int, rng: Any) -> list[int]:
    """One window of ``ids`` at a random place in the span (``rng``: a numpy Generator)."""
    if len(ids) <= max_length:
        return list(ids)
    first, inner, last, width = _span(ids, max_length)
    start = int(rng.integers(0, max(0, len(inner) - width) + 1))
    return [first, *inner[start : start + width], last]


def model_inputs(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    window: str = DEFAULT_WINDOW,
    crops: int = 1,
) -> tuple[list[list[int]], list[int]]:
    """Token id rows the model reads for ``texts`` and, per row, the index of its text.

    ``head`` / ``head+middle``: one row per text, the window truncated to ``max_length`` tokens.
    ``crops``: up to ``crops`` rows per text (``token_crops``); average the rows' probabilities
    per text (``mean_by_text``). Used by training (validation), evaluation and serving alike.
    """
    if window != CROPS:
        enc = tokenizer(
            window_texts(texts, max_length, window),
            truncation=True,
            max_length=max_length,
            padding=False,
        )
        rows = [list(x) for x in enc["input_ids"]]
        return rows, list(range(len(rows)))
    # verbose=False: the whole span is longer than max_length on purpose (it is cut into
    # windows below); transformers would warn of "indexing errors" once per tokenizer.
    enc = tokenizer(
        [crop_source(t, max_length) for t in texts], truncation=False, padding=False, verbose=False
    )
    rows, owner = [], []
    for i, ids in enumerate(enc["input_ids"]):
        for crop in token_crops(ids, max_length, crops):
            rows.append(crop)
            owner.append(i)
    return rows, owner


def mean_by_text(row_probs: Any, owner: Sequence[int], n_texts: int) -> Any:
    """Mean of the rows' probabilities per text: ``[rows, C]`` -> ``[n_texts, C]`` (numpy)."""
    import numpy as np

    owner_arr = np.asarray(owner, dtype=np.int64)
    out = np.zeros((n_texts, row_probs.shape[1]), dtype=np.float64)
    np.add.at(out, owner_arr, row_probs)
    counts = np.bincount(owner_arr, minlength=n_texts).astype(np.float64)
    return (out / np.maximum(counts, 1)[:, None]).astype(np.float32)
