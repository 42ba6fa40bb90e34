"""Models for the serving benchmark: a trained ``tiny`` preset model (the default), or a
random-weight model of about its size (speed only; label agreement needs a trained model).
"""

from __future__ import annotations

import json
from pathlib import Path

LABELS = ("C", "C++", "CSS", "HTML", "JavaScript", "JSON", "Markdown", "Python", "Shell", "YAML")


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from aicrush.model_folder import MODEL_META_FILE
    from tests.model_factory import minilm_folder

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    meta = {"labels": list(LABELS), "max_length": 128, "preset": "tiny-random", "seed": seed}
    (out_dir / MODEL_META_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def code_snippets(n: int = 64, size: int = 1024) -> list[str]:
    """About ``size``-character snippets cut from the standard library's source files."""
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    out: list[str] = []
    for f in files:
        text = f.read_text(errors="replace")
        for start in range(0, max(len(text) - size, 1), size * 7):
            out.append(text[start : start + size])
            if len(out) >= n:
                return out
    return out


def train_tiny_model(out_dir: Path) -> tuple[Path, list[str]]:
    """The ``tiny`` preset (its own tokenizer, crops window) trained here on the small five-language
    corpus of the serving tests (tests/serving/test_readme_examples.py; seconds on one thread),
    and that corpus's held-out texts (validation + test). Pass ``--model-dir`` and ``--texts``
    for the default corpus's model and test split."""
    import pandas as pd

    from aicrush.config import build_config
    from components.train_model import train
    from tests.serving.test_readme_examples import corpus

    features = corpus(out_dir / "features")
    cfg = build_config({"train": {"num_threads": 1}}, preset="tiny")
    train(features, cfg.train, out_dir / "model", out_dir / "ckpt", preset="tiny")
    texts = pd.concat([pd.read_parquet(features / f"{s}.parquet") for s in ("val", "test")])
    return out_dir / "model", texts["text"].tolist()
