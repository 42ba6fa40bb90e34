"""Masked-LM pretraining before fine-tuning (components/pretrain_mlm.py, train.mlm_epochs)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from aicrush.config import TrainConfig, build_config
from components.model_builder import build_model_and_tokenizer
from components.pretrain_mlm import MIN_CHUNK_TOKENS, copy_shared_weights, mlm_chunks, pretrain_mlm
from components.train_model import show_training_progress, train
from tests.components.test_train_model import make_split, tiny_cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    cfg = tiny_cfg(hidden_size=32, intermediate_size=64, num_layers=1, mlm_epochs=3.0,
                   mlm_batch_size=16, mlm_learning_rate=3e-3)  # fmt: skip
    texts = make_split(12, 0).text.astype(str).tolist()
    model, tokenizer, max_length = build_model_and_tokenizer(
        cfg, ["a", "b"], texts, tmp_path_factory.mktemp("tok")
    )
    return cfg, texts, model, tokenizer, max_length


def test_chunks_are_cls_ids_sep_of_at_most_max_length(built) -> None:
    _, texts, _, tokenizer, _ = built
    rows = mlm_chunks(tokenizer, texts, 32)
    assert rows and all(len(r) <= 32 for r in rows)
    assert all(r[0] == tokenizer.cls_token_id and r[-1] == tokenizer.sep_token_id for r in rows)
    assert all(len(r) - 2 >= MIN_CHUNK_TOKENS for r in rows)
    # consecutive chunks of one text give back its ids in order
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    first = mlm_chunks(tokenizer, texts[:1], 32)
    joined = [t for r in first for t in r[1:-1]]
    assert joined == ids[: len(joined)] and len(ids) - len(joined) < MIN_CHUNK_TOKENS
    with pytest.raises(ValueError, match=r"train\.max_length"):
        mlm_chunks(tokenizer, texts, MIN_CHUNK_TOKENS + 1)
    with pytest.raises(ValueError, match=r"train\.mlm_epochs to 0"):
        mlm_chunks(tokenizer, ["x = 1"], 32)


def test_pretraining_lowers_the_loss_and_its_encoder_reaches_the_classifier(built, capsys) -> None:
    cfg, texts, model, tokenizer, max_length = built
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[dict] = []
    metrics = pretrain_mlm(model, tokenizer, texts * 4, cfg, max_length, Path("/tmp/unused-mlm"),
                           emit=seen.append)  # fmt: skip
    assert metrics["mlm_steps"] > 0 and metrics["mlm_chunks"] > 0
    losses = [e["loss"] for e in seen if "loss" in e]
    assert "message" in seen[0] and "chunks" in seen[0]["message"]  # the phase's start line
    assert seen and all(e["phase"] == "mlm" for e in seen)
    assert losses[-1] < losses[0] - 0.5, losses  # it learns the snippets' syntax
    # one line that stays per epoch (the per-step ones are transient: a log or CI job that is not
    # a terminal showed nothing of pretraining, which takes an hour on CPU for the small preset)
    reports = [e for e in seen if e.get("report")]
    assert [e["epoch"] for e in reports] == [1.0, 2.0, 3.0], reports
    assert reports[-1]["step"] == metrics["mlm_steps"]
    after = model.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert any("embeddings" in k for k in changed)
    assert not any(k.startswith("classifier") for k in changed)  # the label layer starts fresh
    show_training_progress(seen[-1])  # the progress line names the phase
    capsys.readouterr()
    show_training_progress(reports[-1])
    assert capsys.readouterr().out.startswith("aicrush:progress train (masked-LM pretraining): ")


def test_the_classifier_gets_the_encoder_as_pretraining_left_it(built) -> None:
    """Two pretrainings of the same model from the same masked-LM start, 3 epochs and 1 step,
    give the classifier other encoder weights: what is copied is the trained encoder, not the
    masked-LM model's initial one (which both runs share)."""
    import copy

    cfg, texts, model, tokenizer, max_length = built
    short = cfg.model_copy(update={"mlm_epochs": 0.01})
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    pretrain_mlm(a, tokenizer, texts * 4, cfg, max_length, Path("/tmp/unused-mlm"))
    steps = pretrain_mlm(b, tokenizer, texts * 4, short, max_length, Path("/tmp/unused-mlm"))
    assert steps["mlm_steps"] == 1
    sa, sb = a.state_dict(), b.state_dict()
    encoder = [k for k in sa if not k.startswith("classifier")]
    assert encoder and all(not torch.equal(sa[k], sb[k]) for k in encoder if "norm" not in k)


def test_copy_refuses_models_that_share_no_encoder() -> None:
    with pytest.raises(ValueError, match="shares no encoder"):
        copy_shared_weights(torch.nn.Linear(2, 2), torch.nn.Linear(3, 3))


def test_train_with_mlm_epochs_pretrains_first_and_reports_it(tmp_path: Path) -> None:
    from tests.components.test_train_model import make_features_dir

    features = make_features_dir(tmp_path / "f", n_train=12, n_eval=4)
    cfg = tiny_cfg(hidden_size=32, intermediate_size=64, num_layers=1, max_steps=2,
                   mlm_epochs=1.0, mlm_batch_size=16)  # fmt: skip
    seen: list[dict] = []
    result = train(features, cfg, tmp_path / "m", tmp_path / "c", progress=seen.append)
    assert result.metrics["mlm_steps"] >= 1 and result.metrics["mlm_loss"] > 0
    phases = [e.get("phase", "classify") for e in seen]
    assert phases[0] == "mlm" and phases[-1] == "classify"
    mlm_reports = [e for e in seen if e.get("phase") == "mlm" and e.get("report")]
    assert [e["step"] for e in mlm_reports] == [result.metrics["mlm_steps"]]
    # the model folder and the MLflow run get the pretraining's figures
    from components.register_model import training_metrics

    logged = training_metrics(result.model_dir)
    assert logged["mlm_steps"] == result.metrics["mlm_steps"] and "val_accuracy" in logged
    # a retry that resumes from the last checkpoint does not pretrain again, and still reports it
    again: list[dict] = []
    resumed = train(features, cfg, tmp_path / "m2", tmp_path / "c", progress=again.append)
    assert resumed.resumed_from_step == 2 and not [e for e in again if e.get("phase") == "mlm"]
    assert resumed.metrics["mlm_steps"] == result.metrics["mlm_steps"]
    # the same seed without pretraining gives other weights
    plain = train(features, tiny_cfg(hidden_size=32, intermediate_size=64, num_layers=1,
                                     max_steps=2), tmp_path / "m0", tmp_path / "c0")  # fmt: skip
    a = load_file(result.model_dir / "model.safetensors")
    b = load_file(plain.model_dir / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a if "embeddings" in k)


def test_a_run_killed_before_its_first_checkpoint_fine_tunes_from_the_kept_pretraining(
    tmp_path: Path,
) -> None:
    """Killed after pretraining and before the first fine-tuning checkpoint, the retry starts
    fine-tuning from the weights kept in checkpoint_dir/mlm/ (no pretraining again), reports the
    first attempt's figures and ends with the weights of a run that was not killed."""
    from tests.components.test_train_model import make_features_dir

    features = make_features_dir(tmp_path / "f", n_train=12, n_eval=4)
    cfg = tiny_cfg(hidden_size=32, intermediate_size=64, num_layers=1, max_steps=3,
                   mlm_epochs=1.0, mlm_batch_size=16, checkpoint_every_steps=100)  # fmt: skip

    class Killed(Exception):
        pass

    def kill_at_fine_tuning(info: dict) -> None:
        if info.get("phase") != "mlm":
            raise Killed

    with pytest.raises(Killed):
        train(features, cfg, tmp_path / "m1", tmp_path / "c", progress=kill_at_fine_tuning)
    assert (tmp_path / "c" / "mlm" / "pretrained.safetensors").is_file()
    again: list[dict] = []
    retried = train(features, cfg, tmp_path / "m2", tmp_path / "c", progress=again.append)
    assert not [e for e in again if e.get("phase") == "mlm"], "pretrained again"
    assert retried.resumed_from_step == 0 and retried.metrics["mlm_steps"] >= 1
    whole = train(features, cfg, tmp_path / "m3", tmp_path / "c3")
    assert whole.metrics["mlm_steps"] == retried.metrics["mlm_steps"]
    a = load_file(retried.model_dir / "model.safetensors")
    b = load_file(whole.model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # What was kept is trusted only whole and for the same config: weights cut short, or kept
    # by another config (its fingerprint), are pretrained again rather than loaded.
    import shutil

    def pretrains(run_cfg: TrainConfig, name: str, spoil: Callable[[Path], None]) -> bool:
        shutil.copytree(tmp_path / "c" / "mlm", tmp_path / name / "mlm")
        spoil(tmp_path / name / "mlm")
        seen: list[dict] = []
        train(features, run_cfg, tmp_path / f"m-{name}", tmp_path / name, progress=seen.append)
        return any(e.get("phase") == "mlm" for e in seen)

    def cut(mlm: Path) -> None:
        weights = mlm / "pretrained.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])

    def other_tokenizer(mlm: Path) -> None:
        (mlm / "tokenizer" / "tokenizer.json").write_text("{}")

    assert pretrains(cfg, "cut", cut)
    assert pretrains(cfg, "tok", other_tokenizer)
    assert pretrains(cfg.model_copy(update={"seed": cfg.seed + 1}), "other", lambda _: None)
    assert not pretrains(cfg, "same", lambda _: None)


def test_mlm_epochs_with_a_pretrained_base_model_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"train\.mlm_epochs"):
        TrainConfig(base_model="minilm", mlm_epochs=1.0)


def test_the_small_preset_pretrains() -> None:
    cfg = build_config(preset="small")
    assert cfg.train.mlm_epochs > 0 and cfg.train.base_model == "" and cfg.train.num_layers == 4


@pytest.mark.slow
def test_two_ddp_processes_pretrain_then_fine_tune(tmp_path: Path) -> None:
    """Under torchrun each process pretrains on its shard of the chunks (gloo all-reduce), with
    its own masking stream, then fine-tunes; rank 0 writes the model and the mlm metrics."""
    import json

    from aicrush.config import AicrushConfig, DistributedConfig
    from tests.components.test_train_model import make_features_dir
    from tests.components.test_train_worker import _torchrun, _worker_args

    features = make_features_dir(tmp_path / "features", n_train=12, n_eval=4)
    cfg = AicrushConfig(train=tiny_cfg(hidden_size=32, intermediate_size=64, num_layers=1,
                                       max_steps=2, mlm_epochs=1.0, mlm_batch_size=8,
                                       distributed=DistributedConfig(processes_per_node=2)))  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    done = _torchrun("components.train_worker", 2, _worker_args(
        str(tmp_path / "config.json"), str(features), str(tmp_path / "ddp"),
        str(tmp_path / "c"), str(tmp_path / "metrics.json")))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["world_size"] == 2 and doc["metrics"]["mlm_steps"] >= 1
    # each process takes its shard: one epoch is ceil(chunks / (8 rows x 2 processes)) steps
    m = doc["metrics"]
    assert m["mlm_steps"] == math.ceil(m["mlm_chunks"] / 16), m
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
