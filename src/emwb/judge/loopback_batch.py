"""The loopback judge's files and batches endpoints (the OpenAI Batch API's shape), for tests of batch judging.

POST /v1/files (multipart upload), POST /v1/batches, GET /v1/batches/{id}, GET /v1/files/{id}/content. A batch is
`in_progress` for `batch_delay_s` after it is created, then `completed` with an output file and an error file: a
`fail_rate` share of its lines fail (status 500, in the error file), the rest are answered as the live endpoint
answers them. Every reply that reaches an output file counts in `served`, like a live reply.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from email.parser import BytesParser

_ids = itertools.count(1)


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The `file` part of a multipart/form-data body."""
    msg = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    for part in msg.walk():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    raise ValueError("no file part")


class BatchStore:
    """Uploaded files and created batches of one loopback server."""

    def __init__(self, delay_s: float, fail_rate: float, seed: int):
        self.delay_s, self.fail_rate, self.rng = delay_s, fail_rate, random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.created = 0  # batches created

    def upload(self, content_type: str, body: bytes) -> dict:
        data = _multipart_file(content_type, body)
        fid = f"file-{next(_ids)}"
        self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "requests.jsonl", "purpose": "batch", "status": "processed"}

    def create(self, body: dict) -> dict:
        bid = f"batch_{next(_ids)}"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                             "status": "in_progress", "output_file_id": None, "error_file_id": None,
                             "created_at": int(time.time()), "_t": time.monotonic(), "_lines": lines,
                             "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        self.created += 1
        return self._public(bid)

    def retrieve(self, bid: str, answer) -> dict:
        """The batch; once its delay is over, finished with `answer(body) -> (status, response body)`."""
        b = self.batches[bid]
        if b["status"] == "in_progress" and time.monotonic() - b["_t"] >= self.delay_s:
            out, err = [], []
            for line in b["_lines"]:
                if self.rng.random() < self.fail_rate:
                    err.append({"id": f"req_{next(_ids)}", "custom_id": line["custom_id"], "error": None,
                                "response": {"status_code": 500, "body": {"error": {"message": "server error"}}}})
                else:
                    out.append({"id": f"req_{next(_ids)}", "custom_id": line["custom_id"], "error": None,
                                "response": {"status_code": 200, "body": answer(line["body"])}})
            for key, rows in (("output_file_id", out), ("error_file_id", err)):
                if rows:
                    fid = f"file-{next(_ids)}"
                    self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    b[key] = fid
            b.update(status="completed", request_counts={"total": len(b["_lines"]), "completed": len(out),
                                                         "failed": len(err)})
        return self._public(bid)

    def _public(self, bid: str) -> dict:
        return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}
