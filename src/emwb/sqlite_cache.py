"""A key -> value table in SQLite whose inserts are committed as they arrive, or in small batches (judge and
sampler caches).

Each value is committed at most `batch` rows or `interval_s` seconds after it arrives (the judge's and the
sampler's caches of paid replies: `batch=1`, each reply on its own): a killed stage loses at most those, which
are simply requested again. A write that fails (a full disk, read-only storage) is rolled back, its rows are
kept in memory (a later `flush` writes them once there is room) and the error is one line saying which it is,
never "damaged". WAL mode; safe to call from several threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from emwb.errors import EmwbError


class BatchedTable:
    def __init__(self, path: Path, table: str, columns: tuple[str, ...], batch: int = 64, interval_s: float = 0.25):
        """`columns`: the key column first, then the others (all TEXT); the last is the stored value."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.table, self.columns = path, table, columns
        cols = ", ".join([f"{columns[0]} TEXT PRIMARY KEY", *(f"{c} TEXT" for c in columns[1:-1]),
                          f"{columns[-1]} TEXT NOT NULL", "created TEXT DEFAULT CURRENT_TIMESTAMP"])
        with self._named():
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        self._pending: list[tuple] = []
        self._batch, self._interval, self._last = batch, interval_s, time.monotonic()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """A damaged, full or read-only database file is a one-line error naming it, with the fix."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if getattr(self, "_db", None) is not None and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # a failed batch leaves no transaction open
                    self._db.execute("ROLLBACK")
            unsaved = len(getattr(self, "_pending", ()))
            lost = f"; {unsaved} received rows could not be saved" if unsaved else ""
            text = str(exc)
            if "full" in text:
                raise EmwbError(f"{self.path}: {text}{lost}; free disk space and re-run (the rows saved before "
                                "are kept, and not requested again)") from None
            if "readonly" in text.replace("-", "") or "read only" in text:
                raise EmwbError(f"{self.path}: cannot write the cache ({text}){lost}; make the folder writable "
                                "and re-run (the cache itself is intact)") from None
            raise EmwbError(f"{self.path}: damaged cache ({text}); delete it and re-run (what it held is requested "
                            "again)") from None

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """{key: stored value} for the keys present."""
        out: dict[str, str] = {}
        key, value = self.columns[0], self.columns[-1]
        with self._lock, self._named():
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT {key}, {value} FROM {self.table} WHERE {key} IN ({','.join('?' * len(chunk))})"
                out.update(dict(self._db.execute(q, chunk).fetchall()))
        return out

    def put(self, *row: str) -> None:
        with self._lock:
            self._pending.append(row)
            if len(self._pending) >= self._batch or time.monotonic() - self._last >= self._interval:
                self._commit()

    def _commit(self) -> None:
        with self._named():
            self._write()

    def _write(self) -> None:
        if self._pending:
            self._db.execute("BEGIN")  # one transaction for the batch
            self._db.executemany(f"INSERT OR IGNORE INTO {self.table} ({', '.join(self.columns)}) VALUES "
                                 f"({','.join('?' * len(self.columns))})", self._pending)
            self._db.execute("COMMIT")
            self._pending.clear()
        self._last = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._commit()

    def count(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()
