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


def test_token_crops_are_evenly_spaced_full_windows_with_special_tokens():
    from aicrush.text_window import CROP_SPAN, token_crops

    ids = [101, *range(1000, 1000 + 300), 102]  # [CLS] 300 tokens [SEP]
    crops = token_crops(ids, 32, 4)
    assert len(crops) == 4
    assert all(c[0] == 101 and c[-1] == 102 and len(c) == 32 for c in crops)
    assert crops[0][1:-1] == list(range(1000, 1030))  # the first window starts the text
    assert crops[-1][1:-1] == list(range(1270, 1300))  # the last one ends it
    short = [*ids[:20], 102]
    assert token_crops(short, 32, 4) == [short]  # short: one window, whole
    # Only the first max_length * CROP_SPAN tokens are read.
    long = [101, *range(10_000), 102]
    assert token_crops(long, 8, 2)[-1][-2] == 8 * CROP_SPAN - 1
    # A text just over one window does not get four nearly identical windows.
    assert len(token_crops([101, *range(40), 102], 32, 4)) == 2


def test_random_crop_is_one_window_inside_the_span_and_seeded():
    import numpy as np

    from aicrush.text_window import random_crop

    ids = [101, *range(500), 102]
    a = random_crop(ids, 16, np.random.default_rng(1))
    b = random_crop(ids, 16, np.random.default_rng(1))
    assert a == b and len(a) == 16 and a[0] == 101 and a[-1] == 102
    inner = a[1:-1]
    assert inner == list(range(inner[0], inner[0] + 14))  # contiguous
    starts = {random_crop(ids, 16, np.random.default_rng(s))[1] for s in range(20)}
    assert len(starts) > 10  # different places of the file


def test_mean_by_text_averages_rows_of_one_text():
    import numpy as np

    from aicrush.text_window import mean_by_text

    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]], dtype=np.float32)
    out = mean_by_text(rows, [0, 0, 1], 2)
    assert np.allclose(out, [[0.5, 0.5], [0.2, 0.8]])
