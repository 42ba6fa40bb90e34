"""The trained model folder, as KServe's Hugging Face runtime would load it (offline).

KServe's ``huggingfaceserver`` is not on the package index (it ships in KServe's images), so this
replays what its encoder path does (kserve/kserve python/huggingfaceserver: ``task.py``
``infer_task_from_model_architecture``, ``encoder_model.py`` ``load``/``preprocess``/``predict``/
``postprocess``) with the same transformers calls, on the ``tiny`` preset trained here:

- the task is inferred from ``config.json`` ``architectures[0]``: a name ending in
  ``ForSequenceClassification`` is ``sequence_classification``;
- ``AutoConfig``, ``AutoTokenizer(do_lower_case=False)`` and ``AutoModelForSequenceClassification``
  load the folder; the tokenizer has a pad token (else the runtime adds one and resizes the
  embeddings, changing the model);
- ``max_length`` defaults to ``max_position_embeddings``; inputs are padded and truncated (the
  head of each text only: no crops), and the answer is the class index (``id2label`` maps it).

docs/serving.md states what differs from our server (the window, index vs label).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from aicrush.model_folder import TextClassifier
from tests.serving import SNIPPETS


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aicrush.config import build_config
    from components.train_model import train
    from tests.serving.test_readme_examples import corpus

    root = tmp_path_factory.mktemp("hf-compat")
    features = corpus(root / "features")
    cfg = build_config({"train": {"num_threads": 1}}, preset="tiny")
    train(features, cfg.train, root / "model", root / "ckpt", preset="tiny")
    return root / "model"


def test_kserve_hf_runtime_infers_sequence_classification(trained: Path) -> None:
    config = AutoConfig.from_pretrained(trained)
    # KServe's ARCHITECTURES_2_TASK: the first architecture's suffix decides the task.
    assert config.architectures[0].endswith("ForSequenceClassification")
    meta_labels = TextClassifier.from_dir(trained, device="cpu").labels
    assert [config.id2label[i] for i in range(config.num_labels)] == meta_labels


def test_kserve_hf_runtime_loads_the_folder_and_gives_our_labels_on_short_texts(
    trained: Path,
) -> None:
    config = AutoConfig.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained, do_lower_case=False)
    assert tokenizer.pad_token is not None  # else the runtime would resize the embeddings
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    max_length = config.max_position_embeddings  # the runtime's default --max_length
    # Texts within max_length tokens: one window, read the same by the runtime and by us.
    texts = [t for t in SNIPPETS if len(tokenizer(t)["input_ids"]) <= max_length]
    assert len(texts) >= 5
    inputs = tokenizer(
        texts, max_length=max_length, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        indices = model(**inputs).logits.argmax(-1).tolist()  # what the runtime answers
    ours = [p.label for p in TextClassifier.from_dir(trained, device="cpu").predict(texts)]
    assert [config.id2label[i] for i in indices] == ours
    # transformers' own text-classification pipeline maps the index through id2label.
    pipe = pipeline("text-classification", model=str(trained), device="cpu")
    assert [r["label"] for r in pipe(texts)] == ours
