"""Monitor state on disk (one SQLite file): references, open windows, window verdicts, retrains.

A restart reads back the same reference bytes (so the same sha256) and the same open window (so
the same rows give the same verdict). WAL mode keeps writes cheap on the ingest path.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from serving.monitor.reference import Reference

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reference (
    model TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, source TEXT NOT NULL,
    parquet BLOB NOT NULL, loaded_at REAL NOT NULL, PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS window_record (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
    ts REAL NOT NULL, text TEXT NOT NULL, prediction TEXT NOT NULL, score REAL);
CREATE INDEX IF NOT EXISTS window_record_mv ON window_record (model, version, id);
CREATE TABLE IF NOT EXISTS window_result (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
    closed_at REAL NOT NULL, reference_sha256 TEXT NOT NULL, n_rows INTEGER NOT NULL,
    share_drifted REAL NOT NULL, dataset_drift INTEGER NOT NULL, result TEXT NOT NULL,
    report TEXT);
CREATE TABLE IF NOT EXISTS retrain_run (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
    started_at REAL NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL);
"""


class MonitorState:
    """The monitor's SQLite store at ``folder/monitor.db``; safe to share between threads.

    Window records are group-committed by a background thread every ``flush_s`` seconds (one
    transaction instead of one per event: ingest would be bound by SQLite's commit otherwise);
    the ingest path writes itself only when ``max_buffer`` records wait. A crash loses at most
    ``flush_s`` of the open window; a clean close loses nothing.
    """

    def __init__(self, folder: str | Path, flush_s: float = 0.5, max_buffer: int = 20_000):
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self._buffer: list[tuple[str, str, float, str, str, float | None]] = []
        self._closed = threading.Event()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "monitor.db"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._flusher = threading.Thread(target=self._flush_loop, name="state-flush", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_s):
            with self._lock:
                if not self._closed.is_set():
                    self._flush_locked()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._flush_locked()
            self._db.close()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO window_record (model, version, ts, text, prediction, score) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            self._buffer,
        )
        self._db.execute("COMMIT")
        self._buffer = []

    # references
    def save_reference(self, ref: Reference) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO reference VALUES (?, ?, ?, ?, ?, ?)",
                (
                    ref.model_name,
                    ref.model_version,
                    ref.sha256,
                    ref.source,
                    ref.parquet,
                    time.time(),
                ),
            )

    def load_references(self) -> list[Reference]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model, version, source, parquet FROM reference ORDER BY loaded_at"
            ).fetchall()
        return [Reference.from_parquet_bytes(p, m, v, s) for m, v, s, p in rows]

    # open windows
    def append_records(
        self, model: str, version: str, records: list[tuple[float, str, str, float]]
    ) -> None:
        with self._lock:
            # A response without scores gives NaN, which SQLite stores as NULL (read back as NaN).
            self._buffer.extend(
                (model, version, ts, text, label, None if math.isnan(score) else score)
                for ts, text, label, score in records
            )
            if len(self._buffer) >= self.max_buffer:  # the flusher is behind: write here
                self._flush_locked()

    def load_records(self, model: str, version: str) -> list[tuple[float, str, str, float]]:
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(
                "SELECT ts, text, prediction, score FROM window_record "
                "WHERE model = ? AND version = ? ORDER BY id",
                (model, version),
            ).fetchall()
        return [
            (ts, text, label, math.nan if score is None else score)
            for ts, text, label, score in rows
        ]

    def drop_records(self, model: str, version: str, n: int) -> None:
        """Forget the oldest ``n`` records of a window (they were closed and analysed)."""
        with self._lock:
            self._flush_locked()
            self._db.execute(
                "DELETE FROM window_record WHERE id IN (SELECT id FROM window_record "
                "WHERE model = ? AND version = ? ORDER BY id LIMIT ?)",
                (model, version, n),
            )

    # verdicts and retrains
    def record_result(
        self,
        model: str,
        version: str,
        reference_sha256: str,
        result: dict[str, Any],
        report: str | None,
    ) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO window_result (model, version, closed_at, reference_sha256, n_rows, "
                "share_drifted, dataset_drift, result, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    version,
                    time.time(),
                    reference_sha256,
                    result["n_rows"],
                    # no verdict ("not enough data"): the JSON says so; the column needs a number
                    result["share_drifted"] if result["share_drifted"] is not None else 0.0,
                    int(bool(result["dataset_drift"])),  # None (not enough data): 0; see verdict
                    json.dumps(result),
                    report,
                ),
            )
            return int(cur.lastrowid or 0)

    def results(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, model, version, closed_at, reference_sha256, n_rows, share_drifted, "
                "dataset_drift, report, result FROM window_result ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = (
            "id",
            "model",
            "version",
            "closed_at",
            "reference_sha256",
            "n_rows",
            "share_drifted",
            "dataset_drift",
            "report",
        )
        out = []
        for r in rows:
            row = dict(zip(keys, r[:-1], strict=True))
            row["dataset_drift"] = bool(row["dataset_drift"])
            full = json.loads(r[-1])
            row["verdict"] = full.get("verdict") or (
                "drift" if row["dataset_drift"] else "no_drift"
            )
            if row["verdict"] == "not_enough_data":  # neither drift nor no drift is claimed
                row["share_drifted"] = None
                row["dataset_drift"] = None
            out.append(row)
        return out

    def result_report(self, result_id: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM window_result WHERE id = ?", (result_id,)
            ).fetchone()
        return row[0] if row else None

    def record_retrain(
        self, model: str, version: str, outcome: str, detail: str, at: float | None = None
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO retrain_run (model, version, started_at, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (model, version, time.time() if at is None else at, outcome, detail),
            )

    def retrains(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT model, version, started_at, outcome, detail FROM retrain_run ORDER BY id"
            ).fetchall()
        keys = ("model", "version", "started_at", "outcome", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def last_retrain_started(self, model: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(started_at) FROM retrain_run WHERE model = ? AND outcome = 'started'",
                (model,),
            ).fetchone()
        return row[0] if row and row[0] is not None else None
