"""kfp.local overhead: the training pipeline through kfp.local vs the same step functions called
directly in one process, same config, same data, fresh state for each.

Target (issue 2): kfp.local wall time <= 1.15x the direct calls.

    .venv/bin/python benchmarks/bench_kfp_local.py                 # tiny preset, default corpus
    .venv/bin/python benchmarks/bench_kfp_local.py --max-files 3000  # quicker
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FEAST_USAGE", "False")


def run_direct(cfg, state: Path) -> float:
    """Each step's logic function in order, in this process (what kfp.local wraps)."""
    from components.engineer_features import engineer
    from components.evaluate_model import evaluate, write_outputs
    from components.ingest_sources import ingest
    from components.register_model import register
    from components.train_model import train
    from components.validate_dataset import validate

    start = time.perf_counter()
    work = state / "direct"
    ingest(cfg.ingest, work / "raw", state)
    validate(work / "raw", cfg.validate_, work / "clean")
    engineer(work / "clean", cfg.features, work / "features", state)
    train(work / "features", cfg.train, work / "model", work / "checkpoints", preset=cfg.preset)
    result = evaluate(work / "model", work / "features", cfg.evaluate)
    card = write_outputs(result, work / "evaluation")
    import json

    manifest = json.loads((work / "raw" / "manifest.json").read_text())
    register(
        work / "model",
        work / "features",
        cfg,
        run_key="bench-direct",
        metrics=result.metrics,
        manifest=manifest,
        state=state,
        model_card=card,
    )
    return time.perf_counter() - start


def run_kfp_local(cfg, state: Path) -> float:
    from pipelines.local import run_pipeline_locally

    start = time.perf_counter()
    summary = run_pipeline_locally(cfg, state)
    elapsed = time.perf_counter() - start
    print(summary.human())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", help="config preset (default: tiny)")
    parser.add_argument(
        "--max-files", type=int, default=0, help="cap ingested files (0: preset default)"
    )
    args = parser.parse_args()

    from aicrush.config import build_config

    data = {"ingest": {"max_files": args.max_files}} if args.max_files else {}
    cfg = build_config(data, preset=args.preset)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        direct = run_direct(cfg, Path(a))
        local = run_kfp_local(cfg, Path(b))
    print(f"direct step functions: {direct:8.1f} s")
    print(f"kfp.local pipeline:    {local:8.1f} s")
    print(f"ratio kfp.local/direct: {local / direct:.3f}x (target <= 1.15x)")
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
