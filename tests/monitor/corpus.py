"""Real source files of this Python environment, by extension, for drift tests and benchmarks."""

from __future__ import annotations

import os
import random
import sysconfig
from functools import lru_cache
from pathlib import Path

import pandas as pd

EXTENSIONS = {
    ".py": "Python",
    ".c": "C",
    ".h": "C",
    ".js": "JavaScript",
    ".css": "CSS",
    ".json": "JSON",
}
MAX_CHARS = 8000


@lru_cache(maxsize=1)
def source_files(per_extension: int = 400, seed: int = 0) -> pd.DataFrame:
    """Up to ``per_extension`` files per extension from site-packages and the standard library:
    columns path, language, text (first MAX_CHARS characters)."""
    roots = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]})
    by_ext: dict[str, list[Path]] = {e: [] for e in EXTENSIONS}
    for root in roots:  # one walk; os.walk is several times faster than rglob per extension
        for folder, _, names in os.walk(root):
            for name in names:
                ext = os.path.splitext(name)[1]
                if ext in by_ext:
                    by_ext[ext].append(Path(folder, name))
    rng = random.Random(seed)
    rows = []
    for ext, paths in by_ext.items():
        unique = sorted(set(paths))
        rng.shuffle(unique)
        taken = 0
        for path in unique:
            if taken >= per_extension:
                break
            try:
                text = path.read_text(encoding="utf-8", errors="replace")[:MAX_CHARS]
            except OSError:
                continue
            if len(text.strip()) < 200:
                continue
            rows.append((str(path), EXTENSIONS[ext], text))
            taken += 1
    return pd.DataFrame(rows, columns=["path", "language", "text"])


def reference_frame(files: pd.DataFrame) -> pd.DataFrame:
    """A reference as register_model writes it, with the true language as the prediction (a
    perfect classifier), so the prediction column moves exactly as the language mix does."""
    from features.file_features import compute_file_features

    frame = compute_file_features(files["text"].tolist())
    frame["label"] = files["language"].to_numpy()
    frame["prediction"] = files["language"].to_numpy()
    frame["score"] = 1.0
    return frame
