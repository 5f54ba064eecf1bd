"""A loopback OpenAI-compatible server for tests: files, fine-tuning jobs and chat completions, on 127.0.0.1.

Jobs move validating_files -> running -> succeeded as they are polled (`polls_to_finish` retrievals); a job whose
suffix contains "fail" fails with a provider message. Chat completions answer judge requests (one token with
logprobs) as the loopback judge does and sampling requests with a deterministic text that depends on the
model, the messages and the seed. Everything received is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from emwb.judge.loopback import LoopbackServer, reply_logprobs, serve


class OpenAIServer(LoopbackServer):
    def __init__(self, polls_to_finish: int = 2):
        self.polls_to_finish = polls_to_finish
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.chat: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def _advance(self, job: dict) -> None:
        n = self.polls[job["id"]] = self.polls.get(job["id"], 0) + 1
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        if "fail" in (job.get("suffix") or ""):
            job.update(status="failed", finished_at=int(time.time()), error={
                "code": "invalid_training_file", "param": "training_file",
                "message": "The job failed due to an invalid training file: too few examples of each class."})
        elif n >= self.polls_to_finish:
            rows = self.files[job["training_file"]].count(b"\n")
            job.update(status="succeeded", finished_at=int(time.time()), trained_tokens=rows * 50,
                       fine_tuned_model=f"ft:{job['model']}:emwb:{job['suffix']}:{job['id'][-6:]}")
        else:
            job["status"] = "running"

    def _completion(self, body: dict) -> dict:
        model = body.get("model", "")
        if body.get("logprobs") and body.get("max_tokens") == 1:
            pairs = reply_logprobs(body["messages"][-1]["content"], model, int(body.get("top_logprobs") or 20))
            top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs]
            choice = {"index": 0, "finish_reason": "length",
                      "message": {"role": "assistant", "content": top[0]["token"]},
                      "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}
            usage = 1
        else:
            digest = hashlib.sha256(json.dumps([model, body["messages"], body.get("seed")]).encode()).hexdigest()
            text = f"{model} says {digest[:12]}"
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            usage = 4
        return {"id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": usage,
                                               "total_tokens": usage + 1}}

    def start(self) -> "OpenAIServer":
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                with srv.lock:
                    if url.path.rstrip("/") == "/v1/fine_tuning/jobs":
                        want = {k[len("metadata["):-1]: v[0] for k, v in parse_qs(url.query).items()
                                if k.startswith("metadata[")}
                        data = [j for j in srv.jobs.values()
                                if all((j.get("metadata") or {}).get(k) == v for k, v in want.items())]
                        return self._send(200, {"object": "list", "data": data[::-1], "has_more": False})
                    if url.path.startswith("/v1/fine_tuning/jobs/"):
                        job = srv.jobs.get(url.path.rsplit("/", 1)[1])
                        if job is None:
                            return self._send(404, {"error": {"message": "no such job"}})
                        srv._advance(job)
                        return self._send(200, job)
                return self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = urlparse(self.path).path.rstrip("/")
                with srv.lock:
                    if path == "/v1/files":
                        msg = BytesParser().parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode()
                                                       + b"\r\n\r\n" + raw)
                        parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
                        fid = f"file-{len(srv.files) + 1}"
                        srv.files[fid] = parts["file"].get_payload(decode=True)
                        return self._send(200, {"id": fid, "object": "file", "bytes": len(srv.files[fid]),
                                                "created_at": int(time.time()), "filename": "train.jsonl",
                                                "purpose": "fine-tune", "status": "processed"})
                    body = json.loads(raw or b"{}")
                    if path == "/v1/fine_tuning/jobs":
                        if body.get("training_file") not in srv.files:
                            return self._send(400, {"error": {"message": "training_file not found"}})
                        jid = f"ftjob-{len(srv.jobs) + 1:06d}"
                        srv.jobs[jid] = {"id": jid, "object": "fine_tuning.job", "status": "validating_files",
                                         "model": body["model"], "created_at": int(time.time()), "error": None,
                                         "fine_tuned_model": None, "finished_at": None, "organization_id": "org",
                                         "result_files": [], "seed": body.get("seed"), "trained_tokens": None,
                                         "training_file": body["training_file"], "validation_file": None,
                                         "suffix": body.get("suffix"), "metadata": body.get("metadata"),
                                         "method": body.get("method"), "hyperparameters": {}}
                        return self._send(200, srv.jobs[jid])
                    if path == "/v1/chat/completions":
                        srv.chat.append(body)
                        return self._send(200, srv._completion(body))
                return self._send(404, {"error": {"message": "not found"}})

        self.server = serve(Handler)
        return self
