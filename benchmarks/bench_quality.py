"""Model quality vs the linear baseline, per preset, on the same split in the same run.

For each preset: ingest the configured sources (default: the default corpus), validate and split
them by repository exactly as ``aicrush run`` does (same config, same seed, so the same split),
train the preset's model (``components.train_model.train``) and evaluate it
(``components.evaluate_model.evaluate``), which fits the linear baseline (TF-IDF char_wb 1-3-grams
+ LinearSVC, balanced) on exactly the train split and scores both on the same test split.
Prints accuracy and macro-F1 of model and baseline, their difference, the languages where they
differ most, train and baseline wall times and the load average (a shared CPU moves the times,
not the scores). Feast is skipped: the model reads only the text.

With ``--features DIR`` (an ``engineer_features`` folder of an earlier run: ``train``, ``val``,
``test.parquet``) ingest and validation are skipped and every preset trains on that exact split;
``--set`` changes the config on top of each preset, so one split can compare settings:

    .venv/bin/python benchmarks/bench_quality.py --preset tiny
    .venv/bin/python benchmarks/bench_quality.py --preset tiny --preset minilm --json out.json
    .venv/bin/python benchmarks/bench_quality.py --features .aicrush/pipeline_root/<run>/engineer-features/features \\
        --set '{"train": {"epochs": 12}}'

``--baseline-chars 700 1500`` also fits the baseline on the same split reading only the first N
characters of each file (the run's baseline reads 4,000): how much of its lead comes from
reading more of a file than the model's windows cover (``chars_read`` in the output: the mean
characters per test file inside the model's token windows).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from a checkout: import this tree's packages


def chars_read(model_dir: Path, texts: list[str]) -> float:
    """Mean characters per text inside the token windows the model reads (tokenizer offsets)."""
    from transformers import AutoTokenizer

    from aicrush.text_window import crop_source, crops_of, token_crops, window_of

    meta = json.loads((model_dir / "aicrush.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = int(meta.get("max_length", 128))
    total = 0
    for text in texts:
        if window_of(meta) != "crops":  # one window of max_length tokens
            enc = tokenizer(text, truncation=True, max_length=max_length,
                            return_offsets_mapping=True)  # fmt: skip
            total += len({c for a, b in enc["offset_mapping"] for c in range(a, b)})
            continue
        enc = tokenizer(crop_source(text, max_length), return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        covered: set[int] = set()
        for window in token_crops(list(range(len(offsets))), max_length, crops_of(meta)):
            for position in window:
                start, end = offsets[position]
                covered.update(range(start, end))
        total += len(covered)
    return total / max(1, len(texts))


def measure(
    preset: str,
    sources: list[str],
    state: Path,
    overrides: dict,
    features: Path | None = None,
    baseline_chars: tuple[int, ...] = (),
) -> dict:
    from aicrush.config import build_config
    from components.evaluate_model import evaluate
    from components.ingest_sources import ingest
    from components.train_model import train
    from components.validate_dataset import validate

    cfg = build_config(overrides, preset=preset, sources=sources or None)
    with tempfile.TemporaryDirectory(prefix=f"bench-quality-{preset}-") as tmp:
        work = Path(tmp)
        clean = features or work / "clean"
        if features is None:
            ingest(cfg.ingest, work / "raw", state)
            validate(work / "raw", cfg.validate_, clean)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        trained = train(clean, cfg.train, work / "model", work / "ckpt", preset=preset)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = evaluate(work / "model", clean, cfg.evaluate)
        evaluate_seconds = time.perf_counter() - started
        extra: dict = {}
        if baseline_chars:
            import pandas as pd

            from components.baseline import fit_and_score_baseline

            train_df = pd.read_parquet(clean / "train.parquet")
            test_df = pd.read_parquet(clean / "test.parquet")
            extra["chars_read"] = round(chars_read(work / "model", test_df["text"].tolist()), 1)
            extra["baseline_at_chars"] = {
                n: {k: round(v, 4) for k, v in fit_and_score_baseline(train_df, test_df, n)
                    .metrics.items() if k in ("accuracy", "macro_f1")}
                for n in baseline_chars
            }  # fmt: skip
    baseline = result.baseline
    assert baseline is not None
    per_language = {
        lang: {
            "model_f1": round(m["f1"], 4),
            "baseline_f1": round(baseline.per_class[lang]["f1"], 4),
            "support": m["support"],
        }
        for lang, m in result.per_class.items()
    }
    return {
        "preset": preset,
        "n_train": trained.metrics["n_train"],
        "n_test": result.metrics["n_test"],
        "languages": len(result.per_class),
        "model": {k: round(result.metrics[k], 4) for k in ("accuracy", "macro_f1")},
        "baseline": {k: round(baseline.metrics[k], 4) for k in ("accuracy", "macro_f1")},
        "difference": {
            k: round(result.metrics[k] - baseline.metrics[k], 4) for k in ("accuracy", "macro_f1")
        },
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_second": round(trained.metrics["samples_per_second"], 1),
        "evaluate_seconds": round(evaluate_seconds, 1),
        "baseline_seconds": round(baseline.fit_seconds, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "gate": {"passed": result.passed, "reason": result.reason},
        "per_language": per_language,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        action="append",
        help="tiny, small, minilm (repeatable; default tiny; small is for a GPU)",
    )
    parser.add_argument("--source", action="append", default=[], help="as `aicrush run --source`")
    parser.add_argument("--set", default="{}", help='JSON config overrides, e.g. {"train": {...}}')
    parser.add_argument(
        "--features",
        type=Path,
        help="an engineer_features folder (train/val/test.parquet): skip ingest and validate",
    )
    parser.add_argument(
        "--baseline-chars",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also fit the baseline reading only the first N characters of each file",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    state = Path(os.environ.get("AICRUSH_HOME", REPO / ".aicrush"))
    rows = [
        measure(
            p, args.source, state, json.loads(args.set), args.features, tuple(args.baseline_chars)
        )
        for p in args.preset or ["tiny"]
    ]
    for row in rows:
        m, b, d = row["model"], row["baseline"], row["difference"]
        print(
            f"{row['preset']:>7}: model acc {m['accuracy']:.3f} macro-F1 {m['macro_f1']:.3f} | "
            f"baseline acc {b['accuracy']:.3f} macro-F1 {b['macro_f1']:.3f} | "
            f"model - baseline: acc {d['accuracy']:+.3f} macro-F1 {d['macro_f1']:+.3f} | "
            f"train {row['train_seconds']} s ({row['train_samples_per_second']} samples/s), "
            f"evaluate {row['evaluate_seconds']} s (baseline {row['baseline_seconds']} s), "
            f"load {row['load_average']} | {row['languages']} languages, "
            f"{row['n_train']:.0f} train / {row['n_test']:.0f} test files"
        )
        if "baseline_at_chars" in row:
            print(
                f"         baseline reading the first N characters (the model's windows cover "
                f"{row['chars_read']:.0f} on average): "
                + ", ".join(
                    f"{n}: acc {v['accuracy']:.3f} macro-F1 {v['macro_f1']:.3f}"
                    for n, v in row["baseline_at_chars"].items()
                )
            )
        gaps = sorted(
            row["per_language"].items(), key=lambda kv: kv[1]["model_f1"] - kv[1]["baseline_f1"]
        )
        print(
            "         F1 model/baseline (n): "
            + ", ".join(
                f"{lang} {v['model_f1']:.2f}/{v['baseline_f1']:.2f} ({v['support']})"
                for lang, v in gaps
            )
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
