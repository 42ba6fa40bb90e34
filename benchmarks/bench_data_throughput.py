"""Data-path throughput: ingest_sources + validate_dataset + compute_file_features, files/s per stage.

Runs the three stages on the default corpus (this Python environment: standard library + every
installed distribution) with the caps of the chosen preset (default ``tiny``, what ``aicrush run``
uses), each in this process, and prints:

- per stage: files in, seconds, files/s;
- overall: candidate files of the corpus / total seconds (the target is >= 1,000 files/s on
  2 cores), and ingested files / total seconds (stricter: only the files that were read);
- the load average before and after (the machine may be shared: figures scale with it).

    .venv/bin/python benchmarks/bench_data_throughput.py
    .venv/bin/python benchmarks/bench_data_throughput.py --preset minilm --json
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from a checkout: import this tree's packages

TARGET_FILES_PER_S = 1_000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", default="tiny", help="config preset whose caps apply (default: tiny)"
    )
    parser.add_argument(
        "--config", default=None, help="optional YAML config merged over the preset"
    )
    parser.add_argument(
        "--source",
        action="append",
        default=None,
        help="ingest this source instead of the environment (repeatable)",
    )
    parser.add_argument(
        "--work-dir", default=None, help="where outputs go (default: a temporary folder)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    args = parser.parse_args(argv)

    from aicrush.config import load_config
    from components.ingest_sources import ingest
    from components.validate_dataset import validate
    from features.file_features import compute_file_features

    cfg = load_config(args.config, preset=args.preset, sources=args.source)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aicrush-bench-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        raw, clean, state = work / "raw", work / "clean", work / "state"

        c0, t0 = time.process_time(), time.perf_counter()
        result = ingest(cfg.ingest, raw, state)
        c1, t1 = time.process_time(), time.perf_counter()
        report = validate(raw, cfg.validate_, clean)
        c2, t2 = time.process_time(), time.perf_counter()
        import pandas as pd

        texts = pd.concat(
            pd.read_parquet(clean / f"{s}.parquet", columns=["text"])
            for s in ("train", "val", "test")
        )
        features = compute_file_features(texts["text"].tolist())
        c3, t3 = time.process_time(), time.perf_counter()
        candidates = json.loads(result.manifest_path.read_text())["n_candidates"]

    total = t3 - t0
    stages = {
        "ingest": {
            "files": result.n_files,
            "candidates": candidates,
            "seconds": t1 - t0,
            "cpu_seconds": c1 - c0,
        },
        "validate": {
            "files": report.n_input,
            "kept": report.n_kept,
            "seconds": t2 - t1,
            "cpu_seconds": c2 - c1,
        },
        "featurize": {"files": len(features), "seconds": t3 - t2, "cpu_seconds": c3 - c2},
    }
    for stage in stages.values():
        stage["files_per_s"] = stage["files"] / stage["seconds"]
    out = {
        "preset": args.preset,
        "stages": stages,
        "total_seconds": total,
        "total_cpu_seconds": c3 - c0,
        # CPU time of this process: less sensitive to other load on a shared machine.
        "candidate_files_per_cpu_s": candidates / (c3 - c0),
        "candidate_files_per_s": candidates / total,
        "ingested_files_per_s": result.n_files / total,
        "ratio_vs_target": candidates / total / TARGET_FILES_PER_S,
        "ratio_vs_target_ingested": result.n_files / total / TARGET_FILES_PER_S,
        "languages": len(result.languages),
        "classes_kept": len(report.classes),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'stage':<10} {'files':>8} {'seconds':>8} {'files/s':>9} {'cpu s':>7}")
    for name, stage in stages.items():
        print(
            f"{name:<10} {stage['files']:>8} {stage['seconds']:>8.2f} {stage['files_per_s']:>9.0f}"
            f" {stage['cpu_seconds']:>7.2f}"
        )
    print(
        f"overall: {candidates} candidate files in {total:.2f} s = {out['candidate_files_per_s']:.0f} files/s "
        f"({out['ratio_vs_target']:.2f}x the {TARGET_FILES_PER_S:.0f} files/s target); "
        f"{result.n_files} ingested files = {out['ingested_files_per_s']:.0f} files/s "
        f"({out['ratio_vs_target_ingested']:.2f}x); "
        f"{out['total_cpu_seconds']:.2f} CPU s = {out['candidate_files_per_cpu_s']:.0f} candidate files per CPU s"
    )
    print(
        f"{len(result.languages)} languages ingested, {len(report.classes)} classes kept, "
        f"{report.n_kept} files in splits {report.split_sizes}"
    )
    print(
        f"cpus {os.cpu_count()}, load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {out['load_average_after'][0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
