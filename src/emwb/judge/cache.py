"""A persistent judgment cache (SQLite): each judge reply is committed as it arrives.

Keyed by provider spec, rubric name and version, the filled prompt and the request parameters (the
request is the key), so the same judgment is never paid for twice and a killed stage resumes where it
stopped. Replies are committed in small batches (at most `batch` rows or `interval_s` seconds apart): a
kill loses at most those, and they are simply requested again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from emwb.config import config_hash


def cache_key(provider: str, rubric: str, rubric_version: int, prompt: str, params: dict) -> str:
    return config_hash({"provider": provider, "rubric": rubric, "version": rubric_version, "prompt": prompt,
                        "params": params})


class JudgeCache:
    def __init__(self, path: Path, batch: int = 64, interval_s: float = 0.25):
        self._pending: list[tuple] = []
        self._batch, self._interval, self._last = batch, interval_s, time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, provider TEXT, rubric TEXT, "
                         "top_logprobs TEXT NOT NULL, created TEXT DEFAULT CURRENT_TIMESTAMP)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT key, top_logprobs FROM judgments WHERE key IN ({','.join('?' * len(chunk))})"
                out.update({k: json.loads(v) for k, v in self._db.execute(q, chunk)})
        return out

    def put(self, key: str, provider: str, rubric: str, top_logprobs: dict[str, float]) -> None:
        with self._lock:
            self._pending.append((key, provider, rubric, json.dumps(top_logprobs)))
            if len(self._pending) >= self._batch or time.monotonic() - self._last >= self._interval:
                self._commit()

    def _commit(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")  # one transaction for the batch
            self._db.executemany("INSERT OR IGNORE INTO judgments (key, provider, rubric, top_logprobs) "
                                 "VALUES (?,?,?,?)", self._pending)
            self._db.execute("COMMIT")
            self._pending.clear()
        self._last = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._commit()

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self._db.close()
