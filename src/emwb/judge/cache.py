"""A persistent judgment cache (SQLite): each judge reply is committed as it arrives.

Keyed by provider spec, rubric name and version, the filled prompt and the request parameters (the
request is the key), so the same judgment is never paid for twice and a killed stage resumes where it
stopped. Each reply is committed on its own as it arrives (a paid reply is on disk before the next is
handled): a kill or a full disk loses at most the one being written, and it is simply requested again.
"""

from __future__ import annotations

import json
from pathlib import Path

from emwb.config import config_hash
from emwb.sqlite_cache import BatchedTable


def cache_key(provider: str, rubric: str, rubric_version: int, prompt: str, params: dict) -> str:
    return config_hash({"provider": provider, "rubric": rubric, "version": rubric_version, "prompt": prompt,
                        "params": params})


class JudgeCache(BatchedTable):
    def __init__(self, path: Path, batch: int = 1, interval_s: float = 0.0):
        super().__init__(path, "judgments", ("key", "provider", "rubric", "top_logprobs"), batch, interval_s)

    def get_many(self, keys: list[str]) -> dict[str, dict[str, float]]:
        return {k: json.loads(v) for k, v in super().get_many(keys).items()}

    def put(self, key: str, provider: str, rubric: str, top_logprobs: dict[str, float]) -> None:
        super().put(key, provider, rubric, json.dumps(top_logprobs))
