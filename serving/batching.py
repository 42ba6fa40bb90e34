"""Dynamic batching for the model server, with results that do not depend on the batch.

Concurrent requests are queued and grouped into forward passes of at most ``max_batch_size``
texts, waiting at most ``max_wait_ms`` for a batch to fill. Inside a batch, texts are grouped by
their exact token count (length bucketing), so no row is ever padded: the forward pass for a
text sees the same tokens, with no padding and no attention mask, whatever else is in the batch.

Matrix products are not batch-invariant either: a linear layer fed one row (the pooler and the
classification head of a single request) runs a matrix-vector kernel whose rounding differs from
the matrix-matrix kernel used for many rows. :func:`serving.torch_backend.make_batch_invariant`
pads such small inputs to ``MIN_GEMM_ROWS`` rows (zeros, sliced off after), so every row takes
the same kernel. This module is backend-neutral (no torch import): a backend hands
:func:`probabilities_unpadded` its forward pass over token id rows.

Guarantee (tested bitwise in tests/serving/test_predictor.py and test_server_rest.py): the
probabilities a caller gets from a batched call are bit-for-bit those of the same text sent
alone (torch backend). Padding would break this (masked positions still change float rounding),
which is why texts of different lengths never share a forward pass.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aicrush.text_window import mean_by_text, model_inputs


def bucket_by_length(
    lengths: Sequence[int], max_batch_size: int, groups: Sequence[int] | None = None
) -> list[list[int]]:
    """Group row indices by equal length, each group cut into chunks of at most ``max_batch_size``.

    ``groups`` (one key per row, e.g. the text each row belongs to): rows of different groups
    never share a bucket, and a group's rows of one length stay in one chunk whatever
    ``max_batch_size`` is. Pure: rows keep their input order inside a bucket; buckets come in
    order of first appearance.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if groups is not None:
        by_group: dict[tuple[int, int], list[int]] = {}
        for i, (n, g) in enumerate(zip(lengths, groups, strict=True)):
            by_group.setdefault((int(g), int(n)), []).append(i)
        return list(by_group.values())
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(int(n), []).append(i)
    chunks: list[list[int]] = []
    for rows in buckets.values():
        chunks += [rows[s : s + max_batch_size] for s in range(0, len(rows), max_batch_size)]
    return chunks


RowsFn = Callable[[np.ndarray], np.ndarray]
"""Probabilities ``[batch, labels]`` (float32) of unpadded token id rows ``[batch, sequence]``."""


def probabilities_unpadded(
    run: RowsFn,
    n_labels: int,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    max_batch_size: int = 64,
    text_window: str = "head",
    crops: int = 1,
    per_text: bool = False,
) -> tuple[np.ndarray, list[int]]:
    """Class probabilities for ``texts`` without padding; also returns each text's token count.

    Each text is cut to the window(s) the model reads (``text_window`` and ``crops`` from
    aicrush.json, see ``aicrush.text_window.model_inputs``), each at most ``max_length`` tokens
    (the model's limit); a text read as several windows gets the mean of their probabilities
    and the sum of their token counts. Each call of ``run`` (a backend's forward pass: torch or
    ONNX Runtime) holds windows of one token length only, so every row's result is what the
    model gives that window alone. ``per_text``: each call holds the windows of one text only
    (for a backend whose rows are not independent, like dynamic int8 quantization, whose
    activation scale is taken over the whole input). Shapes: returns ``[len(texts), n_labels]``
    float32.
    """
    if not texts:
        return np.zeros((0, n_labels), dtype=np.float32), []
    ids, owner = model_inputs(tokenizer, texts, max_length, text_window, crops)
    row_lengths = [len(x) for x in ids]
    out = np.empty((len(ids), n_labels), dtype=np.float32)
    for rows in bucket_by_length(row_lengths, max_batch_size, owner if per_text else None):
        out[rows] = run(np.array([ids[i] for i in rows], dtype=np.int64))
    lengths = np.bincount(owner, weights=row_lengths, minlength=len(texts)).astype(int).tolist()
    if len(ids) == len(texts):
        return out, lengths
    return mean_by_text(out, owner, len(texts)), lengths


BatchFn = Callable[[list[str]], tuple[np.ndarray, list[int]]]


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[tuple[np.ndarray, list[int]]]
    loop: asyncio.AbstractEventLoop = field(repr=False)


@dataclass(frozen=True)
class BatchResult:
    """What one caller gets back: its rows, and the size of the forward batch that computed them."""

    probabilities: np.ndarray
    token_lengths: list[int]
    batch_size: int


def available_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its CPU affinity (``os.sched_getaffinity``), capped by a
    cgroup CPU quota rounded up, which is how a Kubernetes CPU limit reaches a container
    (cgroup v2 ``cpu.max`` ``"200000 100000"`` -> 2; v1 ``cpu/cpu.cfs_quota_us`` /
    ``cpu/cpu.cfs_period_us``; ``max`` or -1: no quota). ``os.cpu_count()`` counts the node's
    cores instead. At least 1; never raises."""
    root = Path(cgroup_root)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = period = None
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            pass
    try:
        if quota not in (None, "max", "-1") and float(period or 0) > 0:
            cpus = min(cpus, math.ceil(float(quota) / float(period or 1)))
    except ValueError:
        pass
    return max(1, cpus)


class DynamicBatcher:
    """Groups concurrent ``submit`` calls into calls of ``fn``, run on ``workers`` threads.

    ``max_batch_size`` bounds the texts per call of ``fn``; ``max_wait_ms`` bounds how long the
    first queued request waits for others. A request larger than ``max_batch_size`` runs alone
    (``fn`` chunks it). Each of the ``workers`` threads takes the next batch when it is free, at
    most its fair share of the queue (ceil(queued texts / workers), so one batch never takes
    work another free worker could start), so up to ``workers`` forward passes run at once (ONNX Runtime and torch release the GIL while
    they compute): with 1 intra-op thread each, ``workers`` = the pod's cores keeps every core
    busy. ``fn`` must then be safe to call from several threads (the backends are: their
    tokenizers are never reconfigured while in use). The event loop stays free for I/O.
    Raises ValueError for ``max_batch_size`` < 1, ``max_wait_ms`` < 0 or ``workers`` < 1.
    """

    def __init__(
        self,
        fn: BatchFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.workers = workers
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._run, name=f"aicrush-batcher-{i}", daemon=True)
                for i in range(self.workers)
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then stop the worker threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    async def submit(self, texts: list[str]) -> BatchResult:
        """Queue ``texts`` and wait for their probabilities (rows in input order)."""
        if self._stopped:
            raise RuntimeError("the batcher is stopped")
        self.start()
        loop = asyncio.get_running_loop()
        pending = _Pending(list(texts), loop.create_future(), loop)
        with self._cond:
            self._queue.append(pending)
            self._cond.notify()
        probs, lengths, batch = await pending.future  # type: ignore[misc]
        return BatchResult(probs, lengths, batch)

    def _take_batch(self) -> list[_Pending]:
        """Block until work arrives, then gather up to max_batch_size texts or until the wait ends."""
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while True:
                n = sum(len(p.texts) for p in self._queue)
                remaining = deadline - time.monotonic()
                if n >= self.max_batch_size or remaining <= 0 or self._stopped:
                    break
                self._cond.wait(remaining)
            # A fair share per worker: one batch that took the whole queue would leave the other
            # workers idle while its callers wait (at c=32 with 2 workers and batches of up to 32:
            # 856 rps, each worker busy 45 % of the time; with the share: docs/serving.md). The
            # share counts busy workers too, so a burst that lands while the other is busy is
            # taken in halves: for a cost that grows with the batch still sooner than 1 worker,
            # for a flat one later (benchmarks/bench_batcher_burst.py, docs/serving.md).
            limit = min(self.max_batch_size, max(1, math.ceil(n / self.workers)))  # n: queued
            taken: list[_Pending] = []
            count = 0
            while self._queue:
                nxt = len(self._queue[0].texts)
                if taken and count + nxt > limit:
                    break
                taken.append(self._queue.pop(0))
                count += nxt
            return taken

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            texts = [t for p in batch for t in p.texts]
            # One wake-up of each event loop per batch, not one per request: each
            # call_soon_threadsafe writes to the loop's self-pipe (7 % of a loaded server's CPU
            # when done per request; py-spy, 2 batch workers at c=32).
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            try:
                probs, lengths = self.fn(texts)
                if self.on_batch is not None:
                    self.on_batch(len(texts))
            except BaseException as exc:  # hand the error to every caller of the batch
                for p in batch:
                    by_loop.setdefault(p.loop, []).append((p.future, exc))
                for loop, items in by_loop.items():
                    loop.call_soon_threadsafe(_settle, items, True)
                continue
            start = 0
            for p in batch:
                n = len(p.texts)
                value = (probs[start : start + n], lengths[start : start + n], len(texts))
                by_loop.setdefault(p.loop, []).append((p.future, value))
                start += n
            for loop, items in by_loop.items():
                loop.call_soon_threadsafe(_settle, items, False)


def _settle(items: list[tuple[asyncio.Future[Any], Any]], failed: bool) -> None:
    """On the event loop: each (future, value) gets its result, or its exception if ``failed``
    (a future already done, e.g. cancelled by a client that left, is skipped)."""
    for future, value in items:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


__all__ = [
    "BatchResult",
    "DynamicBatcher",
    "available_cpus",
    "bucket_by_length",
    "probabilities_unpadded",
]
