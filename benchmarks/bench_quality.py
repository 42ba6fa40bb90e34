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


def measure(
    preset: str, sources: list[str], state: Path, overrides: dict, features: Path | None = None
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
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    state = Path(os.environ.get("AICRUSH_HOME", REPO / ".aicrush"))
    rows = [
        measure(p, args.source, state, json.loads(args.set), args.features)
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
