"""False-alarm rate of the drift test on small samples: where "not enough data" starts.

A window drawn from the reference itself (and, as a second column, from a held-out half of the
same corpus, i.e. traffic exactly like the reference) must not be called drift. On small windows
the normed Wasserstein distance and the Jensen-Shannon distance are noisy, so the verdict is
meaningless below some size: this script measures the false-alarm rate per window size with the
monitor's own test (``serving.monitor.drift.analyze_window``, settings as the monitor uses them,
the minimum disabled) and prints the table that ``DriftSettings.min_rows`` is chosen from.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_drift_small_samples.py [--trials 200]``
(about 2-4 minutes on 2 cores). Real files of this environment (tests/monitor/corpus.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SIZES = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="windows per size and source")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))  # this tree's packages, not benchmarks/serving

    from serving.monitor.drift import PREDICTION_COLUMN, DriftSettings, analyze_window
    from tests.monitor.corpus import reference_frame, source_files

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    started = time.perf_counter()
    corpus = reference_frame(source_files().reset_index(drop=True))
    order = np.random.default_rng(1).permutation(len(corpus))
    half = len(corpus) // 2
    reference = corpus.iloc[order[:half]].reset_index(drop=True)
    held_out = corpus.iloc[order[half:]].reset_index(drop=True)
    full = dataclasses.replace(DriftSettings(), min_rows=0)
    features_only = dataclasses.replace(
        full, columns=tuple(c for c in full.columns if c != PREDICTION_COLUMN)
    )
    print(
        f"corpus: {len(corpus)} real files; reference {len(reference)} rows, held-out "
        f"{len(held_out)}; {args.trials} windows per size; drift = share of drifted columns "
        f">= {full.drift_share} (wasserstein >= {full.num_threshold}, "
        f"jensenshannon >= {full.cat_threshold})"
    )
    rng = np.random.default_rng(7)
    header = (
        "| rows | false alarms, from the reference | from the held-out half | "
        "features only, from the reference | mean / max share drifted (reference) |"
    )
    print()
    print(header)
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        counts = {"ref": 0, "held": 0, "feat": 0}
        shares = []
        for _ in range(args.trials):
            from_ref = reference.iloc[rng.choice(len(reference), size, replace=False)]
            from_held = held_out.iloc[rng.choice(len(held_out), size, replace=False)]
            r = analyze_window(from_ref, reference, full)
            counts["ref"] += r.dataset_drift
            shares.append(r.share_drifted)
            counts["held"] += analyze_window(from_held, reference, full).dataset_drift
            counts["feat"] += analyze_window(from_ref, reference, features_only).dataset_drift
        n = args.trials
        print(
            f"| {size} | {counts['ref']}/{n} ({counts['ref'] / n:.1%}) "
            f"| {counts['held']}/{n} ({counts['held'] / n:.1%}) "
            f"| {counts['feat']}/{n} ({counts['feat'] / n:.1%}) "
            f"| {np.mean(shares):.2f} / {np.max(shares):.2f} |",
            flush=True,
        )
    print(f"\nminimum in use: DriftSettings.min_rows = {DriftSettings().min_rows}")
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
