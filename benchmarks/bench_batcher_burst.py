"""The batcher under a burst: how long the last of 16 single-text requests takes when they arrive
while one worker is busy with a batch of 20 texts, with 2 batch workers (each takes at most its fair share of the queue,
``serving.batching.DynamicBatcher``) against 1 worker (takes the whole queue).

    .venv/bin/python benchmarks/bench_batcher_burst.py

The forward pass is simulated (a sleep), with three cost models: a cost that grows with the batch
(the tiny model on CPU: about 1 ms a text), the same with a larger fixed part, and a flat cost per
batch (a GPU with spare capacity). Prints, per model, the last request's completion time and the
batch sizes for each configuration, and the ratio 2 workers / 1 worker (below 1: the fair share
finishes the burst sooner).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.batching import DynamicBatcher

BURST = 16
BUSY = 20  # texts in the batch a worker is running when the burst lands (longer than the 2 ms)
COSTS = (("1 ms a text + 0.2 ms a batch", 0.2, 1.0), ("1 ms a text + 2 ms a batch", 2.0, 1.0),
         ("50 ms a batch, flat", 50.0, 0.0))  # fmt: skip


def burst(fixed_ms: float, per_text_ms: float, workers: int) -> tuple[float, list[int]]:
    """Seconds from the busy batch's start until the last of BURST requests is answered, and
    the batch sizes (the first is the busy one)."""
    sizes: list[int] = []

    def forward(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        sizes.append(len(texts))
        time.sleep((fixed_ms + per_text_ms * len(texts)) / 1000)
        return np.zeros((len(texts), 2), np.float32), [1] * len(texts)

    batcher = DynamicBatcher(forward, max_batch_size=32, max_wait_ms=0.0, workers=workers)

    async def run() -> float:
        started = time.perf_counter()
        busy = asyncio.ensure_future(batcher.submit(["x"] * BUSY))  # a worker is busy then
        await asyncio.sleep(0.002)
        await asyncio.gather(*(batcher.submit(["x"]) for _ in range(BURST)))
        done = time.perf_counter() - started
        await busy
        return done

    try:
        return asyncio.run(run()), sizes
    finally:
        batcher.stop()


def main() -> None:
    for name, fixed, per_text in COSTS:
        two, two_sizes = burst(fixed, per_text, 2)
        one, one_sizes = burst(fixed, per_text, 1)
        print(f"{name:<30} 2 workers {two * 1e3:6.1f} ms {two_sizes}   "
              f"1 worker {one * 1e3:6.1f} ms {one_sizes}   ratio {two / one:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
