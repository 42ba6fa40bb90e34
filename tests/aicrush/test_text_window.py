import pytest

from aicrush.text_window import CHARS_PER_TOKEN, window_text, window_texts


def test_short_text_is_used_whole():
    text = "import os\n" * 5
    assert window_text(text, 128) == text


def test_long_text_keeps_head_and_a_middle_slice_within_budget():
    header = "// Copyright 2024 Example Corp. Licensed under the Apache License.\n" * 40
    body = "".join(f"int f{i}(int x) {{ return x + {i}; }}\n" for i in range(400))
    text = header + body
    out = window_text(text, 64)
    budget = 64 * CHARS_PER_TOKEN
    assert len(out) <= budget + 1  # + the joining newline
    assert out.startswith(text[: budget // 4])
    assert "int f" in out[budget // 4 :]  # the middle is code, not more license
    mid_line = out[budget // 4 + 1 :].split("\n", 1)[0]
    assert mid_line.startswith("int f")  # the slice starts on a line boundary


def test_head_window_is_the_identity_and_is_deterministic():
    text = "x" * 10_000
    assert window_text(text, 16, "head") == text
    assert window_texts([text, "a"], 16) == [window_text(text, 16), "a"]


def test_unknown_window_fails_clearly():
    with pytest.raises(ValueError, match="unknown text_window 'tail'"):
        window_text("x" * 10_000, 16, "tail")
