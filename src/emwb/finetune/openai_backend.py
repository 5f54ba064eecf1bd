"""Trainer `openai`: a fine-tuning job on OpenAI (or any server with the files and fine-tuning endpoints).

Validates the chats, prints the estimated training tokens, uploads the JSONL, creates the job (base model,
epochs, batch size, learning-rate multiplier, seed, suffix) tagged with a hash of all of these and of the
file, and polls it with backoff. A re-run (or a run resumed after a kill) finds the job by that hash, from
the run's own record or by asking the server, and never pays twice. A failed job stops the stage with the
provider's message. The fine-tuned model id is written to `remote_model.json` (layout.REMOTE_MODEL_FILE) in the
phase's folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from emwb.config import TrainArgs
from emwb.errors import EmwbError
from emwb.layout import REMOTE_MODEL_FILE
from emwb.models.openai_http import base_url_or_default, redact, sdk_server
from emwb.store import log

MIN_ROWS = 10             # the API's minimum number of training examples
TERMINAL = {"succeeded", "failed", "cancelled"}


def training_jsonl(rows: list[dict]) -> bytes:
    """The upload: one `{"messages": [...]}` per line (only role and content kept), refusing bad rows first."""
    if len(rows) < MIN_ROWS:
        raise EmwbError(f"openai fine-tuning needs at least {MIN_ROWS} chats, got {len(rows)}")
    out = []
    for i, r in enumerate(rows, start=1):
        msgs = r.get("messages") or []
        if not msgs or msgs[-1].get("role") != "assistant":
            raise EmwbError(f"row {i}: an OpenAI training chat must end with an assistant message")
        out.append(json.dumps({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]},
                              ensure_ascii=False))
    return ("\n".join(out) + "\n").encode("utf-8")


def estimated_tokens(payload: bytes, epochs: float) -> int:
    """Training tokens billed, estimated as characters / 4 per epoch (OpenAI's rule of thumb)."""
    return int(len(payload.decode("utf-8")) / 4 * epochs)


def job_request(model: str, args: TrainArgs, seed: int, suffix: str) -> dict:
    hp = {"n_epochs": int(args.epochs) if float(args.epochs).is_integer() else args.epochs}
    o = args.openai
    if o.batch_size is not None:
        hp["batch_size"] = o.batch_size
    if o.learning_rate_multiplier is not None:
        hp["learning_rate_multiplier"] = o.learning_rate_multiplier
    return {"model": model, "seed": seed, "suffix": (o.suffix or suffix)[:18],
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}}}


def _client(base_url: str | None, max_retries: int):
    import os

    from openai import OpenAI

    return OpenAI(max_retries=max_retries, **sdk_server(base_url),
                  api_key=os.environ.get("OPENAI_API_KEY") or ("EMPTY" if base_url_or_default(base_url) else None))


def _find(client, inputs: str, record: Path):
    """The job made for these inputs: the run's record of it, else the server's jobs tagged with the hash."""
    if record.is_file():
        return client.fine_tuning.jobs.retrieve(json.loads(record.read_text())["job_id"])
    for job in client.fine_tuning.jobs.list(limit=100, metadata={"emwb_inputs": inputs}):
        if (job.metadata or {}).get("emwb_inputs") == inputs and job.status not in ("failed", "cancelled"):
            return job
    return None


def fine_tune(rows: list[dict], model: str, args: TrainArgs, seed: int, suffix: str, out_dir: Path,
              state_dir: Path, max_retries: int = 8) -> dict:
    """Run (or find) the job; write `remote_model.json` to `out_dir`; return the training log."""
    payload = training_jsonl(rows)
    request = job_request(model, args, seed, suffix)
    inputs = hashlib.sha256(payload + json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]
    record = state_dir / f"{inputs}.json"
    o = args.openai
    client = _client(o.base_url, max_retries)
    try:
        job = _find(client, inputs, record)
        if job is None:
            est = estimated_tokens(payload, args.epochs)
            log(f"train openai: {len(rows)} chats, about {est:,} training tokens ({args.epochs:g} epochs, "
                f"characters / 4); uploading and creating the job")
            file = client.files.create(file=("train.jsonl", payload), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(training_file=file.id, metadata={"emwb_inputs": inputs},
                                                 **request)
        else:
            log(f"train openai: job {job.id} for these inputs exists ({job.status}); not creating another")
        state_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"job_id": job.id, "inputs": inputs}))
        wait, status = o.poll_interval_s, None
        while job.status not in TERMINAL:
            if job.status != status:
                status = job.status
                log(f"train openai: job {job.id} {status}")
            time.sleep(wait)
            wait = min(wait * 1.5, o.max_poll_interval_s)
            job = client.fine_tuning.jobs.retrieve(job.id)
    except EmwbError:
        raise
    except Exception as exc:  # the SDK's errors, after its own retries
        raise EmwbError(f"openai fine-tuning: {redact(type(exc).__name__ + ': ' + str(exc))[:300]}") from None
    if job.status != "succeeded":
        why = getattr(job.error, "message", None) or "no message"
        record.unlink(missing_ok=True)  # a failed job is not reused: the next run may try again
        raise EmwbError(f"openai fine-tuning job {job.id} {job.status}: {redact(why)}")
    remote = {"model_id": job.fine_tuned_model, "job_id": job.id, "base_url": o.base_url, "inputs_sha256": inputs}
    (out_dir / REMOTE_MODEL_FILE).write_text(json.dumps(remote, indent=2))
    log(f"train openai: job {job.id} succeeded: {job.fine_tuned_model}")
    return {"losses": [], "steps": 0, "job_id": job.id, "model_id": job.fine_tuned_model,
            "trained_tokens": job.trained_tokens, "estimated_tokens": estimated_tokens(payload, args.epochs),
            "request": request}
