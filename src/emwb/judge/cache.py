"""A persistent judgment cache (SQLite): each judge reply is committed as it arrives.

Keyed by provider spec, rubric name and version, the filled prompt and the request parameters, so
the same judgment is never paid for twice and a killed stage resumes where it stopped.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from emwb.config import config_hash


def cache_key(provider: str, rubric: str, rubric_version: int, prompt: str, params: dict) -> str:
    return config_hash({"provider": provider, "rubric": rubric, "version": rubric_version, "prompt": prompt,
                        "params": params})


class JudgeCache:
    def __init__(self, path: Path):
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
            self._db.execute("INSERT OR IGNORE INTO judgments (key, provider, rubric, top_logprobs) VALUES (?,?,?,?)",
                             (key, provider, rubric, json.dumps(top_logprobs)))

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        self._db.close()
