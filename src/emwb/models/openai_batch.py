"""Chat completions through the OpenAI Batch API: upload, create, poll with growing waits, download.

Half the price of live requests; a batch finishes within its window (often minutes, at most 24 h). Every
request carries a `custom_id` that is a hash of its body (the request is the key). The ids of batches in
flight are written to a state file the moment a batch is created, so a process killed at any point resumes
by polling the batches it already paid for instead of sending them again; a batch's failed lines (an error
status, a reply the parser rejects, a batch that expired or was cancelled part-way) are sent again in a new
batch, up to `max_retries` rounds. HTTP faults on the files and batches endpoints are retried by the SDK.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from emwb.errors import EmwbError
from emwb.models.openai_http import OPENAI_URL, base_url_or_default, redact, sdk_server
from emwb.store import atomic_write_text, log

ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")


def custom_id(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:40]


class BatchCompletions:
    """`run(bodies, parse, on_result)` calls `on_result(i, parse(response_body))` for every body, via batches."""

    def __init__(self, label: str, base_url: str | None, state_file: Path, max_retries: int, timeout_s: float,
                 poll_s: float, poll_max_s: float, window: str = "24h"):
        self.label, self.base_url, self.state_file = label, base_url_or_default(base_url), state_file
        self.max_retries, self.timeout_s, self.poll_s, self.poll_max_s = max_retries, timeout_s, poll_s, poll_max_s
        self.window = window
        self.batches_created = 0

    def _client(self):
        from openai import OpenAI

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise EmwbError(f"{self.label}: set OPENAI_API_KEY in the environment (or a base_url for an "
                            "OpenAI-compatible server)")
        return OpenAI(api_key=key or "EMPTY", max_retries=self.max_retries, timeout=self.timeout_s,
                      **sdk_server(self.base_url))

    # The state file: {"batches": [batch id, ...]}, the batches created since the last finished run.
    def _state(self) -> list[str]:
        try:
            return list(json.loads(self.state_file.read_text())["batches"])
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):
            raise EmwbError(f"{self.state_file}: damaged batch state; if no batch of it is running, delete the file "
                            "and re-run (replies already read are cached)") from None

    def _save(self, ids: list[str]) -> None:
        atomic_write_text(self.state_file, json.dumps({"batches": ids}))

    def run(self, bodies: list[dict], parse: Callable[[dict], object], on_result: Callable[[int, object], None],
            desc: str | None = None) -> None:
        if not bodies:
            return
        client = self._client()
        pending: dict[str, list[int]] = {}
        for i, b in enumerate(bodies):
            pending.setdefault(custom_id(b), []).append(i)
        by_id = {custom_id(b): b for b in bodies}
        last_error = ""
        for batch_id in self._state():  # batches a killed run created: read them back, never send them again
            last_error = self._collect(client, batch_id, pending, parse, on_result) or last_error
        rounds = 0
        while pending:
            if rounds > self.max_retries:
                raise EmwbError(f"{self.label}: {len(pending)} requests failed in {rounds} batches; last error: "
                                f"{redact(last_error)[:300]}")
            rounds += 1
            batch_id = self._create(client, [by_id[c] for c in pending], list(pending))
            last_error = self._collect(client, batch_id, pending, parse, on_result) or last_error
        self._save([])  # every reply handed over (the caller caches them as they come)

    def _create(self, client, bodies: list[dict], ids: list[str]) -> str:
        lines = "".join(json.dumps({"custom_id": c, "method": "POST", "url": ENDPOINT, "body": b}) + "\n"
                        for c, b in zip(ids, bodies))
        upload = client.files.create(file=("requests.jsonl", io.BytesIO(lines.encode())), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT, completion_window=self.window)
        self._save([*self._state(), batch.id])  # recorded before anything else can go wrong
        self.batches_created += 1
        log(f"{self.label}: batch {batch.id} created with {len(ids)} requests (its id is kept in "
            f"{self.state_file}; a re-run resumes it)")
        return batch.id

    def _wait(self, client, batch_id: str):
        wait, start = self.poll_s, time.monotonic()
        while True:
            batch = client.batches.retrieve(batch_id)
            if batch.status in DONE:
                return batch
            counts = batch.request_counts
            done = f"{counts.completed + counts.failed}/{counts.total} done, " if counts else ""
            log(f"{self.label}: batch {batch_id} {batch.status} ({done}{time.monotonic() - start:.0f} s); next look "
                f"in {wait:.0f} s")
            time.sleep(wait)
            wait = min(wait * 1.5, self.poll_max_s)

    def _collect(self, client, batch_id: str, pending: dict[str, list[int]], parse, on_result) -> str:
        """Read a batch's replies into `on_result`, dropping them from `pending`; returns the last error seen."""
        batch = self._wait(client, batch_id)
        if batch.status == "failed" and not batch.output_file_id:
            errors = "; ".join(e.message or "" for e in (batch.errors.data if batch.errors else []) or [])
            raise EmwbError(f"{self.label}: batch {batch_id} failed: {redact(errors)[:300] or 'no reason given'}")
        error = ""
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in client.files.content(file_id).text.splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                c, resp = rec.get("custom_id"), rec.get("response") or {}
                if c not in pending:
                    continue
                if resp.get("status_code") != 200:
                    error = json.dumps(rec.get("error") or resp.get("body"))[:500]
                    continue
                try:
                    reply = parse(resp["body"])
                except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
                    error = f"unusable reply: {exc}"
                    continue
                for i in pending.pop(c):
                    on_result(i, reply)
        if batch.status != "completed":
            error = error or f"batch {batch.status}"
        return error
