"""Training throughput: aicrush's own loop (components.train_model.train) vs transformers.Trainer.

Same model (the ``tiny`` preset: a BERT encoder built from TrainConfig, tokenizer trained on the
data), same data, same batch size, max_length, learning rate, warmup, weight decay, gradient
clipping and number of optimizer steps. Trainer is set up as the equivalent plain loop:
``eval_strategy="no"``, ``save_strategy="no"``, ``report_to="none"``, ``dataloader_num_workers=0``,
``train_sampling_strategy="random"`` (group_by_length off), ``DataCollatorWithPadding`` (dynamic
padding per batch), ``lr_scheduler_type="linear"``, ``max_grad_norm=1.0``, default optimizer
(``adamw_torch_fused``), bf16 only on CUDA. Figures are optimizer-loop samples/s: Trainer's
``train_samples_per_second`` and train()'s ``samples_per_second`` (both exclude tokenization).

One untimed 2-step warm-up of each, then ``--repeats`` alternating pairs (who goes first
alternates); medians are reported with the load average, since a shared machine is noisy.
Trainer needs ``accelerate>=1.1`` installed.

Data (default): source files of this Python environment's site-packages and standard library,
labelled by extension; ``--source synthetic`` uses generated snippets instead.

    .venv/bin/python benchmarks/bench_training.py --max-steps 40 --repeats 2
"""

import argparse
import math
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from a checkout: import this tree's packages

EXTENSIONS = {
    ".py": "Python",
    ".c": "C",
    ".h": "C",
    ".cpp": "C++",
    ".js": "JavaScript",
    ".css": "CSS",
    ".sh": "Shell",
    ".json": "JSON",
    ".md": "Markdown",
    ".pyx": "Cython",
    ".html": "HTML",
    ".yaml": "YAML",
    ".toml": "TOML",
}


def site_packages_frame(per_language: int, seed: int):
    """Up to ``per_language`` files per language from site-packages + stdlib (64 B .. 50 kB)."""
    import pandas as pd

    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])}
    found: dict[str, list[Path]] = {lang: [] for lang in set(EXTENSIONS.values())}
    for root in sorted(roots):
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                lang = EXTENSIONS.get(Path(name).suffix.lower())
                if lang and len(found[lang]) < per_language * 20:
                    found[lang].append(Path(dirpath) / name)
    rng = random.Random(seed)
    rows = []
    for lang, paths in sorted(found.items()):
        rng.shuffle(paths)
        kept = 0
        for path in paths:
            try:
                size = path.stat().st_size
                if not 64 <= size <= 50_000:
                    continue
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            rows.append({"repository": "bench", "path": str(path), "language": lang, "text": text})
            kept += 1
            if kept >= per_language:
                break
    frame = pd.DataFrame(rows)
    return frame[frame.groupby("language")["language"].transform("size") >= 10].reset_index(
        drop=True
    )


def synthetic_frame(per_language: int, seed: int):
    from tests.components.test_train_model import make_split

    return make_split(per_language, seed)


def write_features(frame, out: Path, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_val = max(10, len(frame) // 20)
    frame.iloc[n_val:].to_parquet(out / "train.parquet")
    frame.iloc[:n_val].to_parquet(out / "val.parquet")
    frame.iloc[:n_val].to_parquet(out / "test.parquet")
    return out


def run_ours(features: Path, cfg, work: Path) -> tuple[float, Path]:
    from components.train_model import train

    out = Path(tempfile.mkdtemp(dir=work))
    result = train(features, cfg, out / "model", out / "ckpt")
    return result.metrics["samples_per_second"], out / "model"


def run_trainer(features: Path, cfg, model_dir: Path, work: Path) -> float:
    import pandas as pd
    import torch
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from components.train_model import tokenize

    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # the tokenizer our run trained
    config = AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(config)
    train_df = pd.read_parquet(features / "train.parquet")
    ids = tokenize(tokenizer, train_df["text"].astype(str).tolist(), cfg.max_length)
    labels = [config.label2id[str(x)] for x in train_df["language"]]
    dataset = [{"input_ids": x, "labels": y} for x, y in zip(ids, labels, strict=True)]
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=math.ceil(cfg.max_steps * cfg.warmup_ratio),
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        dataloader_num_workers=0,
        train_sampling_strategy="random",
        disable_tqdm=True,
        seed=cfg.seed,
        bf16=cuda and cfg.bf16,
        use_cpu=not cuda,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    metrics = trainer.train().metrics
    return float(metrics["train_samples_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", choices=("site-packages", "synthetic"), default="site-packages")
    parser.add_argument(
        "--per-language", type=int, default=120, help="files per language (default 120)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=40, help="optimizer steps per run (default 40)"
    )
    parser.add_argument("--batch-size", type=int, default=0, help="0: the tiny preset's (32)")
    parser.add_argument("--max-length", type=int, default=0, help="0: the tiny preset's (128)")
    parser.add_argument(
        "--num-threads", type=int, default=0, help="torch CPU threads (0: all cores)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating runs of each; medians reported"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from aicrush.config import PRESETS, TrainConfig

    values = dict(PRESETS["tiny"]["train"])
    values.update(
        max_steps=args.max_steps,
        checkpoint_every_steps=10**9,
        num_threads=args.num_threads,
        seed=args.seed,
    )
    if args.batch_size:
        values["batch_size"] = args.batch_size
    if args.max_length:
        values["max_length"] = args.max_length
    cfg = TrainConfig(**values)
    torch.set_num_threads(args.num_threads or os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="aicrush-bench-") as tmp:
        work = Path(tmp)
        t_data = time.perf_counter()
        frame = (
            site_packages_frame(args.per_language, args.seed)
            if args.source == "site-packages"
            else synthetic_frame(args.per_language, args.seed)
        )
        features = write_features(frame, work / "features", args.seed)
        device = (
            "cuda " + torch.cuda.get_device_name()
            if torch.cuda.is_available()
            else f"cpu ({torch.get_num_threads()} threads)"
        )
        print(
            f"data: {args.source}, {len(frame)} files, {frame['language'].nunique()} languages "
            f"({time.perf_counter() - t_data:.1f} s to collect); device: {device}",
            flush=True,
        )
        print(
            f"model: tiny preset (hidden {cfg.hidden_size}, layers {cfg.num_layers}), batch {cfg.batch_size}, max_length {cfg.max_length}, {cfg.max_steps} steps",
            flush=True,
        )
        ours, theirs = [], []
        # Untimed warm-up (first-use costs: lazy imports, allocator, kernel selection), then
        # alternate which side runs first so neither always gets the warmer machine.
        _, model_dir = run_ours(features, cfg.model_copy(update={"max_steps": 2}), work)
        run_trainer(features, cfg.model_copy(update={"max_steps": 2}), model_dir, work)
        for rep in range(args.repeats):
            if rep % 2 == 0:
                sps, model_dir = run_ours(features, cfg, work)
                ours.append(sps)
                theirs.append(run_trainer(features, cfg, model_dir, work))
            else:
                theirs.append(run_trainer(features, cfg, model_dir, work))
                ours.append(run_ours(features, cfg, work)[0])
            print(
                f"run {rep + 1}: train() {ours[-1]:.1f} samples/s, Trainer {theirs[-1]:.1f} samples/s",
                flush=True,
            )
        a, b = statistics.median(ours), statistics.median(theirs)
        load = os.getloadavg()
        print(f"train():  {a:.1f} samples/s (median of {len(ours)})", flush=True)
        print(f"Trainer:  {b:.1f} samples/s (median of {len(theirs)})", flush=True)
        print(
            f"ratio:    {a / b:.2f}x  (target >= 1.0x); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"wall: {time.perf_counter() - t0:.1f} s", flush=True)
    sys.exit(rc)
